//! What the operator tells about itself: Prometheus metrics, logs, liveness and readiness, and
//! the Kubernetes Events it publishes about sessions.

pub mod events;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod readiness;

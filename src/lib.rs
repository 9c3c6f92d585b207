//! The Agentic Operator: runs AgenticSession custom resources as Kubernetes Jobs.
//!
//! `main.rs` parses [`config::Config`] and hands it to [`run`]; everything else lives in the
//! modules below, one concept each.

pub mod admin;
pub mod config;
pub mod metrics;
pub mod session;
pub mod telemetry;

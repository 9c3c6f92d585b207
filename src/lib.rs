//! The Agentic Operator: runs AgenticSession custom resources as Kubernetes Jobs.
//!
//! `main.rs` parses [`config::Config`] and hands it to [`app::run`] (or, for the `session-trigger`
//! sub-command, [`trigger::TriggerConfig`] to [`trigger::run`]). The rooms below import only
//! downwards in this list (`tests/layout.rs` fails on a circle between them):
//!
//! - [`app`]: the process: wiring, leader election, the admin (metrics and probe) servers.
//! - [`engine`]: the two engines (work queue, `--legacy-watch`) that turn watch events into calls
//!   of the handlers.
//! - [`handlers`]: one reconcile per kind: the session handler and the project handlers.
//! - [`context`]: what every handler is given: client, configuration, caches, metrics, events.
//! - [`shard`]: scale-out: buckets of namespaces shared between replicas.
//! - [`leader`]: Lease-based election, used by [`app`] and by [`shard`] membership.
//! - [`catalog`]: the platform's agent registry and model manifest.
//! - [`observability`]: metrics, logs, health, readiness and Kubernetes Events.
//! - [`cache`]: the cluster as the operator last saw it, and the keys work is queued under.
//! - [`config`]: flags and environment, validated.
//! - [`trigger`]: the `session-trigger` sub-command (scheduled sessions); stands alone.
#![warn(missing_docs)]

pub mod app;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod context;
pub mod engine;
pub mod handlers;
pub mod leader;
pub mod observability;
pub mod shard;
pub mod trigger;

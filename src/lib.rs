//! The Agentic Operator: runs AgenticSession custom resources as Kubernetes Jobs.
//!
//! `main.rs` parses [`config::Config`] and hands it to [`app::run`] (or, for the `session-trigger`
//! sub-command, [`trigger::TriggerConfig`] to [`trigger::run`]); everything else lives in the
//! modules below, one concept each.
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod caches;
pub mod config;
pub mod context;
pub mod copies;
pub mod engine;
pub mod leader;
pub mod metrics;
pub mod namespace;
pub mod project_settings;
pub mod projections;
pub mod runner_events;
pub mod runtime;
pub mod session;
pub mod shard;
pub mod telemetry;
pub mod trigger;

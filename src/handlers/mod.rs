//! One reconcile per kind. [`session`] runs AgenticSessions (and keeps their secret copies and
//! runner-pod refusals); [`project`] keeps a managed namespace's ProjectSettings.
//!
//! Handlers read the cluster through [`crate::context::Context`]; the session handler's own
//! bookkeeping (claims, own writes, runner syncs) lives in [`session::SessionState`] and is
//! handed only to it.

pub mod project;
pub mod session;

//! The project handlers: a managed namespace gets its ProjectSettings ([`namespace`]), and the
//! ProjectSettings is reconciled into the project's RBAC and status ([`settings`]).

pub mod namespace;
pub mod settings;

//! AgenticSession and ProjectSettings custom resource types, every name shared with them
//! (labels, annotations, phases, condition types and reasons, runner environment variables,
//! child object names), spec validation, and the CRD generator behind `crdgen`.
//!
//! The CRD YAML in `deploy/crds/` is generated from these types; a unit test fails when it is
//! out of date.
#![warn(missing_docs)]

pub mod condition;
pub mod env;
pub mod keys;
pub mod names;
pub mod project_settings;
pub mod render;
pub mod session;
pub mod status_schema;
pub mod validate;

pub use condition::{Condition, ConditionStatus, set_condition};
pub use env::RESERVED_ENV_NAMES;
pub use project_settings::{
    GroupAccess, GroupRole, KueueSettings, ProjectSettings, ProjectSettingsSpec,
    ProjectSettingsStatus,
};
pub use render::render_crds;
pub use session::{AgenticSession, AgenticSessionSpec, AgenticSessionStatus, Phase, StoppedReason};
pub use status_schema::StatusSchema;
pub use validate::{InvalidSpec, validate};

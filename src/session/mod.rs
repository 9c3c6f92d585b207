//! The AgenticSession handler: observe, plan (pure), execute.

pub mod children;
pub mod phases;
pub mod runner_env;

#[cfg(test)]
pub(crate) mod fixtures;

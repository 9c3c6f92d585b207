//! What the installed `AgenticSession` CRD keeps of a status write.
//!
//! The operator runs on its own CRD or on the platform's (SPEC §7.1: swap only the image). The
//! platform's status schema declares neither `jobName` nor `message` (the API server prunes
//! them) and its `stoppedReason` enum is `user | inactivity` (a `timeout` is refused, and with it
//! the whole status write). [`StatusSchema::fit`] brings a status to what the installed schema
//! keeps, so that every write is valid and a pruned field never reads as a change.
//!
//! Invariant: nothing the operator decides from lives only in a field [`fit`](StatusSchema::fit)
//! may drop; those fields are for people (`kubectl get`), every decision reads conditions,
//! phase and times.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

use crate::session::{AgenticSessionStatus, StoppedReason};

/// The status fields the operator writes that another schema may not keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSchema {
    /// `status.jobName` is kept.
    pub job_name: bool,
    /// `status.message` is kept.
    pub message: bool,
    /// `status.stoppedReason` accepts `timeout`.
    pub timeout_reason: bool,
}

impl StatusSchema {
    /// This project's CRD: everything is kept.
    pub const OURS: StatusSchema = StatusSchema {
        job_name: true,
        message: true,
        timeout_reason: true,
    };

    /// What may be assumed when the installed CRD cannot be read: only what every known schema
    /// (ours and the platform's) keeps.
    pub const COMMON: StatusSchema = StatusSchema {
        job_name: false,
        message: false,
        timeout_reason: false,
    };

    /// The facts of `crd`'s served `version` (`None` when it serves no such version or has no
    /// schema for it).
    pub fn of_crd(crd: &CustomResourceDefinition, version: &str) -> Option<StatusSchema> {
        let served = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version && v.served)?;
        let root = served.schema.as_ref()?.open_api_v3_schema.as_ref()?;
        let status = property(root, "status");
        let keeps = |field: &str| match status {
            // No status schema at all, or one that preserves unknown fields: nothing is pruned.
            None => true,
            Some(s) if s.x_kubernetes_preserve_unknown_fields == Some(true) => true,
            Some(s) => property(s, field).is_some(),
        };
        let timeout_reason = match status.and_then(|s| property(s, "stoppedReason")) {
            Some(reason) => match &reason.enum_ {
                Some(values) => values
                    .iter()
                    .any(|v| v.0.as_str() == Some(StoppedReason::Timeout.as_str())),
                None => true,
            },
            None => keeps("stoppedReason"),
        };
        Some(StatusSchema {
            job_name: keeps("jobName"),
            message: keeps("message"),
            timeout_reason,
        })
    }

    /// `status` without what this schema would prune or refuse.
    pub fn fit(&self, status: &mut AgenticSessionStatus) {
        if !self.job_name {
            status.job_name = None;
        }
        if !self.message {
            status.message = None;
        }
        if !self.timeout_reason && status.stopped_reason == Some(StoppedReason::Timeout) {
            status.stopped_reason = None;
        }
    }
}

fn property<'a>(schema: &'a JSONSchemaProps, name: &str) -> Option<&'a JSONSchemaProps> {
    schema.properties.as_ref()?.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::AgenticSession;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn crd_with_status(status: serde_json::Value) -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "agenticsessions.vteam.ambient-code"},
            "spec": {
                "group": "vteam.ambient-code",
                "names": {"kind": "AgenticSession", "plural": "agenticsessions"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"status": status}
                    }}
                }]
            }
        }))
        .expect("a CRD")
    }

    #[test]
    fn our_crd_keeps_everything() {
        assert_eq!(
            StatusSchema::of_crd(&AgenticSession::crd(), "v1alpha1"),
            Some(StatusSchema::OURS)
        );
    }

    #[test]
    fn the_platforms_crd_prunes_job_name_and_message_and_refuses_timeout() {
        let platform = crd_with_status(json!({
            "type": "object",
            "properties": {
                "phase": {"type": "string"},
                "stoppedReason": {"type": "string", "enum": ["user", "inactivity"]}
            }
        }));
        assert_eq!(
            StatusSchema::of_crd(&platform, "v1alpha1"),
            Some(StatusSchema::COMMON)
        );
        assert_eq!(StatusSchema::of_crd(&platform, "v1"), None);
    }

    #[test]
    fn a_status_that_preserves_unknown_fields_keeps_everything() {
        let open = crd_with_status(json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }));
        assert_eq!(
            StatusSchema::of_crd(&open, "v1alpha1"),
            Some(StatusSchema::OURS)
        );
    }

    #[test]
    fn fitting_drops_only_what_the_schema_would_not_keep() {
        let status = AgenticSessionStatus {
            job_name: Some("s-job".into()),
            message: Some("timed out".into()),
            stopped_reason: Some(StoppedReason::Timeout),
            ..Default::default()
        };
        let mut ours = status.clone();
        StatusSchema::OURS.fit(&mut ours);
        assert_eq!(ours, status);
        let mut common = status.clone();
        StatusSchema::COMMON.fit(&mut common);
        assert_eq!(common, AgenticSessionStatus::default());
        let mut user = AgenticSessionStatus {
            stopped_reason: Some(StoppedReason::User),
            ..Default::default()
        };
        StatusSchema::COMMON.fit(&mut user);
        assert_eq!(user.stopped_reason, Some(StoppedReason::User));
    }
}

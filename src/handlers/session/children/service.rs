//! The Service in front of a session's runner (SPEC §5.2): `session-<name>`, through which the
//! platform's backend (and the operator itself) reaches the agent.

use std::collections::BTreeMap;

use agentic_crds::{AgenticSession, keys, names};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::child_meta_with_app;

/// ClusterIP Service `session-<name>`: labels `app=ambient-code`, `agentic-session=<name>`;
/// selects the session's runner pods; port `agui` (`port`) → the container port `agui`.
/// Controller-owned by the session; it lives as long as the session's Job.
pub fn build_service(session: &AgenticSession, port: u16) -> Service {
    let name = session.name_any();
    Service {
        metadata: child_meta_with_app(session, names::service_name(&name), keys::PLATFORM_APP),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([
                (keys::SESSION_LABEL.to_string(), name),
                (keys::APP_LABEL.to_string(), keys::RUNNER_APP.to_string()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some(keys::AGUI_PORT_NAME.into()),
                protocol: Some("TCP".into()),
                port: i32::from(port),
                target_port: Some(IntOrString::String(keys::AGUI_PORT_NAME.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::fixtures::session;

    #[test]
    fn the_service_selects_the_runner_on_its_agui_port() {
        let service = build_service(&session("demo"), 8001);
        assert_eq!(service.metadata.name.as_deref(), Some("session-demo"));
        let labels = service.metadata.labels.unwrap();
        assert_eq!(labels["app"], "ambient-code");
        assert_eq!(labels["agentic-session"], "demo");
        let owner = &service.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("AgenticSession", Some(true))
        );
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let selector = spec.selector.unwrap();
        assert_eq!(selector["agentic-session"], "demo");
        assert_eq!(selector["app"], "ambient-code-runner");
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("agui"));
        assert_eq!(port.port, 8001);
        assert_eq!(port.target_port, Some(IntOrString::String("agui".into())));
    }
}

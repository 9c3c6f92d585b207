//! Workspace claims (SPEC §2.2): with `--workspace-size`, each session gets a PVC
//! `ambient-workspace-<name>` before its Job; it is kept across stop/restart (a resumed runner
//! finds its files) and goes away with the session. PersistentVolumes are pre-created and bound
//! by the real controller-manager.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use agentic_crds::{AgenticSession, Phase, keys};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use support::operator::{Engine, annotate, create, operator, session, wait_for_phase};
use support::{ClusterInfo, TestNamespace, wait_until};

const LIMIT: Duration = Duration::from_secs(60);
const STORAGE_CLASS: &str = "agentic-test-manual";

async fn create_volume(cluster: &ClusterInfo, name: &str) {
    let volumes: Api<PersistentVolume> = Api::all(cluster.admin_client().await);
    let volume = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity("1Gi".into()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(STORAGE_CLASS.into()),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            host_path: Some(HostPathVolumeSource {
                path: format!("/tmp/{name}"),
                type_: None,
            }),
            ..Default::default()
        }),
        status: None,
    };
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating PersistentVolume {name}: {e}"),
    }
}

fn start(cluster: &ClusterInfo) {
    operator(
        cluster,
        Engine::Queue,
        &[
            "--workspace-size",
            "1Gi",
            "--workspace-storage-class",
            STORAGE_CLASS,
        ],
    );
}

/// The controller owner's UID of a claim.
fn owner_uid(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

/// A session of the same name as an earlier one deleted with `--cascade=orphan` never gets the
/// earlier session's files: the orphaned claim is replaced by one of its own.
#[tokio::test]
async fn an_orphaned_claim_of_an_earlier_session_is_replaced_not_adopted() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "workspace-orphan").await;
    create_volume(&cluster, &format!("{}-pv-a", ns.name)).await;
    create_volume(&cluster, &format!("{}-pv-b", ns.name)).await;
    let sessions: Api<AgenticSession> = ns.api();
    let claims: Api<PersistentVolumeClaim> = ns.api();
    create(
        &ns.client,
        &ns.name,
        &session("heir", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "heir", Phase::Running, LIMIT).await;
    let earlier = claims
        .get("ambient-workspace-heir")
        .await
        .expect("the claim");
    let orphaning = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    sessions
        .delete("heir", &orphaning)
        .await
        .expect("deleting, orphaning");
    support::wait_until_gone(&sessions, "heir").await;

    create(
        &ns.client,
        &ns.name,
        &session("heir", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    let uid = sessions
        .get("heir")
        .await
        .expect("the new session")
        .metadata
        .uid;
    let replaced = wait_until("a claim of the new session's own", LIMIT, || async {
        let claim = claims.get_opt("ambient-workspace-heir").await.ok()??;
        (owner_uid(&claim) == uid).then_some(claim)
    })
    .await;
    assert_ne!(
        replaced.metadata.uid, earlier.metadata.uid,
        "not the earlier files"
    );
    wait_for_phase(&ns.client, &ns.name, "heir", Phase::Running, LIMIT).await;
}

#[tokio::test]
async fn workspace_claim_is_bound_kept_across_restart_and_collected_with_the_session() {
    let cluster = ClusterInfo::from_env();
    start(&cluster);
    let ns = TestNamespace::create(&cluster, "workspace").await;
    create_volume(&cluster, &format!("{}-pv", ns.name)).await;

    create(
        &ns.client,
        &ns.name,
        &session("files", &[("SIM_OUTCOME", "hang")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "files", Phase::Running, LIMIT).await;
    let claims: Api<PersistentVolumeClaim> = ns.api();
    let claim = wait_until("the claim to be bound", LIMIT, || async {
        let claim = claims.get("ambient-workspace-files").await.ok()?;
        (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
    })
    .await;
    let owner = &claim.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(owner.kind, "AgenticSession");

    annotate(
        &ns.client,
        &ns.name,
        "files",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Stopped"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "files", Phase::Stopped, LIMIT).await;
    let kept = claims
        .get("ambient-workspace-files")
        .await
        .expect("kept while stopped");
    assert_eq!(kept.metadata.uid, claim.metadata.uid);

    annotate(
        &ns.client,
        &ns.name,
        "files",
        keys::DESIRED_PHASE_ANNOTATION,
        Some("Running"),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "files", Phase::Running, LIMIT).await;
    let resumed = claims
        .get("ambient-workspace-files")
        .await
        .expect("still there");
    assert_eq!(resumed.metadata.uid, claim.metadata.uid, "the same files");

    ns.api::<AgenticSession>()
        .delete("files", &DeleteParams::background())
        .await
        .expect("deleting the session");
    wait_until("the claim to be collected", LIMIT, || async {
        let claim = claims.get_opt("ambient-workspace-files").await.ok()?;
        claim
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

//! Fixtures and helpers of the planner's tests.

use super::*;

pub(super) use crate::handlers::session::fixtures::{
    JOB_UID, at, job, original_pod, running_pod, session, terminated_pod, unschedulable_pod,
    waiting_pod,
};

pub(super) use agentic_crds::condition::find_condition;

pub(super) const START_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) const REFRESH: Duration = Duration::from_secs(45 * 60);

/// A session in `phase` whose run started at `at(0)`, optionally with a desired-phase
/// annotation.
pub(super) fn in_phase(phase: Phase, desired: Option<&str>) -> AgenticSession {
    let mut s = session("demo");
    s.status = Some(AgenticSessionStatus {
        phase,
        start_time: Some(Time(at(0))),
        // The claim recorded the generation the run was made from.
        observed_generation: Some(1),
        ..Default::default()
    });
    if let Some(d) = desired {
        s.metadata.annotations =
            Some([(keys::DESIRED_PHASE_ANNOTATION.to_string(), d.to_string())].into());
    }
    s
}

pub(super) fn observe<'a>(
    session: &'a AgenticSession,
    job: Option<&'a RunnerJob>,
    pods: Vec<&'a RunnerPod>,
    now: i64,
) -> Observed<'a> {
    Observed {
        session,
        job,
        pods,
        token_refreshed_at: Some(at(0)),
        now: at(now),
        inactivity_timeout: None,
        start_timeout: START_TIMEOUT,
        // First reached as it was created.
        pending_since: Some(at(0)),
        token_refresh_after: REFRESH,
        enforce_timeout: false,
        status_schema: StatusSchema::OURS,
        invalid_spec: None,
        platform: PlatformView {
            runner_secret: true,
            ..Default::default()
        },
        vertex: false,
        s3: PlatformView::default().s3("https://s3.amazonaws.com", "ambient-sessions"),
        service_uid: None,
        foreign_service: false,
        claimed_here: true,
        pod_refusal: None,
        sync: SyncView::Idle,
        queue: None,
        queue_timeout: None,
    }
}

pub(super) fn condition<'p>(plan: &'p Plan, type_: &str) -> &'p Condition {
    find_condition(&plan.status.conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", plan.status.conditions))
}

pub(super) fn delete_job() -> ChildEffect {
    ChildEffect::DeleteJob {
        uid: JOB_UID.into(),
    }
}

pub(super) fn created_run(plan: &Plan) -> Option<&RunSpec> {
    plan.children.iter().find_map(|e| match e {
        ChildEffect::CreateJob(run) => Some(run),
        _ => None,
    })
}

/// The session's Job made for a run started at `at(started)`.
pub(super) fn job_of_run(started: i64) -> RunnerJob {
    let mut j = job(0, None);
    j.run = Some(
        k8s_openapi::jiff::Timestamp::from_second(at(started).as_second())
            .unwrap()
            .to_string(),
    );
    j
}

pub(super) fn plan_at(s: &AgenticSession, j: &RunnerJob, p: &RunnerPod, now: i64) -> Plan {
    let mut observed = observe(s, Some(j), vec![p], now);
    observed.service_uid = Some("svc-uid".into());
    plan(&observed)
}

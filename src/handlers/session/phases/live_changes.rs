//! Live changes: a spec edited while running is sent to the runner (off the worker) or refused, and
//! recorded once applied.

use super::*;

impl<'o, 'a> PlanBuilder<'o, 'a> {
    /// A live run's spec was edited into something invalid: say so (`Reconciled=False`,
    /// `InvalidSpec`, an Event when that is news) and keep the run as it is. The generation is
    /// not recorded as applied, so a corrected spec is applied as any other edit.
    pub(super) fn refuse_edit(&mut self, problem: &str) {
        let message = format!("spec change not applied: {problem}");
        let news = !self.condition_says(types::RECONCILED, reasons::INVALID_SPEC, &message);
        self.condition(types::RECONCILED, false, reasons::INVALID_SPEC, &message);
        if news {
            self.notes.push(Note {
                warning: true,
                reason: reasons::INVALID_SPEC.into(),
                message,
            });
        }
    }

    /// While Running: tell the runner about a spec that moved past `observedGeneration`, or
    /// record how that went (never an invalid spec's).
    pub(super) fn apply_live_changes(&mut self) {
        let generation = self.observed.session.metadata.generation;
        if generation.is_none()
            || self.status.observed_generation == generation
            || self.observed.invalid_spec.is_some()
        {
            return;
        }
        let pending = drift::drift(&self.observed.session.spec, &self.status);
        match &self.observed.sync {
            SyncView::Idle if pending.calls.is_empty() => self.record_synced(&pending, true),
            SyncView::Idle => self.sync = Some(pending.calls),
            SyncView::InFlight => {}
            SyncView::Succeeded => {
                self.record_synced(&pending, true);
                self.sync_recorded = true;
            }
            SyncView::Failed { workflow, message } => {
                let (kind, reason) = if *workflow {
                    (
                        types::WORKFLOW_RECONCILED,
                        reasons::WORKFLOW_RECONCILIATION_FAILED,
                    )
                } else {
                    (types::REPOS_RECONCILED, reasons::REPO_RECONCILIATION_FAILED)
                };
                let what = if *workflow {
                    "workflow"
                } else {
                    "repositories"
                };
                let text = format!("Failed to reconcile {what}: {message}");
                self.condition(kind, false, reason, &text);
                self.condition(types::RECONCILED, false, reason, &text);
                self.sync_recorded = true;
                self.sync_failed = Some(text);
            }
        }
    }

    /// The runner has `pending` applied: record `reconciledRepos`, `reconciledWorkflow`, their
    /// conditions and (with `announce`) the generation, all together.
    pub(super) fn record_synced(&mut self, pending: &drift::Drift, announce: bool) {
        let now = self.now();
        let stamp = crate::handlers::session::children::run_stamp(&now);
        self.status.reconciled_repos = drift::reconciled_repos(pending, &stamp);
        self.status.reconciled_workflow = drift::reconciled_workflow(
            &pending.workflow,
            self.status.reconciled_workflow.as_ref(),
            &stamp,
        );
        let (added, changed, removed) = pending.counts;
        if pending.repos.is_empty() {
            self.condition(
                types::REPOS_RECONCILED,
                true,
                reasons::NO_REPOS,
                messages::NO_REPOS,
            );
        } else {
            self.condition(
                types::REPOS_RECONCILED,
                true,
                reasons::RECONCILED,
                &format!(
                    "Reconciled {} repos (added: {added}, removed: {removed}, branch changed: {changed})",
                    pending.repos.len()
                ),
            );
        }
        match &self.status.reconciled_workflow {
            Some(w) => {
                let message = format!(
                    "Workflow {}@{} active",
                    w.git_url.clone().unwrap_or_default(),
                    w.branch.clone().unwrap_or_default()
                );
                self.condition(
                    types::WORKFLOW_RECONCILED,
                    true,
                    reasons::RECONCILED,
                    &message,
                );
            }
            None => self.condition(
                types::WORKFLOW_RECONCILED,
                true,
                reasons::NOT_CONFIGURED,
                messages::NO_WORKFLOW,
            ),
        }
        if announce {
            let generation = self
                .observed
                .session
                .metadata
                .generation
                .unwrap_or_default();
            self.condition(
                types::RECONCILED,
                true,
                reasons::SPEC_APPLIED,
                &format!("Successfully reconciled generation {generation}"),
            );
        }
        self.spec_applied = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::session::phases::test_support::*;

    /// A Running session whose spec (generation 2) added a repository after its run began.
    fn drifted() -> AgenticSession {
        let mut s = in_phase(Phase::Running, None);
        s.metadata.generation = Some(2);
        s.spec.repos = vec![agentic_crds::session::RepoSpec {
            url: "https://x/app.git".into(),
            branch: "main".into(),
            auto_push: false,
        }];
        s
    }

    fn live(s: &AgenticSession, sync: SyncView) -> Plan {
        let j = job(0, None);
        let p = running_pod(1);
        let mut observed = observe(s, Some(&j), vec![&p], 5);
        observed.service_uid = Some("svc-uid".into());
        observed.sync = sync;
        plan(&observed)
    }

    #[test]
    fn a_spec_that_moved_on_while_running_is_sent_to_the_runner_off_the_worker() {
        let s = drifted();
        let start = live(&s, SyncView::Idle);
        assert_eq!(
            start.sync,
            Some(vec![drift::RunnerCall::AddRepo {
                url: "https://x/app.git".into(),
                branch: "main".into(),
                name: "app".into()
            }])
        );
        assert_eq!(
            start.status,
            s.status.clone().unwrap(),
            "nothing recorded yet"
        );
        let waiting = live(&s, SyncView::InFlight);
        assert!(waiting.sync.is_none() && !waiting.sync_recorded);
    }

    #[test]
    fn success_records_repos_conditions_and_the_generation_together() {
        let plan = live(&drifted(), SyncView::Succeeded);
        assert_eq!(plan.status.observed_generation, Some(2));
        let repos = plan.status.reconciled_repos.clone().expect("recorded");
        assert_eq!(repos[0].name.as_deref(), Some("app"));
        assert_eq!(
            repos[0].status,
            Some(agentic_crds::session::RepoCloneStatus::Ready)
        );
        assert_eq!(
            condition(&plan, types::RECONCILED).reason.as_deref(),
            Some(reasons::SPEC_APPLIED)
        );
        assert!(plan.sync_recorded && plan.sync_failed.is_none());
    }

    #[test]
    fn failure_is_visible_keeps_the_generation_and_fails_the_reconcile() {
        let plan = live(
            &drifted(),
            SyncView::Failed {
                workflow: false,
                message: "runner answered 500: clone failed".into(),
            },
        );
        assert_eq!(plan.status.observed_generation, Some(1), "not applied");
        assert!(plan.status.reconciled_repos.is_none());
        let reconciled = condition(&plan, types::RECONCILED);
        assert_eq!(reconciled.status, ConditionStatus::False);
        assert_eq!(
            reconciled.reason.as_deref(),
            Some(reasons::REPO_RECONCILIATION_FAILED)
        );
        assert!(
            reconciled
                .message
                .as_deref()
                .unwrap()
                .contains("clone failed")
        );
        assert!(plan.sync_failed.is_some(), "retried with the key's backoff");
    }

    #[test]
    fn a_running_status_change_does_not_mark_a_pending_spec_as_applied() {
        // An inactivity stop is a status change while the spec is pending: it may advance the
        // generation (the run ends); a token refresh (no status change) may not.
        let s = drifted();
        let refresh = live(&s, SyncView::InFlight);
        assert_eq!(refresh.status.observed_generation, Some(1));
    }

    #[test]
    fn an_invalid_edit_while_running_is_refused_and_the_run_goes_on() {
        let mut s = in_phase(Phase::Running, None);
        s.metadata.generation = Some(2);
        let j = job(2, None);
        let p = running_pod(3);
        let mut observed = observe(&s, Some(&j), vec![&p], 10);
        observed.service_uid = Some("svc-uid".into());
        observed.invalid_spec = Some("spec.repos[1].url: \"x\" is not a git URL".into());
        let plan = plan(&observed);
        assert_eq!(plan.status.phase, Phase::Running);
        assert!(plan.children.is_empty(), "{:?}", plan.children);
        assert!(
            plan.sync.is_none(),
            "the runner is not told about an invalid spec"
        );
        let reconciled = condition(&plan, types::RECONCILED);
        assert_eq!(reconciled.status, ConditionStatus::False);
        assert_eq!(reconciled.reason.as_deref(), Some(reasons::INVALID_SPEC));
        assert!(
            reconciled
                .message
                .as_deref()
                .is_some_and(|m| m.contains("spec.repos[1].url"))
        );
        assert_eq!(plan.notes.len(), 1, "one Warning Event");
        assert_eq!(plan.status.observed_generation, Some(1), "not applied");
        // Announced once: planning again from the result says nothing new.
        let mut after = s.clone();
        after.status = Some(plan.status.clone());
        let mut again = observe(&after, Some(&j), vec![&p], 11);
        again.service_uid = Some("svc-uid".into());
        again.invalid_spec = observed.invalid_spec.clone();
        assert!(super::plan(&again).notes.is_empty());
    }
}

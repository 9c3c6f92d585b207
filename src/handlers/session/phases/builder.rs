//! The plan being built: its bookkeeping verbs (conditions, effects, phase changes) and time
//! helpers.

use super::*;

/// `t` without its fraction of a second (`status` times are stored to the second).
pub(super) fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

pub(super) fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

/// Non-negative time from `from` to `to`.
pub(super) fn until(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

impl<'o, 'a> PlanBuilder<'o, 'a> {
    pub(super) fn new(observed: &'o Observed<'a>, status: AgenticSessionStatus) -> Self {
        PlanBuilder {
            observed,
            original: status.clone(),
            status,
            children: Vec::new(),
            session: Vec::new(),
            requeue_after: None,
            notes: Vec::new(),
            observations: Vec::new(),
            sync: None,
            sync_recorded: false,
            sync_failed: None,
            spec_applied: false,
        }
    }

    /// `observedGeneration` advances with a status change, except while a run is live
    /// (Creating, Running) and its runner has not been given the current spec: then a spec
    /// change is still pending for the runner (SPEC §5.6).
    pub(super) fn finish(mut self) -> Plan {
        self.observed.status_schema.fit(&mut self.status);
        let live = matches!(self.status.phase, Phase::Creating | Phase::Running);
        if self.status != self.original && (self.spec_applied || !live) {
            self.status.observed_generation = self.observed.session.metadata.generation;
        }
        Plan {
            status: self.status,
            children: self.children,
            session: self.session,
            requeue_after: self.requeue_after,
            notes: self.notes,
            observations: self.observations,
            sync: self.sync,
            sync_recorded: self.sync_recorded,
            sync_failed: self.sync_failed,
        }
    }

    pub(super) fn name(&self) -> String {
        self.observed.session.name_any()
    }

    pub(super) fn now(&self) -> Time {
        Time(self.observed.now)
    }

    pub(super) fn desired(&self) -> Option<&'a str> {
        self.observed
            .session
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::DESIRED_PHASE_ANNOTATION))
            .map(String::as_str)
    }

    pub(super) fn stop_reason(&self) -> StoppedReason {
        let annotations = self.observed.session.metadata.annotations.as_ref();
        match annotations.and_then(|a| a.get(keys::STOP_REASON_ANNOTATION)) {
            Some(reason) if reason == StoppedReason::Inactivity.as_str() => {
                StoppedReason::Inactivity
            }
            _ => StoppedReason::User,
        }
    }

    pub(super) fn child(&mut self, effect: ChildEffect) {
        if !self.children.contains(&effect) {
            self.children.push(effect);
        }
    }

    pub(super) fn session(&mut self, effect: SessionEffect) {
        if !self.session.contains(&effect) {
            self.session.push(effect);
        }
    }

    pub(super) fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |r| r.min(after)));
    }

    pub(super) fn condition(&mut self, type_: &str, holds: bool, reason: &str, message: &str) {
        let status = if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        self.set_condition(type_, status, reason, message);
    }

    pub(super) fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) {
        let generation = self.observed.session.metadata.generation;
        let now = self.now();
        set_condition(
            &mut self.status.conditions,
            Condition::new(type_, status, reason, message).with_observed_generation(generation),
            &now,
        );
    }

    pub(super) fn condition_is(&self, type_: &str, status: ConditionStatus) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
    }

    /// Moves to `phase` with `message`, announcing the transition.
    pub(super) fn enter(&mut self, phase: Phase, message: &str, warning: bool) {
        if self.status.phase != phase {
            self.notes.push(Note {
                warning,
                reason: phase.as_str().to_string(),
                message: format!("{} -> {}: {message}", self.status.phase, phase),
            });
        }
        self.status.phase = phase;
        self.status.message = Some(message.to_string());
    }

    pub(super) fn runner_started_before(&self) -> bool {
        is_condition_true(&self.status.conditions, types::RUNNER_STARTED)
    }

    /// Since when a Pending session has waited for its run: its Pending clock, `now` when the
    /// caller has none.
    pub(super) fn pending_since(&self) -> Timestamp {
        self.observed.pending_since.unwrap_or(self.observed.now)
    }

    /// When the current run started: `status.startTime`, else the session's creation.
    pub(super) fn run_start(&self) -> Timestamp {
        self.status
            .start_time
            .as_ref()
            .or(self.observed.session.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(self.observed.now)
    }
}

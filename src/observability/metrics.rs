//! Prometheus metrics: the eight `ambient_*` metrics of the original operator (same names, types
//! and labels), client-go's `workqueue_*` family (label `name`), and process metrics.
//! One registry per operator instance, carried in the [`crate::context::Context`]; no globals.
//!
//! Three gauges of our own feed the alerts and the dashboard of `deploy/monitoring/`:
//! `ambient_operator_leader` (this replica reconciles), and, read at scrape time by
//! [`OperatorStateCollector`], `ambient_operator_ready` (caches synced),
//! `ambient_sessions_in_phase{namespace,phase}` (sessions in the cache by phase) and
//! `ambient_sessions_queued{namespace}` (sessions whose runner Job waits for Kueue).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Store;
use agentic_crds::condition::types;
use agentic_crds::{AgenticSession, ConditionStatus, Phase};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, exponential_buckets,
};

use crate::observability::readiness::Readiness;

/// Seconds buckets for session-scale durations (10 ms .. ~20 min).
fn session_buckets() -> Vec<f64> {
    vec![
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        1200.0,
    ]
}

/// Failure to set up or encode metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a programming error: duplicate name).
    #[error("registering metric: {0}")]
    Register(#[source] prometheus::Error),
    /// The registry could not be encoded as text.
    #[error("encoding metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

/// All metric families; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

/// The metric families themselves.
pub struct Families {
    registry: Registry,
    /// `ambient_session_startup_duration_seconds{namespace}`: Pending to Running.
    pub session_startup_duration: HistogramVec,
    /// `ambient_sessions_total{namespace}`: sessions seen for the first time (counted once).
    pub sessions_total: IntCounterVec,
    /// `ambient_sessions_completed_total{namespace,final_phase}`: terminal phases reached.
    pub sessions_completed: IntCounterVec,
    /// `ambient_session_phase_transitions_total{namespace,from_phase,to_phase}`.
    pub phase_transitions: IntCounterVec,
    /// `ambient_reconcile_duration_seconds{phase,success}`.
    pub reconcile_duration: HistogramVec,
    /// `ambient_pod_creation_duration_seconds{namespace}`: Job created to runner pod running.
    pub pod_creation_duration: HistogramVec,
    /// `ambient_token_provision_duration_seconds{namespace}`: runner identity provisioning.
    pub token_provision_duration: HistogramVec,
    /// `ambient_session_errors_total{namespace,phase,error_type}`.
    pub session_errors: IntCounterVec,
    /// `ambient_config_reload_errors_total{file}`: a mounted configuration file (the agent
    /// registry, the model manifest) that could not be read; the last good one stays in use.
    pub config_reload_errors: IntCounterVec,
    /// client-go compatible work-queue metrics.
    pub workqueue: WorkqueueFamilies,
    /// Sharding (`--sharding`, SPEC §6); zero without it.
    pub shard: ShardFamilies,
    /// `ambient_operator_leader`: 1 while this replica reconciles (holds the leader Lease, or
    /// leader election is off; a sharding member
    /// once it joined the ring), 0 otherwise.
    pub leader: IntGauge,
}

/// `ambient_shard_*`: this replica's part of a sharded ring.
pub struct ShardFamilies {
    /// `ambient_shard_buckets_owned`: buckets whose keys this replica reconciles.
    pub buckets_owned: prometheus::IntGauge,
    /// `ambient_shard_members`: live members of the ring, this replica included.
    pub members: prometheus::IntGauge,
    /// `ambient_shard_handovers_total{direction}`: buckets `acquired` or `released`.
    pub handovers: IntCounterVec,
    /// `ambient_shard_handover_duration_seconds{direction}`: acquired: from the bucket becoming
    /// ours by assignment to reconciling it (the previous holder's release and our caches
    /// included); released: from it ceasing to be ours to its in-flight reconciles finishing.
    pub handover_duration: HistogramVec,
    /// `ambient_shard_keys_dropped_total`: keys not reconciled because their bucket is not
    /// (or no longer) this replica's.
    pub keys_dropped: prometheus::IntCounter,
    /// `ambient_shard_server_filtering`: 1 when the API server honoured the shard selector of
    /// the last probe (a list answered with `shardInfo`), 0 when it did not.
    pub server_filtering: prometheus::IntGauge,
    /// `ambient_shard_member_ready`: 1 while this replica's caches hold its share (the other
    /// members give it buckets only then), 0 before and when its lists keep failing.
    pub member_ready: prometheus::IntGauge,
    /// `ambient_shard_buckets_uncached`: buckets of this replica's share its caches do not
    /// hold (yet).
    pub buckets_uncached: prometheus::IntGauge,
}

/// client-go's `workqueue_*` metric family, all labelled by queue `name`.
pub struct WorkqueueFamilies {
    /// `workqueue_depth`: items waiting (ready) in the queue.
    pub depth: IntGaugeVec,
    /// `workqueue_adds_total`: adds handled by the queue.
    pub adds: IntCounterVec,
    /// `workqueue_queue_duration_seconds`: time an item waited before being handed out.
    pub queue_duration: HistogramVec,
    /// `workqueue_work_duration_seconds`: time spent processing an item.
    pub work_duration: HistogramVec,
    /// `workqueue_unfinished_work_seconds`: total age of work in progress.
    pub unfinished_work: prometheus::GaugeVec,
    /// `workqueue_longest_running_processor_seconds`: age of the oldest work in progress.
    pub longest_running_processor: prometheus::GaugeVec,
    /// `workqueue_retries_total`: rate-limited re-adds.
    pub retries: IntCounterVec,
}

impl Metrics {
    /// Creates every family and registers it, plus process metrics.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .map_err(MetricsError::Register)?;
            registry
                .register(Box::new(h.clone()))
                .map_err(MetricsError::Register)?;
            Ok::<_, MetricsError>(h)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .map_err(MetricsError::Register)?;
            registry
                .register(Box::new(c.clone()))
                .map_err(MetricsError::Register)?;
            Ok::<_, MetricsError>(c)
        };
        let float_gauge = |name: &str, help: &str| {
            let g = prometheus::GaugeVec::new(Opts::new(name, help), &["name"])
                .map_err(MetricsError::Register)?;
            registry
                .register(Box::new(g.clone()))
                .map_err(MetricsError::Register)?;
            Ok::<_, MetricsError>(g)
        };
        // client-go: ExponentialBuckets(10e-9, 10, 10).
        let queue_buckets = exponential_buckets(10e-9, 10.0, 10).map_err(MetricsError::Register)?;

        let depth = IntGaugeVec::new(
            Opts::new("workqueue_depth", "Current depth of workqueue"),
            &["name"],
        )
        .map_err(MetricsError::Register)?;
        registry
            .register(Box::new(depth.clone()))
            .map_err(MetricsError::Register)?;

        let int_gauge = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).map_err(MetricsError::Register)?;
            registry
                .register(Box::new(g.clone()))
                .map_err(MetricsError::Register)?;
            Ok::<_, MetricsError>(g)
        };
        let keys_dropped = prometheus::IntCounter::new(
            "ambient_shard_keys_dropped_total",
            "Keys not reconciled because their bucket is not (or no longer) this replica's",
        )
        .map_err(MetricsError::Register)?;
        registry
            .register(Box::new(keys_dropped.clone()))
            .map_err(MetricsError::Register)?;
        let shard = ShardFamilies {
            buckets_owned: int_gauge(
                "ambient_shard_buckets_owned",
                "Namespace buckets this replica reconciles",
            )?,
            members: int_gauge(
                "ambient_shard_members",
                "Live members of the ring, this replica included",
            )?,
            handovers: counter(
                "ambient_shard_handovers_total",
                "Buckets acquired or released by this replica",
                &["direction"],
            )?,
            handover_duration: histogram(
                "ambient_shard_handover_duration_seconds",
                "Acquired: from a bucket becoming this replica's to reconciling it; released: from it ceasing to be to its in-flight reconciles finishing",
                &["direction"],
                session_buckets(),
            )?,
            keys_dropped,
            server_filtering: int_gauge(
                "ambient_shard_server_filtering",
                "1 when the API server honoured the shard selector (a sharded list came back with shardInfo), 0 when not",
            )?,
            member_ready: int_gauge(
                "ambient_shard_member_ready",
                "1 while this replica's caches hold its share of the ring (only then is it given buckets), 0 otherwise",
            )?,
            buckets_uncached: int_gauge(
                "ambient_shard_buckets_uncached",
                "Buckets of this replica's share its caches do not hold",
            )?,
        };
        let leader = IntGauge::new(
            "ambient_operator_leader",
            "1 while this replica reconciles (holds the leader Lease or runs without election)",
        )
        .map_err(MetricsError::Register)?;
        registry
            .register(Box::new(leader.clone()))
            .map_err(MetricsError::Register)?;

        let families = Families {
            shard,
            session_startup_duration: histogram(
                "ambient_session_startup_duration_seconds",
                "Time from Pending to Running",
                &["namespace"],
                session_buckets(),
            )?,
            sessions_total: counter(
                "ambient_sessions_total",
                "Total sessions created",
                &["namespace"],
            )?,
            sessions_completed: counter(
                "ambient_sessions_completed_total",
                "Sessions reaching terminal states (Stopped, Failed, Completed)",
                &["namespace", "final_phase"],
            )?,
            phase_transitions: counter(
                "ambient_session_phase_transitions_total",
                "Phase transition counts",
                &["namespace", "from_phase", "to_phase"],
            )?,
            reconcile_duration: histogram(
                "ambient_reconcile_duration_seconds",
                "Reconcile loop timing",
                &["phase", "success"],
                exponential_buckets(0.0005, 2.0, 16).map_err(MetricsError::Register)?,
            )?,
            pod_creation_duration: histogram(
                "ambient_pod_creation_duration_seconds",
                "Pod creation timing: Job created to runner container running",
                &["namespace"],
                session_buckets(),
            )?,
            token_provision_duration: histogram(
                "ambient_token_provision_duration_seconds",
                "Runner token provisioning time",
                &["namespace"],
                exponential_buckets(0.001, 2.0, 14).map_err(MetricsError::Register)?,
            )?,
            session_errors: counter(
                "ambient_session_errors_total",
                "Error tracking",
                &["namespace", "phase", "error_type"],
            )?,
            config_reload_errors: counter(
                "ambient_config_reload_errors_total",
                "Configuration files (agent registry, model manifest) that failed to load; the last good one stays in use",
                &["file"],
            )?,
            workqueue: WorkqueueFamilies {
                depth,
                adds: counter(
                    "workqueue_adds_total",
                    "Total number of adds handled by workqueue",
                    &["name"],
                )?,
                queue_duration: histogram(
                    "workqueue_queue_duration_seconds",
                    "How long in seconds an item stays in workqueue before being requested.",
                    &["name"],
                    queue_buckets.clone(),
                )?,
                work_duration: histogram(
                    "workqueue_work_duration_seconds",
                    "How long in seconds processing an item from workqueue takes.",
                    &["name"],
                    queue_buckets,
                )?,
                unfinished_work: float_gauge(
                    "workqueue_unfinished_work_seconds",
                    "How many seconds of work has done that is in progress and hasn't been \
                     observed by work_duration. Large values indicate stuck threads.",
                )?,
                longest_running_processor: float_gauge(
                    "workqueue_longest_running_processor_seconds",
                    "How many seconds has the longest running processor for workqueue been running.",
                )?,
                retries: counter(
                    "workqueue_retries_total",
                    "Total number of retries handled by workqueue",
                    &["name"],
                )?,
            },
            leader,
            registry,
        };
        families
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(MetricsError::Register)?;
        Ok(Metrics {
            inner: Arc::new(families),
        })
    }

    /// The families, for recording.
    pub fn families(&self) -> &Families {
        &self.inner
    }

    /// Registers the gauges read at scrape time from `readiness` and the session cache.
    pub fn register_operator_state(
        &self,
        readiness: Readiness,
        sessions: Store<AgenticSession>,
    ) -> Result<(), MetricsError> {
        self.inner
            .registry
            .register(Box::new(OperatorStateCollector::new(readiness, sessions)?))
            .map_err(MetricsError::Register)
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> Result<Vec<u8>, MetricsError> {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut buffer)
            .map_err(MetricsError::Encode)?;
        Ok(buffer)
    }
}

impl Families {
    /// Records a phase change of a session, and its completion when the new phase is terminal.
    pub fn record_transition(&self, namespace: &str, from: &str, to: &str, terminal: bool) {
        self.phase_transitions
            .with_label_values(&[namespace, from, to])
            .inc();
        if terminal {
            self.sessions_completed
                .with_label_values(&[namespace, to])
                .inc();
        }
    }

    /// Records one reconcile's duration under the phase it started in.
    pub fn record_reconcile(&self, phase: &str, success: bool, took: Duration) {
        self.reconcile_duration
            .with_label_values(&[phase, if success { "true" } else { "false" }])
            .observe(took.as_secs_f64());
    }
}

/// Every phase, in lifecycle order: `ambient_sessions_in_phase` reports each one (zeros included)
/// for every namespace that has sessions, so alerts on a phase see a series, not an absence.
const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Creating,
    Phase::Running,
    Phase::Stopping,
    Phase::Stopped,
    Phase::Completed,
    Phase::Failed,
];

/// Gauges computed when scraped: `ambient_operator_ready` from the readiness flag, and from the
/// session cache `ambient_sessions_in_phase{namespace,phase}` and `ambient_sessions_queued
/// {namespace}` (`Queued` True: waiting for Kueue's admission). Counts over the cache, so
/// nothing has to be kept in step with it; a namespace with sessions reports zeros too.
pub struct OperatorStateCollector {
    readiness: Readiness,
    sessions: Store<AgenticSession>,
    ready: IntGauge,
    in_phase: IntGaugeVec,
    queued: IntGaugeVec,
    descs: Vec<Desc>,
}

impl OperatorStateCollector {
    /// A collector over `readiness` and the session cache.
    pub fn new(
        readiness: Readiness,
        sessions: Store<AgenticSession>,
    ) -> Result<Self, MetricsError> {
        let ready = IntGauge::new(
            "ambient_operator_ready",
            "1 once every cache has synced (what /readyz answers), 0 before",
        )
        .map_err(MetricsError::Register)?;
        let in_phase = IntGaugeVec::new(
            Opts::new(
                "ambient_sessions_in_phase",
                "AgenticSessions in the operator's cache by namespace and phase",
            ),
            &["namespace", "phase"],
        )
        .map_err(MetricsError::Register)?;
        let queued = IntGaugeVec::new(
            Opts::new(
                "ambient_sessions_queued",
                "AgenticSessions whose runner Job waits for Kueue's admission, by namespace",
            ),
            &["namespace"],
        )
        .map_err(MetricsError::Register)?;
        let descs = ready
            .desc()
            .into_iter()
            .chain(in_phase.desc())
            .chain(queued.desc())
            .cloned()
            .collect();
        Ok(OperatorStateCollector {
            readiness,
            sessions,
            ready,
            in_phase,
            queued,
            descs,
        })
    }
}

impl Collector for OperatorStateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.ready.set(i64::from(self.readiness.is_ready()));
        // Per namespace: sessions by phase, then the queued ones.
        let mut counts: BTreeMap<String, ([i64; PHASES.len()], i64)> = BTreeMap::new();
        for session in self.sessions.state() {
            let phase = session.status.as_ref().map(|s| s.phase).unwrap_or_default();
            let namespace = session.metadata.namespace.clone().unwrap_or_default();
            let (by_phase, queued) = counts.entry(namespace).or_default();
            if let Some(slot) = PHASES.iter().position(|p| *p == phase) {
                by_phase[slot] += 1;
            }
            *queued += i64::from(is_queued(&session));
        }
        // Namespaces whose sessions are all gone disappear instead of reporting zeros forever.
        self.in_phase.reset();
        self.queued.reset();
        for (namespace, (by_phase, queued)) in &counts {
            for (phase, count) in PHASES.iter().zip(by_phase) {
                self.in_phase
                    .with_label_values(&[namespace.as_str(), phase.as_str()])
                    .set(*count);
            }
            self.queued
                .with_label_values(&[namespace.as_str()])
                .set(*queued);
        }
        self.ready
            .collect()
            .into_iter()
            .chain(self.in_phase.collect())
            .chain(self.queued.collect())
            .collect()
    }
}

/// Whether `session` waits for Kueue's admission (condition `Queued` True).
fn is_queued(session: &AgenticSession) -> bool {
    session.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == types::QUEUED && c.status == ConditionStatus::True)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.encode().unwrap()).unwrap()
    }

    #[test]
    fn every_family_of_the_original_operator_is_exported_once_recorded() {
        let metrics = Metrics::new().unwrap();
        let f = metrics.families();
        f.session_startup_duration
            .with_label_values(&["ns"])
            .observe(1.0);
        f.sessions_total.with_label_values(&["ns"]).inc();
        f.record_transition("ns", "Running", "Completed", true);
        f.record_reconcile("Running", true, Duration::from_millis(3));
        f.pod_creation_duration
            .with_label_values(&["ns"])
            .observe(1.0);
        f.token_provision_duration
            .with_label_values(&["ns"])
            .observe(0.1);
        f.session_errors
            .with_label_values(&["ns", "Pending", "api"])
            .inc();
        let body = text(&metrics);
        for family in [
            "ambient_session_startup_duration_seconds_bucket{namespace=\"ns\"",
            "ambient_sessions_total{namespace=\"ns\"} 1",
            "ambient_sessions_completed_total{final_phase=\"Completed\",namespace=\"ns\"} 1",
            "ambient_session_phase_transitions_total{from_phase=\"Running\",namespace=\"ns\",to_phase=\"Completed\"} 1",
            "ambient_reconcile_duration_seconds_count{phase=\"Running\",success=\"true\"} 1",
            "ambient_pod_creation_duration_seconds_count{namespace=\"ns\"} 1",
            "ambient_token_provision_duration_seconds_count{namespace=\"ns\"} 1",
            "ambient_session_errors_total{error_type=\"api\",namespace=\"ns\",phase=\"Pending\"} 1",
        ] {
            assert!(body.contains(family), "missing {family} in\n{body}");
        }
    }

    #[test]
    fn process_metrics_are_exported() {
        let body = text(&Metrics::new().unwrap());
        assert!(body.contains("process_resident_memory_bytes"), "{body}");
    }

    #[test]
    fn sessions_are_counted_by_namespace_and_phase_with_zeros_for_the_other_phases() {
        use agentic_crds::AgenticSessionStatus;
        use kube::runtime::watcher::Event;
        let metrics = Metrics::new().unwrap();
        let mut writer = crate::cache::Writer::<AgenticSession>::default();
        let readiness = Readiness::default();
        metrics
            .register_operator_state(readiness.clone(), writer.as_reader())
            .unwrap();
        let session = |namespace: &str, name: &str, phase: Option<Phase>| {
            let mut s = AgenticSession::new(name, agentic_crds::AgenticSessionSpec::default());
            s.metadata.namespace = Some(namespace.into());
            s.status = phase.map(|phase| AgenticSessionStatus {
                phase,
                ..Default::default()
            });
            s
        };
        writer.apply_watcher_event(&Event::InitApply(session("a", "new", None)));
        writer.apply_watcher_event(&Event::InitApply(session("a", "one", Some(Phase::Running))));
        writer.apply_watcher_event(&Event::InitApply(session("a", "two", Some(Phase::Running))));
        writer.apply_watcher_event(&Event::InitApply(session("b", "x", Some(Phase::Failed))));
        let mut waiting = session("a", "waiting", Some(Phase::Creating));
        if let Some(status) = waiting.status.as_mut() {
            status.conditions.push(agentic_crds::Condition::new(
                types::QUEUED,
                ConditionStatus::True,
                "Pending",
                "couldn't assign flavors to pod set main",
            ));
        }
        writer.apply_watcher_event(&Event::InitApply(waiting));
        writer.apply_watcher_event(&Event::InitDone);
        let body = text(&metrics);
        for line in [
            "ambient_sessions_in_phase{namespace=\"a\",phase=\"Pending\"} 1",
            "ambient_sessions_in_phase{namespace=\"a\",phase=\"Running\"} 2",
            "ambient_sessions_in_phase{namespace=\"a\",phase=\"Creating\"} 1",
            "ambient_sessions_in_phase{namespace=\"b\",phase=\"Failed\"} 1",
            "ambient_sessions_in_phase{namespace=\"b\",phase=\"Pending\"} 0",
            "ambient_sessions_queued{namespace=\"a\"} 1",
            "ambient_sessions_queued{namespace=\"b\"} 0",
            "ambient_operator_ready 0",
        ] {
            assert!(body.contains(line), "missing {line} in\n{body}");
        }

        readiness.set(true);
        writer.apply_watcher_event(&Event::Delete(session("b", "x", Some(Phase::Failed))));
        let body = text(&metrics);
        assert!(body.contains("ambient_operator_ready 1"), "{body}");
        assert!(!body.contains("namespace=\"b\""), "{body}");
    }

    #[test]
    fn a_transition_to_a_non_terminal_phase_is_not_a_completion() {
        let metrics = Metrics::new().unwrap();
        metrics
            .families()
            .record_transition("ns", "Pending", "Creating", false);
        assert!(!text(&metrics).contains("ambient_sessions_completed_total{"));
    }
}

//! The controller's Prometheus metrics (served by [`super::admin`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabel {
    /// `close` (waits for the end) or `all` (progress).
    pub filter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabel {
    /// `phase` (written at once) or `step` (paced).
    pub change: String,
}

/// Latency buckets (seconds) fine around the targets (50 ms, 100 ms) and
/// wide enough for a saturated run.
const LATENCY_BUCKETS: [f64; 20] = [
    0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<CategoryLabel, Counter>,
    pub status_patches: Family<OutcomeLabel, Counter>,
    pub workflows_started: Counter,
    /// From the API accepting a Payment (or, without the API's stamp, the
    /// controller first seeing it) to its workflow started.
    pub start_latency: Histogram,
    /// From a workflow change (its history event's time) to the status
    /// written, by kind of change.
    pub status_latency: Family<ChangeLabel, Histogram, fn() -> Histogram>,
    pub watched_workflows: Gauge,
    /// History long polls made, by filter.
    pub history_polls: Family<FilterLabel, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            reconciles: Counter::default(),
            failures: Family::default(),
            status_patches: Family::default(),
            workflows_started: Counter::default(),
            start_latency: latency_histogram(),
            status_latency: Family::new_with_constructor(latency_histogram),
            watched_workflows: Gauge::default(),
            history_polls: Family::default(),
            registry: Registry::with_prefix("paysaga_controller"),
        };
        let r = &mut m.registry;
        r.register("reconciles", "Reconciles run", m.reconciles.clone());
        r.register(
            "reconcile_failures",
            "Reconciles failed, by category",
            m.failures.clone(),
        );
        r.register(
            "status_patches",
            "Status writes by outcome (applied, applied_step, paced, unchanged, error)",
            m.status_patches.clone(),
        );
        r.register(
            "workflows_started",
            "Payment workflows started",
            m.workflows_started.clone(),
        );
        r.register(
            "start_latency_seconds",
            "From a Payment accepted by the API (or first seen) to its workflow started",
            m.start_latency.clone(),
        );
        r.register(
            "status_latency_seconds",
            "From a workflow change to the Payment status written, by change (phase: at once; step: paced)",
            m.status_latency.clone(),
        );
        r.register(
            "history_polls",
            "Workflow history long polls made, by filter (close, all)",
            m.history_polls.clone(),
        );
        r.register(
            "watched_workflows",
            "Running workflows whose history is long-polled",
            m.watched_workflows.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn failure(&self, category: &str) {
        self.failures
            .get_or_create(&CategoryLabel {
                category: category.to_string(),
            })
            .inc();
    }

    pub fn status_latency(&self, change: super::plan::pace::Change, latency: std::time::Duration) {
        self.status_latency
            .get_or_create(&ChangeLabel {
                change: change.label().to_string(),
            })
            .observe(latency.as_secs_f64());
    }

    pub fn status_patch(&self, outcome: &str) {
        self.status_patches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

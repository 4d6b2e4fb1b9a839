//! The controller's Prometheus metrics (served by [`super::admin`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use kube::runtime::reflector::Store;

use super::cache::Cached;

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
pub struct EventLabel {
    /// `Normal` or `Warning`.
    pub r#type: String,
    pub reason: String,
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
    /// Events published, by type and reason (what to alert on: e.g.
    /// `Warning`/`ChargeMismatch`, `Warning`/`NeedsReview`).
    pub events: Family<EventLabel, Counter>,
    /// 1 when Temporal answered the controller's last probe, else 0.
    pub temporal_reachable: Gauge,
    /// Payments whose status records no end yet, and the age of the oldest
    /// (0 when none): read from the cache at each scrape.
    open_payments: Gauge,
    oldest_open_age: Gauge<f64, AtomicU64>,
    /// The cache those are read from while the controller leads.
    cache: Mutex<Option<Store<Cached>>>,
    registry: Registry,
}

/// Registers `metric` under `name`, and gives it back.
fn register<M>(r: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    r.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("paysaga_controller");
        let r = &mut registry;
        Metrics {
            reconciles: register(r, "reconciles", "Reconciles run", Counter::default()),
            failures: register(
                r,
                "reconcile_failures",
                "Reconciles failed, by category",
                Family::default(),
            ),
            status_patches: register(
                r,
                "status_patches",
                "Status writes by outcome (applied, applied_step, paced, unchanged, error)",
                Family::default(),
            ),
            workflows_started: register(
                r,
                "workflows_started",
                "Payment workflows started",
                Counter::default(),
            ),
            start_latency: register(
                r,
                "start_latency_seconds",
                "From a Payment accepted by the API (or first seen) to its workflow started",
                latency_histogram(),
            ),
            status_latency: register(
                r,
                "status_latency_seconds",
                "From a workflow change to the Payment status written, by change (phase: at once; step: paced)",
                Family::new_with_constructor(latency_histogram),
            ),
            history_polls: register(
                r,
                "history_polls",
                "Workflow history long polls made, by filter (close, all)",
                Family::default(),
            ),
            events: register(
                r,
                "events",
                "Kubernetes Events published about Payments, by type and reason",
                Family::default(),
            ),
            watched_workflows: register(
                r,
                "watched_workflows",
                "Running workflows whose history is long-polled",
                Gauge::default(),
            ),
            temporal_reachable: register(
                r,
                "temporal_reachable",
                "1 when Temporal answered the controller's last probe, else 0",
                Gauge::default(),
            ),
            open_payments: register(
                r,
                "open_payments",
                "Payments whose status records no end yet (the leader's count; a standby reports 0)",
                Gauge::default(),
            ),
            oldest_open_age: register(
                r,
                "oldest_open_payment_age_seconds",
                "Age of the oldest Payment whose status records no end yet, 0 when none (a standby reports 0)",
                Gauge::default(),
            ),
            cache: Mutex::new(None),
            registry,
        }
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

    pub fn event(&self, type_: &str, reason: &str) {
        self.events
            .get_or_create(&EventLabel {
                r#type: type_.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn status_patch(&self, outcome: &str) {
        self.status_patches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Reads open payments from `cache` at each scrape from now on; `None`
    /// when it stops leading (the gauges then read 0).
    pub fn watch_open_payments(&self, cache: Option<Store<Cached>>) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = cache;
    }

    pub fn encode(&self) -> String {
        let open: Vec<_> = match &*self.cache.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(cache) => cache
                .state()
                .iter()
                .filter_map(|p| p.open_since())
                .collect(),
            None => Vec::new(),
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let oldest = open.iter().min().map_or(0.0, |t| {
            (now.as_millisecond() - t.as_millisecond()).max(0) as f64 / 1000.0
        });
        self.open_payments.set(open.len() as i64);
        self.oldest_open_age.set(oldest);
        crate::openmetrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_payments_are_counted_from_the_cache_at_each_scrape() {
        let m = Metrics::default();
        let text = m.encode();
        assert!(
            text.contains("paysaga_controller_open_payments 0"),
            "{text}"
        );
        let (reader, mut writer) = kube::runtime::reflector::store::<Cached>();
        let created = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(90);
        let payment = |name: &str, ended: bool| {
            let mut o = serde_json::json!({
                "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment",
                "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created.to_string()},
                "spec": {"userId": "alice", "amount": 100, "currency": "EUR", "method": "card"},
            });
            if ended {
                o["status"] =
                    serde_json::json!({"phase": "Succeeded", "completedAt": created.to_string()});
            }
            Cached::from_value(o)
        };
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(payment("a", false)));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(payment("b", true)));
        m.watch_open_payments(Some(reader));
        let text = m.encode();
        assert!(
            text.contains("paysaga_controller_open_payments 1"),
            "{text}"
        );
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("paysaga_controller_oldest_open_payment_age_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("the age is exported");
        assert!((90.0..120.0).contains(&age), "{age}: {text}");
    }

    #[test]
    fn events_are_counted_by_type_and_reason() {
        let m = Metrics::default();
        m.event("Warning", "ChargeMismatch");
        m.event("Warning", "ChargeMismatch");
        let text = m.encode();
        assert!(
            text.contains(
                r#"paysaga_controller_events_total{type="Warning",reason="ChargeMismatch"} 2"#
            ),
            "{text}"
        );
    }
}

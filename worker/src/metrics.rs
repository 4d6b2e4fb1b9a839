//! The worker's Prometheus metrics: the Temporal SDK's own (task latencies,
//! pollers and slots, the sticky cache, …, prefixed `temporal_`) and
//! paysaga's (prefixed `paysaga_`), in one registry.
//!
//! The SDK exports its registry with a server of its own and keeps the
//! registry private, so paysaga's instruments are made by the same meter:
//! one registry, one text format. That server listens on loopback only, on a
//! port of the system's choosing; the admin endpoints answer `/metrics` by
//! asking it ([`Metrics::scrape`]), so probes and metrics share the admin
//! port.
//!
//! Only activities record: workflow code is replayed, and a counter bumped in
//! it would count a payment again on every replay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, HistogramDuration, MetricKeyValue, MetricParameters, NoOpCoreMeter,
};
use temporalio_common::telemetry::{
    HistogramBucketOverrides, PrometheusExporterOptions, start_prometheus_metric_exporter,
};

/// The ledger's latency buckets (seconds): its operations take milliseconds.
const LEDGER_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The meter and, when exported, where the SDK's exporter listens.
#[derive(Clone)]
pub struct Metrics {
    meter: Arc<dyn CoreMeter>,
    exporter: Option<SocketAddr>,
    instruments: Arc<Instruments>,
}

struct Instruments {
    payments_finished: Counter,
    compensations: Counter,
    gateway_requests: Counter,
    ledger_ops: HistogramDuration,
    webhook_attempts: Counter,
}

impl Default for Metrics {
    /// Records nothing (tests that start many workers in one process).
    fn default() -> Self {
        Metrics::with_meter(Arc::new(NoOpCoreMeter), None)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("exporter", &self.exporter)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Starts the SDK's exporter on loopback. Durations in seconds, counters
    /// with `_total` and units in the names: Prometheus' conventions.
    pub fn export() -> anyhow::Result<Metrics> {
        let overrides = HistogramBucketOverrides {
            overrides: HashMap::from([(
                "paysaga_ledger_operation_duration".to_string(),
                LEDGER_BUCKETS.to_vec(),
            )]),
        };
        let options = PrometheusExporterOptions::builder()
            .socket_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .counters_total_suffix(true)
            .unit_suffix(true)
            .use_seconds_for_durations(true)
            .histogram_bucket_overrides(overrides)
            .build();
        let started = start_prometheus_metric_exporter(options)
            .map_err(|e| anyhow::anyhow!("starting the metrics exporter: {e}"))?;
        Ok(Metrics::with_meter(started.meter, Some(started.bound_addr)))
    }

    fn with_meter(meter: Arc<dyn CoreMeter>, exporter: Option<SocketAddr>) -> Metrics {
        let params = |name: &'static str, description: &'static str| {
            MetricParameters::builder()
                .name(name)
                .description(description)
                .build()
        };
        let instruments = Instruments {
            payments_finished: meter.counter(params(
                "paysaga_payments_finished",
                "Payments whose saga ended, by phase and reason (recorded once per payment)",
            )),
            compensations: meter.counter(params(
                "paysaga_compensation_attempts",
                "Compensation attempts, by the step undone and their result",
            )),
            gateway_requests: meter.counter(params(
                "paysaga_gateway_requests",
                "Requests to the payment gateway, by operation and outcome",
            )),
            webhook_attempts: meter.counter(params(
                "paysaga_webhook_attempts",
                "Webhook delivery attempts by result (delivered, failed, gaveUp)",
            )),
            ledger_ops: meter.histogram_duration(params(
                "paysaga_ledger_operation_duration",
                "Time of the ledger's operations, by operation and result",
            )),
        };
        Metrics {
            meter,
            exporter,
            instruments: Arc::new(instruments),
        }
    }

    /// The meter, for the SDK's runtime (its own metrics go to the same registry).
    pub fn meter(&self) -> Option<Arc<dyn CoreMeter>> {
        self.exporter.map(|_| self.meter.clone())
    }

    fn attributes(
        &self,
        pairs: &[(&'static str, &str)],
    ) -> temporalio_common::telemetry::metrics::MetricAttributes {
        self.meter.new_attributes(
            pairs
                .iter()
                .map(|(k, v)| MetricKeyValue::new(*k, v.to_string()))
                .into(),
        )
    }

    /// A payment's saga ended as `phase` for `reason`.
    pub fn payment_finished(&self, phase: &str, reason: &str) {
        let attrs = self.attributes(&[("phase", phase), ("reason", reason)]);
        self.instruments.payments_finished.add(1, &attrs);
    }

    /// An attempt to undo `step`: `result` is `done`, `nothing` (nothing was
    /// held) or `failed` (the retry policy tries again).
    pub fn compensation(&self, step: &str, result: &str) {
        let attrs = self.attributes(&[("step", step), ("result", result)]);
        self.instruments.compensations.add(1, &attrs);
    }

    /// A request to the gateway: `operation` is `charge`, `refund`,
    /// `status` or `refund_charge`; `outcome` is `ok`, `declined`,
    /// `refused` (any other 4xx) or `unavailable` (network error, 5xx, 408, 429).
    pub fn gateway_request(&self, operation: &str, outcome: &str) {
        let attrs = self.attributes(&[("operation", operation), ("outcome", outcome)]);
        self.instruments.gateway_requests.add(1, &attrs);
    }

    /// A webhook delivery attempt: `delivered`, `failed` (retried) or
    /// `gaveUp` (every retry failed).
    pub fn webhook_attempt(&self, result: &str) {
        let attrs = self.attributes(&[("result", result)]);
        self.instruments.webhook_attempts.add(1, &attrs);
    }

    /// Times `op` on the ledger.
    pub async fn ledger<T, E>(
        &self,
        op: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = work.await;
        self.ledger_elapsed(op, result.is_ok(), started.elapsed());
        result
    }

    fn ledger_elapsed(&self, op: &str, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        let attrs = self.attributes(&[("operation", op), ("result", result)]);
        self.instruments.ledger_ops.record(elapsed, &attrs);
    }

    /// The exporter's text (Prometheus text format 0.0.4); `None` when
    /// nothing is exported.
    pub async fn scrape(&self, http: &reqwest::Client) -> Option<anyhow::Result<String>> {
        let addr = self.exporter?;
        let text = async {
            let resp = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await?
                .error_for_status()?;
            Ok(resp.text().await?)
        };
        Some(text.await)
    }
}

/// The content type of what [`Metrics::scrape`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

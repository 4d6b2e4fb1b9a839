//! Logs and traces: the global subscriber every binary installs, and, when
//! an OTLP endpoint is configured, OpenTelemetry spans exported over
//! OTLP/HTTP so that one payment is one trace across the API, the
//! controller, the worker and the simulators.
//!
//! The context travels as W3C `traceparent`: in HTTP headers (the client's,
//! the worker's calls to the simulators, the gateway's callbacks), on the
//! Payment (`paysaga.dev/traceparent`, written by the API, read by the
//! controller), and through Temporal in the `_tracer-data` header that the
//! Temporal SDK's OpenTelemetry plugin puts on workflow starts, activities and
//! child workflows ([`temporal_plugin`]).
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g.
//! `http://127.0.0.1:4318`), `OTEL_EXPORTER_ZIPKIN_ENDPOINT` (e.g.
//! `http://127.0.0.1:9411/api/v2/spans`: the same spans in Zipkin's format too,
//! for a Zipkin server's UI; `make dev` sets both), `OTEL_SERVICE_NAME`
//! (default: the binary's role). With neither endpoint no spans are made.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::LogFormat;

mod zipkin;

/// The header (and annotation value) format of a span's context.
pub const TRACEPARENT: &str = "traceparent";

/// Which tracing spans become OpenTelemetry spans: paysaga's own at info
/// and above. Not the libraries': the Temporal SDK's internal spans (polls,
/// activations) would each be a trace of their own, and kube-runtime's
/// "reconciling object" would hold the reconcile away from the trace of the
/// request that made the payment. (The Temporal SDK's plugin makes its spans
/// with the OpenTelemetry API: starts, workflows, activities.)
const TRACED: &str = "info,temporalio_sdk_core=off,temporalio_sdk=off,temporalio_client=off,\
    temporalio_common=off,kube=off,kube_client=off,kube_runtime=off,h2=off,hyper=off,\
    hyper_util=off,tower=off,reqwest=off,sqlx=off";

/// The provider, while traces are exported; flushed when dropped.
#[must_use = "dropping it flushes and stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

static ENABLED: OnceLock<bool> = OnceLock::new();

/// Whether spans are exported (an OTLP or Zipkin endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

/// Where spans go, from the environment.
#[derive(Debug)]
struct Endpoints {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; `/v1/traces` is appended.
    otlp: Option<String>,
    /// `OTEL_EXPORTER_ZIPKIN_ENDPOINT`, whole (`…/api/v2/spans`).
    zipkin: Option<String>,
}

impl Endpoints {
    fn from_env() -> Endpoints {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|e| e.trim().trim_end_matches('/').to_string())
                .filter(|e| !e.is_empty())
        };
        Endpoints {
            otlp: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            zipkin: var("OTEL_EXPORTER_ZIPKIN_ENDPOINT"),
        }
    }

    fn any(&self) -> bool {
        self.otlp.is_some() || self.zipkin.is_some()
    }
}

impl Telemetry {
    /// Installs the global subscriber: the log filter from `RUST_LOG`
    /// (default `info`), logs on stderr in `format`; and, with an OTLP
    /// endpoint, every span (whatever the log filter) exported as
    /// `service` (or `OTEL_SERVICE_NAME`). Call from within a Tokio runtime.
    pub fn init(format: LogFormat, service: &str) -> Telemetry {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = fmt::layer().with_writer(std::io::stderr);
        let logs = match format {
            LogFormat::Text => logs
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .boxed(),
            LogFormat::Json => logs.json().boxed(),
        }
        .with_filter(filter);
        let endpoints = Endpoints::from_env();
        let provider = endpoints
            .any()
            .then(|| provider(&endpoints, service))
            .and_then(|made| match made {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("traces are not exported: {e}");
                    None
                }
            });
        let _ = ENABLED.set(provider.is_some());
        let traces = provider.as_ref().map(|p| {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            opentelemetry::global::set_tracer_provider(p.clone());
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("paysaga"))
                // A span starts when it first has a child or its context is
                // read, not when entered: the controller's reconcile learns
                // its parent (the Payment's traceparent) after it began.
                .with_context_activation(false)
                .with_filter(EnvFilter::new(TRACED))
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .init();
        if enabled() {
            tracing::info!(
                otlp = endpoints.otlp.as_deref(),
                zipkin = endpoints.zipkin.as_deref(),
                service,
                "exporting traces"
            );
        }
        Telemetry { provider }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// The tracer provider: spans batched to `otlp/v1/traces` and to the Zipkin
/// endpoint, each configured one. Workflow spans get replay-safe ids and are
/// not exported again on replay (the Temporal SDK's generator and processor).
fn provider(endpoints: &Endpoints, service: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use temporalio_sdk::opentelemetry::WorkflowSpanProcessor;
    let client = SpanClient {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?,
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| "no Tokio runtime to send spans from".to_string())?,
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    let mut builder = SdkTracerProvider::builder();
    if let Some(otlp) = &endpoints.otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_endpoint(format!("{otlp}/v1/traces"))
            .build()
            .map_err(|e| format!("OTLP exporter to {otlp}: {e}"))?;
        builder = builder.with_span_processor(WorkflowSpanProcessor::new(
            BatchSpanProcessor::builder(exporter).build(),
        ));
    }
    if let Some(zipkin) = &endpoints.zipkin {
        let exporter = zipkin::ZipkinExporter {
            client,
            endpoint: zipkin.clone(),
            service: service.clone(),
        };
        builder = builder.with_span_processor(WorkflowSpanProcessor::new(
            BatchSpanProcessor::builder(exporter).build(),
        ));
    }
    Ok(builder
        .with_id_generator(temporalio_sdk::opentelemetry::WorkflowIdGenerator::default())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// Spans sent over the workspace's reqwest (OTLP/HTTP and Zipkin alike). The
/// batch processor exports from a thread of its own, outside Tokio: each
/// request runs on the runtime the telemetry was set up in.
#[derive(Debug, Clone)]
struct SpanClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for SpanClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let http = self.http.clone();
        let answer = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = answer.await??;
        Ok(http::Response::builder().status(status).body(body)?)
    }
}

/// The Temporal SDK's OpenTelemetry plugin (spans for workflow starts,
/// signals, workflow runs, activities and child workflows, the context in
/// their `_tracer-data` header), when traces are exported.
pub fn temporal_plugin() -> Option<temporalio_sdk::SimplePlugin> {
    enabled().then(|| {
        temporalio_sdk::opentelemetry::OpenTelemetryPlugin::builder()
            .global_propagator()
            .build()
    })
}

struct Map<'a>(&'a mut HashMap<String, String>);

impl Injector for Map<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

/// A carrier holding one `traceparent`.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The OpenTelemetry context of the current tracing span; outside any, the
/// current OpenTelemetry context (an activity's, which the Temporal SDK's
/// plugin sets).
pub fn current_context() -> opentelemetry::Context {
    use opentelemetry::trace::TraceContextExt;
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        opentelemetry::Context::current()
    }
}

/// Runs `f` in the current span's OpenTelemetry context, so what it does
/// through the Temporal SDK (a start, a signal) is traced as its child.
pub fn in_current_context<F: std::future::Future>(f: F) -> opentelemetry::context::WithContext<F> {
    use opentelemetry::context::FutureExt;
    f.with_context(current_context())
}

/// The `traceparent` of the current span, when traces are exported.
pub fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&current_context(), &mut Map(&mut fields));
    fields.remove(TRACEPARENT)
}

/// A `traceparent` standing for an object that has none (a Payment made
/// with kubectl): its uid as the trace id, so every reconcile of it joins
/// one trace. The parent span is never exported: the trace shows no root.
pub fn traceparent_for_uid(uid: &str) -> Option<String> {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
    (hex.len() == 32 && hex.chars().any(|c| c != '0'))
        .then(|| {
            format!(
                "00-{}-{}-01",
                hex.to_ascii_lowercase(),
                &hex[16..].to_ascii_lowercase()
            )
        })
        .filter(|tp| !tp.contains("-0000000000000000-"))
}

/// A span name for an HTTP request: the method and the path with the
/// segment after a collection (`/v1/payments/{id}/cancel`) written `{id}`,
/// so that names stay few.
pub fn route_name(method: &str, path: &str) -> String {
    const COLLECTIONS: [&str; 7] = [
        "payments",
        "refunds",
        "recurring-payments",
        "charges",
        "scenarios",
        "merchants",
        "messages",
    ];
    let mut out = String::from(method);
    out.push(' ');
    let mut after_collection = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if after_collection && !segment.is_empty() {
            "{id}"
        } else {
            segment
        });
        after_collection = COLLECTIONS.contains(&segment);
    }
    out
}

/// Makes `span` a child of the context a `traceparent` names (from a
/// header or an annotation); a malformed one is ignored. Call before the
/// span has children.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|_| enabled()) else {
        return;
    };
    let cx = TraceContextPropagator::new().extract(&One(tp));
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid()
        && let Err(e) = span.set_parent(cx)
    {
        tracing::debug!(error = %e, "the span could not join the trace it belongs to");
    }
}

/// [`follow`] the `traceparent` header of a request, when it has one.
pub fn follow_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    follow(span, headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_endpoint_nothing_is_made_or_followed() {
        assert!(!enabled());
        assert_eq!(traceparent(), None);
        // Ignored, not a panic.
        follow(&tracing::Span::none(), Some("00-not-a-context"));
        assert!(temporal_plugin().is_none());
    }

    #[test]
    fn routes_name_their_ids_generically() {
        assert_eq!(route_name("POST", "/v1/payments"), "POST /v1/payments");
        assert_eq!(
            route_name("POST", "/v1/payments/pay-x1/cancel"),
            "POST /v1/payments/{id}/cancel"
        );
        assert_eq!(
            route_name("GET", "/gateway/v1/charges/ch_1"),
            "GET /gateway/v1/charges/{id}"
        );
        assert_eq!(
            route_name("POST", "/v1/gateway/callbacks"),
            "POST /v1/gateway/callbacks"
        );
    }

    #[test]
    fn a_uid_stands_for_a_trace() {
        assert_eq!(
            traceparent_for_uid("0a1b2c3d-4e5f-6789-abcd-ef0123456789").as_deref(),
            Some("00-0a1b2c3d4e5f6789abcdef0123456789-abcdef0123456789-01")
        );
        assert_eq!(traceparent_for_uid("not-a-uid"), None);
    }
}

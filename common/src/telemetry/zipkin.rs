//! Spans in Zipkin's JSON (API v2), for a Zipkin server: `make dev`'s trace
//! UI. Zipkin takes OTLP only through a server module that Maven Central
//! does not serve here, and the `opentelemetry-zipkin` crate (deprecated)
//! sends no service name since 0.32, so a span is written here, field by
//! field: <https://zipkin.io/zipkin-api/#/default/post_spans>.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry_http::HttpClient;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::{Map, Value, json};

use super::SpanClient;

/// Sends each batch as one `POST <endpoint>` (`…/api/v2/spans`).
#[derive(Debug)]
pub(super) struct ZipkinExporter {
    pub(super) client: SpanClient,
    pub(super) endpoint: String,
    /// `localEndpoint.serviceName`: the service the provider's resource names.
    pub(super) service: String,
}

impl SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans: Vec<Value> = batch.iter().map(|s| span(&self.service, s)).collect();
        let failed = |what: String| OTelSdkError::InternalFailure(what);
        let body = serde_json::to_vec(&spans).map_err(|e| failed(e.to_string()))?;
        let request = http::Request::post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes::Bytes::from(body))
            .map_err(|e| failed(format!("a request to {}: {e}", self.endpoint)))?;
        let answer = self
            .client
            .send_bytes(request)
            .await
            .map_err(|e| failed(format!("sending spans to {}: {e}", self.endpoint)))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(failed(format!(
                "{} answered {} to {} spans",
                self.endpoint,
                answer.status(),
                spans.len()
            )))
        }
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One span as Zipkin's JSON: ids in hex, times in microseconds, attributes
/// as string tags, events as annotations, an error status as the `error` tag.
fn span(service: &str, s: &SpanData) -> Value {
    let start = micros(s.start_time);
    let mut tags: Map<String, Value> = s
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), Value::String(kv.value.to_string())))
        .collect();
    tags.insert(
        "otel.scope.name".into(),
        s.instrumentation_scope.name().into(),
    );
    match &s.status {
        Status::Error { description } => {
            tags.insert("otel.status_code".into(), "ERROR".into());
            let said = if description.is_empty() {
                "true"
            } else {
                description
            };
            tags.insert("error".into(), said.into());
        }
        Status::Ok => {
            tags.insert("otel.status_code".into(), "OK".into());
        }
        Status::Unset => {}
    }
    let mut out = json!({
        "traceId": s.span_context.trace_id().to_string(),
        "id": s.span_context.span_id().to_string(),
        "name": s.name,
        "timestamp": start,
        // Zipkin wants at least 1 µs.
        "duration": micros(s.end_time).saturating_sub(start).max(1),
        "localEndpoint": {"serviceName": service},
        "tags": tags,
    });
    if s.parent_span_id != SpanId::INVALID {
        out["parentId"] = s.parent_span_id.to_string().into();
    }
    let kind = match s.span_kind {
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Server => Some("SERVER"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    if let Some(kind) = kind {
        out["kind"] = kind.into();
    }
    let annotations: Vec<Value> = s
        .events
        .iter()
        .map(|e| json!({"timestamp": micros(e.timestamp), "value": e.name}))
        .collect();
    if !annotations.is_empty() {
        out["annotations"] = annotations.into();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn data(parent: SpanId, kind: SpanKind, status: Status) -> SpanData {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
        let mut events = SpanEvents::default();
        events.events.push(opentelemetry::trace::Event::new(
            "charge accepted",
            at + Duration::from_micros(5),
            vec![],
            0,
        ));
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap(),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: kind,
            name: "POST /gateway/v1/charges".into(),
            start_time: at,
            end_time: at + Duration::from_micros(736),
            attributes: vec![
                KeyValue::new("request_id", "req-1"),
                KeyValue::new("busy_ns", 639_014),
            ],
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("paysaga").build(),
        }
    }

    #[test]
    fn a_span_is_written_as_zipkin_reads_it() {
        let parent = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let written = span(
            "paysaga-sim",
            &data(parent, SpanKind::Server, Status::Unset),
        );
        assert_eq!(
            written,
            json!({
                "traceId": "0af7651916cd43dd8448eb211c80319c",
                "id": "b7ad6b7169203331",
                "parentId": "00f067aa0ba902b7",
                "kind": "SERVER",
                "name": "POST /gateway/v1/charges",
                "timestamp": 1_700_000_000_000_000u64,
                "duration": 736,
                "localEndpoint": {"serviceName": "paysaga-sim"},
                "annotations": [{"timestamp": 1_700_000_000_000_005u64, "value": "charge accepted"}],
                "tags": {"request_id": "req-1", "busy_ns": "639014", "otel.scope.name": "paysaga"},
            })
        );
    }

    #[test]
    fn a_root_has_no_parent_an_internal_span_no_kind_and_an_error_is_tagged() {
        let written = span(
            "paysaga-api",
            &data(
                SpanId::INVALID,
                SpanKind::Internal,
                Status::error("gateway refused"),
            ),
        );
        assert!(written.get("parentId").is_none(), "{written}");
        assert!(written.get("kind").is_none(), "{written}");
        assert_eq!(written["tags"]["error"], "gateway refused");
        assert_eq!(written["tags"]["otel.status_code"], "ERROR");
    }
}

//! A real trace backend: Jaeger v2 (built from its Go module by `make
//! tools`), receiving OTLP over HTTP, keeping traces in memory, answering
//! its query API (`/api/traces/{id}`, `/api/services`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, tool};

pub struct JaegerEnv {
    /// The query API and (placeholder) UI, `http://127.0.0.1:<port>`.
    pub url: String,
    pub query_port: u16,
    /// Where spans go: `http://127.0.0.1:<port>` (OTLP/HTTP; `/v1/traces`
    /// is appended), as `OTEL_EXPORTER_OTLP_ENDPOINT` wants it.
    pub otlp_endpoint: String,
    proc: Proc,
}

/// One span of a trace, as the query API gives it.
#[derive(Debug, Clone)]
pub struct Span {
    pub id: String,
    pub parent: Option<String>,
    pub service: String,
    pub name: String,
    /// Microseconds since the epoch, and how long.
    pub start_us: i64,
    pub duration_us: i64,
    pub tags: HashMap<String, String>,
}

impl JaegerEnv {
    /// Starts Jaeger on free ports; `query_port` when given (make dev's 16686).
    pub fn start(dir: &Path, query_port: Option<u16>) -> Result<JaegerEnv> {
        std::fs::create_dir_all(dir)?;
        let query_port = match query_port {
            Some(p) => p,
            None => free_port()?,
        };
        let otlp_port = free_port()?;
        let config = dir.join("jaeger.yaml");
        std::fs::write(&config, config_text(query_port, otlp_port, free_port()?))?;
        let args = vec![format!("--config=file:{}", config.display())];
        let mut proc = Proc::spawn("jaeger", dir, "TERM", tool("jaeger"), &args)?;
        proc.wait_ready(Duration::from_secs(60), || {
            crate::http_get_ok("127.0.0.1", query_port, "/api/services")
        })?;
        Ok(JaegerEnv {
            url: format!("http://127.0.0.1:{query_port}"),
            query_port,
            otlp_endpoint: format!("http://127.0.0.1:{otlp_port}"),
            proc,
        })
    }

    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }

    /// The services that sent spans.
    pub fn services(&self) -> Result<Vec<String>> {
        let answer = self.get("/api/services")?;
        Ok(answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect())
    }

    /// Every span of trace `trace_id` (32 hex digits) received so far.
    pub fn trace(&self, trace_id: &str) -> Result<Vec<Span>> {
        let answer = self.get(&format!("/api/traces/{trace_id}"))?;
        let Some(trace) = answer["data"].as_array().and_then(|d| d.first()) else {
            return Ok(Vec::new());
        };
        let services: HashMap<&str, &str> = trace["processes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, p)| (k.as_str(), p["serviceName"].as_str().unwrap_or("")))
            .collect();
        Ok(trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| Span {
                id: s["spanID"].as_str().unwrap_or("").into(),
                parent: s["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str())
                    .map(str::to_string),
                service: services
                    .get(s["processID"].as_str().unwrap_or(""))
                    .copied()
                    .unwrap_or("")
                    .into(),
                name: s["operationName"].as_str().unwrap_or("").into(),
                start_us: s["startTime"].as_i64().unwrap_or(0),
                duration_us: s["duration"].as_i64().unwrap_or(0),
                tags: s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let v = match &t["value"] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (t["key"].as_str().unwrap_or("").to_string(), v)
                    })
                    .collect(),
            })
            .collect())
    }

    /// The trace as Jaeger's JSON (what `/api/traces/{id}` answers).
    pub fn trace_json(&self, trace_id: &str) -> Result<Value> {
        self.get(&format!("/api/traces/{trace_id}"))
    }

    fn get(&self, target: &str) -> Result<Value> {
        let body = crate::http_get_body(self.query_port, target)?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("Jaeger answered {target} with {body}"))?;
        if let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) {
            bail!("Jaeger refused {target}: {errors:?}");
        }
        Ok(v)
    }
}

/// Jaeger v2's configuration: OTLP/HTTP in, memory storage, the query
/// extension; its own telemetry quiet and off the well-known ports.
fn config_text(query_port: u16, otlp_port: u16, grpc_port: u16) -> String {
    format!(
        r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{grpc_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_its_ports() {
        let text = config_text(16686, 4318, 16685);
        assert!(text.contains("endpoint: 127.0.0.1:16686"), "{text}");
        assert!(
            text.contains("http:\n        endpoint: 127.0.0.1:4318"),
            "{text}"
        );
    }
}

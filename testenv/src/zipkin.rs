//! The trace UI: Zipkin's server (its executable jar from Maven Central,
//! installed by `make tools`), keeping spans in memory, with its web UI
//! (Zipkin Lens) at `/zipkin/` and its API at `/api/v2/`.
//!
//! Jaeger stays the trace backend the tests and tools query over OTLP; its
//! UI is an npm build that no registry here serves, so its page is a
//! placeholder. Zipkin's jar carries its UI built, and paysaga's components
//! send it the same spans in Zipkin's format when
//! `OTEL_EXPORTER_ZIPKIN_ENDPOINT` is set.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, tool};

pub struct ZipkinEnv {
    /// The server, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The web UI, `<url>/zipkin/`.
    pub ui_url: String,
    /// Where spans go (`OTEL_EXPORTER_ZIPKIN_ENDPOINT`): `<url>/api/v2/spans`.
    pub spans_endpoint: String,
    port: u16,
    proc: Proc,
}

/// One span of a trace, as Zipkin's API gives it.
#[derive(Debug, Clone)]
pub struct ZipkinSpan {
    pub id: String,
    pub parent: Option<String>,
    pub service: String,
    pub name: String,
}

impl ZipkinEnv {
    /// Starts Zipkin on `port` (make dev's 9411) or a free one.
    pub fn start(dir: &Path, port: Option<u16>) -> Result<ZipkinEnv> {
        std::fs::create_dir_all(dir)?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        // Zipkin's own settings are environment variables; the launcher in
        // .tools/bin passes the JVM's (a small heap: spans stay in memory).
        let mut proc = Proc::spawn_with_env(
            "zipkin",
            dir,
            "TERM",
            tool("zipkin"),
            &[] as &[String],
            &[
                ("QUERY_PORT", port.to_string().as_ref()),
                ("STORAGE_TYPE", "mem".as_ref()),
                ("MEM_MAX_SPANS", "200000".as_ref()),
            ],
        )?;
        proc.wait_ready(Duration::from_secs(90), || {
            crate::http_get_ok("127.0.0.1", port, "/health")
        })?;
        let url = format!("http://127.0.0.1:{port}");
        Ok(ZipkinEnv {
            ui_url: format!("{url}/zipkin/"),
            spans_endpoint: format!("{url}/api/v2/spans"),
            url,
            port,
            proc,
        })
    }

    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }

    /// Every span of trace `trace_id` (32 hex digits) received so far.
    pub fn trace(&self, trace_id: &str) -> Result<Vec<ZipkinSpan>> {
        let target = format!("/api/v2/trace/{trace_id}");
        // 404 until its first span arrives.
        if crate::http_get_status("127.0.0.1", self.port, &target, &[]) == Some(404) {
            return Ok(Vec::new());
        }
        let body = crate::http_get_body(self.port, &target)?;
        let spans: Vec<Value> = serde_json::from_str(&body)
            .with_context(|| format!("Zipkin answered {target} with {body}"))?;
        Ok(spans
            .iter()
            .map(|s| ZipkinSpan {
                id: s["id"].as_str().unwrap_or("").into(),
                parent: s["parentId"].as_str().map(str::to_string),
                service: s["localEndpoint"]["serviceName"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
                name: s["name"].as_str().unwrap_or("").into(),
            })
            .collect())
    }

    /// The body of a GET of `target` on the server (the UI's page and assets).
    pub fn get(&self, target: &str) -> Result<String> {
        crate::http_get_body(self.port, target)
    }
}

//! Running a k6 script (the real k6 from `make tools`) and reading its
//! summary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

/// A k6 run to make.
pub struct Run<'a> {
    /// The script, relative to the workspace (`k6/load.js`).
    pub script: &'a str,
    /// `-e NAME=VALUE` for the script.
    pub env: Vec<(String, String)>,
    /// Where `summary.json` and the HTML report (`report.html`, throughput
    /// and latency over time, from k6's web dashboard) go.
    pub out: &'a Path,
    /// Print k6's own output (progress and end-of-test summary).
    pub verbose: bool,
}

/// What a run left.
pub struct Outcome {
    /// k6's exit code: 0, or 99 when a threshold failed.
    pub code: i32,
    pub summary: Summary,
    /// k6's HTML report; k6 skips it for runs too short to plot (~20 s).
    pub report: Option<PathBuf>,
    /// CPU seconds k6 itself used (it shares the machine with what it loads).
    pub cpu_secs: f64,
}

/// CPU seconds of this process's children that have been waited for.
fn children_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            // cutime and cstime: fields 16 and 17 of stat, 14 and 15 after the name.
            let cu: f64 = f.get(13)?.parse().ok()?;
            let cs: f64 = f.get(14)?.parse().ok()?;
            Some((cu + cs) / 100.0)
        })
        .unwrap_or(0.0)
}

impl Run<'_> {
    pub fn go(&self) -> Result<Outcome> {
        self.go_with(|_| {})
    }

    /// [`Run::go`] through the one-node cluster's ingress over HTTPS: k6
    /// resolves the chart's name to the node (`--config`) and trusts the
    /// chart's CA in place of the system's CA file (`SSL_CERT_FILE`, which
    /// Go's TLS reads), verifying what it is served: no
    /// `--insecure-skip-tls-verify`, so a wrong certificate fails every
    /// request.
    pub fn go_over(&self, tls: &paysaga_testenv::cluster::IngressTls) -> Result<Outcome> {
        self.go_with(|cmd| {
            cmd.arg("--config")
                .arg(&tls.k6_config)
                .env("SSL_CERT_FILE", &tls.ca);
        })
    }

    fn go_with(&self, extra: impl FnOnce(&mut Command)) -> Result<Outcome> {
        let root = paysaga_testenv::workspace_root();
        let summary = self.out.join("summary.json");
        let report = self.out.join("report.html");
        let mut cmd = Command::new(paysaga_testenv::tool("k6"));
        cmd.current_dir(&root)
            .arg("run")
            .arg("--summary-export")
            .arg(&summary)
            // The dashboard's report, without its server (no port to collide).
            .env("K6_WEB_DASHBOARD", "true")
            .env("K6_WEB_DASHBOARD_PORT", "-1")
            .env("K6_WEB_DASHBOARD_EXPORT", &report)
            .env("K6_NO_USAGE_REPORT", "true");
        if !self.verbose {
            cmd.arg("--quiet");
        }
        extra(&mut cmd);
        for (k, v) in &self.env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        cmd.arg(self.script);
        let cpu_before = children_cpu();
        let status = cmd
            .status()
            .with_context(|| format!("running k6 {}", self.script))?;
        let cpu_secs = children_cpu() - cpu_before;
        let text = std::fs::read_to_string(&summary)
            .with_context(|| format!("k6 left no summary at {}", summary.display()))?;
        Ok(Outcome {
            code: status.code().unwrap_or(-1),
            summary: Summary(serde_json::from_str(&text).context("reading k6's summary")?),
            report: report.exists().then_some(report),
            cpu_secs,
        })
    }
}

/// k6's `--summary-export` document.
pub struct Summary(pub Value);

impl Summary {
    /// A metric's field, e.g. `("payment_e2e", "p(95)")`, `("http_reqs", "count")`.
    pub fn get(&self, metric: &str, field: &str) -> Option<f64> {
        self.0.get("metrics")?.get(metric)?.get(field)?.as_f64()
    }

    /// A Rate's share (`value`), or a Counter's `count`.
    pub fn rate(&self, metric: &str) -> Option<f64> {
        self.get(metric, "value")
    }

    pub fn count(&self, metric: &str) -> f64 {
        self.get(metric, "count").unwrap_or(0.0)
    }

    /// The thresholds that failed, as `metric: threshold`.
    pub fn failed_thresholds(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(metrics) = self.0.get("metrics").and_then(Value::as_object) {
            for (name, m) in metrics {
                if let Some(th) = m.get("thresholds").and_then(Value::as_object) {
                    for (expr, ok) in th {
                        // In the export, `true` means the threshold was crossed.
                        if ok.as_bool() == Some(true) {
                            out.push(format!("{name}: {expr}"));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }
}

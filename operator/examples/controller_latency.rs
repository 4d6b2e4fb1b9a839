//! Benchmark: the controller on the real parts. Creates Payments through the
//! Kubernetes API, waits for every one to succeed, and prints the
//! controller's start latency and workflow-change→status latency (from its
//! histograms) and the mutating API-server requests per payment (from the
//! API server's own `apiserver_request_total`). Prints numbers; asserts
//! nothing about time.
//!
//!     make bench-controller          # 300 payments, 10 created at a time
//!     cargo run -p paysaga-operator --example controller_latency -- <count> <concurrency>

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, PostParams};
use paysaga_api::{Payment, PaymentMethod, PaymentSpec, Phase};
use paysaga_testenv::Service;

/// `name{labels} value` lines of a Prometheus text exposition.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The q-quantile's bucket bound from a cumulative histogram.
fn quantile(text: &str, histogram: &str, q: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = samples(text, &format!("{histogram}_bucket"))
        .into_iter()
        .filter_map(|(series, count)| {
            let le = series.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(b, _)| *b)
}

fn label<'a>(series: &'a str, key: &str) -> &'a str {
    series
        .split(&format!("{key}=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
}

/// Mutating requests the API server served, by resource[/subresource] and verb.
fn mutating(kube: &paysaga_testenv::KubeEnv) -> BTreeMap<String, f64> {
    let text = kube
        .kubectl_ok(&["get", "--raw", "/metrics"])
        .expect("API server metrics");
    let mut out = BTreeMap::new();
    for (series, value) in samples(&text, "apiserver_request_total{") {
        let verb = label(&series, "verb");
        let resource = label(&series, "resource");
        if !matches!(verb, "POST" | "PATCH" | "PUT" | "DELETE" | "APPLY")
            || !matches!(resource, "payments" | "events")
        {
            continue;
        }
        let sub = label(&series, "subresource");
        let key = if sub.is_empty() {
            format!("{resource} {verb}")
        } else {
            format!("{resource}/{sub} {verb}")
        };
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() => format!("≤ {:.0} ms", s * 1000.0),
        Some(_) => "> 32 s".into(),
        None => "-".into(),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);

    let kube = paysaga_testenv::kube();
    let temporal = paysaga_testenv::temporal();
    let dir = paysaga_testenv::run_dir().join("bench");
    let api = Service::api(&dir.join("api"), &temporal.address, None)?;
    let callback = format!("{}/v1/gateway/callbacks", api.url);
    let sim = Service::sim(
        &dir.join("sim"),
        &callback,
        None,
        &["--callback-delay-ms=0"],
    )?;
    let db = paysaga_testenv::postgres().database("bench")?;
    let _worker = Service::payment_worker(
        &dir.join("worker"),
        &temporal.address,
        &db,
        "bench:EUR:1000000000",
        &sim.url,
    )?;
    let controller = Service::controller(
        &dir.join("controller"),
        &kube.admin_kubeconfig,
        &temporal.address,
        None,
        &[
            "--finished-ttl-secs=0".into(),
            "--leader-election=false".into(),
        ],
    )?;
    let ns = kube.namespace("bench")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let payments: Api<Payment> = Api::namespaced(kube.client().await?, &ns.name);
        let before = mutating(kube);
        let started = Instant::now();
        let mut next = 0;
        while next < count {
            let batch: Vec<_> = (next..(next + concurrency).min(count))
                .map(|i| {
                    let p = Payment::new(
                        &format!("bench-{i}"),
                        PaymentSpec {
                            user_id: "bench".into(),
                            amount: 100,
                            currency: "EUR".into(),
                            method: PaymentMethod::Card,
                            description: None,
                            notify: None,
                        },
                    );
                    let payments = payments.clone();
                    async move { payments.create(&PostParams::default(), &p).await }
                })
                .collect();
            next += batch.len();
            for r in futures::future::join_all(batch).await {
                r?;
            }
        }
        let created = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list = payments.list(&ListParams::default()).await?;
            let done = list.items.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_terminal)).count();
            let succeeded = list.items.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded)).count();
            if done == count {
                anyhow::ensure!(succeeded == count, "{} of {count} payments did not succeed", count - succeeded);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "only {done} of {count} payments finished");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let wall = started.elapsed();
        let after = mutating(kube);
        let metrics = reqwest::get(format!("{}/metrics", controller.url)).await?.text().await?;

        println!("controller on the real parts: {count} payments, created {concurrency} at a time (debug build, 2 cores)");
        println!("  created in {:.1} s; all Succeeded after {:.1} s ({:.1} payments/s)", created.as_secs_f64(), wall.as_secs_f64(), count as f64 / wall.as_secs_f64());
        let start = "paysaga_controller_start_latency_seconds";
        let status = "paysaga_controller_status_latency_seconds";
        println!("  first reconcile → workflow started: p50 {}  p95 {}", ms(quantile(&metrics, start, 0.5)), ms(quantile(&metrics, start, 0.95)));
        println!("  workflow change → status written:   p50 {}  p95 {}", ms(quantile(&metrics, status, 0.5)), ms(quantile(&metrics, status, 0.95)));
        println!("  mutating API-server requests per payment (payments and events):");
        let mut total = 0.0;
        for (key, value) in &after {
            let delta = value - before.get(key).copied().unwrap_or(0.0);
            if delta > 0.0 {
                total += delta;
                println!("    {key:<28} {:.2}", delta / count as f64);
            }
        }
        println!("    {:<28} {:.2} (of which 1 is the benchmark's own create)", "total", total / count as f64);
        anyhow::Ok(())
    })?;
    Ok(())
}

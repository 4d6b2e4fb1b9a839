//! `make perf`: the performance harness. A benchmark that prints numbers;
//! it asserts nothing about time. On this machine, in one run, against one
//! make-dev stack:
//!
//! 0. **One payment's history** (and its fraud check's) by event type: the
//!    workflow tasks, activity tasks and events the Temporal server handles
//!    per payment, beside the Go SDK peer's synthetic saga of the same shape.
//!    Then **the Go SDK beside paysaga**: rounds of paysaga's saga and the
//!    peer's at one rate, alternating, with each worker's and the server's
//!    CPU per payment.
//! 1. **R_max**: the most payments per second the saga sustains when started
//!    directly against Temporal (no Kubernetes in the path), with the same
//!    worker, simulators and ledger: open-loop windows at rising rates;
//!    a rate is sustained while workflow-task schedule-to-start p95 stays
//!    under 1 s, the backlog stays flat and every payment succeeds.
//! 2. **Full path** at a share of R_max (0.8) for 10 minutes: k6 → HTTP API →
//!    Payment → controller → workflow → status, followed by k6 to the end.
//! 3. **Overload** at 2 × R_max: the API sheds with 429/503; nothing accepted
//!    is lost.
//! 4. **Memory** of the controller holding 10 000 Payments.
//!
//! After each phase the ledger audit runs. Everything is written to
//! `target/perf/<time>/perf.md` as well as printed.
//!
//! `--temporal production` runs all of it on the production Temporal server
//! (`go.temporal.io/server`, built by `make tools`) on PostgreSQL instead of
//! the dev server; the server's CPU is then read with its database's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use paysaga_api::names::{ACCEPTED_AT_ANNOTATION, FINALIZER};
use paysaga_api::saga::{PAYMENT_WORKFLOW, PaymentInput, PaymentOutcome};
use paysaga_api::{Payment, PaymentMethod, Phase};
use paysaga_bench::k6::Run;
use paysaga_bench::prom::{self, Histogram, ms};
use paysaga_bench::{Usage, delta, mib, mutating_requests, payment_counts, wait_all_finished};
use paysaga_testenv::go_peer::{self, GoPeer, SyntheticInput};
use paysaga_testenv::{DevOptions, DevStack};
use temporalio_client::{Client, UntypedWorkflow, WorkflowFetchHistoryOptions};

#[derive(Parser, Debug, Clone)]
#[command(about = "The performance harness: R_max, then the full path, overload and memory")]
struct Cli {
    /// Length of each R_max probe, seconds.
    #[arg(long, default_value_t = 45)]
    window_secs: u64,
    /// The first rate probed, payments/s.
    #[arg(long, default_value_t = 4.0)]
    start_rate: f64,
    /// Each probe multiplies the rate by this until one fails (or, if the
    /// first fails, divides it until one is sustained).
    #[arg(long, default_value_t = 1.5)]
    step: f64,
    /// Then this many bisections between the last rate sustained and the first not.
    #[arg(long, default_value_t = 2)]
    refine: u32,
    /// Skip the search: take this as R_max.
    #[arg(long)]
    rmax: Option<f64>,
    /// The full path runs at this share of R_max…
    #[arg(long, default_value_t = 0.8)]
    full_share: f64,
    /// …for this long, seconds (0: skip).
    #[arg(long, default_value_t = 600)]
    full_secs: u64,
    /// The overload phase runs at 2 × R_max for this long, seconds (0: skip).
    #[arg(long, default_value_t = 120)]
    overload_secs: u64,
    /// Payments the controller holds for the memory reading (0: skip).
    #[arg(long, default_value_t = 10_000)]
    memory_payments: usize,
    /// The API admits at most R_max × this many seconds of work in flight.
    #[arg(long, default_value_t = 5.0)]
    admission_secs: f64,
    /// Which Temporal: the dev server on a SQLite `file` (as make dev) or in
    /// `memory`, or the `production` server on PostgreSQL.
    #[arg(long, default_value = "file", value_parser = ["file", "memory", "production"])]
    temporal: String,
    /// The Go SDK peer's rounds run at this rate, payments/s (0: skip them).
    #[arg(long, default_value_t = 4.0)]
    peer_rate: f64,
    /// Rounds of paysaga's saga and the peer's, alternating, one window each.
    #[arg(long, default_value_t = 2)]
    peer_rounds: u32,
    /// SQLite without make dev's pragmas (WAL, no fsync): for before/after.
    #[arg(long)]
    no_pragmas: bool,
    /// Extra worker arguments (e.g. --worker-arg=--max-concurrent-workflow-tasks=100).
    #[arg(long, allow_hyphen_values = true)]
    worker_arg: Vec<String>,
    /// Extra controller arguments.
    #[arg(long, allow_hyphen_values = true)]
    controller_arg: Vec<String>,
    /// Where the report goes (default target/perf/<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Lines printed and kept for the report.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = cli.out.clone().unwrap_or_else(|| {
        let t = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S");
        paysaga_testenv::workspace_root()
            .join("target/perf")
            .join(t.to_string())
    });
    // Absolute: the stack's processes run in directories of their own.
    let out = std::path::absolute(&out)?;
    paysaga_bench::out_dir(&out)?;
    let mut r = Report::default();
    r.line(format!(
        "# paysaga performance harness\n\n{} · {} · {}\n",
        paysaga_bench::now_utc(),
        paysaga_bench::machine(),
        paysaga_bench::versions_on(cli.temporal == "production")
    ));
    r.line(format!(
        "Command: `paysaga-perf {}`\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    ));

    // As make dev, but for what the options change.
    let mut opts = DevOptions {
        worker_args: cli.worker_arg.clone(),
        controller_args: cli.controller_arg.clone(),
        ..Default::default()
    }
    .temporal_as_make_dev();
    if cli.no_pragmas {
        opts.temporal_pragmas.clear();
    }
    if cli.temporal == "memory" {
        opts.temporal_file = false;
    }
    opts.temporal_production = cli.temporal == "production";
    let temporal = if opts.temporal_production {
        "the production Temporal server (all services in one process) on PostgreSQL with durable commits".to_string()
    } else {
        format!(
            "Temporal dev server, {}{}",
            if opts.temporal_file {
                "SQLite file"
            } else {
                "in memory"
            },
            if !opts.temporal_file || opts.temporal_pragmas.is_empty() {
                String::new()
            } else {
                format!(", pragmas {:?}", opts.temporal_pragmas)
            }
        )
    };
    r.line(format!(
        "Stack: as make dev but for Temporal ({temporal}; ledger on SQLite; simulators with their defaults); worker args {:?}; controller args {:?}\n",
        cli.worker_arg,
        cli.controller_arg,
    ));
    let mut stack = DevStack::start(&out.join("stack"), &opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // 0. One payment, event by event; then the Go SDK beside paysaga.
    let peer = if cli.peer_rate > 0.0 {
        Some(GoPeer::start(&out.join("stack/go-peer"), &stack.temporal)?)
    } else {
        None
    };
    rt.block_on(async {
        let peer_client = match &peer {
            Some(_) => Some(temporal_client(&stack, false).await?),
            None => None,
        };
        anatomy(
            &temporal_client(&stack, true).await?,
            peer_client.as_ref(),
            &mut r,
        )
        .await?;
        if let (Some(peer), Some(peer_client)) = (&peer, &peer_client) {
            beside_go(&cli, &stack, peer, peer_client, &mut r).await?;
        }
        anyhow::Ok(())
    })?;
    // Not polling while the rest is measured.
    drop(peer);

    // 1. R_max.
    let (rmax, sustained) = match cli.rmax {
        Some(r) => (r, Vec::new()),
        None => rt.block_on(search_rmax(&cli, &stack, &mut r))?,
    };
    r.line(format!("\n**R_max = {rmax:.2} payments/s**\n"));

    // 2. The full path.
    let limit = ((rmax * cli.admission_secs).ceil() as usize).max(20);
    stack.restart_api(&[format!("--max-payments-in-flight={limit}")])?;
    r.line(format!(
        "API admission limit: {limit} payments in flight (R_max × {} s)\n",
        cli.admission_secs
    ));
    if cli.full_secs > 0 {
        let full = rt.block_on(full_path(
            &stack,
            &out.join("full"),
            rmax * cli.full_share,
            cli.full_secs,
            false,
        ))?;
        full.print(&mut r, "Full path", rmax);
        full.following_cost(&mut r, &sustained);
    }

    // 3. Overload.
    if cli.overload_secs > 0 {
        let over = rt.block_on(full_path(
            &stack,
            &out.join("overload"),
            rmax * 2.0,
            cli.overload_secs,
            true,
        ))?;
        over.print(&mut r, "Overload", rmax);
    }

    // 4. Memory with many Payments.
    if cli.memory_payments > 0 {
        memory(&cli, &mut stack, &rt, &mut r)?;
    }

    let path = out.join("perf.md");
    std::fs::write(&path, &r.0)?;
    println!("\nreport: {}", path.display());
    Ok(())
}

// ---- R_max ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Probe {
    rate: f64,
    started: usize,
    succeeded: usize,
    /// Completions within the window, per second.
    throughput: f64,
    s2s_p95: Option<f64>,
    backlog_middle: f64,
    backlog_last: f64,
    e2e_p50: Option<Duration>,
    e2e_p95: Option<Duration>,
    /// CPU per payment of the Temporal server, of its PostgreSQL (the
    /// production server) and of the worker, ms.
    temporal_cpu_ms: f64,
    database_cpu_ms: Option<f64>,
    worker_cpu_ms: f64,
    /// The worker's resident set at the end of the window.
    worker_rss: u64,
    sustained: bool,
    why: String,
}

impl Probe {
    /// The server's CPU per payment, its PostgreSQL's included.
    fn server_cpu_ms(&self) -> f64 {
        self.temporal_cpu_ms + self.database_cpu_ms.unwrap_or(0.0)
    }
}

/// Which saga a probe starts: paysaga's, run by paysaga's worker, or the Go
/// SDK peer's synthetic one of the same shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Saga {
    Paysaga,
    GoPeer,
}

impl Saga {
    fn name(self) -> &'static str {
        match self {
            Saga::Paysaga => "paysaga (Rust SDK)",
            Saga::GoPeer => "Go SDK peer",
        }
    }

    /// Starts the `i`th payment `id` and waits for its end: Succeeded?
    async fn run(self, client: &Client, id: &str, i: usize) -> Result<bool> {
        match self {
            Saga::Paysaga => run_one(client, saga_input(id, i)).await,
            Saga::GoPeer => run_synthetic(client, id, i).await,
        }
    }
}

/// A Temporal client of the stack's server: with paysaga's keyring, as the
/// worker's (`keyring`), or without it, payloads in plain JSON as the Go SDK
/// peer reads them.
async fn temporal_client(stack: &DevStack, keyring: bool) -> Result<Client> {
    paysaga_common::temporal::connect(
        &paysaga_common::temporal::TemporalOpts {
            temporal_address: stack.temporal.address.clone(),
            temporal_namespace: stack.temporal.namespace.clone(),
            codec_keys_file: keyring.then(|| paysaga_testenv::codec_keys_file().to_path_buf()),
        },
        "paysaga-perf",
    )
    .await
    .context("connecting to Temporal")
}

/// The Temporal server's CPU seconds so far, and its database's (the
/// production server's PostgreSQL, backends included).
fn temporal_cpu(stack: &DevStack) -> (f64, Option<f64>) {
    (
        Usage::of(stack.temporal.pid()).cpu_secs,
        stack
            .temporal_postgres
            .as_ref()
            .map(|pg| Usage::of_tree(pg.pid()).cpu_secs),
    )
}

/// R_max, and the probes that were sustained.
async fn search_rmax(cli: &Cli, stack: &DevStack, r: &mut Report) -> Result<(f64, Vec<Probe>)> {
    let client = temporal_client(stack, true).await?;
    let window = Duration::from_secs(cli.window_secs);
    r.line("\n## R_max: the saga started directly against Temporal\n");
    r.line(format!(
        "Open-loop windows of {} s; sustained = workflow-task schedule-to-start p95 < 1 s, backlog flat (last third ≤ 1.3 × middle third + 2), completions in the window ≥ 0.9 × the rate, every payment Succeeded.\n",
        cli.window_secs
    ));
    r.line(format!(
        "| rate /s | started / succeeded | completed /s in window | schedule-to-start p95 | backlog middle → last | e2e p50 / p95 | CPU per payment: {} / worker | sustained |",
        server_label(stack)
    ));
    r.line("|---|---|---|---|---|---|---|---|");
    let mut best: Option<f64> = None;
    let mut worst: Option<f64> = None;
    let mut sustained = Vec::new();
    let at = |rate: f64, n: usize| {
        probe(
            &client,
            stack,
            Saga::Paysaga,
            stack.worker.pid(),
            rate,
            window,
            n,
        )
    };
    let mut rate = cli.start_rate;
    let mut n = 0;
    loop {
        let p = at(rate, n).await?;
        n += 1;
        r.line(probe_row(&p));
        if p.sustained {
            sustained.push(p.clone());
            best = Some(rate);
            if worst.is_some() || rate > 1000.0 {
                break;
            }
            rate *= cli.step;
        } else {
            worst = Some(rate);
            if best.is_some() {
                break;
            }
            rate /= cli.step;
            if rate < 0.1 {
                break;
            }
        }
    }
    let Some(mut lo) = best else {
        bail!("not even {rate:.2} payments/s were sustained");
    };
    if let Some(mut hi) = worst {
        for _ in 0..cli.refine {
            let mid = (lo + hi) / 2.0;
            let p = at(mid, n).await?;
            n += 1;
            r.line(probe_row(&p));
            if p.sustained {
                sustained.push(p.clone());
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok((lo, sustained))
}

/// A duration in whole milliseconds, `-` when there is none.
fn millis(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

fn probe_row(p: &Probe) -> String {
    format!(
        "| {:.2} | {} / {} | {:.2} | {} | {:.1} → {:.1} | {} / {} | {} / {:.0} ms | {} |",
        p.rate,
        p.started,
        p.succeeded,
        p.throughput,
        ms(p.s2s_p95),
        p.backlog_middle,
        p.backlog_last,
        millis(p.e2e_p50),
        millis(p.e2e_p95),
        server_cpu(p),
        p.worker_cpu_ms,
        if p.sustained {
            "yes".to_string()
        } else {
            format!("no: {}", p.why)
        }
    )
}

/// What the server column holds.
fn server_label(stack: &DevStack) -> &'static str {
    if stack.temporal_postgres.is_some() {
        "Temporal server + its PostgreSQL"
    } else {
        "Temporal dev server"
    }
}

/// The server's CPU per payment: `T` on the dev server, `T + D` (server +
/// its PostgreSQL) on the production one.
fn server_cpu(p: &Probe) -> String {
    match p.database_cpu_ms {
        Some(db) => format!("{:.0} + {db:.0}", p.temporal_cpu_ms),
        None => format!("{:.0}", p.temporal_cpu_ms),
    }
}

#[derive(Default)]
struct Tally {
    started: usize,
    succeeded: usize,
    not_succeeded: usize,
    /// When each finished (since the window began) and how long it took.
    done: Vec<(Duration, Duration)>,
}

fn s2s(text: &str) -> Histogram {
    Histogram::read(text, "task_schedule_to_start_latency", |s| {
        s.label("task_type") == "Workflow" && s.label("namespace") == "default"
    })
}

async fn scrape(url: &str) -> Result<String> {
    Ok(reqwest::get(url).await?.text().await?)
}

/// One open-loop window of `saga` at `rate`, the worker being `worker`.
async fn probe(
    client: &Client,
    stack: &DevStack,
    saga: Saga,
    worker: Option<u32>,
    rate: f64,
    window: Duration,
    n: usize,
) -> Result<Probe> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let before = s2s(&scrape(&stack.temporal.metrics_url).await?);
    let cpu = || (temporal_cpu(stack), Usage::of(worker).cpu_secs);
    let cpu_before = cpu();
    let began = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut backlog: Vec<(Duration, usize)> = Vec::new();
    let mut last_sample = Duration::ZERO;
    let mut i = 0usize;
    while began.elapsed() < window {
        ticks.tick().await;
        let id = format!("rmax-{}-{n}-{i}", std::process::id());
        let this = i;
        i += 1;
        tally.lock().unwrap().started += 1;
        let client = client.clone();
        let mine = tally.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let ok = saga.run(&client, &id, this).await.unwrap_or(false);
            let mut t = mine.lock().unwrap();
            if ok {
                t.succeeded += 1;
            } else {
                t.not_succeeded += 1;
            }
            t.done.push((began.elapsed(), t0.elapsed()));
        });
        if began.elapsed() - last_sample >= Duration::from_secs(1) {
            last_sample = began.elapsed();
            let t = tally.lock().unwrap();
            backlog.push((last_sample, t.started - t.succeeded - t.not_succeeded));
        }
    }
    let after = s2s(&scrape(&stack.temporal.metrics_url).await?);
    // Let the window's payments finish before the next window begins.
    let drain_until = Instant::now() + Duration::from_secs(300);
    loop {
        {
            let t = tally.lock().unwrap();
            if t.succeeded + t.not_succeeded == t.started || Instant::now() > drain_until {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_after = cpu();
    let t = tally.lock().unwrap();
    let per = |a: f64, b: f64| (a - b) * 1000.0 / t.started.max(1) as f64;
    let mean = |from: f64, to: f64| {
        let xs: Vec<f64> = backlog
            .iter()
            .filter(|(at, _)| {
                let f = at.as_secs_f64() / window.as_secs_f64();
                f >= from && f < to
            })
            .map(|(_, b)| *b as f64)
            .collect();
        if xs.is_empty() {
            0.0
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        }
    };
    let backlog_middle = mean(1.0 / 3.0, 2.0 / 3.0);
    let backlog_last = mean(2.0 / 3.0, 1.01);
    let in_window = t.done.iter().filter(|(at, _)| *at <= window).count();
    let mut e2e: Vec<Duration> = t.done.iter().map(|(_, d)| *d).collect();
    e2e.sort();
    let pct =
        |q: f64| (!e2e.is_empty()).then(|| e2e[((e2e.len() - 1) as f64 * q).round() as usize]);
    let s2s_p95 = after.since(&before).quantile(0.95);
    let mut why = Vec::new();
    if s2s_p95.is_none_or(|p| p >= 1.0) {
        why.push("schedule-to-start p95 ≥ 1 s".to_string());
    }
    if backlog_last > backlog_middle * 1.3 + 2.0 {
        why.push("backlog growing".to_string());
    }
    let throughput = in_window as f64 / window.as_secs_f64();
    if throughput < 0.9 * rate {
        why.push(format!("completed {throughput:.2}/s < 0.9 × offered"));
    }
    if t.not_succeeded > 0 || t.succeeded < t.started {
        why.push(format!(
            "{} of {} did not succeed",
            t.started - t.succeeded,
            t.started
        ));
    }
    Ok(Probe {
        rate,
        started: t.started,
        succeeded: t.succeeded,
        throughput,
        s2s_p95,
        backlog_middle,
        backlog_last,
        e2e_p50: pct(0.5),
        e2e_p95: pct(0.95),
        temporal_cpu_ms: per(cpu_after.0.0, cpu_before.0.0),
        database_cpu_ms: cpu_after.0.1.zip(cpu_before.0.1).map(|(a, b)| per(a, b)),
        worker_cpu_ms: per(cpu_after.1, cpu_before.1),
        worker_rss: Usage::of(worker).rss,
        sustained: why.is_empty(),
        why: why.join(", "),
    })
}

/// The `i`th payment a probe starts: a load account, an amount that varies.
fn saga_input(id: &str, i: usize) -> PaymentInput {
    PaymentInput {
        payment_id: id.to_string(),
        user_id: format!("load-{}", i % paysaga_testenv::dev::LOAD_USERS),
        amount: 100 + (i as i64 % 9900),
        currency: "EUR".into(),
        method: PaymentMethod::Card,
        description: None,
        notify: None,
        confirmation_timeout_secs: paysaga_api::saga::DEFAULT_CONFIRMATION_TIMEOUT_SECS,
        fraud_task_queue: paysaga_api::names::FRAUD_TASK_QUEUE.into(),
        compensation_max_attempts: paysaga_api::saga::DEFAULT_COMPENSATION_ATTEMPTS,
        escalation: Default::default(),
        requested_by: Some("paysaga-perf".into()),
        object: None,
        request_id: None,
    }
}

/// Where the Temporal server's work for one payment goes: the history of
/// one succeeded payment and of its fraud check, event by event type, beside
/// the Go SDK peer's synthetic payment (when `peer` is given). Each event is
/// a write; each workflow task and activity task is also a round trip
/// through matching and a worker.
async fn anatomy(client: &Client, peer: Option<&Client>, r: &mut Report) -> Result<()> {
    let id = format!("anatomy-{}", std::process::id());
    if !Saga::Paysaga.run(client, &id, 0).await? {
        bail!("the payment {id} did not succeed");
    }
    let mut columns = vec![
        ("payment", client, id.clone()),
        (
            "fraud check",
            client,
            paysaga_api::saga::fraud_workflow_id(&id),
        ),
    ];
    let peer_id = format!("anatomy-go-{}", std::process::id());
    if let Some(peer) = peer {
        if !Saga::GoPeer.run(peer, &peer_id, 0).await? {
            bail!("the Go peer's payment {peer_id} did not succeed");
        }
        columns.push(("Go peer: payment", peer, peer_id.clone()));
        columns.push((
            "Go peer: fraud check",
            peer,
            go_peer::fraud_workflow_id(&peer_id),
        ));
    }
    let mut by_type: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (column, (_, client, workflow_id)) in columns.iter().enumerate() {
        let events = client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id.clone())
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .into_events()
            .await
            .with_context(|| format!("fetching the history of {workflow_id}"))?;
        for e in events {
            let name = e.event_type().as_str_name();
            let name = name.strip_prefix("EVENT_TYPE_").unwrap_or(name);
            by_type
                .entry(name.to_lowercase())
                .or_insert_with(|| vec![0; columns.len()])[column] += 1;
        }
    }
    // Workflow tasks, activity tasks and events of a payment (column `c`)
    // and its fraud check (`c + 1`).
    let summary = |c: usize| {
        let count = |name: &str, c: usize| by_type.get(name).map_or(0, |n| n[c]);
        let total = |c: usize| by_type.values().map(|n| n[c]).sum::<usize>();
        format!(
            "workflow tasks {} + {}, activity tasks {} + {}, events {} + {} = {}",
            count("workflow_task_completed", c),
            count("workflow_task_completed", c + 1),
            count("activity_task_scheduled", c),
            count("activity_task_scheduled", c + 1),
            total(c),
            total(c + 1),
            total(c) + total(c + 1),
        )
    };
    r.line("\n## One payment's history: where the Temporal server's work goes\n");
    r.line(format!(
        "A succeeded payment (`{id}`) and its fraud check: {}.\n",
        summary(0)
    ));
    if peer.is_some() {
        r.line(format!(
            "The Go SDK peer's synthetic payment (`{peer_id}`, `bench/go-peer`) and its fraud check: {}.\n",
            summary(2)
        ));
    }
    let names: Vec<&str> = columns.iter().map(|(name, _, _)| *name).collect();
    r.line(format!("| event type | {} |", names.join(" | ")));
    r.line(format!("|---|{}", "---|".repeat(names.len())));
    for (name, counts) in &by_type {
        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        r.line(format!("| {name} | {} |", counts.join(" | ")));
    }
    Ok(())
}

/// Rounds of paysaga's saga and the Go SDK peer's synthetic one of the same
/// shape, alternating, at one rate on the same server: what each worker and
/// the server spend per payment.
async fn beside_go(
    cli: &Cli,
    stack: &DevStack,
    peer: &GoPeer,
    peer_client: &Client,
    r: &mut Report,
) -> Result<()> {
    let client = temporal_client(stack, true).await?;
    let window = Duration::from_secs(cli.window_secs);
    r.line("\n## The Go SDK beside paysaga: the same saga shape on the same server\n");
    r.line(format!(
        "Alternating open-loop windows of {} s at {:.2} payments/s. paysaga's worker runs the real activities (ledger on SQLite, the gateway and notification simulators over HTTP, payload encryption, metrics); the Go peer's return at once, and the peer itself sends the confirmation signal that paysaga's gateway simulator sends through the HTTP API.\n",
        cli.window_secs, cli.peer_rate
    ));
    r.line(format!(
        "| round | saga | started / succeeded | e2e p50 / p95 | CPU per payment: {} | worker CPU per payment | worker RSS |",
        server_label(stack)
    ));
    r.line("|---|---|---|---|---|---|---|");
    let mut ratios: Vec<(f64, f64)> = Vec::new();
    for round in 1..=cli.peer_rounds {
        let mut pair = Vec::new();
        for (saga, worker, on) in [
            (Saga::Paysaga, stack.worker.pid(), &client),
            (Saga::GoPeer, peer.pid(), peer_client),
        ] {
            let n = 1000 + round as usize * 10 + pair.len();
            let p = probe(on, stack, saga, worker, cli.peer_rate, window, n).await?;
            r.line(format!(
                "| {round} | {} | {} / {} | {} / {} | {} ms | {:.1} ms | {:.1} MiB |",
                saga.name(),
                p.started,
                p.succeeded,
                millis(p.e2e_p50),
                millis(p.e2e_p95),
                server_cpu(&p),
                p.worker_cpu_ms,
                mib(p.worker_rss),
            ));
            pair.push(p);
        }
        ratios.push((
            pair[1].worker_cpu_ms / pair[0].worker_cpu_ms.max(0.001),
            pair[1].server_cpu_ms() / pair[0].server_cpu_ms().max(0.001),
        ));
    }
    if let (Some(worker), Some(server)) = (
        paysaga_bench::median(ratios.iter().map(|r| r.0).collect()),
        paysaga_bench::median(ratios.iter().map(|r| r.1).collect()),
    ) {
        r.line(format!(
            "\nGo peer ÷ paysaga, median of {} rounds: worker CPU per payment **{worker:.2}**, server CPU per payment **{server:.2}**.",
            ratios.len(),
        ));
    }
    Ok(())
}

/// Starts one payment's workflow and waits for its outcome: Succeeded?
async fn run_one(client: &Client, input: PaymentInput) -> Result<bool> {
    let outcome = paysaga_bench::run_workflow(
        client,
        paysaga_api::names::PAYMENTS_TASK_QUEUE,
        PAYMENT_WORKFLOW,
        &input.payment_id,
        &input,
    )
    .await?;
    let outcome: PaymentOutcome = serde_json::from_value(outcome)?;
    Ok(outcome.phase == Phase::Succeeded)
}

/// Starts the Go peer's synthetic payment `id` and waits for its outcome: Succeeded?
async fn run_synthetic(client: &Client, id: &str, i: usize) -> Result<bool> {
    let input = SyntheticInput::new(
        id,
        100 + (i as i64 % 9900),
        paysaga_api::saga::DEFAULT_CONFIRMATION_TIMEOUT_SECS,
    );
    let outcome = paysaga_bench::run_workflow(
        client,
        go_peer::TASK_QUEUE,
        go_peer::PAYMENT_WORKFLOW,
        id,
        &input,
    )
    .await?;
    Ok(outcome["phase"] == "Succeeded")
}

// ---- the full path ------------------------------------------------------------------

/// What a phase through the full path measured.
struct FullPath {
    rate: f64,
    secs: u64,
    created: f64,
    shed: f64,
    http_failed: f64,
    dropped: f64,
    thresholds_failed: Vec<String>,
    objects: usize,
    finished: usize,
    workflows: Option<usize>,
    audit_ok: bool,
    audit: String,
    create_p95: Option<f64>,
    e2e_p50: Option<f64>,
    e2e_p95: Option<f64>,
    e2e_p99: Option<f64>,
    start: Histogram,
    status_phase: Histogram,
    status_step: Histogram,
    writes: BTreeMap<String, f64>,
    /// Controller reconciles and history long polls (close, all) in the run.
    reconciles: f64,
    polls: (f64, f64),
    usage: Vec<(&'static str, Usage, Usage)>,
    report: Option<PathBuf>,
    k6_cpu_secs: f64,
    /// Wall time between the two snapshots the CPU readings come from.
    wall_secs: f64,
}

struct Snapshot {
    writes: BTreeMap<String, f64>,
    controller: String,
    usage: Vec<(&'static str, Usage)>,
}

async fn snapshot(stack: &DevStack) -> Result<Snapshot> {
    let (apiserver, etcd) = stack.kube.pids();
    let mut snapshot = Snapshot {
        writes: mutating_requests(&stack.kube)?,
        controller: scrape(&format!("{}/metrics", stack.controller.url)).await?,
        usage: vec![
            ("controller", Usage::of(stack.controller.pid())),
            ("worker", Usage::of(stack.worker.pid())),
            ("HTTP API", Usage::of(stack.api.pid())),
            ("kube-apiserver", Usage::of(apiserver)),
            ("etcd", Usage::of(etcd)),
            (
                if stack.temporal_postgres.is_some() {
                    "Temporal server"
                } else {
                    "Temporal dev server"
                },
                Usage::of(stack.temporal.pid()),
            ),
            ("simulators", Usage::of(stack.sim.pid())),
        ],
    };
    if let Some(pg) = &stack.temporal_postgres {
        snapshot.usage.push((
            "Temporal's PostgreSQL (all its processes)",
            Usage::of_tree(pg.pid()),
        ));
    }
    Ok(snapshot)
}

async fn full_path(
    stack: &DevStack,
    out: &Path,
    rate: f64,
    secs: u64,
    overload: bool,
) -> Result<FullPath> {
    paysaga_bench::out_dir(out)?;
    let api: Api<Payment> = Api::namespaced(stack.kube.client().await?, "default");
    let (objects_before, _) = payment_counts(&api).await?;
    let workflows_before = count_workflows(stack);
    let before = snapshot(stack).await?;
    let wall = Instant::now();
    let mut env = vec![
        ("BASE_URL".to_string(), stack.api.url.clone()),
        ("API_TOKEN".into(), stack.api_key.clone()),
        ("SIM_URL".into(), stack.sim.url.clone()),
        ("RATE".into(), format!("{rate:.4}")),
        ("DURATION".into(), format!("{secs}s")),
        ("FOLLOW_TIMEOUT_S".into(), "600".into()),
    ];
    if overload {
        env.push(("EXPECT_SHED".into(), "1".into()));
    }
    let script = "k6/load.js";
    let run = tokio::task::block_in_place(|| {
        Run {
            script,
            env,
            out,
            verbose: false,
        }
        .go()
    })?;
    let (objects, finished) = wait_all_finished(&api, Duration::from_secs(600)).await?;
    // Visibility lags by a moment behind the workflows it counts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = snapshot(stack).await?;
    let wall_secs = wall.elapsed().as_secs_f64();
    let workflows = count_workflows(stack)
        .zip(workflows_before)
        .map(|(a, b)| a - b);
    let (audit, audit_ok) = stack.audit()?;
    let s = &run.summary;
    let hist = |name: &str, keep: &dyn Fn(&prom::Sample) -> bool| {
        Histogram::read(&after.controller, name, keep).since(&Histogram::read(
            &before.controller,
            name,
            keep,
        ))
    };
    let status = "paysaga_controller_status_latency_seconds";
    let counter = |name: &str, keep: &dyn Fn(&prom::Sample) -> bool| {
        prom::sum(&after.controller, name, keep) - prom::sum(&before.controller, name, keep)
    };
    Ok(FullPath {
        reconciles: counter("paysaga_controller_reconciles_total", &|_| true),
        polls: (
            counter("paysaga_controller_history_polls_total", &|s| {
                s.label("filter") == "close"
            }),
            counter("paysaga_controller_history_polls_total", &|s| {
                s.label("filter") == "all"
            }),
        ),
        rate,
        secs,
        created: s.count("payments_created"),
        shed: s.rate("payment_shed").unwrap_or(0.0),
        http_failed: s.rate("http_req_failed").unwrap_or(0.0),
        dropped: s.count("dropped_iterations"),
        thresholds_failed: s.failed_thresholds(),
        objects: objects - objects_before,
        finished: finished - objects_before,
        workflows,
        audit_ok,
        audit,
        create_p95: s
            .get("http_req_duration{name:create}", "p(95)")
            .map(|v| v / 1000.0),
        e2e_p50: s.get("payment_e2e", "p(50)").map(|v| v / 1000.0),
        e2e_p95: s.get("payment_e2e", "p(95)").map(|v| v / 1000.0),
        e2e_p99: s.get("payment_e2e", "p(99)").map(|v| v / 1000.0),
        start: hist("paysaga_controller_start_latency_seconds", &|_| true),
        status_phase: hist(status, &|s| s.label("change") == "phase"),
        status_step: hist(status, &|s| s.label("change") == "step"),
        writes: delta(&before.writes, &after.writes),
        usage: before
            .usage
            .iter()
            .zip(after.usage.iter())
            .map(|((name, b), (_, a))| (*name, *b, *a))
            .collect(),
        report: run.report,
        k6_cpu_secs: run.cpu_secs,
        wall_secs,
    })
}

/// Payment workflows the controller started (`payment-default-…`), as Temporal's visibility counts them.
fn count_workflows(stack: &DevStack) -> Option<usize> {
    let out = std::process::Command::new(paysaga_testenv::tool("temporal"))
        .args(["workflow", "count", "--address", &stack.temporal.host_port])
        .args([
            "--query",
            "WorkflowType = 'PaymentWorkflow' AND WorkflowId STARTS_WITH 'payment-default-'",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

impl FullPath {
    /// The Temporal server's CPU per payment (with its PostgreSQL's).
    fn server_cpu_ms(&self) -> f64 {
        let secs: f64 = self
            .usage
            .iter()
            .filter(|(name, _, _)| name.starts_with("Temporal"))
            .map(|(_, b, a)| a.cpu_secs - b.cpu_secs)
            .sum();
        secs * 1000.0 / self.created.max(1.0)
    }

    /// What following each payment from the controller costs Temporal: the
    /// server's CPU per payment on the full path over the bare saga's, in
    /// the sustained R_max window nearest the full path's rate.
    fn following_cost(&self, r: &mut Report, sustained: &[Probe]) {
        let Some(bare) = sustained.iter().min_by(|a, b| {
            (a.rate - self.rate)
                .abs()
                .total_cmp(&(b.rate - self.rate).abs())
        }) else {
            return;
        };
        let bare_ms = bare.server_cpu_ms();
        r.line(format!(
            "\nFollowing from the controller: the Temporal server spent {:.1} ms of CPU per payment on the full path, the bare saga {bare_ms:.1} ms at {:.2}/s in the R_max search: **×{:.2}**.",
            self.server_cpu_ms(),
            bare.rate,
            self.server_cpu_ms() / bare_ms.max(0.001)
        ));
    }

    fn print(&self, r: &mut Report, title: &str, rmax: f64) {
        let n = self.created.max(1.0);
        let throughput = self.created / self.secs as f64;
        r.line(format!(
            "\n## {title}: k6 → API → Payment → controller → workflow → status, {:.2}/s offered for {} s\n",
            self.rate, self.secs
        ));
        r.line("| measure | value |\n|---|---|");
        r.line(format!(
            "| payments accepted (202) | {:.0} = **{throughput:.2}/s = {:.2} × R_max** |",
            self.created,
            throughput / rmax
        ));
        r.line(format!(
            "| shed by the API (429/503) | {:.2} % |",
            self.shed * 100.0
        ));
        r.line(format!(
            "| HTTP errors (unexpected statuses) | {:.3} % |",
            self.http_failed * 100.0
        ));
        r.line(format!("| dropped iterations | {:.0} |", self.dropped));
        r.line(format!(
            "| Payment objects made / finished | {} / {} (lost: {}) |",
            self.objects,
            self.finished,
            self.objects as i64 - self.finished as i64
        ));
        r.line(format!(
            "| payment workflows started | {} (duplicates: {}) |",
            self.workflows.map_or("?".into(), |w| w.to_string()),
            self.workflows
                .map_or("?".into(), |w| (w as i64 - self.objects as i64).to_string())
        ));
        r.line(format!(
            "| ledger audit | {} |",
            if self.audit_ok {
                "OK, money is conserved"
            } else {
                "**FAILED**"
            }
        ));
        r.line(format!(
            "| creation → workflow start p50 / p95 | {} / {} |",
            ms(self.start.quantile(0.5)),
            ms(self.start.quantile(0.95))
        ));
        r.line(format!(
            "| workflow change → status p95: phase / step (paced) | {} / {} ({} and {} writes) |",
            ms(self.status_phase.quantile(0.95)),
            ms(self.status_step.quantile(0.95)),
            self.status_phase.count(),
            self.status_step.count()
        ));
        r.line(format!("| API create p95 | {} |", ms(self.create_p95)));
        r.line(format!(
            "| end to end p50 / p95 / p99 | {} / {} / {} |",
            ms(self.e2e_p50),
            ms(self.e2e_p95),
            ms(self.e2e_p99)
        ));
        let total: f64 = self.writes.values().sum();
        let detail: Vec<String> = self
            .writes
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", v / n))
            .collect();
        r.line(format!(
            "| mutating API-server requests per payment | **{:.2}** ({}) |",
            total / n,
            detail.join(", ")
        ));
        r.line(format!(
            "| controller reconciles, history polls (close + progress) per payment | {:.2}, {:.2} + {:.2} |",
            self.reconciles / n,
            self.polls.0 / n,
            self.polls.1 / n
        ));
        for (name, b, a) in &self.usage {
            r.line(format!(
                "| {name}: CPU per payment, RSS now (peak) | {:.1} ms, {:.1} MiB ({:.1} MiB) |",
                (a.cpu_secs - b.cpu_secs) * 1000.0 / n,
                mib(a.rss),
                mib(a.hwm)
            ));
        }
        r.line(format!(
            "| k6 itself: CPU per payment | {:.1} ms |",
            self.k6_cpu_secs * 1000.0 / n
        ));
        let all: f64 = self
            .usage
            .iter()
            .map(|(_, b, a)| a.cpu_secs - b.cpu_secs)
            .sum::<f64>()
            + self.k6_cpu_secs;
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        r.line(format!(
            "| all of the above: CPU per payment, share of the machine | {:.0} ms, {:.0} % of {cores} cores |",
            all * 1000.0 / n,
            all / self.wall_secs * 100.0 / cores as f64,
        ));
        if !self.thresholds_failed.is_empty() {
            r.line(format!(
                "| k6 thresholds crossed | {} |",
                self.thresholds_failed.join("; ")
            ));
        }
        if let Some(html) = &self.report {
            r.line(format!(
                "\nThroughput and latency over time: `{}`",
                html.display()
            ));
        }
        r.line(format!("\n```\n{}\n```", self.audit.trim_end()));
    }
}

// ---- memory -------------------------------------------------------------------------

fn memory(
    cli: &Cli,
    stack: &mut DevStack,
    rt: &tokio::runtime::Runtime,
    r: &mut Report,
) -> Result<()> {
    r.line(format!(
        "\n## Controller memory with {} Payments\n",
        cli.memory_payments
    ));
    let client = rt.block_on(stack.kube.client())?;
    let real: Api<Payment> = Api::namespaced(client.clone(), "default");
    let finished = |list: Vec<Payment>| {
        list.into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded))
    };
    let template = match finished(
        rt.block_on(real.list(&kube::api::ListParams::default().limit(50)))?
            .items,
    ) {
        Some(p) => p,
        None => {
            // No run before this one: pay once through the API and copy that.
            let resp = rt.block_on(
                paysaga_bench::api_client(&stack.api_key, std::time::Duration::from_secs(30))?
                    .post(format!("{}/v1/payments", stack.api.url))
                    .json(&serde_json::json!({"userId": "load-0", "amount": 100, "currency": "EUR", "method": "card"}))
                    .send(),
            )?;
            anyhow::ensure!(
                resp.status() == 202,
                "paying once failed: {}",
                resp.status()
            );
            rt.block_on(wait_all_finished(&real, Duration::from_secs(120)))?;
            finished(rt.block_on(real.list(&Default::default()))?.items)
                .context("the one payment made did not succeed")?
        }
    };
    let (existing, _) = rt.block_on(payment_counts(&real))?;
    let need = cli.memory_payments.saturating_sub(existing);
    let before = Usage::of(stack.controller.pid());
    r.line(format!(
        "{existing} real Payments from the runs above; the controller held them at {:.1} MiB (peak {:.1} MiB).",
        mib(before.rss),
        mib(before.hwm)
    ));
    // Finished payments made while the controller is stopped (it would
    // otherwise start their workflows before their status is written), each
    // a copy of a real one's spec and status; then the controller starts
    // again and has to list, cache and reconcile all of them.
    let created = stack.without_controller(&cli.controller_arg, |s| {
        rt.block_on(fill(s, &template, need))
    })?;
    let t0 = Instant::now();
    let total = existing + created;
    let metrics = format!("{}/metrics", stack.controller.url);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = 0.0;
    let mut stable_since = Instant::now();
    loop {
        let text = rt.block_on(scrape(&metrics))?;
        let reconciles = prom::sum(&text, "paysaga_controller_reconciles_total", |_| true);
        if reconciles != last {
            last = reconciles;
            stable_since = Instant::now();
        }
        if (reconciles as usize >= total && stable_since.elapsed() > Duration::from_secs(5))
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let synced = t0.elapsed();
    let u = Usage::of(stack.controller.pid());
    r.line(format!(
        "Added {created} finished Payments (copies of a real one) while the controller was stopped, then started it: it reconciled {last:.0} times in {:.1} s (to quiet); **RSS {:.1} MiB, peak {:.1} MiB** holding {total} Payments, {:.1} s CPU.",
        synced.as_secs_f64(),
        mib(u.rss),
        mib(u.hwm),
        u.cpu_secs
    ));
    Ok(())
}

async fn fill(stack: &DevStack, template: &Payment, n: usize) -> Result<usize> {
    let client = stack.kube.client().await?;
    let ns = "perf-history";
    let _ = stack.kube.kubectl_ok(&["create", "namespace", ns]);
    let api: Api<Payment> = Api::namespaced(client, ns);
    let status = template.status.clone().context("template without status")?;
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let spec = template.spec.clone();
            let status = status.clone();
            async move {
                let mut p = Payment::new(&format!("hist-{i}"), spec);
                p.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
                p.metadata.annotations = Some(
                    [(
                        ACCEPTED_AT_ANNOTATION.to_string(),
                        format!("{:.3}", k8s_openapi::jiff::Timestamp::now()),
                    )]
                    .into(),
                );
                api.create(&PostParams::default(), &p).await?;
                let body = serde_json::json!({
                    "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment", "status": status,
                });
                api.patch_status(
                    &format!("hist-{i}"),
                    &PatchParams::apply("paysaga-perf").force(),
                    &Patch::Apply(body),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        eprintln!("some history payments could not be made: {e}");
    }
    Ok(made)
}

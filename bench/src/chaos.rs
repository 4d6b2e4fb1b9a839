//! Faults under load, one at a time (`make chaos`, and a short run in `make
//! test`): a steady k6 load on a make-dev stack (ledger on PostgreSQL), and
//! while it runs a component is killed with SIGKILL, or kept down for a
//! while, then started again with the same command line and environment.
//! After each scenario, once nothing is in flight: every payment the API
//! accepted has exactly one object and one workflow and a terminal phase,
//! and the ledger audit finds money conserved (a double debit would break
//! it); with the client-visible error rate and the recovery time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::Api;
use paysaga_api::Payment;
use paysaga_testenv::DevStack;

use crate::k6;

/// What is faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Worker,
    Controller,
    Api,
    Temporal,
    Postgres,
    Gateway,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Worker,
        Target::Controller,
        Target::Api,
        Target::Temporal,
        Target::Postgres,
        Target::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Worker => "worker",
            Target::Controller => "controller",
            Target::Api => "API",
            Target::Temporal => "Temporal server",
            Target::Postgres => "PostgreSQL (ledger)",
            Target::Gateway => "gateway simulator",
        }
    }
}

/// A fault: a crash and an immediate restart, or a crash and `down` of
/// nothing before the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub target: Target,
    pub down: Duration,
}

impl Scenario {
    pub fn label(&self) -> String {
        if self.down.is_zero() {
            format!("kill -9 {}", self.target.name())
        } else {
            format!("{} down {} s", self.target.name(), self.down.as_secs())
        }
    }
}

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// Payments per second k6 offers.
    pub rate: f64,
    /// How long k6 offers them, per scenario.
    pub load: Duration,
    /// When, into the load, the fault comes.
    pub fault_at: Duration,
    /// How long to wait for every payment to finish after the load.
    pub settle: Duration,
    /// Where k6's summaries and reports go.
    pub out: PathBuf,
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// Creates the API answered 202 (k6's and the recovery probe's).
    pub accepted: u64,
    /// Payment objects made meanwhile.
    pub made: u64,
    /// Accepted but no object (accepted − made, when positive).
    pub lost: u64,
    /// Objects made whose create the client never saw answered (the API
    /// died mid-request): neither lost nor duplicated, since a retry with
    /// the same Idempotency-Key gets that payment back.
    pub unanswered: u64,
    /// Temporal runs of `PaymentWorkflow` beyond one per object, or ledger
    /// payments beyond the objects.
    pub duplicated: u64,
    /// Objects neither in a terminal phase nor waiting for a person once
    /// the settle time ran out.
    pub stuck: u64,
    /// Objects in manual review: the saga could not tell how the charge
    /// ended (the gateway did not know) and parked the payment for a
    /// person, its money held (not terminal, not stuck).
    pub in_review: u64,
    /// How the payments made meanwhile ended.
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// The ledger audit's verdict after the scenario.
    pub audit_ok: bool,
    pub requests: u64,
    /// Share of k6's requests that failed (connection refused, 5xx…).
    pub error_rate: f64,
    /// From the fault to the first payment accepted and finished after it.
    pub recovery: Duration,
}

impl Row {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.stuck == 0 && self.audit_ok
    }
}

/// The stack as `make dev` runs it, with the ledger on PostgreSQL, the
/// gateway simulator keeping its charges in a file (a real gateway does not
/// forget them when it restarts) and a 30 s confirmation timer (a payment whose confirmation a crash lost is
/// settled from the gateway's status endpoint when it fires).
pub fn stack_options() -> paysaga_testenv::DevOptions {
    paysaga_testenv::DevOptions {
        ledger_postgres: true,
        durable_gateway: true,
        controller_args: vec!["--confirmation-timeout-secs=30".into()],
        ..Default::default()
    }
    .temporal_as_make_dev()
}

/// Runs each scenario in turn on `stack` (started with the ledger on
/// PostgreSQL, Temporal in a file); stops at the first that cannot run.
pub fn run(stack: &mut DevStack, scenarios: &[Scenario], opts: &Options) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        eprintln!("chaos: {} …", scenario.label());
        let dir = opts.out.join(format!("{:02}-{:?}", i + 1, scenario.target));
        std::fs::create_dir_all(&dir)?;
        let row = one(stack, scenario, opts, &dir, i)
            .with_context(|| format!("scenario {}", scenario.label()))?;
        eprintln!(
            "chaos: {}: {} accepted, {} made, lost {}, unanswered {}, duplicated {}, stuck {}, in review {}, audit {}, errors {:.2} %, recovered in {:.1} s",
            row.scenario,
            row.accepted,
            row.made,
            row.lost,
            row.unanswered,
            row.duplicated,
            row.stuck,
            row.in_review,
            if row.audit_ok { "OK" } else { "FAILED" },
            row.error_rate * 100.0,
            row.recovery.as_secs_f64()
        );
        rows.push(row);
    }
    Ok(rows)
}

fn one(
    stack: &mut DevStack,
    scenario: &Scenario,
    opts: &Options,
    dir: &Path,
    index: usize,
) -> Result<Row> {
    let rt = tokio::runtime::Runtime::new()?;
    let payments: Api<Payment> = rt.block_on(async {
        let client = stack.kube.client().await?;
        anyhow::Ok(Api::namespaced(client, "default"))
    })?;
    let before = rt.block_on(settle(&payments, Duration::ZERO))?;
    let objects_before = before.total as u64;
    let workflows_before = workflow_count(stack)?;

    let api_url = stack.api.url.clone();
    let k6_dir = dir.to_path_buf();
    let env = vec![
        ("BASE_URL".to_string(), api_url.clone()),
        ("API_TOKEN".to_string(), stack.api_key.clone()),
        ("RATE".to_string(), format!("{}", opts.rate)),
        ("DURATION".to_string(), format!("{}s", opts.load.as_secs())),
        ("FOLLOW_TIMEOUT_S".to_string(), "900".to_string()),
    ];
    let load = std::thread::spawn(move || {
        k6::Run {
            script: "k6/load.js",
            env,
            out: &k6_dir,
            verbose: false,
        }
        .go()
    });

    std::thread::sleep(opts.fault_at);
    let fault = Instant::now();
    fault_and_restart(stack, scenario)?;
    rt.block_on(probe(
        &api_url,
        &stack.api_key,
        &format!("chaos-probe-{index}-{}", std::process::id()),
    ))?;
    let recovery = fault.elapsed();

    let outcome = load
        .join()
        .map_err(|_| anyhow::anyhow!("the k6 thread panicked"))??;
    let s = &outcome.summary;
    let accepted = s.count("payments_created") as u64 + 1;
    let settled = rt.block_on(settle(&payments, opts.settle))?;
    let (total, done) = (settled.total, settled.terminal);
    let made = total as u64 - objects_before;
    let workflows = workflow_count(stack)? - workflows_before;
    let (report, audit_ok) = stack.audit()?;
    std::fs::write(dir.join("audit.txt"), &report)?;
    let ledger_payments = ledger_payments(&report);
    let mut duplicated = workflows.saturating_sub(made);
    if ledger_payments.is_some_and(|n| n > total as u64) {
        duplicated += ledger_payments.unwrap_or(0) - total as u64;
    }
    Ok(Row {
        scenario: scenario.label(),
        accepted,
        made,
        lost: accepted.saturating_sub(made),
        unanswered: made.saturating_sub(accepted),
        duplicated,
        stuck: (total - done - settled.in_review) as u64,
        succeeded: settled.ended[0].saturating_sub(before.ended[0]),
        failed: settled.ended[1].saturating_sub(before.ended[1]),
        cancelled: settled.ended[2].saturating_sub(before.ended[2]),
        in_review: settled.in_review as u64,
        audit_ok,
        requests: s.count("http_reqs") as u64,
        error_rate: s.rate("http_req_failed").unwrap_or(0.0),
        recovery,
    })
}

fn fault_and_restart(stack: &mut DevStack, scenario: &Scenario) -> Result<()> {
    macro_rules! crash {
        ($part:expr) => {{
            $part.kill();
            std::thread::sleep(scenario.down);
            $part.restart()
        }};
    }
    match scenario.target {
        Target::Worker => crash!(stack.worker),
        Target::Controller => crash!(stack.controller),
        Target::Api => crash!(stack.api),
        Target::Gateway => crash!(stack.sim),
        Target::Temporal => crash!(stack.temporal),
        Target::Postgres => match stack.postgres.as_mut() {
            Some(pg) => crash!(pg),
            None => bail!("the stack's ledger is not on PostgreSQL"),
        },
    }
}

/// Pays once through the API, retrying with one Idempotency-Key until it
/// is accepted, and follows the payment to a terminal phase.
async fn probe(api: &str, credential: &str, key: &str) -> Result<()> {
    let http = crate::api_client(credential, Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let body =
        serde_json::json!({"userId": "load-0", "amount": 100, "currency": "EUR", "method": "card"});
    let id = loop {
        if Instant::now() > deadline {
            bail!("the API accepted no payment for 15 minutes");
        }
        let resp = http
            .post(format!("{api}/v1/payments"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await;
        if let Ok(r) = resp
            && r.status() == 202
        {
            let v: serde_json::Value = r.json().await?;
            break v["id"].as_str().unwrap_or_default().to_string();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    loop {
        if Instant::now() > deadline {
            bail!("payment {id} did not finish within 15 minutes");
        }
        if let Ok(r) = http.get(format!("{api}/v1/payments/{id}")).send().await
            && r.status() == 200
        {
            let v: serde_json::Value = r.json().await?;
            if matches!(
                v["phase"].as_str(),
                Some("Succeeded" | "Failed" | "Cancelled")
            ) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Settled {
    total: usize,
    terminal: usize,
    in_review: usize,
    /// Payments by terminal phase: succeeded, failed, cancelled.
    ended: [u64; 3],
}

/// Waits (up to `timeout`) until every Payment is terminal or in manual
/// review.
async fn settle(api: &Api<Payment>, timeout: Duration) -> Result<Settled> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = api.list(&Default::default()).await?;
        let status = |p: &Payment| p.status.clone().unwrap_or_default();
        let terminal = list
            .items
            .iter()
            .filter(|p| status(p).phase.is_some_and(paysaga_api::Phase::is_terminal))
            .count();
        let in_review = list
            .items
            .iter()
            .filter(|p| {
                let s = status(p);
                !s.phase.is_some_and(paysaga_api::Phase::is_terminal)
                    && s.step == Some(paysaga_api::Step::ManualReview)
            })
            .count();
        let total = list.items.len();
        if terminal + in_review == total || Instant::now() > deadline {
            let count = |phase| {
                list.items
                    .iter()
                    .filter(|p| status(p).phase == Some(phase))
                    .count() as u64
            };
            use paysaga_api::Phase::{Cancelled, Failed, Succeeded};
            return Ok(Settled {
                total,
                terminal,
                in_review,
                ended: [count(Succeeded), count(Failed), count(Cancelled)],
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Payment workflows Temporal knows of (every run, open or closed).
fn workflow_count(stack: &DevStack) -> Result<u64> {
    let query = format!("WorkflowType='{}'", paysaga_api::saga::PAYMENT_WORKFLOW);
    // Visibility is eventually consistent: read until two reads agree.
    let mut last = None;
    for _ in 0..30 {
        let out = paysaga_testenv::process::run(
            Command::new(paysaga_testenv::tool("temporal"))
                .args(["workflow", "count", "--address", &stack.temporal.host_port])
                .args(["--namespace", &stack.temporal.namespace, "--query", &query]),
        )?;
        let n: u64 = out
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("reading `temporal workflow count`: {out}"))?;
        if last == Some(n) {
            return Ok(n);
        }
        last = Some(n);
        std::thread::sleep(Duration::from_secs(1));
    }
    last.context("no workflow count")
}

/// `ledger audit: 54 accounts, 13 payments (…)` → 13.
fn ledger_payments(report: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.starts_with("ledger audit:"))?;
    let before = line.split(" payments").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// The table, as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | accepted | made | lost | unanswered | duplicated | stuck | in review | succeeded / failed / cancelled | audit | requests | client errors | recovery |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {:.2} % | {:.1} s |\n",
            r.scenario,
            r.accepted,
            r.made,
            r.lost,
            r.unanswered,
            r.duplicated,
            r.stuck,
            r.in_review,
            r.succeeded,
            r.failed,
            r.cancelled,
            if r.audit_ok { "OK" } else { "**FAILED**" },
            r.requests,
            r.error_rate * 100.0,
            r.recovery.as_secs_f64()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ledger_payment_count_is_read_from_the_audit() {
        let report = "ledger audit: 54 accounts, 13 payments (11 succeeded, 2 failed, 0 cancelled, 0 in flight)\nverdict: OK";
        assert_eq!(super::ledger_payments(report), Some(13));
        assert_eq!(super::ledger_payments("nothing"), None);
    }
}

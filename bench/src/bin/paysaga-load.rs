//! `make load` / `make stress`: a k6 script against the make-dev stack, then
//! the ledger audit, its verdict printed beside k6's numbers, and a report.
//!
//!     paysaga-load k6/load.js --rate 5 --duration 2m [--mix decline=0.02,fraud=0.01]
//!     paysaga-load k6/stress.js --rate 8 --stage 30s
//!
//! Without `--base-url` it starts its own stack (as `make dev` runs it, on
//! free ports); with `--base-url` (and `--database-url` for the audit) it
//! drives one that runs already, e.g. `make dev` or the kind ingress.
//! Prints numbers; the exit code says whether k6's thresholds held and the
//! audit found money conserved.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use kube::api::Api;
use paysaga_api::Payment;
use paysaga_bench::k6::{Outcome, Run};
use paysaga_bench::{machine, now_utc, versions, wait_all_finished};
use paysaga_testenv::{DevOptions, DevStack};

#[derive(Parser, Debug)]
#[command(about = "k6 against the make-dev stack, then the ledger audit and a report")]
struct Cli {
    /// The k6 script (k6/load.js, k6/stress.js, k6/smoke.js).
    #[arg(default_value = "k6/load.js")]
    script: String,
    /// Payments per second (load: constant; stress: the sustainable rate the ramp is built on).
    #[arg(long, env = "RATE", default_value_t = 2.0)]
    rate: f64,
    /// How long the load runs.
    #[arg(long, env = "DURATION", default_value = "2m")]
    duration: String,
    /// Length of each stress stage.
    #[arg(long, env = "STAGE", default_value = "30s")]
    stage: String,
    /// Outcome mix through the simulators' knobs, e.g. decline=0.02,fraud=0.01,timeout=0.005.
    #[arg(long, env = "MIX", default_value = "")]
    mix: String,
    /// How long a payment waits for the gateway's confirmation (the timeout
    /// outcome takes this long).
    #[arg(long, env = "CONFIRMATION_TIMEOUT_SECS", default_value_t = 15)]
    confirmation_timeout_secs: u64,
    /// Drive a stack that runs already, at this HTTP API URL.
    #[arg(long, env = "BASE_URL")]
    base_url: Option<String>,
    /// The credential to call it with (an API key or a Kubernetes token for
    /// the audience paysaga); the started stack's own key otherwise.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Its simulators (for the outcome mix).
    #[arg(long, env = "SIM_URL")]
    sim_url: Option<String>,
    /// Its ledger, for the audit.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where the report goes (default target/load/<script>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let stem = std::path::Path::new(&cli.script)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("k6")
        .to_string();
    let out = cli.out.clone().unwrap_or_else(|| {
        let t = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S");
        paysaga_testenv::workspace_root()
            .join("target/load")
            .join(format!("{stem}-{t}"))
    });
    paysaga_bench::out_dir(&out)?;

    let stack = match &cli.base_url {
        Some(_) => None,
        None => Some(DevStack::start(
            &out.join("stack"),
            &DevOptions {
                controller_args: vec![format!(
                    "--confirmation-timeout-secs={}",
                    cli.confirmation_timeout_secs
                )],
                ..Default::default()
            }
            .temporal_as_make_dev(),
        )?),
    };
    let base_url = cli
        .base_url
        .clone()
        .or_else(|| stack.as_ref().map(|s| s.api.url.clone()))
        .context("no API to drive")?;
    let api_token = cli
        .api_token
        .clone()
        .or_else(|| stack.as_ref().map(|s| s.api_key.clone()))
        .context("no credential: give --api-token (API_TOKEN) with --base-url")?;
    let sim_url = cli
        .sim_url
        .clone()
        .or_else(|| stack.as_ref().map(|s| s.sim.url.clone()));
    let database_url = cli
        .database_url
        .clone()
        .or_else(|| stack.as_ref().map(|s| s.database_url.clone()));

    let mut env = vec![
        ("BASE_URL".to_string(), base_url.clone()),
        ("API_TOKEN".into(), api_token),
        ("RATE".into(), cli.rate.to_string()),
        ("DURATION".into(), cli.duration.clone()),
        ("STAGE".into(), cli.stage.clone()),
        ("MIX".into(), cli.mix.clone()),
        (
            "FOLLOW_TIMEOUT_S".into(),
            (cli.confirmation_timeout_secs + 120).to_string(),
        ),
    ];
    if let Some(sim) = &sim_url {
        env.push(("SIM_URL".into(), sim.clone()));
    }
    eprintln!("paysaga-load: k6 {} against {base_url} …", cli.script);
    let run = Run {
        script: &cli.script,
        env,
        out: &out,
        verbose: true,
    }
    .go()?;

    // Whatever k6 stopped following (an aborted stress run) must still
    // finish before the audit, or it would count as in flight.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let settled = match &stack {
        Some(s) => Some(rt.block_on(async {
            let api: Api<Payment> = Api::namespaced(s.kube.client().await?, "default");
            let wait = Duration::from_secs(cli.confirmation_timeout_secs + 180);
            wait_all_finished(&api, wait).await
        })?),
        None => None,
    };
    let audit = match &database_url {
        Some(db) => Some(paysaga_testenv::dev::audit(db)?),
        None => None,
    };

    let text = report(&cli, &base_url, &run, settled, audit.as_ref());
    println!("\n{text}");
    let md = out.join("report.md");
    std::fs::write(&md, &text)?;
    println!("report: {}", md.display());

    let audit_ok = audit.as_ref().is_none_or(|(_, ok)| *ok);
    let all_settled = settled.is_none_or(|(total, done)| total == done);
    if run.code != 0 || !audit_ok || !all_settled {
        anyhow::bail!(
            "the run was not healthy: k6 exit {} (99 = a threshold failed), audit {}, {} payments not finished",
            run.code,
            if audit_ok { "clean" } else { "FAILED" },
            settled.map_or(0, |(t, d)| t - d)
        );
    }
    Ok(())
}

/// The numbers of the run, and the audit's verdict beside them (markdown).
fn report(
    cli: &Cli,
    base_url: &str,
    run: &Outcome,
    settled: Option<(usize, usize)>,
    audit: Option<&(String, bool)>,
) -> String {
    let s = &run.summary;
    let ms = |m: &str, f: &str| {
        s.get(m, f)
            .map_or("-".to_string(), |v| format!("{v:.0} ms"))
    };
    let pct = |m: &str| {
        s.rate(m)
            .map_or("-".to_string(), |v| format!("{:.3} %", v * 100.0))
    };
    let duration_s = s
        .get("iterations", "count")
        .zip(s.get("iterations", "rate"))
        .map_or(0.0, |(c, r)| if r > 0.0 { c / r } else { 0.0 });
    let created = s.count("payments_created");
    let mut t = String::new();
    t.push_str(&format!(
        "# paysaga load run: {}\n\n{} · {} · {}\n\n",
        cli.script,
        now_utc(),
        machine(),
        versions()
    ));
    t.push_str(&format!(
        "Command: `paysaga-load {} --rate {} --duration {} --stage {} --mix '{}'` against {base_url}\n\n",
        cli.script, cli.rate, cli.duration, cli.stage, cli.mix
    ));
    t.push_str("| | |\n|---|---|\n");
    let mut row = |k: &str, v: String| t.push_str(&format!("| {k} | {v} |\n"));
    row(
        "payments accepted (202)",
        format!(
            "{created:.0} in {duration_s:.0} s = {:.2}/s",
            if duration_s > 0.0 {
                created / duration_s
            } else {
                0.0
            }
        ),
    );
    row(
        "by outcome",
        ["Succeeded", "Failed", "Cancelled"]
            .iter()
            .map(|p| {
                format!(
                    "{p} {:.0}",
                    s.count(&format!("payments_{}", p.to_lowercase()))
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    row("shed by the API (429/503)", pct("payment_shed"));
    row("HTTP errors", pct("http_req_failed"));
    row(
        "dropped iterations",
        format!("{:.0}", s.count("dropped_iterations")),
    );
    let percentiles = |m: &str| {
        format!(
            "{} / {} / {}",
            ms(m, "p(50)"),
            ms(m, "p(95)"),
            ms(m, "p(99)")
        )
    };
    row(
        "create latency p50 / p95 / p99",
        percentiles("http_req_duration{name:create}"),
    );
    row(
        "end to end (202 → terminal seen) p50 / p95 / p99",
        percentiles("payment_e2e"),
    );
    row(
        "the same, without payments that waited out the confirmation timer",
        percentiles("payment_e2e{timer:no}"),
    );
    row("followed to the end", pct("payment_completed"));
    let failed = s.failed_thresholds();
    row(
        "k6 thresholds",
        if failed.is_empty() {
            format!("all held (exit {})", run.code)
        } else {
            format!("failed: {} (exit {})", failed.join("; "), run.code)
        },
    );
    if let Some((total, done)) = settled {
        row(
            "Payment objects",
            format!("{total}, of which {done} finished"),
        );
    }
    match audit {
        Some((text, ok)) => {
            row(
                "ledger audit",
                if *ok {
                    "**OK, money is conserved**".into()
                } else {
                    "**FAILED**".into()
                },
            );
            t.push_str(&format!("\n```\n{}\n```\n", text.trim_end()));
        }
        None => row("ledger audit", "not run (no --database-url)".into()),
    }
    t.push_str(&match &run.report {
        Some(html) => format!(
            "\nThroughput and latency over time: `{}` (k6 web dashboard report).\n",
            html.display()
        ),
        None => "\nNo plot: k6 writes its report only for runs longer than about 20 s.\n".into(),
    });
    t
}

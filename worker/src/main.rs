use clap::{Parser, Subcommand};
use paysaga_common::telemetry::Telemetry;
use paysaga_common::temporal::{self, TemporalOpts};
use paysaga_common::{LogFormat, hostname, shutdown_signal};
use std::future::Future;

use paysaga_worker::admin::{self, Readiness};
use paysaga_worker::metrics::Metrics;
use paysaga_worker::worker::{self, WorkerConfig};
use paysaga_worker::{audit, ledger::Ledger};

/// paysaga-worker: runs paysaga's Temporal workflows and activities.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "PAYSAGA_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the worker (both task queues).
    Run {
        #[command(flatten)]
        temporal: TemporalOpts,
        #[command(flatten)]
        config: Box<WorkerConfig>,
    },
    /// Audit the ledger: money conserved, every payment's entries matching its
    /// outcome. Exits 1 and names each discrepancy.
    Audit {
        /// The accounts ledger: `postgres://…` or `sqlite://path`.
        #[arg(
            long,
            env = "PAYSAGA_DATABASE_URL",
            default_value = "sqlite://.dev/ledger.db?mode=rwc"
        )]
        database_url: String,
    },
}

/// A database URL that carries a password must come from the environment
/// (`PAYSAGA_DATABASE_URL`, which the chart fills from a Secret), not from
/// `--database-url`, where `ps` shows it to every user of the machine.
fn password_not_in_argv(url: &str) -> anyhow::Result<()> {
    let from_env = std::env::var("PAYSAGA_DATABASE_URL").is_ok_and(|v| v == url);
    if paysaga_common::secret::url_has_password(url) && !from_env {
        anyhow::bail!(
            "--database-url carries a password, which the command line shows to every user \
             of the machine: give the URL in PAYSAGA_DATABASE_URL instead"
        );
    }
    Ok(())
}

/// Calls `connect` until it succeeds, backing off from 0.5 s to 10 s.
async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut connect: impl FnMut() -> F,
) -> T {
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match connect().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "{what} is not reachable yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = Telemetry::init(cli.log_format, "paysaga-worker");
    match cli.command {
        Command::Run { temporal, config } => {
            password_not_in_argv(&config.database_url)?;
            // A bad codec keyring is no outage to wait out: stop at once.
            temporal.codec()?;
            let ready = Readiness::default();
            let metrics = match &config.admin_listen {
                Some(listen) => {
                    let metrics = Metrics::export()?;
                    admin::serve(listen, ready.clone(), metrics.clone()).await?;
                    metrics
                }
                None => Metrics::default(),
            };
            // The database and Temporal may come up after the worker (pods
            // start in any order): keep trying, not ready meanwhile, instead
            // of exiting into a crash loop whose back-off outlasts them.
            let identity = format!("paysaga-worker@{}", hostname());
            let mut shutdown = std::pin::pin!(shutdown_signal());
            let connect = async {
                let ledger = retry("the ledger database", || worker::open_ledger(&config)).await;
                let client = retry("Temporal", || temporal::connect(&temporal, &identity)).await;
                (ledger, client)
            };
            let (ledger, client) = tokio::select! {
                connected = connect => connected,
                _ = &mut shutdown => {
                    tracing::info!("stopped before connecting");
                    return Ok(());
                }
            };
            worker::run(client, ledger, &config, ready, metrics, shutdown).await
        }
        Command::Audit { database_url } => {
            password_not_in_argv(&database_url)?;
            let ledger = Ledger::connect(&database_url, 2).await?;
            let report = audit::audit(&ledger.snapshot().await?);
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

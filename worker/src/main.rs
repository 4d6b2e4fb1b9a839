use clap::{Parser, Subcommand};
use paysaga_common::temporal::{self, TemporalOpts};
use paysaga_common::{LogFormat, hostname, init_logging, shutdown_signal};
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { temporal, config } => {
            let ledger = worker::open_ledger(&config).await?;
            let identity = format!("paysaga-worker@{}", hostname());
            let client = temporal::connect(&temporal, &identity).await?;
            worker::run(client, ledger, &config, shutdown_signal()).await
        }
        Command::Audit { database_url } => {
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

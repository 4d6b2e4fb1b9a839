use std::time::Duration;

use clap::Parser;
use paysaga_worker::{
    ping::{PingActivities, PingWorkflow},
    temporal::{self, TemporalOpts},
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// paysaga-worker: runs paysaga's Temporal workflows and activities.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    temporal: TemporalOpts,
    /// Task queue to poll.
    #[arg(long, env = "PAYSAGA_TASK_QUEUE", default_value = paysaga_api::names::PAYMENTS_TASK_QUEUE)]
    task_queue: String,
    /// Workflows kept in the sticky cache. The SDK's own default must not be what runs.
    #[arg(long, env = "PAYSAGA_MAX_CACHED_WORKFLOWS", default_value_t = 1000)]
    max_cached_workflows: usize,
    /// On shutdown, how long in-flight activities may run before they are cancelled (seconds).
    #[arg(long, env = "PAYSAGA_GRACEFUL_SHUTDOWN_SECS", default_value_t = 30)]
    graceful_shutdown_secs: u64,
    /// Log as JSON lines.
    #[arg(long, env = "PAYSAGA_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_json {
        fmt.json().init()
    } else {
        fmt.init()
    }

    let identity = format!("paysaga-worker@{}", hostname());
    let client = temporal::connect(&cli.temporal, &identity).await?;
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let options = WorkerOptions::new(cli.task_queue.clone())
        .register_workflow::<PingWorkflow>()?
        .register_activities(PingActivities)
        .max_cached_workflows(cli.max_cached_workflows)
        .graceful_shutdown_period(Duration::from_secs(cli.graceful_shutdown_secs))
        .build();
    let mut worker = Worker::new(&runtime, client, options)?;

    // Worker::run is !Send: it runs on this task, and a signal asks it to stop,
    // letting in-flight activities finish within the graceful period.
    let shutdown = worker.shutdown_handle();
    let on_signal = async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        shutdown();
        std::future::pending::<()>().await
    };
    tracing::info!(
        task_queue = %cli.task_queue,
        address = %cli.temporal.temporal_address,
        namespace = %cli.temporal.temporal_namespace,
        max_cached_workflows = cli.max_cached_workflows,
        "worker started"
    );
    tokio::select! {
        result = worker.run() => result?,
        _ = on_signal => unreachable!("the signal future never completes"),
    }
    tracing::info!("worker stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

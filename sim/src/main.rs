//! `paysaga-sim`: see the library's documentation.

use anyhow::Context;
use clap::Parser;
use paysaga_sim::{Sim, cli, serve, shutdown_signal};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let _telemetry = paysaga_common::telemetry::Telemetry::init(
        match cli.log_format {
            cli::LogFormat::Text => paysaga_common::LogFormat::Text,
            cli::LogFormat::Json => paysaga_common::LogFormat::Json,
        },
        "paysaga-sim",
    );
    // The callback key comes from the environment or a file, never argv.
    let secret = paysaga_common::secret::from_env("PAYSAGA_CALLBACK_SECRET")
        .context("the gateway's callback signing key")?;
    let settings = cli.settings(secret.into_bytes());
    let seed = settings.seed;
    let sim = Sim::new(settings).context("failed to set up the simulators")?;
    let resumed = sim.resume();
    if resumed > 0 {
        tracing::info!(
            resumed,
            "confirmations left unsent by the previous run scheduled again"
        );
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("failed to listen on {}", cli.listen))?;
    let addr = listener
        .local_addr()
        .context("failed to read the bound address")?;
    tracing::info!(%addr, seed, config = ?sim.config(), "paysaga-sim listening");
    serve(listener, sim, shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("paysaga-sim stopped");
    Ok(())
}

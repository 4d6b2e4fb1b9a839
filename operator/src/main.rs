use clap::{Args, Parser, Subcommand};
use paysaga_operator::{crdgen, telemetry};

/// paysaga-operator: payments as Kubernetes custom resources, run as Temporal sagas.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every subcommand.
#[derive(Args, Debug)]
struct Common {
    /// Log format.
    #[arg(
        long,
        env = "PAYSAGA_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    log_format: telemetry::LogFormat,
}

/// Where Temporal is.
#[derive(Args, Debug)]
struct TemporalOpts {
    /// Temporal frontend address.
    #[arg(
        long,
        env = "PAYSAGA_TEMPORAL_ADDRESS",
        default_value = "http://127.0.0.1:7233"
    )]
    temporal_address: String,
    /// Temporal namespace.
    #[arg(long, env = "PAYSAGA_TEMPORAL_NAMESPACE", default_value = "default")]
    temporal_namespace: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Payment CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (reconciles Payment objects into workflows).
    Controller {
        #[command(flatten)]
        temporal: TemporalOpts,
    },
    /// Serve the HTTP API.
    Api {
        #[command(flatten)]
        temporal: TemporalOpts,
        /// Address to listen on.
        #[arg(long, env = "PAYSAGA_API_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crdgen::payment_crd_yaml()?);
        }
        Command::Controller { temporal } => {
            telemetry::init(cli.common.log_format);
            tracing::warn!(
                temporal_address = %temporal.temporal_address,
                temporal_namespace = %temporal.temporal_namespace,
                "the controller is not implemented yet (issue 4); exiting"
            );
        }
        Command::Api { temporal, listen } => {
            telemetry::init(cli.common.log_format);
            tracing::warn!(
                %listen,
                temporal_address = %temporal.temporal_address,
                "the HTTP API is not implemented yet (issue 5); exiting"
            );
        }
    }
    Ok(())
}

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use paysaga_common::telemetry::Telemetry;
use paysaga_common::temporal::{self, TemporalOpts};
use paysaga_common::{LogFormat, hostname, shutdown_signal};
use paysaga_operator::controller::{self, admin, leader, plan::Settings};
use paysaga_operator::crdgen;
use paysaga_operator::http::{self, AppState, callbacks::CallbackVerifier};
use paysaga_operator::temporal::PaymentWorkflows;

/// paysaga-operator: payments as Kubernetes custom resources, run as Temporal sagas.
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

/// The HTTP API's options.
#[derive(Args, Debug)]
struct ApiOpts {
    /// Address to listen on.
    #[arg(long, env = "PAYSAGA_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The namespace Payments are created in and read from.
    #[arg(long, env = "PAYSAGA_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Requests worked on at once; past this, 503 with Retry-After.
    #[arg(long, env = "PAYSAGA_API_MAX_IN_FLIGHT", default_value_t = 256)]
    max_in_flight: usize,
    /// Refuse new payments (429) while this many accepted ones have not
    /// finished, as a watch of the namespace's Payments tells; 0: no limit.
    /// About the sustainable rate × the queueing delay one will accept.
    #[arg(
        long,
        env = "PAYSAGA_API_MAX_PAYMENTS_IN_FLIGHT",
        default_value_t = 500
    )]
    max_payments_in_flight: usize,
    /// Prefix of the `statusUrl`s the API answers with (empty: relative).
    #[arg(long, env = "PAYSAGA_PUBLIC_URL", default_value = "")]
    public_url: String,
    /// How far a callback's timestamp may be from now, in seconds.
    #[arg(long, env = "PAYSAGA_CALLBACK_TOLERANCE_SECS", default_value_t = paysaga_api::signature::DEFAULT_TOLERANCE_SECS)]
    callback_tolerance_secs: i64,
    /// The audience a Kubernetes bearer token must be issued for (a
    /// projected ServiceAccount token's `audience`).
    #[arg(long, env = "PAYSAGA_API_TOKEN_AUDIENCE", default_value = http::auth::DEFAULT_AUDIENCE)]
    token_audience: String,
    /// Requests a second each caller may make (bursts of twice that);
    /// past it, 429 with Retry-After. 0: no limit.
    #[arg(long, env = "PAYSAGA_API_RATE_PER_CALLER", default_value_t = 100)]
    rate_per_caller: u32,
    /// Acting for a payer (its `userId`) also needs RBAC `use` on
    /// `payers.paysaga.dev` with that name: a Role's `resourceNames` list
    /// the payers a caller owns.
    #[arg(long, env = "PAYSAGA_API_PAYER_SCOPING", default_value_t = false, action = clap::ArgAction::Set)]
    payer_scoping: bool,
    /// Browser origins that may call the codec endpoint (the Temporal UI's),
    /// comma separated.
    #[arg(
        long,
        env = "PAYSAGA_CODEC_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    codec_cors_origins: Vec<String>,
    /// Let requests from this host's loopback use the codec endpoint without
    /// credentials (`make dev`: the Temporal UI calls it from the
    /// developer's browser). Never in a cluster.
    #[arg(long, env = "PAYSAGA_CODEC_TRUST_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    codec_trust_loopback: bool,
}

/// API keys: Secrets labelled `paysaga.dev/api-key=true` that hold a key's
/// SHA-256.
#[derive(Subcommand, Debug)]
enum ApiKeyCommand {
    /// Make a key: creates the Secret NAME holding its hash and prints the
    /// key, once (it is kept nowhere). Bind roles to the user it prints.
    Create {
        /// The Secret's name (a DNS subdomain without `_`).
        name: String,
        /// The API's namespace.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
    /// Revoke a key: deletes its Secret (the API stops taking it within
    /// seconds).
    Revoke {
        name: String,
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
}

/// The controller's options.
#[derive(Args, Debug)]
struct ControllerOpts {
    /// Task queue the payment workflows are started on.
    #[arg(long, env = "PAYSAGA_PAYMENTS_TASK_QUEUE", default_value = paysaga_api::names::PAYMENTS_TASK_QUEUE)]
    payments_task_queue: String,
    /// Task queue of the fraud-check child workflows.
    #[arg(long, env = "PAYSAGA_FRAUD_TASK_QUEUE", default_value = paysaga_api::names::FRAUD_TASK_QUEUE)]
    fraud_task_queue: String,
    /// How long a payment waits for the gateway's confirmation, in seconds.
    #[arg(long, env = "PAYSAGA_CONFIRMATION_TIMEOUT_SECS", default_value_t = paysaga_api::saga::DEFAULT_CONFIRMATION_TIMEOUT_SECS)]
    confirmation_timeout_secs: u64,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "PAYSAGA_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    admin_listen: String,
    /// Run only while holding a Lease, so that several replicas are safe.
    #[arg(long, env = "PAYSAGA_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "PAYSAGA_LEASE_NAME", default_value = "paysaga-controller")]
    lease_name: String,
    /// How long a leader's Lease lasts without renewal, in seconds.
    #[arg(long, env = "PAYSAGA_LEASE_DURATION_SECS", default_value_t = 15)]
    lease_duration_secs: u64,
    /// Delete finished Payments this many seconds after they completed (their
    /// history stays in Temporal); 0 keeps them.
    #[arg(long, env = "PAYSAGA_FINISHED_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    finished_ttl_secs: u64,
    /// How long the Idempotency-Key of a deleted Payment is remembered (a
    /// retry of its request is answered from the record, not paid again),
    /// in seconds. Default 30 days.
    #[arg(long, env = "PAYSAGA_IDEMPOTENCY_RETENTION_SECS", default_value_t = paysaga_api::idempotency::DEFAULT_RETENTION.as_secs())]
    idempotency_retention_secs: u64,
    /// How often expired Idempotency-Key records are deleted, in seconds.
    #[arg(long, env = "PAYSAGA_IDEMPOTENCY_SWEEP_SECS", default_value_t = 3600)]
    idempotency_sweep_secs: u64,
    /// The namespaces RecurringPayments may fire in, comma separated: those
    /// where the worker may create Payments (the chart: its release
    /// namespace and `worker.recurringNamespaces`). A RecurringPayment
    /// elsewhere fails (`NamespaceNotServed`) and no Schedule is made. Empty:
    /// every namespace.
    #[arg(
        long,
        env = "PAYSAGA_RECURRING_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    recurring_namespaces: Vec<String>,
    /// How often the controller asks Temporal whether it answers, in seconds
    /// (`/readyz` and `paysaga_controller_temporal_reachable`; every 2 s
    /// while it does not).
    #[arg(long, env = "PAYSAGA_TEMPORAL_PROBE_SECS", default_value_t = 10)]
    temporal_probe_secs: u64,
    /// Payments reconciled at once.
    #[arg(long, env = "PAYSAGA_CONTROLLER_CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// Write a payment's status at most this often (milliseconds) when only
    /// its step changed; phase, outcome and cancel are written at once. 0
    /// writes every step.
    #[arg(long, env = "PAYSAGA_STATUS_STEP_INTERVAL_MS", default_value_t = 1000)]
    status_step_interval_ms: u64,
    /// Attempts of a payment's charge before it waits and tries once more.
    #[arg(long, env = "PAYSAGA_CHARGE_MAX_ATTEMPTS", default_value_t = paysaga_api::saga::DEFAULT_CHARGE_ATTEMPTS)]
    charge_max_attempts: u32,
    /// How long a charge that kept failing waits before its last attempt
    /// (then a manual review), in seconds.
    #[arg(long, env = "PAYSAGA_CHARGE_RETRY_WAIT_SECS", default_value_t = paysaga_api::saga::DEFAULT_CHARGE_RETRY_WAIT_SECS)]
    charge_retry_wait_secs: u64,
    /// How long a payment in manual review waits for a decision before it is
    /// compensated and failed, in seconds.
    #[arg(long, env = "PAYSAGA_REVIEW_DEADLINE_SECS", default_value_t = paysaga_api::saga::DEFAULT_REVIEW_DEADLINE_SECS)]
    review_deadline_secs: u64,
    /// Whom to email when a payment needs a review.
    #[arg(long, env = "PAYSAGA_REVIEWER_EMAIL")]
    reviewer_email: Option<String>,
    /// Whom to text (E.164) when a payment needs a review.
    #[arg(long, env = "PAYSAGA_REVIEWER_PHONE")]
    reviewer_phone: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Payment CustomResourceDefinition as YAML.
    Crd {
        /// Which kind's CRD.
        #[arg(value_enum, default_value_t = crdgen::Kind::Payment)]
        kind: crdgen::Kind,
    },
    /// Print the HTTP API's OpenAPI document.
    Openapi,
    /// Run the controller (reconciles Payment objects into workflows).
    Controller {
        #[command(flatten)]
        temporal: TemporalOpts,
        #[command(flatten)]
        opts: ControllerOpts,
    },
    /// Create or revoke an API key of the HTTP API (with the kubeconfig's
    /// credentials).
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Serve the HTTP API.
    Api {
        #[command(flatten)]
        temporal: TemporalOpts,
        #[command(flatten)]
        opts: ApiOpts,
    },
}

/// A comma-separated option's items, trimmed, the empty ones dropped (the
/// default `""` is no item).
fn listed(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { kind } => {
            print!("{}", crdgen::crd_yaml(kind)?);
        }
        Command::Openapi => {
            print!("{}", paysaga_operator::http::openapi::document_text());
        }
        Command::Controller { temporal, opts } => {
            let _telemetry = Telemetry::init(cli.log_format, "paysaga-controller");
            let kube = kube::Client::try_default().await?;
            let identity = format!("paysaga-controller@{}", hostname());
            let metrics = Arc::new(controller::metrics::Metrics::default());
            let readiness = Arc::new(admin::Readiness::default());
            let listener = tokio::net::TcpListener::bind(&opts.admin_listen).await?;
            tracing::info!(admin = %listener.local_addr()?, "admin endpoints (/metrics, /healthz, /readyz) listening");
            admin::spawn_readiness_probe(kube.clone(), readiness.clone());
            let router = admin::router(metrics.clone(), readiness.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "admin endpoints stopped");
                }
            });
            // A bad codec keyring is no outage to wait out: stop at once.
            temporal.codec()?;
            // Temporal may not be up yet: keep trying (not ready meanwhile).
            let mut backoff = std::time::Duration::from_millis(500);
            let temporal = loop {
                match temporal::connect(&temporal, &identity).await {
                    Ok(client) => break client,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "Temporal is not reachable yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                    }
                }
            };
            readiness.temporal(true);
            admin::spawn_temporal_probe(
                paysaga_operator::temporal::PaymentWorkflows::new(temporal.clone()),
                readiness.clone(),
                metrics.clone(),
                std::time::Duration::from_secs(opts.temporal_probe_secs.max(1)),
            );
            let settings = Settings {
                payments_task_queue: opts.payments_task_queue,
                fraud_task_queue: opts.fraud_task_queue,
                confirmation_timeout_secs: opts.confirmation_timeout_secs,
                finished_ttl: (opts.finished_ttl_secs > 0)
                    .then(|| std::time::Duration::from_secs(opts.finished_ttl_secs)),
                status_step_interval: std::time::Duration::from_millis(
                    opts.status_step_interval_ms,
                ),
                idempotency_retention: std::time::Duration::from_secs(
                    opts.idempotency_retention_secs,
                ),
                idempotency_sweep: std::time::Duration::from_secs(
                    opts.idempotency_sweep_secs.max(1),
                ),
                recurring_namespaces: listed(&opts.recurring_namespaces),
                escalation: paysaga_api::saga::Escalation {
                    charge_max_attempts: opts.charge_max_attempts,
                    charge_retry_wait_secs: opts.charge_retry_wait_secs,
                    review_deadline_secs: opts.review_deadline_secs,
                    reviewer: (opts.reviewer_email.is_some() || opts.reviewer_phone.is_some())
                        .then_some(paysaga_api::Notify {
                            email: opts.reviewer_email,
                            phone: opts.reviewer_phone,
                        }),
                },
            };
            let concurrency = opts.concurrency;
            tracing::info!(concurrency, "controller started");
            let run = |stop: leader::Stop| {
                controller::run(
                    kube.clone(),
                    temporal,
                    settings,
                    concurrency,
                    metrics,
                    readiness,
                    stop,
                )
            };
            if opts.leader_election {
                let lease = leader::Lease {
                    name: opts.lease_name,
                    namespace: opts.lease_namespace,
                    duration_secs: opts.lease_duration_secs,
                };
                let identity = std::env::var("POD_NAME")
                    .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
                leader::while_leading(kube.clone(), &lease, &identity, shutdown_signal(), run)
                    .await?;
            } else {
                run(Box::new(Box::pin(shutdown_signal()))).await;
            }
            tracing::info!("controller stopped");
        }
        Command::ApiKey { command } => {
            let kube = kube::Client::try_default().await?;
            match command {
                ApiKeyCommand::Create { name, namespace } => {
                    let key = http::auth::create_api_key(kube, &namespace, &name).await?;
                    eprintln!(
                        "created Secret {namespace}/{name}; the key is shown once, below. Its user is {}: bind roles to it, e.g.\n  kubectl -n {namespace} create rolebinding {name} --clusterrole=paysaga-client --user={}",
                        http::auth::api_key_user(&namespace, &name),
                        http::auth::api_key_user(&namespace, &name),
                    );
                    println!("{key}");
                }
                ApiKeyCommand::Revoke { name, namespace } => {
                    http::auth::revoke_api_key(kube, &namespace, &name).await?;
                    eprintln!("deleted Secret {namespace}/{name}: its key no longer works");
                }
            }
        }
        Command::Api { temporal, opts } => {
            let _telemetry = Telemetry::init(cli.log_format, "paysaga-api");
            // From the environment or a file, never argv (ps shows argv).
            let callback_secret = paysaga_common::secret::from_env("PAYSAGA_CALLBACK_SECRET")
                .map_err(|e| anyhow::anyhow!("the gateway's callback signing key: {e}"))?;
            // During a rotation, the key being replaced is accepted too.
            let previous_callback_secret =
                paysaga_common::secret::optional_from_env("PAYSAGA_CALLBACK_SECRET_PREVIOUS")
                    .map_err(|e| {
                        anyhow::anyhow!("the gateway's previous callback signing key: {e}")
                    })?;
            if previous_callback_secret.is_some() {
                tracing::info!(
                    "callback signing key rotation: callbacks signed with the previous key are accepted too"
                );
            }
            let identity = format!("paysaga-api@{}", hostname());
            let client = temporal::connect(&temporal, &identity).await?;
            let codec = temporal
                .codec()?
                .map(|codec| http::codec::CodecEndpoint::new(codec, &temporal.temporal_namespace));
            let kube = match kube::Client::try_default().await {
                Ok(client) => Some(client),
                Err(e) => {
                    tracing::warn!(error = %e, "no Kubernetes credentials: serving gateway callbacks only");
                    None
                }
            };
            let base_url = opts.public_url.trim_end_matches('/').to_string();
            let watched = Arc::new(http::watched::Watched::new(&base_url));
            if let Some(client) = &kube {
                watched.clone().watch(client.clone(), &opts.namespace);
            }
            let auth = kube.as_ref().map(|client| {
                http::auth::Auth::start(
                    client.clone(),
                    &opts.namespace,
                    http::auth::AuthSettings {
                        audience: opts.token_audience.clone(),
                        rate_per_second: opts.rate_per_caller,
                        payer_scoping: opts.payer_scoping,
                        codec_origins: listed(&opts.codec_cors_origins),
                        codec_trust_loopback: opts.codec_trust_loopback,
                    },
                )
            });
            let state = Arc::new(AppState {
                workflows: PaymentWorkflows::new(client),
                callbacks: CallbackVerifier::new(
                    callback_secret.into_bytes(),
                    opts.callback_tolerance_secs,
                )
                .with_previous(previous_callback_secret.map(String::into_bytes)),
                kube,
                watched,
                max_payments_in_flight: opts.max_payments_in_flight,
                namespace: opts.namespace.clone(),
                base_url,
                metrics: Default::default(),
                auth,
                codec,
            });
            let listener = tokio::net::TcpListener::bind(&opts.listen).await?;
            tracing::info!(listen = %listener.local_addr()?, "HTTP API listening");
            axum::serve(
                listener,
                http::router(state, opts.max_in_flight)
                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::listed;

    #[test]
    fn comma_separated_options_are_trimmed_and_empty_items_dropped() {
        let given = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(listed(&given(&[""])), Vec::<String>::new());
        assert_eq!(
            listed(&given(&[" shop", "", "billing "])),
            given(&["shop", "billing"])
        );
    }
}

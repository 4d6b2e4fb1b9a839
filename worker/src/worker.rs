//! Running the worker: both task queues, explicit limits, graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;

use temporalio_client::Client;
use temporalio_common::telemetry::TelemetryOptions;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::activities::{Endpoints, FraudActivities, SagaActivities, http_client};
use crate::admin::Readiness;
use crate::ledger::{Ledger, parse_seeds};
use crate::metrics::Metrics;
use crate::ping::{PingActivities, PingWorkflow};
use crate::recurring::{RecurringActivities, RecurringFireWorkflow};
use crate::refund::RefundWorkflow;
use crate::webhooks::{Dispatcher, WebhookActivities, WebhookConfig, WebhookDeliveryWorkflow};
use crate::workflows::{FraudCheckWorkflow, PaymentWorkflow};

/// How the worker runs. Every limit is explicit: the SDK's defaults are not
/// what runs.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Task queue of PaymentWorkflow and its activities.
    #[arg(long, env = "PAYSAGA_PAYMENTS_TASK_QUEUE", default_value = paysaga_api::names::PAYMENTS_TASK_QUEUE)]
    pub payments_task_queue: String,
    /// Task queue of FraudCheckWorkflow and its activity.
    #[arg(long, env = "PAYSAGA_FRAUD_TASK_QUEUE", default_value = paysaga_api::names::FRAUD_TASK_QUEUE)]
    pub fraud_task_queue: String,
    /// Workflows kept in the sticky cache, per queue.
    #[arg(long, env = "PAYSAGA_MAX_CACHED_WORKFLOWS", default_value_t = 1000)]
    pub max_cached_workflows: usize,
    /// Workflow tasks processed at once, per queue.
    #[arg(
        long,
        env = "PAYSAGA_MAX_CONCURRENT_WORKFLOW_TASKS",
        default_value_t = 50
    )]
    pub max_concurrent_workflow_tasks: usize,
    /// Activities run at once, per queue.
    #[arg(long, env = "PAYSAGA_MAX_CONCURRENT_ACTIVITIES", default_value_t = 100)]
    pub max_concurrent_activities: usize,
    /// On shutdown, how long in-flight activities may finish before they are cancelled.
    #[arg(long, env = "PAYSAGA_GRACEFUL_SHUTDOWN_SECS", default_value_t = 30)]
    pub graceful_shutdown_secs: u64,
    /// The accounts ledger: `postgres://…` or `sqlite://path?mode=rwc`.
    #[arg(
        long,
        env = "PAYSAGA_DATABASE_URL",
        default_value = "sqlite://.dev/ledger.db?mode=rwc"
    )]
    pub database_url: String,
    /// Ledger connection pool size (PostgreSQL; SQLite uses one).
    #[arg(long, env = "PAYSAGA_DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (e.g. `0.0.0.0:8082`); none when unset.
    #[arg(long, env = "PAYSAGA_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Demo accounts opened at start when missing: `user:CUR:balance[:frozen]`, comma separated.
    #[arg(long, env = "PAYSAGA_SEED_ACCOUNTS", default_value = "")]
    pub seed_accounts: String,
    #[command(flatten)]
    pub endpoints: Endpoints,
    #[command(flatten)]
    pub webhooks: WebhookConfig,
}

impl WorkerConfig {
    /// Applies the limits to a queue's options.
    fn tune(&self, mut options: WorkerOptions) -> WorkerOptions {
        let tuner = TunerHolder::builder()
            .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(
                self.max_concurrent_workflow_tasks,
            ))
            .activity_task_slot_supplier(FixedSizeSlotSupplier::new(self.max_concurrent_activities))
            .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(
                self.max_concurrent_activities,
            ))
            .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
            .build();
        options.max_cached_workflows = self.max_cached_workflows;
        options.tuner = tuner.into();
        options.graceful_shutdown_period = Some(Duration::from_secs(self.graceful_shutdown_secs));
        options
    }
}

/// Connects the ledger (migrating and seeding it).
pub async fn open_ledger(config: &WorkerConfig) -> anyhow::Result<Ledger> {
    let ledger = Ledger::connect(&config.database_url, config.database_max_connections).await?;
    ledger.seed(&parse_seeds(&config.seed_accounts)?).await?;
    Ok(ledger)
}

/// Runs the payments and fraud workers until `shutdown` resolves, then lets
/// in-flight work finish (within the graceful period) before returning.
pub async fn run(
    client: Client,
    ledger: Ledger,
    config: &WorkerConfig,
    ready: Readiness,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let telemetry = TelemetryOptions::builder()
        .maybe_metrics(metrics.meter())
        .attach_service_name(false)
        .build();
    let runtime_options = RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| anyhow::anyhow!("the SDK's runtime options: {e}"))?;
    let runtime = Runtime::from_current_tokio(runtime_options)?;
    let http = http_client();
    // Firings of RecurringPayments create Payments, webhooks read their
    // endpoints: the worker's own ServiceAccount in a cluster, KUBECONFIG
    // elsewhere; none, and firings fail saying so.
    let kube = match kube::Client::try_default().await {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes credentials: recurring payments cannot fire");
            None
        }
    };
    let webhooks = Dispatcher::new(
        kube.as_ref(),
        &config.webhooks,
        client.clone(),
        config.payments_task_queue.clone(),
    )
    .map(Arc::new);
    let deliveries = WebhookActivities {
        kube: kube.clone(),
        http: http.clone(),
        metrics: metrics.clone(),
    };
    let saga = SagaActivities {
        ledger,
        http: http.clone(),
        endpoints: config.endpoints.clone(),
        metrics,
        webhooks,
    };
    let recurring = RecurringActivities { kube };
    let fraud = FraudActivities {
        http,
        fraud_url: config.endpoints.fraud_url.clone(),
    };
    let mut payments = Worker::new(
        &runtime,
        client.clone(),
        config.tune(
            WorkerOptions::new(config.payments_task_queue.clone())
                .register_workflow::<PaymentWorkflow>()?
                .register_workflow::<RefundWorkflow>()?
                .register_workflow::<RecurringFireWorkflow>()?
                .register_workflow::<PingWorkflow>()?
                .register_workflow::<WebhookDeliveryWorkflow>()?
                .register_activities(saga)
                .register_activities(deliveries)
                .register_activities(recurring)
                .register_activities(PingActivities)
                .build(),
        ),
    )?;
    let mut fraud_worker = Worker::new(
        &runtime,
        client,
        config.tune(
            WorkerOptions::new(config.fraud_task_queue.clone())
                .register_workflow::<FraudCheckWorkflow>()?
                .register_activities(fraud)
                .build(),
        ),
    )?;
    let stop_payments = payments.shutdown_handle();
    let stop_fraud = fraud_worker.shutdown_handle();
    let stopping = ready.clone();
    let stopper = async move {
        shutdown.await;
        stopping.set(false);
        tracing::info!("shutdown requested; finishing in-flight work");
        stop_payments();
        stop_fraud();
    };
    tracing::info!(
        payments = %config.payments_task_queue,
        fraud = %config.fraud_task_queue,
        max_cached_workflows = config.max_cached_workflows,
        max_concurrent_activities = config.max_concurrent_activities,
        "worker started"
    );
    ready.set(true);
    // Worker::run is !Send: both run on this task.
    let (a, b, ()) = tokio::join!(payments.run(), fraud_worker.run(), stopper);
    a?;
    b?;
    tracing::info!("worker stopped");
    Ok(())
}

//! The harness shared by the saga's integration tests: a worker of its own
//! per test (own task queues, own ledger database) against the shared
//! Temporal server, PostgreSQL, simulators and callback receiver.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use paysaga_api::external::{
    CallbackOutcome, ChargeStatus, GatewayLedgerEntry, Message, Scenario, SimConfig, paths,
};
use paysaga_api::saga::{PaymentInput, PaymentOutcome, PaymentProgress, StepEvent};
use paysaga_api::{Notify, PaymentMethod, Step};
use paysaga_common::temporal::{TemporalOpts, connect};
use paysaga_worker::audit;
use paysaga_worker::ledger::{Ledger, parse_seeds};
use paysaga_worker::worker::{WorkerConfig, run};
use paysaga_worker::workflows::PaymentWorkflow;
use temporalio_client::{
    Client, WorkflowGetResultOptions, WorkflowHandle, WorkflowQueryOptions, WorkflowStartOptions,
};

pub const OPENING: i64 = 100_000;

pub type Handle = WorkflowHandle<Client, PaymentWorkflow>;

/// A worker of its own, on its own queues and ledger database.
pub struct Harness {
    pub client: Client,
    /// How this harness's client and worker reach Temporal (and with which
    /// payload keyring).
    pub opts: TemporalOpts,
    /// The simulators this harness's worker calls: the shared ones, or its own.
    pub sim: String,
    own_sim: Option<paysaga_testenv::Service>,
    pub ledger: Ledger,
    pub database_url: String,
    pub payments_queue: String,
    pub fraud_queue: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _queue: paysaga_testenv::TestTaskQueue,
}

pub fn temporal_opts() -> TemporalOpts {
    let t = paysaga_testenv::temporal();
    TemporalOpts {
        temporal_address: t.address.clone(),
        temporal_namespace: t.namespace.clone(),
        codec_keys_file: Some(paysaga_testenv::codec_keys_file().to_path_buf()),
    }
}

impl Harness {
    /// Prepares the ledger (alice: EUR, bob: EUR frozen) without starting
    /// the worker, against the shared simulators (steered per payment).
    pub async fn prepare(name: &str) -> Harness {
        Harness::prepare_on(name, None).await
    }

    /// A worker of its own against simulators of its own, for a test that
    /// changes the simulators' global knobs.
    pub async fn start_with_own_sim(name: &str) -> Harness {
        let callback = format!("{}{}", paysaga_testenv::api().url, paths::GATEWAY_CALLBACKS);
        let dir = paysaga_testenv::run_dir().join(unique(&format!("{name}-sim")));
        let sim = paysaga_testenv::Service::sim(&dir, &callback, None, &[]).unwrap();
        let mut h = Harness::prepare_on(name, Some(sim)).await;
        h.start_worker();
        h
    }

    /// [`Harness::prepare`] with a client and worker of these options (e.g.
    /// another payload keyring).
    pub async fn prepare_with(name: &str, opts: TemporalOpts) -> Harness {
        let mut h = Harness::prepare_on(name, None).await;
        h.client = connect(&opts, "saga-test").await.unwrap();
        h.opts = opts;
        h
    }

    async fn prepare_on(name: &str, own_sim: Option<paysaga_testenv::Service>) -> Harness {
        let database_url = paysaga_testenv::postgres().database(name).unwrap();
        let ledger = Ledger::connect(&database_url, 4).await.unwrap();
        ledger
            .seed(&parse_seeds(&format!("alice:EUR:{OPENING},bob:EUR:{OPENING}:frozen")).unwrap())
            .await
            .unwrap();
        let queue = paysaga_testenv::task_queue(name);
        let client = connect(&temporal_opts(), "saga-test").await.unwrap();
        Harness {
            client,
            opts: temporal_opts(),
            sim: own_sim
                .as_ref()
                .map_or_else(|| paysaga_testenv::sim().url.clone(), |s| s.url.clone()),
            own_sim,
            ledger,
            database_url,
            payments_queue: format!("{}-payments", queue.name),
            fraud_queue: format!("{}-fraud", queue.name),
            stop: None,
            thread: None,
            _queue: queue,
        }
    }

    pub async fn start(name: &str) -> Harness {
        let mut h = Harness::prepare(name).await;
        h.start_worker();
        h
    }

    /// Runs the worker on a thread of its own (its run future is !Send).
    pub fn start_worker(&mut self) {
        let sim = self.sim.clone();
        let config = WorkerConfig {
            payments_task_queue: self.payments_queue.clone(),
            fraud_task_queue: self.fraud_queue.clone(),
            max_cached_workflows: 100,
            max_concurrent_workflow_tasks: 10,
            max_concurrent_activities: 20,
            graceful_shutdown_secs: 5,
            database_url: self.database_url.clone(),
            database_max_connections: 4,
            seed_accounts: String::new(),
            admin_listen: None,
            webhooks: Default::default(),
            endpoints: paysaga_worker::activities::Endpoints {
                gateway_url: sim.clone(),
                fraud_url: sim.clone(),
                notify_url: sim,
                callback_url: None,
            },
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = self.opts.clone();
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let ledger = paysaga_worker::worker::open_ledger(&config).await?;
                let client = connect(&opts, "saga-test-worker").await?;
                run(
                    client,
                    ledger,
                    &config,
                    Default::default(),
                    Default::default(),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
            })
        }));
    }

    /// Stops the worker, letting in-flight activities finish; returns once it has.
    pub fn stop_worker(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join()
                .expect("the worker thread panicked")
                .expect("the worker failed");
        }
    }

    pub fn input(&self, id: &str, amount: i64) -> PaymentInput {
        PaymentInput {
            payment_id: id.to_string(),
            user_id: "alice".into(),
            amount,
            currency: "EUR".into(),
            method: PaymentMethod::Card,
            description: None,
            notify: Some(Notify {
                email: Some(format!("{id}@example.com")),
                phone: None,
            }),
            confirmation_timeout_secs: 60,
            fraud_task_queue: self.fraud_queue.clone(),
            compensation_max_attempts: 5,
            escalation: Default::default(),
            requested_by: None,
            object: None,
            request_id: None,
        }
    }

    pub async fn begin(&self, input: PaymentInput) -> Handle {
        let id = input.payment_id.clone();
        self.client
            .start_workflow(
                PaymentWorkflow::run,
                input,
                WorkflowStartOptions::new(self.payments_queue.clone(), id.clone()).build(),
            )
            .await
            .expect("starting the payment workflow");
        self.client.get_workflow_handle::<PaymentWorkflow>(id)
    }

    pub async fn pay(&self, input: PaymentInput) -> (PaymentOutcome, PaymentProgress) {
        self.pay_and_record(input, None).await
    }

    pub async fn pay_and_record(
        &self,
        input: PaymentInput,
        record_as: Option<&str>,
    ) -> (PaymentOutcome, PaymentProgress) {
        let payment_id = input.payment_id.clone();
        let handle = self.begin(input).await;
        let outcome = handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .expect("the payment workflow's result");
        if let Some(name) = record_as {
            maybe_record(&handle, name).await;
            // And its fraud check's, replayed on its own (`fraud-<version>-…`).
            let child = paysaga_api::saga::fraud_workflow_id(&payment_id);
            let child = self
                .client
                .get_workflow_handle::<paysaga_worker::workflows::FraudCheckWorkflow>(child);
            save_history(child.fetch_history(Default::default()), "fraud-", name).await;
        }
        (outcome, progress(&handle).await)
    }

    pub async fn balance(&self) -> i64 {
        self.ledger.balance("alice").await.unwrap().unwrap()
    }

    /// The audit of this test's ledger must be clean.
    pub async fn audit_is_clean(&self) -> audit::Report {
        let report = audit::audit(&self.ledger.snapshot().await.unwrap());
        assert!(report.is_clean(), "{report}");
        assert!(report.in_flight.is_empty(), "{report}");
        report
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) if !std::thread::panicking() => panic!("the worker failed: {e:#}"),
                Err(_) if !std::thread::panicking() => panic!("the worker thread panicked"),
                _ => {}
            }
        }
    }
}

/// With `PAYSAGA_RECORD_HISTORIES=<version>`, saves the workflow's history as
/// `worker/tests/histories/<version>-<name>.json` for the replay tests
/// (`make record-histories VERSION=v2`).
pub async fn maybe_record(handle: &Handle, name: &str) {
    save_history(handle.fetch_history(Default::default()), "", name).await;
}

/// Saves `history` as `tests/histories/<prefix><version>-<name>.json` when
/// recording.
async fn save_history(history: temporalio_client::WorkflowHistory, prefix: &str, name: &str) {
    let Some(version) = std::env::var("PAYSAGA_RECORD_HISTORIES")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return;
    };
    let json = history.to_json().await.expect("fetching the history");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{prefix}{version}-{name}.json"));
    std::fs::write(file, plaintext(&json)).unwrap();
}

/// The history with every encrypted payload decrypted with this run's
/// keyring: its keys die with the run, and the replay tests must read the
/// history after it (they replay it through an encrypting converter, which
/// passes plaintext through).
fn plaintext(json: &[u8]) -> Vec<u8> {
    use base64::Engine;
    use temporalio_common::protos::temporal::api::common::v1::Payload;
    let b64 = base64::engine::general_purpose::STANDARD;
    let codec =
        paysaga_common::codec::EncryptionCodec::from_file(paysaga_testenv::codec_keys_file())
            .expect("this run's keyring");
    fn walk(v: &mut serde_json::Value, f: &mut dyn FnMut(&mut serde_json::Value) -> bool) {
        if f(v) {
            return;
        }
        match v {
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, f)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| walk(i, f)),
            _ => {}
        }
    }
    let mut history: serde_json::Value = serde_json::from_slice(json).expect("a history");
    let mut decrypted = 0;
    walk(&mut history, &mut |v| {
        let (Some(metadata), Some(data)) = (
            v.get("metadata").and_then(|m| m.as_object()),
            v.get("data").and_then(|d| d.as_str()),
        ) else {
            return false;
        };
        let payload = Payload {
            metadata: metadata
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), b64.decode(v.as_str()?).ok()?)))
                .collect(),
            data: b64.decode(data).expect("base64 payload data"),
            ..Default::default()
        };
        if !paysaga_common::codec::is_encrypted(&payload) {
            return true;
        }
        let plain = codec
            .decrypt(payload)
            .expect("decrypting a recorded payload");
        v["metadata"] = plain
            .metadata
            .iter()
            .map(|(k, m)| (k.clone(), serde_json::Value::from(b64.encode(m))))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["data"] = b64.encode(&plain.data).into();
        decrypted += 1;
        true
    });
    assert!(
        decrypted > 0,
        "no encrypted payload in the recorded history"
    );
    serde_json::to_vec(&history).unwrap()
}

/// The workflow's result, once it has one.
pub async fn result(handle: &Handle) -> PaymentOutcome {
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .expect("the payment workflow's result")
}

pub async fn progress(handle: &Handle) -> PaymentProgress {
    handle
        .query(PaymentWorkflow::status, (), WorkflowQueryOptions::default())
        .await
        .expect("querying the payment's status")
}

/// Polls the status query until `pred` holds (a condition, not a sleep).
pub fn wait_for(
    handle: &Handle,
    what: &str,
    pred: impl Fn(&PaymentProgress) -> bool,
) -> PaymentProgress {
    paysaga_testenv::eventually(Duration::from_secs(60), what, || {
        let query = handle.query(PaymentWorkflow::status, (), WorkflowQueryOptions::default());
        let p = paysaga_testenv::block_on(query).map_err(|e| e.to_string())?;
        if pred(&p) {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
}

pub fn confirm() -> Scenario {
    Scenario {
        callback: Some(CallbackOutcome::Succeeded),
        callback_delay_ms: Some(50),
        ..Scenario::default()
    }
}

pub fn unique(prefix: &str) -> String {
    paysaga_testenv::unique_name(prefix)
}

pub fn steps(p: &PaymentProgress, event: StepEvent) -> Vec<Step> {
    p.history
        .iter()
        .filter(|r| r.event == event)
        .map(|r| r.step)
        .collect()
}

/// Asserts a failed/cancelled payment left nothing behind: balance restored to
/// the cent, nothing held at the gateway.
pub async fn assert_restored(h: &Harness, id: &str) {
    assert_eq!(h.balance().await, OPENING, "{id}: balance not restored");
    if let Some(g) = h.gateway_entry(id).await {
        assert!(
            g.status != ChargeStatus::Succeeded && g.status != ChargeStatus::Pending,
            "{id}: the gateway still holds the charge: {g:?}"
        );
    }
}

/// The simulators this harness calls.
impl Harness {
    fn sim_url(&self, path: &str) -> String {
        format!("{}{path}", self.sim)
    }

    /// Steers the simulators for one payment.
    pub async fn scenario(&self, payment_id: &str, s: Scenario) {
        let resp = reqwest::Client::new()
            .put(self.sim_url(&format!("{}/{payment_id}", paths::ADMIN_SCENARIOS)))
            .json(&s)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "setting a scenario: {}",
            resp.status()
        );
    }

    pub async fn gateway_entry(&self, payment_id: &str) -> Option<GatewayLedgerEntry> {
        let all: Vec<GatewayLedgerEntry> = reqwest::get(self.sim_url(paths::ADMIN_GATEWAY_LEDGER))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter().find(|e| e.payment_id == payment_id)
    }

    pub async fn messages(&self, payment_id: &str) -> Vec<Message> {
        reqwest::get(self.sim_url(&format!("{}?paymentId={payment_id}", paths::MESSAGES)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Changes the simulators' global knobs: only on simulators of one's
    /// own ([`Harness::start_with_own_sim`]).
    pub async fn sim_config(&self, patch: serde_json::Value) -> SimConfig {
        assert!(
            self.own_sim.is_some(),
            "the shared simulators' knobs are shared"
        );
        let resp = reqwest::Client::new()
            .put(self.sim_url(paths::ADMIN_CONFIG))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "setting the sim's config: {}",
            resp.status()
        );
        resp.json().await.unwrap()
    }
}

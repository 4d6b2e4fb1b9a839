//! The payment saga end to end on real parts: the Temporal dev server,
//! PostgreSQL, the simulators and the callback receiver as real processes,
//! and the worker. Each test has its own task queues and its own ledger
//! database; the simulators are steered per payment with scenarios.
//!
//! Every test ends with the ledger audit on its database.

use std::time::{Duration, Instant};

use paysaga_api::external::{
    CallbackOutcome, ChargeStatus, GatewayLedgerEntry, Message, Scenario, paths,
};
use paysaga_api::saga::{
    CancelRequest, PaymentInput, PaymentOutcome, PaymentProgress, StepEvent, reasons,
};
use paysaga_api::{Notify, PaymentMethod, Phase, Step};
use paysaga_common::temporal::{TemporalOpts, connect};
use paysaga_worker::audit;
use paysaga_worker::ledger::{Applied, Ledger, parse_seeds};
use paysaga_worker::worker::{WorkerConfig, run};
use paysaga_worker::workflows::PaymentWorkflow;
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowGetResultOptions, WorkflowHandle, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};

const OPENING: i64 = 100_000;

type Handle = WorkflowHandle<Client, PaymentWorkflow>;

/// A worker of its own, on its own queues and ledger database.
struct Harness {
    client: Client,
    ledger: Ledger,
    database_url: String,
    payments_queue: String,
    fraud_queue: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _queue: paysaga_testenv::TestTaskQueue,
}

fn temporal_opts() -> TemporalOpts {
    let t = paysaga_testenv::temporal();
    TemporalOpts {
        temporal_address: t.address.clone(),
        temporal_namespace: t.namespace.clone(),
    }
}

impl Harness {
    /// Prepares the ledger (alice: EUR, bob: EUR frozen) without starting the worker.
    async fn prepare(name: &str) -> Harness {
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
            ledger,
            database_url,
            payments_queue: format!("{}-payments", queue.name),
            fraud_queue: format!("{}-fraud", queue.name),
            stop: None,
            thread: None,
            _queue: queue,
        }
    }

    async fn start(name: &str) -> Harness {
        let mut h = Harness::prepare(name).await;
        h.start_worker();
        h
    }

    /// Runs the worker on a thread of its own (its run future is !Send).
    fn start_worker(&mut self) {
        let sim = paysaga_testenv::sim().url.clone();
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
            endpoints: paysaga_worker::activities::Endpoints {
                gateway_url: sim.clone(),
                fraud_url: sim.clone(),
                notify_url: sim,
                callback_url: None,
            },
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let opts = temporal_opts();
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let ledger = paysaga_worker::worker::open_ledger(&config).await?;
                let client = connect(&opts, "saga-test-worker").await?;
                run(client, ledger, &config, async {
                    let _ = rx.await;
                })
                .await
            })
        }));
    }

    fn input(&self, id: &str, amount: i64) -> PaymentInput {
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
        }
    }

    async fn begin(&self, input: PaymentInput) -> Handle {
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

    async fn pay(&self, input: PaymentInput) -> (PaymentOutcome, PaymentProgress) {
        self.pay_and_record(input, None).await
    }

    async fn pay_and_record(
        &self,
        input: PaymentInput,
        record_as: Option<&str>,
    ) -> (PaymentOutcome, PaymentProgress) {
        let handle = self.begin(input).await;
        let outcome = handle
            .get_result(WorkflowGetResultOptions::default())
            .await
            .expect("the payment workflow's result");
        if let Some(name) = record_as {
            maybe_record(&handle, name).await;
        }
        (outcome, progress(&handle).await)
    }

    async fn balance(&self) -> i64 {
        self.ledger.balance("alice").await.unwrap().unwrap()
    }

    /// The audit of this test's ledger must be clean.
    async fn audit_is_clean(&self) -> audit::Report {
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
async fn maybe_record(handle: &Handle, name: &str) {
    let Some(version) = std::env::var("PAYSAGA_RECORD_HISTORIES")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return;
    };
    let json = handle
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("fetching the history");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{version}-{name}.json")), json).unwrap();
}

async fn progress(handle: &Handle) -> PaymentProgress {
    handle
        .query(PaymentWorkflow::status, (), WorkflowQueryOptions::default())
        .await
        .expect("querying the payment's status")
}

/// Polls the status query until `pred` holds (a condition, not a sleep).
async fn wait_for(
    handle: &Handle,
    what: &str,
    pred: impl Fn(&PaymentProgress) -> bool,
) -> PaymentProgress {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = handle
            .query(PaymentWorkflow::status, (), WorkflowQueryOptions::default())
            .await
            && pred(&p)
        {
            return p;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sim_url(path: &str) -> String {
    format!("{}{path}", paysaga_testenv::sim().url)
}

async fn scenario(payment_id: &str, s: Scenario) {
    let resp = reqwest::Client::new()
        .put(sim_url(&format!("{}/{payment_id}", paths::ADMIN_SCENARIOS)))
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

fn confirm() -> Scenario {
    Scenario {
        callback: Some(CallbackOutcome::Succeeded),
        callback_delay_ms: Some(50),
        ..Scenario::default()
    }
}

async fn gateway_entry(payment_id: &str) -> Option<GatewayLedgerEntry> {
    let all: Vec<GatewayLedgerEntry> = reqwest::get(sim_url(paths::ADMIN_GATEWAY_LEDGER))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.into_iter().find(|e| e.payment_id == payment_id)
}

async fn messages(payment_id: &str) -> Vec<Message> {
    reqwest::get(sim_url(&format!(
        "{}?paymentId={payment_id}",
        paths::MESSAGES
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

fn unique(prefix: &str) -> String {
    paysaga_testenv::unique_name(prefix)
}

fn steps(p: &PaymentProgress, event: StepEvent) -> Vec<Step> {
    p.history
        .iter()
        .filter(|r| r.event == event)
        .map(|r| r.step)
        .collect()
}

/// Asserts a failed/cancelled payment left nothing behind: balance restored to
/// the cent, nothing held at the gateway.
async fn assert_restored(h: &Harness, id: &str) {
    assert_eq!(h.balance().await, OPENING, "{id}: balance not restored");
    if let Some(g) = gateway_entry(id).await {
        assert!(
            g.status != ChargeStatus::Succeeded && g.status != ChargeStatus::Pending,
            "{id}: the gateway still holds the charge: {g:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_succeeds_debits_once_and_notifies() {
    let h = Harness::start("happy").await;
    let id = unique("pay-happy");
    scenario(&id, confirm()).await;
    let (outcome, progress) = h
        .pay_and_record(h.input(&id, 1_250), Some("succeeded"))
        .await;

    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    assert_eq!(outcome.reason, reasons::CONFIRMED);
    assert_eq!(progress.phase, Phase::Succeeded);
    assert_eq!(progress.step, Step::Done);
    assert_eq!(
        steps(&progress, StepEvent::Completed),
        [
            Step::ValidateAccount,
            Step::Debit,
            Step::Charge,
            Step::FraudCheck,
            Step::AwaitConfirmation,
            Step::Notify,
            Step::Done
        ]
    );
    // Workflow timestamps never go backwards.
    assert!(
        progress
            .history
            .windows(2)
            .all(|w| w[0].at_ms <= w[1].at_ms)
    );
    assert_eq!(h.balance().await, OPENING - 1_250);
    let g = gateway_entry(&id).await.expect("a charge at the gateway");
    assert_eq!(
        (g.status, g.amount, g.attempts),
        (ChargeStatus::Succeeded, 1_250, 1)
    );
    let sent = messages(&id).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].request.subject.contains("succeeded"), "{sent:?}");
    let report = h.audit_is_clean().await;
    assert_eq!(report.money["EUR"].captured, 1_250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_accounts_fail_at_once_and_are_notified() {
    let h = Harness::start("invalid").await;
    let cases = [
        ("nobody", "EUR", 100, reasons::ACCOUNT_INVALID, "no account"),
        ("bob", "EUR", 100, reasons::ACCOUNT_INVALID, "frozen"),
        ("alice", "USD", 100, reasons::ACCOUNT_INVALID, "holds EUR"),
        (
            "alice",
            "EUR",
            OPENING + 1,
            reasons::INSUFFICIENT_FUNDS,
            "less than",
        ),
    ];
    for (user, currency, amount, reason, words) in cases {
        let id = unique("pay-invalid");
        let mut input = h.input(&id, amount);
        input.user_id = user.into();
        input.currency = currency.into();
        let (outcome, progress) = h.pay(input).await;
        assert_eq!(outcome.phase, Phase::Failed, "{user}: {outcome:?}");
        assert_eq!(outcome.reason, reason, "{user}: {outcome:?}");
        assert!(
            outcome.message.contains(words),
            "{user}: {}",
            outcome.message
        );
        // Failed at once: nothing after validation ran but the notification.
        assert_eq!(steps(&progress, StepEvent::Failed), [Step::ValidateAccount]);
        assert!(
            !progress
                .history
                .iter()
                .any(|r| r.step == Step::Debit || r.step == Step::Charge)
        );
        assert!(gateway_entry(&id).await.is_none());
        assert_eq!(messages(&id).await.len(), 1, "{user} was not notified");
    }
    assert_eq!(h.balance().await, OPENING);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_path_compensates_to_the_cent() {
    let h = Harness::start("failures").await;
    let cases: [(&str, Scenario, u64, &str); 4] = [
        (
            "fraud",
            Scenario {
                fraud_score: Some(95),
                ..confirm()
            },
            60,
            reasons::FRAUD_REJECTED,
        ),
        (
            "decline",
            Scenario {
                decline: true,
                ..confirm()
            },
            60,
            reasons::DECLINED,
        ),
        (
            "cb-failed",
            Scenario {
                callback: Some(CallbackOutcome::Failed),
                ..confirm()
            },
            60,
            reasons::CHARGE_FAILED,
        ),
        // No confirmation ever: the durable timer (short here) fires.
        (
            "timeout",
            Scenario {
                callback: None,
                ..Scenario::default()
            },
            2,
            reasons::CONFIRMATION_TIMEOUT,
        ),
    ];
    for (name, s, timeout, reason) in cases {
        let id = unique(&format!("pay-{name}"));
        scenario(&id, s).await;
        let mut input = h.input(&id, 2_000);
        input.confirmation_timeout_secs = timeout;
        let (outcome, progress) = h.pay_and_record(input, Some(name)).await;
        assert_eq!(outcome.phase, Phase::Failed, "{name}: {outcome:?}");
        assert_eq!(outcome.reason, reason, "{name}: {outcome:?}");
        assert!(
            steps(&progress, StepEvent::Started).contains(&Step::Compensate),
            "{name}: no compensation in {:?}",
            progress.history
        );
        assert_restored(&h, &id).await;
        let sent = messages(&id).await;
        assert!(
            sent.iter().any(|m| m.request.subject.contains("failed")),
            "{name}: {sent:?}"
        );
    }
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_gateway_faults_are_retried_then_succeed() {
    let h = Harness::start("transient").await;
    let id = unique("pay-transient");
    scenario(
        &id,
        Scenario {
            transient_failures: 2,
            ..confirm()
        },
    )
    .await;
    let (outcome, progress) = h.pay(h.input(&id, 700)).await;
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    let charged = progress
        .history
        .iter()
        .find(|r| r.step == Step::Charge && r.event == StepEvent::Completed)
        .and_then(|r| r.detail.clone())
        .unwrap();
    assert!(charged.ends_with("on attempt 3"), "{charged}");
    let g = gateway_entry(&id).await.unwrap();
    assert_eq!((g.attempts, g.status), (3, ChargeStatus::Succeeded));
    assert_eq!(h.balance().await, OPENING - 700);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_callbacks_and_replayed_ledger_operations_are_harmless() {
    let h = Harness::start("duplicates").await;
    let id = unique("pay-dup");
    scenario(
        &id,
        Scenario {
            callback_copies: 3,
            ..confirm()
        },
    )
    .await;
    let handle = h.begin(h.input(&id, 300)).await;
    // A duplicated confirmation, signalled straight at the workflow too.
    wait_for(&handle, "the charge", |p| {
        steps(p, StepEvent::Completed).contains(&Step::Charge)
    })
    .await;
    let cb = paysaga_api::external::GatewayCallback {
        payment_id: id.clone(),
        charge_id: "whatever".into(),
        outcome: CallbackOutcome::Failed,
        reason: Some("a late contradicting duplicate".into()),
    };
    let _ = handle
        .signal(
            PaymentWorkflow::gateway_callback,
            cb,
            WorkflowSignalOptions::default(),
        )
        .await;
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    // Either the real confirmation or our signal came first; exactly one counts.
    assert!(
        outcome.phase == Phase::Succeeded || outcome.reason == reasons::CHARGE_FAILED,
        "{outcome:?}"
    );
    let expected = if outcome.phase == Phase::Succeeded {
        OPENING - 300
    } else {
        OPENING
    };
    assert_eq!(h.balance().await, expected);

    // Replayed debit and credit of one payment move money once.
    let other = unique("pay-replay");
    assert_eq!(
        h.ledger.debit(&other, "alice", "EUR", 50).await.unwrap(),
        Applied::Moved
    );
    assert_eq!(
        h.ledger.debit(&other, "alice", "EUR", 50).await.unwrap(),
        Applied::AlreadyDone
    );
    assert_eq!(h.balance().await, expected - 50);
    assert_eq!(
        h.ledger.credit(&other, "alice", "EUR").await.unwrap(),
        Applied::Moved
    );
    assert_eq!(
        h.ledger.credit(&other, "alice", "EUR").await.unwrap(),
        Applied::AlreadyDone
    );
    assert_eq!(h.balance().await, expected);
    // A credit before any debit leaves a tombstone: a late debit is refused.
    let late = unique("pay-late");
    assert_eq!(
        h.ledger.credit(&late, "alice", "EUR").await.unwrap(),
        Applied::Nothing
    );
    assert!(h.ledger.debit(&late, "alice", "EUR", 50).await.is_err());
    assert_eq!(h.balance().await, expected);
    // The hand-made entries have no outcome; record them so the audit judges them.
    for p in [&other, &late] {
        h.ledger
            .record_outcome(p, "alice", 50, "EUR", "Cancelled", "Test")
            .await
            .unwrap();
    }
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_at_each_step() {
    // Before the worker has run anything: the cancel is seen at the first
    // safe point, after validation, before any money moves.
    let mut h = Harness::prepare("cancel").await;
    let early = unique("pay-cancel-early");
    let handle = h.begin(h.input(&early, 400)).await;
    handle
        .signal(
            PaymentWorkflow::cancel,
            CancelRequest {
                reason: "changed my mind".into(),
            },
            WorkflowSignalOptions::default(),
        )
        .await
        .unwrap();
    h.start_worker();
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Cancelled, reasons::CANCELLED)
    );
    assert!(
        outcome.message.contains("changed my mind"),
        "{}",
        outcome.message
    );
    let p = progress(&handle).await;
    assert!(
        !p.history.iter().any(|r| r.step == Step::Debit),
        "{:?}",
        p.history
    );
    assert_restored(&h, &early).await;

    // During the charge's retries: the charge finishes, then both are undone.
    let mid = unique("pay-cancel-charge");
    scenario(
        &mid,
        Scenario {
            transient_failures: 2,
            ..confirm()
        },
    )
    .await;
    let handle = h.begin(h.input(&mid, 400)).await;
    wait_for(&handle, "the charge to start", |p| p.step == Step::Charge).await;
    handle
        .signal(
            PaymentWorkflow::cancel,
            CancelRequest {
                reason: "during charge".into(),
            },
            WorkflowSignalOptions::default(),
        )
        .await
        .unwrap();
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.phase, Phase::Cancelled, "{outcome:?}");
    assert_restored(&h, &mid).await;

    // While waiting for the confirmation (none will come).
    let late = unique("pay-cancel-wait");
    scenario(
        &late,
        Scenario {
            callback: None,
            ..Scenario::default()
        },
    )
    .await;
    let handle = h.begin(h.input(&late, 400)).await;
    wait_for(&handle, "the wait for confirmation", |p| {
        p.step == Step::AwaitConfirmation
    })
    .await;
    // Accepted payments are visible to the audit while they run.
    let running = audit::audit(&h.ledger.snapshot().await.unwrap());
    assert!(running.in_flight.contains(&late), "{running}");
    handle
        .signal(
            PaymentWorkflow::cancel,
            CancelRequest {
                reason: "too slow".into(),
            },
            WorkflowSignalOptions::default(),
        )
        .await
        .unwrap();
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.phase, Phase::Cancelled, "{outcome:?}");
    let p = progress(&handle).await;
    let compensated: Vec<_> = p
        .history
        .iter()
        .filter(|r| r.step == Step::Compensate && r.event == StepEvent::Completed)
        .filter_map(|r| r.detail.clone())
        .collect();
    assert_eq!(
        compensated,
        ["refunded 400", "credit: Moved"],
        "reverse order: refund, then credit"
    );
    maybe_record(&handle, "cancelled-while-waiting").await;
    assert_restored(&h, &late).await;

    // A Temporal-level cancellation is honoured the same way.
    let hard = unique("pay-cancel-temporal");
    scenario(
        &hard,
        Scenario {
            callback: None,
            ..Scenario::default()
        },
    )
    .await;
    let handle = h.begin(h.input(&hard, 400)).await;
    wait_for(&handle, "the wait for confirmation", |p| {
        p.step == Step::AwaitConfirmation
    })
    .await;
    handle
        .cancel(WorkflowCancelOptions::builder().reason("operator").build())
        .await
        .unwrap();
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.phase, Phase::Cancelled, "{outcome:?}");
    assert_restored(&h, &hard).await;

    let report = h.audit_is_clean().await;
    assert_eq!(report.cancelled, 4);
}

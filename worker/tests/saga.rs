//! The payment saga end to end on real parts: the Temporal dev server,
//! PostgreSQL, the simulators and the callback receiver as real processes,
//! and the worker. Each test has its own task queues and its own ledger
//! database; the simulators are steered per payment with scenarios.
//!
//! Every test ends with the ledger audit on its database.

mod common;

use common::*;
use paysaga_api::external::{CallbackOutcome, ChargeStatus, Scenario};
use paysaga_api::saga::{CancelRequest, StepEvent, reasons};
use paysaga_api::{Phase, Step};
use paysaga_worker::audit;
use paysaga_worker::ledger::Applied;
use paysaga_worker::workflows::PaymentWorkflow;
use temporalio_client::{WorkflowCancelOptions, WorkflowSignalOptions};

async fn cancel(handle: &Handle, reason: &str) {
    let req = CancelRequest {
        reason: reason.into(),
    };
    handle
        .signal(
            PaymentWorkflow::cancel,
            req,
            WorkflowSignalOptions::default(),
        )
        .await
        .expect("signalling cancel");
}

fn never_confirm() -> Scenario {
    Scenario {
        callback: None,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_succeeds_debits_once_and_notifies() {
    let h = Harness::start("happy").await;
    let id = unique("pay-happy");
    h.scenario(&id, confirm()).await;
    let (outcome, progress) = h
        .pay_and_record(h.input(&id, 1_250), Some("succeeded"))
        .await;

    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    assert_eq!(outcome.reason, reasons::CONFIRMED);
    assert_eq!(progress.phase, Phase::Succeeded);
    assert_eq!(progress.step, Step::Done);
    assert_eq!(
        steps(&progress, StepEvent::Completed),
        // The fraud verdict comes before the charge: no money leaves first.
        [
            Step::ValidateAccount,
            Step::Debit,
            Step::FraudCheck,
            Step::Charge,
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
    let g = h.gateway_entry(&id).await.expect("a charge at the gateway");
    assert_eq!(
        (g.status, g.amount, g.attempts),
        (ChargeStatus::Succeeded, 1_250, 1)
    );
    let sent = h.messages(&id).await;
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
        assert!(h.gateway_entry(&id).await.is_none());
        assert_eq!(h.messages(&id).await.len(), 1, "{user} was not notified");
    }
    assert_eq!(h.balance().await, OPENING);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_path_compensates_to_the_cent() {
    let h = Harness::start("failures").await;
    // (name, scenario, confirmation timeout, review deadline, reason)
    let cases: [(&str, Scenario, u64, u64, &str); 4] = [
        (
            "fraud",
            Scenario {
                fraud_score: Some(95),
                ..confirm()
            },
            60,
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
            60,
            reasons::CHARGE_FAILED,
        ),
        // No confirmation ever: the durable timer (short here) fires, the
        // gateway says the charge is still pending, a review opens, and
        // nobody answers before its deadline (short here too).
        (
            "timeout",
            Scenario {
                callback: None,
                ..Scenario::default()
            },
            2,
            2,
            reasons::REVIEW_TIMEOUT,
        ),
    ];
    for (name, s, timeout, deadline, reason) in cases {
        let id = unique(&format!("pay-{name}"));
        h.scenario(&id, s).await;
        let mut input = h.input(&id, 2_000);
        input.confirmation_timeout_secs = timeout;
        input.escalation.review_deadline_secs = deadline;
        let (outcome, progress) = h.pay_and_record(input, Some(name)).await;
        assert_eq!(outcome.phase, Phase::Failed, "{name}: {outcome:?}");
        assert_eq!(outcome.reason, reason, "{name}: {outcome:?}");
        assert!(
            steps(&progress, StepEvent::Started).contains(&Step::Compensate),
            "{name}: no compensation in {:?}",
            progress.history
        );
        assert_restored(&h, &id).await;
        let sent = h.messages(&id).await;
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
    h.scenario(
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
    let g = h.gateway_entry(&id).await.unwrap();
    assert_eq!((g.attempts, g.status), (3, ChargeStatus::Succeeded));
    assert_eq!(h.balance().await, OPENING - 700);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_callbacks_and_replayed_ledger_operations_are_harmless() {
    let h = Harness::start("duplicates").await;
    let id = unique("pay-dup");
    h.scenario(
        &id,
        Scenario {
            callback_copies: 3,
            // Late enough that the signal below lands while it waits.
            callback_delay_ms: Some(2_000),
            ..confirm()
        },
    )
    .await;
    let handle = h.begin(h.input(&id, 300)).await;
    // A contradicting confirmation for another charge, signalled straight at
    // the workflow too: ignored, whenever it comes (only the gateway's
    // confirmation of the charge made counts), and told.
    wait_for(&handle, "the charge", |p| {
        steps(p, StepEvent::Completed).contains(&Step::Charge)
    });
    let cb = paysaga_api::external::GatewayCallback {
        payment_id: id.clone(),
        charge_id: "whatever".into(),
        outcome: CallbackOutcome::Failed,
        reason: Some("a late contradicting duplicate".into()),
        amount: None,
        currency: None,
    };
    handle
        .signal(
            PaymentWorkflow::gateway_callback,
            cb,
            WorkflowSignalOptions::default(),
        )
        .await
        .expect("signalled while the payment waits");
    let outcome = result(&handle).await;
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    assert_eq!(outcome.ignored_callbacks.len(), 1, "{outcome:?}");
    let expected = OPENING - 300;
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
    cancel(&handle, "changed my mind").await;
    h.start_worker();
    let outcome = result(&handle).await;
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
    h.scenario(
        &mid,
        Scenario {
            transient_failures: 2,
            ..confirm()
        },
    )
    .await;
    let handle = h.begin(h.input(&mid, 400)).await;
    wait_for(&handle, "the charge to start", |p| p.step == Step::Charge);
    cancel(&handle, "during charge").await;
    let outcome = result(&handle).await;
    assert_eq!(outcome.phase, Phase::Cancelled, "{outcome:?}");
    assert_restored(&h, &mid).await;

    // While waiting for the confirmation (none will come).
    let late = unique("pay-cancel-wait");
    h.scenario(&late, never_confirm()).await;
    let handle = h.begin(h.input(&late, 400)).await;
    wait_for(&handle, "the wait for confirmation", |p| {
        p.step == Step::AwaitConfirmation
    });
    // Accepted payments are visible to the audit while they run.
    let running = audit::audit(&h.ledger.snapshot().await.unwrap());
    assert!(running.in_flight.contains(&late), "{running}");
    cancel(&handle, "too slow").await;
    let outcome = result(&handle).await;
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
    h.scenario(&hard, never_confirm()).await;
    let handle = h.begin(h.input(&hard, 400)).await;
    wait_for(&handle, "the wait for confirmation", |p| {
        p.step == Step::AwaitConfirmation
    });
    handle
        .cancel(WorkflowCancelOptions::builder().reason("operator").build())
        .await
        .unwrap();
    let outcome = result(&handle).await;
    assert_eq!(outcome.phase, Phase::Cancelled, "{outcome:?}");
    assert_restored(&h, &hard).await;

    let report = h.audit_is_clean().await;
    assert_eq!(report.cancelled, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_confirmation_for_another_charge_is_ignored() {
    let h = Harness::start("mismatch").await;
    let id = unique("pay-mismatch");
    // The gateway will refuse the charge, and says so a while later.
    h.scenario(
        &id,
        Scenario {
            callback: Some(CallbackOutcome::Failed),
            callback_delay_ms: Some(3_000),
            ..Scenario::default()
        },
    )
    .await;
    let handle = h.begin(h.input(&id, 800)).await;
    wait_for(&handle, "the charge", |p| {
        steps(p, StepEvent::Completed).contains(&Step::Charge)
    });
    // Before it: "succeeded" for a charge that is not this payment's, and
    // for its charge but another amount, then another currency.
    let charge_id = h.gateway_entry(&id).await.unwrap().charge_id;
    for (charge, amount, currency) in [
        ("ch_not_this_one", Some(800), Some("EUR")),
        (charge_id.as_str(), Some(1), Some("EUR")),
        (charge_id.as_str(), Some(800), Some("USD")),
    ] {
        let cb = paysaga_api::external::GatewayCallback {
            payment_id: id.clone(),
            charge_id: charge.into(),
            outcome: CallbackOutcome::Succeeded,
            reason: None,
            amount,
            currency: currency.map(Into::into),
        };
        handle
            .signal(
                PaymentWorkflow::gateway_callback,
                cb,
                WorkflowSignalOptions::default(),
            )
            .await
            .expect("signalling a confirmation");
    }
    let told = wait_for(&handle, "the confirmations ignored", |p| {
        p.ignored_callbacks.len() == 3
    });
    assert!(
        told.ignored_callbacks[0].contains("charge ch_not_this_one of 8.00 EUR was ignored"),
        "{told:?}"
    );
    // Still waiting: none of them counted; the gateway's own refusal does.
    assert_eq!(told.phase, Phase::Processing);
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Failed, reasons::CHARGE_FAILED),
        "{outcome:?}"
    );
    assert_eq!(outcome.ignored_callbacks.len(), 3, "{outcome:?}");
    let g = h.gateway_entry(&id).await.unwrap();
    assert_eq!(g.status, ChargeStatus::Failed);
    assert_eq!(h.balance().await, OPENING);
    maybe_record(&handle, "confirmation-mismatch").await;
    h.audit_is_clean().await;
}

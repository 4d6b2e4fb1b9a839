//! `RefundWorkflow` end to end on real parts: a payment paid by the real
//! saga, then refunded through the real gateway simulator, credited in the
//! real ledger (PostgreSQL), on the Temporal dev server. Every test ends
//! with the ledger audit.

mod common;

use common::*;
use paysaga_api::external::{ChargeStatus, Scenario};
use paysaga_api::saga::{RefundInput, RefundOutcome, refund_reasons};
use paysaga_api::{Phase, RefundPhase, RefundReason};
use paysaga_worker::refund::RefundWorkflow;
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};

/// Pays `amount` (confirmed by the gateway) with `scenario`'s refund knobs;
/// answers the payment's ID and its charge.
async fn paid(h: &Harness, name: &str, amount: i64, scenario: Scenario) -> (String, String) {
    let id = unique(name);
    h.scenario(&id, scenario_confirmed(scenario)).await;
    let (outcome, _) = h.pay(h.input(&id, amount)).await;
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    (
        id,
        outcome.charge_id.expect("a succeeded payment has a charge"),
    )
}

fn scenario_confirmed(s: Scenario) -> Scenario {
    Scenario {
        callback: confirm().callback,
        callback_delay_ms: confirm().callback_delay_ms,
        ..s
    }
}

fn input(payment: &str, charge: &str, amount: i64) -> RefundInput {
    RefundInput {
        refund_id: unique("refund"),
        payment_id: payment.to_string(),
        user_id: "alice".into(),
        amount,
        currency: "EUR".into(),
        charge_id: charge.to_string(),
        reason: RefundReason::RequestedByCustomer,
        description: None,
        notify: None,
        object: None,
        request_id: None,
    }
}

async fn refund(h: &Harness, input: RefundInput) -> RefundOutcome {
    let id = input.refund_id.clone();
    h.client
        .start_workflow(
            RefundWorkflow::run,
            input,
            WorkflowStartOptions::new(h.payments_queue.clone(), id.clone()).build(),
        )
        .await
        .expect("starting the refund workflow");
    h.client
        .get_workflow_handle::<RefundWorkflow>(id)
        .get_result(WorkflowGetResultOptions::default())
        .await
        .expect("the refund workflow's result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_refunds_up_to_the_captured_amount_then_one_more_is_refused() {
    let h = Harness::start("refund-partial").await;
    let (pay, charge) = paid(&h, "pay-refunds", 1_000, Scenario::default()).await;
    let after_payment = h.balance().await;

    let first = refund(&h, input(&pay, &charge, 400)).await;
    assert_eq!(first.phase, RefundPhase::Succeeded, "{first:?}");
    assert_eq!(first.reason, refund_reasons::REFUNDED);
    assert!(first.gateway_refund_id.is_some());
    assert_eq!(first.payment_refunded_amount, Some(400));
    assert_eq!(h.balance().await, after_payment + 400);

    let rest = refund(&h, input(&pay, &charge, 600)).await;
    assert_eq!(rest.phase, RefundPhase::Succeeded, "{rest:?}");
    assert_eq!(rest.payment_refunded_amount, Some(1_000));
    assert_eq!(h.balance().await, after_payment + 1_000);
    let g = h.gateway_entry(&pay).await.expect("the charge");
    assert_eq!(
        (g.status, g.refunded_amount),
        (ChargeStatus::Refunded, 1_000)
    );

    let more = refund(&h, input(&pay, &charge, 1)).await;
    assert_eq!(more.phase, RefundPhase::Failed, "{more:?}");
    assert_eq!(more.reason, refund_reasons::EXCEEDS_REFUNDABLE);
    assert_eq!(
        h.balance().await,
        after_payment + 1_000,
        "nothing more moved"
    );
    let report = h.audit_is_clean().await;
    assert_eq!(report.refunds, 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_refunds_racing_for_the_rest_exactly_one_wins() {
    let h = Harness::start("refund-race").await;
    let (pay, charge) = paid(&h, "pay-race", 1_000, Scenario::default()).await;
    let after_payment = h.balance().await;
    let (a, b) = tokio::join!(
        refund(&h, input(&pay, &charge, 700)),
        refund(&h, input(&pay, &charge, 700))
    );
    let mut phases = [a.phase, b.phase];
    phases.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        phases,
        [RefundPhase::Failed, RefundPhase::Succeeded],
        "{a:?} {b:?}"
    );
    let loser = if a.phase == RefundPhase::Failed {
        &a
    } else {
        &b
    };
    assert_eq!(
        loser.reason,
        refund_reasons::EXCEEDS_REFUNDABLE,
        "{loser:?}"
    );
    assert!(
        loser.message.contains("300"),
        "says what is left: {loser:?}"
    );
    assert_eq!(h.balance().await, after_payment + 700);
    let g = h.gateway_entry(&pay).await.expect("the charge");
    assert_eq!(g.refunded_amount, 700);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_succeeded_payment_is_refunded_and_nothing_moves_otherwise() {
    let h = Harness::start("refund-refused").await;
    // Declined: failed, compensated.
    let declined = unique("pay-declined");
    h.scenario(
        &declined,
        Scenario {
            decline: true,
            ..Scenario::default()
        },
    )
    .await;
    let (outcome, _) = h.pay(h.input(&declined, 500)).await;
    assert_eq!(outcome.phase, Phase::Failed);
    // In flight: its confirmation never comes within the test.
    let running = unique("pay-running");
    h.scenario(
        &running,
        Scenario {
            callback: None,
            ..Scenario::default()
        },
    )
    .await;
    let handle = h.begin(h.input(&running, 500)).await;
    for (payment, why) in [(&declined, "failed"), (&running, "in flight")] {
        let out = refund(&h, input(payment, "ch_unknown", 100)).await;
        assert_eq!(out.phase, RefundPhase::Failed, "{why}: {out:?}");
        assert_eq!(out.reason, refund_reasons::PAYMENT_NOT_SUCCEEDED, "{why}");
        assert!(out.message.contains("nothing refunded"), "{why}: {out:?}");
        assert_eq!(
            h.ledger.payment_refunded(payment).await.unwrap(),
            0,
            "{why}"
        );
    }
    // Another currency than the payment's.
    let (pay, charge) = paid(&h, "pay-eur", 500, Scenario::default()).await;
    let before_usd = h.balance().await;
    let mut usd = input(&pay, &charge, 100);
    usd.currency = "USD".into();
    let out = refund(&h, usd).await;
    assert_eq!(out.reason, refund_reasons::CURRENCY_MISMATCH, "{out:?}");
    assert_eq!(h.balance().await, before_usd, "nothing moved");
    // Let the running payment end (cancelled) so the audit judges it.
    handle
        .signal(
            paysaga_worker::workflows::PaymentWorkflow::cancel,
            paysaga_api::saga::CancelRequest {
                reason: "test over".into(),
            },
            Default::default(),
        )
        .await
        .unwrap();
    let ended = result(&handle).await;
    assert_eq!(ended.phase, Phase::Cancelled);
    let out = refund(&h, input(&running, "ch_unknown", 100)).await;
    assert_eq!(
        out.reason,
        refund_reasons::PAYMENT_NOT_SUCCEEDED,
        "cancelled: {out:?}"
    );
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_gateway_faults_are_retried_and_a_refusal_credits_nothing() {
    let h = Harness::start("refund-faults").await;
    let flaky = Scenario {
        refund_transient_failures: 2,
        ..Scenario::default()
    };
    let (pay, charge) = paid(&h, "pay-flaky", 800, flaky).await;
    let before = h.balance().await;
    let out = refund(&h, input(&pay, &charge, 800)).await;
    assert_eq!(out.phase, RefundPhase::Succeeded, "{out:?}");
    assert_eq!(h.balance().await, before + 800);

    let refusing = Scenario {
        refuse_refunds: true,
        ..Scenario::default()
    };
    let (pay, charge) = paid(&h, "pay-refusing", 800, refusing).await;
    let before = h.balance().await;
    let refused = input(&pay, &charge, 300);
    let refused_id = refused.refund_id.clone();
    let out = refund(&h, refused).await;
    assert_eq!(out.phase, RefundPhase::Failed, "{out:?}");
    assert_eq!(out.reason, refund_reasons::GATEWAY_REFUSED);
    assert!(
        out.message.contains("nothing refunded or credited"),
        "{out:?}"
    );
    assert_eq!(h.balance().await, before, "nothing credited");
    let g = h.gateway_entry(&pay).await.expect("the charge");
    assert_eq!(g.refunded_amount, 0);
    // The refused refund's reservation was given up (its record failed), so
    // the whole amount is still refundable as far as the ledger goes.
    let snapshot = h.ledger.snapshot().await.unwrap();
    let record = snapshot
        .refunds
        .iter()
        .find(|r| r.refund_id == refused_id)
        .expect("the refused refund's record");
    assert_eq!(record.status, "failed", "{record:?}");
    assert_eq!(h.ledger.payment_refunded(&pay).await.unwrap(), 0);
    h.audit_is_clean().await;
}

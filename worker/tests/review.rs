//! A person in the loop, on the real parts (Temporal, PostgreSQL, the
//! simulators): the fraud verdict gates the charge; a confirmation that never
//! came is asked of the gateway; a charge that cannot be made, or whose
//! outcome nobody can tell, waits for a reviewer; expedite ends a wait.
//! Timers are short here (seconds); every test ends with the ledger audit.

mod common;

use std::time::Duration;

use common::*;
use paysaga_api::external::{CallbackOutcome, ChargeStatus, Scenario};
use paysaga_api::saga::{
    Decision, ExpediteRequest, PaymentInput, PaymentProgress, ReviewCause, ReviewDecision,
    StepEvent, reasons,
};
use paysaga_api::{Notify, Phase, Step};
use paysaga_worker::workflows::PaymentWorkflow;
use temporalio_client::WorkflowSignalOptions;

const REVIEWER: &str = "reviewer@example.com";

async fn decide(handle: &Handle, decision: Decision, reason: &str) {
    let d = ReviewDecision {
        decision,
        by: "ops@example.com".into(),
        reason: Some(reason.into()),
    };
    handle
        .signal(PaymentWorkflow::review, d, WorkflowSignalOptions::default())
        .await
        .expect("signalling the review");
}

async fn expedite(handle: &Handle) {
    let req = ExpediteRequest {
        by: "ops@example.com".into(),
        reason: Some("customer on the phone".into()),
    };
    handle
        .signal(
            PaymentWorkflow::expedite,
            req,
            WorkflowSignalOptions::default(),
        )
        .await
        .expect("signalling expedite");
}

/// An input with short escalation timers and a reviewer to tell.
fn input(h: &Harness, id: &str, amount: i64) -> PaymentInput {
    let mut input = h.input(id, amount);
    input.confirmation_timeout_secs = 2;
    input.escalation.charge_max_attempts = 2;
    input.escalation.charge_retry_wait_secs = 1;
    input.escalation.review_deadline_secs = 60;
    input.escalation.reviewer = Some(Notify {
        email: Some(REVIEWER.into()),
        phone: None,
    });
    input
}

fn in_review(handle: &Handle, cause: ReviewCause) -> PaymentProgress {
    let p = wait_for(handle, "the manual review", |p| {
        p.step == Step::ManualReview
    });
    assert_eq!(p.phase, Phase::Processing);
    let review = p.review.clone().expect("the review is published");
    assert_eq!(review.cause, cause, "{review:?}");
    assert!(review.decision.is_none());
    assert!(review.deadline_ms > review.since_ms);
    p
}

/// The reviewer was told, once, by the email provider.
async fn reviewer_was_told(h: &Harness, id: &str) {
    let sent = h.messages(id).await;
    let told: Vec<_> = sent.iter().filter(|m| m.request.to == REVIEWER).collect();
    assert_eq!(told.len(), 1, "{sent:?}");
    assert!(
        told[0].request.subject.contains("needs a review"),
        "{told:?}"
    );
}

/// Nothing is held at the gateway for `id` (the balance is checked apart:
/// these tests pay more than once from one account).
async fn nothing_held(h: &Harness, id: &str) {
    if let Some(g) = h.gateway_entry(id).await {
        assert!(
            g.status != ChargeStatus::Succeeded && g.status != ChargeStatus::Pending,
            "{id}: the gateway still holds the charge: {g:?}"
        );
    }
}

fn charge_attempts(p: &PaymentProgress) -> usize {
    p.history
        .iter()
        .filter(|r| r.step == Step::Charge && r.event == StepEvent::Started)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fraudulent_payment_is_never_charged() {
    let h = Harness::start("review-fraud").await;
    let id = unique("pay-fraud-gate");
    h.scenario(
        &id,
        Scenario {
            fraud_score: Some(99),
            ..confirm()
        },
    )
    .await;
    let (outcome, progress) = h.pay(input(&h, &id, 900)).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Failed, reasons::FRAUD_REJECTED)
    );
    assert!(
        !progress.history.iter().any(|r| r.step == Step::Charge),
        "charged before the verdict: {:?}",
        progress.history
    );
    assert!(
        h.gateway_entry(&id).await.is_none(),
        "the gateway saw a charge"
    );
    assert_restored(&h, &id).await;
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_callback_is_recovered_from_the_gateway() {
    let h = Harness::start("review-lost").await;
    // Captured at the gateway, the confirmation lost: succeeded, no refund.
    let captured = unique("pay-lost-captured");
    h.scenario(
        &captured,
        Scenario {
            lose_callback: true,
            ..confirm()
        },
    )
    .await;
    let (outcome, _) = h
        .pay_and_record(input(&h, &captured, 500), Some("lost-callback-captured"))
        .await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Succeeded, reasons::CONFIRMATION_RECOVERED),
        "{outcome:?}"
    );
    assert!(outcome.message.contains("captured"), "{}", outcome.message);
    let g = h.gateway_entry(&captured).await.unwrap();
    assert_eq!((g.status, g.refunded_amount), (ChargeStatus::Succeeded, 0));
    assert_eq!(h.balance().await, OPENING - 500);

    // Failed at the gateway, the confirmation lost: compensated.
    let failed = unique("pay-lost-failed");
    h.scenario(
        &failed,
        Scenario {
            callback: Some(CallbackOutcome::Failed),
            lose_callback: true,
            ..confirm()
        },
    )
    .await;
    let (outcome, progress) = h.pay(input(&h, &failed, 500)).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Failed, reasons::CHARGE_FAILED),
        "{outcome:?}"
    );
    assert!(steps(&progress, StepEvent::Started).contains(&Step::Compensate));
    nothing_held(&h, &failed).await;
    assert_eq!(h.balance().await, OPENING - 500);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_waits_for_a_reviewer() {
    let h = Harness::start("review-unknown").await;
    // Still pending at the gateway: a review; approved, the charge stands.
    let pending = unique("pay-pending");
    h.scenario(&pending, Scenario::default()).await; // callback: None: stays pending
    let handle = h.begin(input(&h, &pending, 600)).await;
    let p = in_review(&handle, ReviewCause::OutcomeUnknown);
    assert!(
        p.review.unwrap().message.contains("pending"),
        "the review says what the gateway said"
    );
    reviewer_was_told(&h, &pending).await;
    decide(&handle, Decision::Approve, "the bank statement shows it").await;
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Succeeded, reasons::REVIEW_APPROVED),
        "{outcome:?}"
    );
    assert!(
        outcome.message.contains("ops@example.com") && outcome.message.contains("bank statement"),
        "who and why are recorded: {}",
        outcome.message
    );
    let p = progress(&handle).await;
    let answer = p
        .review
        .unwrap()
        .decision
        .expect("the decision is recorded");
    assert_eq!(
        (answer.decision, answer.by.as_str()),
        (Decision::Approve, "ops@example.com")
    );
    maybe_record(&handle, "review-approved").await;
    assert_eq!(h.balance().await, OPENING - 600);

    // The gateway cannot be asked at all: a review too; rejected, compensated.
    let down = unique("pay-status-down");
    h.scenario(
        &down,
        Scenario {
            status_unavailable: true,
            ..Scenario::default()
        },
    )
    .await;
    let handle = h.begin(input(&h, &down, 600)).await;
    let p = in_review(&handle, ReviewCause::OutcomeUnknown);
    assert!(p.review.unwrap().message.contains("no answer"));
    decide(&handle, Decision::Reject, "the customer disputes it").await;
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Failed, reasons::REVIEW_REJECTED),
        "{outcome:?}"
    );
    maybe_record(&handle, "review-rejected").await;
    nothing_held(&h, &down).await;

    // The confirmation arrives late, during the review: it decides.
    let late = unique("pay-late-callback");
    h.scenario(
        &late,
        Scenario {
            callback: Some(CallbackOutcome::Succeeded),
            callback_delay_ms: Some(5_000),
            ..Scenario::default()
        },
    )
    .await;
    let handle = h.begin(input(&h, &late, 600)).await;
    in_review(&handle, ReviewCause::OutcomeUnknown);
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Succeeded, reasons::CONFIRMED),
        "{outcome:?}"
    );
    assert_eq!(h.balance().await, OPENING - 1_200);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_that_keeps_failing_waits_tries_once_more_then_asks_a_person() {
    let h = Harness::start("review-charge").await;
    // 2 attempts, a wait, 1 more attempt: 3 transient faults reach the
    // review; approved, the 4th attempt goes through.
    let approved = unique("pay-charge-approved");
    h.scenario(
        &approved,
        Scenario {
            transient_failures: 3,
            ..confirm()
        },
    )
    .await;
    let handle = h.begin(input(&h, &approved, 700)).await;
    let p = in_review(&handle, ReviewCause::ChargeUnavailable);
    assert_eq!(
        charge_attempts(&p),
        2,
        "the first round and one more: {:?}",
        p.history
    );
    reviewer_was_told(&h, &approved).await;
    decide(&handle, Decision::Approve, "gateway is back").await;
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Succeeded, reasons::CONFIRMED),
        "{outcome:?}"
    );
    let g = h.gateway_entry(&approved).await.unwrap();
    assert_eq!((g.attempts, g.status), (4, ChargeStatus::Succeeded));
    maybe_record(&handle, "charge-review-approved").await;

    // Rejected: nothing was charged, the debit is credited back.
    let rejected = unique("pay-charge-rejected");
    h.scenario(
        &rejected,
        Scenario {
            transient_failures: 100,
            ..confirm()
        },
    )
    .await;
    let handle = h.begin(input(&h, &rejected, 700)).await;
    in_review(&handle, ReviewCause::ChargeUnavailable);
    decide(&handle, Decision::Reject, "gateway outage").await;
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Failed, reasons::REVIEW_REJECTED),
        "{outcome:?}"
    );
    nothing_held(&h, &rejected).await;

    // Unanswered past the deadline: compensated and failed, never left.
    let ignored = unique("pay-charge-ignored");
    h.scenario(
        &ignored,
        Scenario {
            transient_failures: 100,
            ..confirm()
        },
    )
    .await;
    let mut i = input(&h, &ignored, 700);
    i.escalation.review_deadline_secs = 2;
    let (outcome, _) = h.pay_and_record(i, Some("review-timeout")).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Failed, reasons::REVIEW_TIMEOUT),
        "{outcome:?}"
    );
    nothing_held(&h, &ignored).await;
    assert_eq!(h.balance().await, OPENING - 700);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expedite_ends_a_wait_at_once() {
    let h = Harness::start("review-expedite").await;
    // The wait before the last charge attempt (an hour here): cut short.
    let retry = unique("pay-expedite-retry");
    h.scenario(
        &retry,
        Scenario {
            transient_failures: 2,
            ..confirm()
        },
    )
    .await;
    let mut i = input(&h, &retry, 300);
    i.escalation.charge_retry_wait_secs = 3_600;
    let handle = h.begin(i).await;
    wait_for(&handle, "the wait before one more attempt", |p| {
        p.history
            .iter()
            .any(|r| r.step == Step::Charge && r.event == StepEvent::Failed)
    });
    expedite(&handle).await;
    let outcome = result(&handle).await;
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    let p = progress(&handle).await;
    assert!(
        p.history
            .iter()
            .any(|r| r.detail.as_deref() == Some("one more attempt (expedited)")),
        "{:?}",
        p.history
    );

    // The confirmation wait (an hour here): the gateway is asked at once.
    let wait = unique("pay-expedite-wait");
    h.scenario(
        &wait,
        Scenario {
            lose_callback: true,
            ..confirm()
        },
    )
    .await;
    let mut i = input(&h, &wait, 300);
    i.confirmation_timeout_secs = 3_600;
    let handle = h.begin(i).await;
    wait_for(&handle, "the confirmation wait", |p| {
        p.step == Step::AwaitConfirmation
    });
    // The gateway has settled the charge (its confirmation lost on the way):
    // asked now, it can tell.
    paysaga_testenv::eventually(Duration::from_secs(30), "the charge captured", || {
        match paysaga_testenv::block_on(h.gateway_entry(&wait)) {
            Some(g) if g.status == ChargeStatus::Succeeded => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    expedite(&handle).await;
    let outcome = result(&handle).await;
    assert_eq!(
        (outcome.phase, outcome.reason.as_str()),
        (Phase::Succeeded, reasons::CONFIRMATION_RECOVERED),
        "{outcome:?}"
    );
    assert!(outcome.message.contains("expedited"), "{}", outcome.message);
    assert_eq!(h.balance().await, OPENING - 600);
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_in_review_can_be_cancelled() {
    let h = Harness::start("review-cancel").await;
    let id = unique("pay-review-cancel");
    h.scenario(&id, Scenario::default()).await;
    let handle = h.begin(input(&h, &id, 800)).await;
    in_review(&handle, ReviewCause::OutcomeUnknown);
    let req = paysaga_api::saga::CancelRequest {
        reason: "customer withdrew".into(),
    };
    handle
        .signal(
            PaymentWorkflow::cancel,
            req,
            WorkflowSignalOptions::default(),
        )
        .await
        .unwrap();
    let outcome = result(&handle).await;
    assert_eq!(outcome.phase, Phase::Cancelled, "{outcome:?}");
    assert_restored(&h, &id).await;
    h.audit_is_clean().await;
}

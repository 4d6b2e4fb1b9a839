//! Failures of the saga's own machinery: a compensation that keeps failing,
//! and a worker stopped in the middle of an activity. These tests change the
//! simulators' global knobs, so each has simulators of its own.

mod common;

use common::*;
use paysaga_api::external::Scenario;
use paysaga_api::saga::{StepEvent, reasons};
use paysaga_api::{Phase, Step};
use temporalio_client::WorkflowGetResultOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_compensation_is_retried_surfaced_and_does_not_stop_the_others() {
    let h = Harness::start_with_own_sim("comp-fail").await;
    let id = unique("pay-refund-fails");
    // The charge is declined (deterministically); every refund call gets a 503.
    h.scenario(
        &id,
        Scenario {
            decline: true,
            ..confirm()
        },
    )
    .await;
    h.sim_config(serde_json::json!({"transientFailureRate": 1.0}))
        .await;
    let mut input = h.input(&id, 900);
    input.compensation_max_attempts = 3;
    let (outcome, progress) = h.pay(input).await;
    h.sim_config(serde_json::json!({"transientFailureRate": 0.0}))
        .await;

    assert_eq!(outcome.phase, Phase::Failed, "{outcome:?}");
    assert_eq!(outcome.reason, reasons::COMPENSATION_FAILED, "{outcome:?}");
    assert!(
        outcome.message.contains("declined"),
        "the first cause stays: {}",
        outcome.message
    );
    assert!(
        outcome.message.contains("Refund failed after retries"),
        "{}",
        outcome.message
    );
    let failed: Vec<_> = progress
        .history
        .iter()
        .filter(|r| r.step == Step::Compensate && r.event == StepEvent::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", progress.history);
    // The credit still ran after the refund gave up: the payer has the money back.
    assert_eq!(h.balance().await, OPENING);
    // And the payer is not told that nothing was taken.
    let told: Vec<String> = h
        .messages(&id)
        .await
        .into_iter()
        .map(|m| m.request.body)
        .collect();
    assert!(
        told.iter().any(|b| b.contains("checking your account")),
        "{told:?}"
    );
    assert!(
        !told.iter().any(|b| b.contains("Nothing was taken")),
        "{told:?}"
    );
    h.audit_is_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_finishes_its_in_flight_activity_first() {
    let mut h = Harness::start_with_own_sim("shutdown").await;
    let id = unique("pay-shutdown");
    h.scenario(&id, confirm()).await;
    // Every simulator answer takes 2 s, so the charge is surely in flight.
    h.sim_config(serde_json::json!({"latencyMs": 2000})).await;
    let handle = h.begin(h.input(&id, 600)).await;
    wait_for(&handle, "the charge to start", |p| p.step == Step::Charge);
    h.stop_worker();
    h.sim_config(serde_json::json!({"latencyMs": 0})).await;

    // The gateway took the charge before the worker stopped...
    let g = h
        .gateway_entry(&id)
        .await
        .expect("the in-flight charge reached the gateway");
    assert_eq!(g.attempts, 1);
    // ...and a new worker finishes the payment without charging again: the
    // first attempt was completed, not cancelled and retried.
    h.start_worker();
    let outcome = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    let p = progress(&handle).await;
    let charged = p
        .history
        .iter()
        .find(|r| r.step == Step::Charge && r.event == StepEvent::Completed)
        .and_then(|r| r.detail.clone())
        .unwrap();
    assert!(charged.ends_with("on attempt 1"), "{charged}");
    assert_eq!(h.gateway_entry(&id).await.unwrap().attempts, 1);
    h.audit_is_clean().await;
}

//! Two controller replicas on one Lease: only the leader acts; when it stops
//! mid-saga the other takes over, and no payment gets a second workflow.
//! In a test binary of its own: it stops controllers.

mod common;

use std::time::Duration;

use common::*;
use paysaga_api::Phase;
use paysaga_testenv::eventually;

fn log_of(controller: &paysaga_testenv::Service) -> String {
    std::fs::read_to_string(controller.log()).unwrap_or_default()
}

fn wait_log(controller: &paysaga_testenv::Service, text: &str) {
    eventually(Duration::from_secs(30), &format!("{text:?} logged"), || {
        if log_of(controller).contains(text) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
}

async fn reconciles(controller: &paysaga_testenv::Service) -> String {
    let metrics = reqwest::get(format!("{}/metrics", controller.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("paysaga_controller_reconciles_total"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_takeover_mid_saga_starts_no_second_workflow() {
    let _logs = paysaga_testenv::logs_on_failure();
    let _worker = start_worker();
    let lease = [
        "--lease-duration-secs=3".to_string(),
        "--finished-ttl-secs=2".to_string(),
    ];
    let first = start_controller("controller-a", &lease);
    wait_log(&first, "leading: reconciling payments");
    let second = start_controller("controller-b", &lease);
    wait_log(&second, "waiting to lead");

    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("replicas").unwrap();
    let api = payments(&ns.name).await;
    let p = in_flight_payment(&api, &ns.name, "pay-takeover", 900).await;
    let workflow_id = p.status.unwrap().workflow_id.unwrap();
    assert!(!log_of(&second).contains("leading: reconciling payments"));
    assert_eq!(
        reconciles(&second).await,
        "paysaga_controller_reconciles_total 0"
    );

    // The leader stops mid-saga; the other replica takes over.
    drop(first);
    wait_log(&second, "leading: reconciling payments");
    kube.kubectl_ok(&[
        "annotate",
        "payment",
        "pay-takeover",
        "-n",
        &ns.name,
        "paysaga.dev/cancel=after takeover",
    ])
    .unwrap();
    let p = wait_for(&api, "pay-takeover", "Cancelled", |p| {
        phase(p) == Some(Phase::Cancelled)
    });
    assert!(
        p.status
            .unwrap()
            .message
            .unwrap()
            .contains("after takeover")
    );

    // Exactly one run ever existed for this payment.
    let t = paysaga_testenv::temporal();
    let runs = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("temporal"))
            .args(["workflow", "count", "--address", &t.host_port])
            .args(["--query", &format!("WorkflowId = '{workflow_id}'")]),
    )
    .unwrap();
    assert_eq!(runs.trim(), "Total: 1", "{runs}");

    // And new payments go on under the new leader.
    kubectl_apply(&ns.name, &manifest("pay-after", 100));
    wait_for(&api, "pay-after", "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });

    // Finished payments go after their TTL (2 s here).
    wait_gone(&api, "pay-after", "deleted after its TTL");
}

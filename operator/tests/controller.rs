//! The controller against the real parts: kube-apiserver + etcd (RBAC on),
//! the Temporal dev server, the worker (PostgreSQL ledger), the simulators
//! and the callback receiver — every one a real process. The controller runs
//! as a process too, with a token of the chart's controller ServiceAccount:
//! the RBAC in `charts/paysaga` is all it has.
//!
//! The tests share one set of simulators; each steers only its own payments
//! (by scenario), in a namespace of its own, so they run in parallel.

mod common;

use common::*;

use std::sync::OnceLock;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::DeleteParams;
use kube::runtime::{WatchStreamExt, watcher};
use paysaga_api::Phase;
use paysaga_testenv::{Service, eventually};

/// The worker and the controller shared by this test binary.
fn stack() -> &'static (Service, Service) {
    static STACK: OnceLock<(Service, Service)> = OnceLock::new();
    STACK.get_or_init(|| (start_worker(), start_controller("controller", &[])))
}

#[test]
fn the_controller_account_can_do_no_more_than_it_uses() {
    stack();
    let kubeconfig = paysaga_testenv::kube()
        .service_account_kubeconfig(SYSTEM_NAMESPACE, "paysaga-controller")
        .unwrap();
    // `kind/status` asks about the status subresource (`can-i` would read
    // `kind/name` as an object's name).
    let can = |verb: &str, resource: &str| {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, sub)) => (r, Some(sub)),
            None => (resource, None),
        };
        let mut cmd = std::process::Command::new(paysaga_testenv::tool("kubectl"));
        cmd.arg("--kubeconfig").arg(&kubeconfig).args([
            "auth",
            "can-i",
            verb,
            resource,
            "--all-namespaces",
        ]);
        if let Some(sub) = subresource {
            cmd.arg(format!("--subresource={sub}"));
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (verb, resource) in [
        ("watch", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev/status"),
        ("create", "events.events.k8s.io"),
        ("delete", "payments.paysaga.dev"),
        ("create", "idempotencykeys.paysaga.dev"),
        ("list", "idempotencykeys.paysaga.dev"),
        ("delete", "idempotencykeys.paysaga.dev"),
        ("watch", "refunds.paysaga.dev"),
        ("patch", "refunds.paysaga.dev"),
        ("delete", "refunds.paysaga.dev"),
        ("patch", "refunds.paysaga.dev/status"),
        ("watch", "recurringpayments.paysaga.dev"),
        ("get", "recurringpayments.paysaga.dev"),
        ("patch", "recurringpayments.paysaga.dev"),
        ("patch", "recurringpayments.paysaga.dev/status"),
    ] {
        assert_eq!(can(verb, resource), "yes", "{verb} {resource}");
    }
    for (verb, resource) in [
        ("create", "payments.paysaga.dev"),
        ("update", "payments.paysaga.dev"),
        ("update", "payments.paysaga.dev/status"),
        ("get", "secrets"),
        ("delete", "leases.coordination.k8s.io"),
        ("list", "pods"),
        ("create", "events"),
        ("update", "idempotencykeys.paysaga.dev"),
        ("patch", "idempotencykeys.paysaga.dev"),
        ("create", "refunds.paysaga.dev"),
        ("get", "refunds.paysaga.dev"),
        ("update", "refunds.paysaga.dev/status"),
        ("create", "recurringpayments.paysaga.dev"),
        ("delete", "recurringpayments.paysaga.dev"),
        ("update", "recurringpayments.paysaga.dev"),
    ] {
        assert_eq!(can(verb, resource), "no", "{verb} {resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_watch_phases_in_order_with_conditions_and_events() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("ctl-happy").unwrap();
    let api = payments(&ns.name).await;

    // Watch the phases as they are written.
    let watched = api.clone();
    let phases = tokio::spawn(async move {
        let mut seen: Vec<Phase> = Vec::new();
        let mut stream = watcher(
            watched,
            watcher::Config::default().fields("metadata.name=pay-1"),
        )
        .applied_objects()
        .boxed();
        while let Ok(Some(p)) = stream.try_next().await {
            if let Some(ph) = phase(&p)
                && seen.last() != Some(&ph)
            {
                seen.push(ph);
                if ph.is_terminal() {
                    break;
                }
            }
        }
        seen
    });
    kubectl_apply(&ns.name, &manifest("pay-1", 1250));
    let seen = tokio::time::timeout(Duration::from_secs(60), phases)
        .await
        .unwrap()
        .unwrap();
    // The workflow starts before the first status write: no Pending is written.
    assert_eq!(seen, [Phase::Processing, Phase::Succeeded]);

    let p = api.get("pay-1").await.unwrap();
    let status = p.status.clone().unwrap();
    assert_eq!(status.step, Some(paysaga_api::Step::Done));
    assert_eq!(status.reason.as_deref(), Some("Confirmed"));
    assert!(
        status
            .workflow_id
            .as_deref()
            .unwrap()
            .starts_with(&format!("payment-{}-pay-1-", ns.name))
    );
    assert!(
        status.run_id.is_some() && status.started_at.is_some() && status.completed_at.is_some()
    );
    assert_eq!(status.observed_generation, p.metadata.generation);
    for c in [
        "Validated",
        "FraudChecked",
        "Debited",
        "Charged",
        "Confirmed",
        "Notified",
    ] {
        assert_eq!(
            condition(&p, c),
            Some(("True".into(), "Succeeded".into())),
            "{c}: {status:?}"
        );
    }
    // One Event tells how it ended, naming each step.
    let events = event_reasons(&ns.name);
    assert_eq!(
        events, "Succeeded",
        "the Events of a payment that went well"
    );
    let note = kube
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.items[*].note}",
        ])
        .unwrap();
    assert!(
        note.starts_with("Succeeded: Confirmed: "),
        "the end event's note: {note}"
    );
    for step in [
        "Validated",
        "FraudChecked",
        "Debited",
        "Charged",
        "Confirmed",
        "Notified",
    ] {
        assert!(note.contains(step), "{step} not told in {note}");
    }
    let table = kube
        .kubectl_ok(&["get", "payments", "-n", &ns.name])
        .unwrap();
    assert!(
        table.contains("Succeeded") && table.contains("Done"),
        "{table}"
    );

    // The controller says what it did.
    let admin = &stack().1.url;
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "paysaga_controller_workflows_started_total",
        "paysaga_controller_status_patches_total{outcome=\"applied\"}",
        "paysaga_controller_status_latency_seconds_count",
        "paysaga_controller_start_latency_seconds_count",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    let code = ready.status();
    assert_eq!(code, 200, "{}", ready.text().await.unwrap());
}

/// `kubectl annotate --overwrite payment <name> <key=value>`.
fn annotate(ns: &str, name: &str, key_value: &str) {
    paysaga_testenv::kube()
        .kubectl_ok(&[
            "annotate",
            "--overwrite",
            "payment",
            name,
            "-n",
            ns,
            key_value,
        ])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_to_cancel_in_flight_and_after_completion() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("ctl-cancel").unwrap();
    let api = payments(&ns.name).await;

    in_flight_payment(&api, &ns.name, "pay-wait", 500).await;
    annotate(&ns.name, "pay-wait", "paysaga.dev/cancel=changed my mind");
    let p = wait_for(&api, "pay-wait", "Cancelled", |p| {
        phase(p) == Some(Phase::Cancelled)
    });
    assert_eq!(
        condition(&p, "Compensated"),
        Some(("True".into(), "Succeeded".into()))
    );
    assert_eq!(
        condition(&p, "CancelRequested"),
        Some(("True".into(), "CancelRequested".into()))
    );
    assert!(
        p.status
            .unwrap()
            .message
            .unwrap()
            .contains("changed my mind")
    );

    // A second reason after the signal: the saga kept the first, so the
    // annotation is set back to it, and a Warning says why.
    annotate(&ns.name, "pay-wait", "paysaga.dev/cancel=found it cheaper");
    wait_for(&api, "pay-wait", "the first reason back", |p| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("paysaga.dev/cancel"))
            .is_some_and(|r| r == "changed my mind")
    });
    eventually(
        Duration::from_secs(30),
        "a CancelAlreadyRequested Event",
        || {
            let reasons = event_reasons(&ns.name);
            if reasons.contains("CancelAlreadyRequested") {
                Ok(())
            } else {
                Err(reasons)
            }
        },
    );

    // After completion: too late, nothing else changes.
    kubectl_apply(&ns.name, &manifest("pay-done", 300));
    let done = wait_for(&api, "pay-done", "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });
    annotate(&ns.name, "pay-done", "paysaga.dev/cancel=too late");
    let p = wait_for(&api, "pay-done", "a too-late condition", |p| {
        condition(p, "CancelRequested").is_some()
    });
    assert_eq!(
        condition(&p, "CancelRequested"),
        Some(("False".into(), "TooLateToCancel".into()))
    );
    assert_eq!(phase(&p), Some(Phase::Succeeded));
    assert_eq!(
        p.status.as_ref().unwrap().completed_at,
        done.status.as_ref().unwrap().completed_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_waits_for_compensation_in_flight_and_is_immediate_when_finished() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("ctl-delete").unwrap();
    let api = payments(&ns.name).await;

    let p = in_flight_payment(&api, &ns.name, "pay-inflight", 700).await;
    assert_eq!(
        p.metadata.finalizers.as_deref(),
        Some(&["paysaga.dev/workflow".to_string()][..])
    );
    let workflow_id = p.status.unwrap().workflow_id.unwrap();
    api.delete("pay-inflight", &DeleteParams::default())
        .await
        .unwrap();
    // Gone only once the workflow has compensated and finished.
    wait_gone(&api, "pay-inflight", "released once compensated");
    let t = paysaga_testenv::temporal();
    let described = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("temporal")).args([
            "workflow",
            "describe",
            "--address",
            &t.host_port,
            "--workflow-id",
            &workflow_id,
            "-o",
            "json",
        ]),
    )
    .unwrap();
    assert!(
        described.contains("WORKFLOW_EXECUTION_STATUS_COMPLETED"),
        "{described}"
    );
    // Its result is encrypted (paysaga_common::codec): decrypted here with
    // the test run's keyring.
    let result = decrypted_result(&described);
    assert!(
        result.contains("\"phase\":\"Cancelled\""),
        "the workflow did not end cancelled: {result}"
    );

    kubectl_apply(&ns.name, &manifest("pay-finished", 100));
    wait_for(&api, "pay-finished", "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });
    kube.kubectl_ok(&[
        "delete",
        "payment",
        "pay-finished",
        "-n",
        &ns.name,
        "--wait=true",
        "--timeout=20s",
    ])
    .unwrap();
    assert!(api.get_opt("pay-finished").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_cannot_be_read_does_not_wedge_the_controller() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("ctl-malformed").unwrap();
    let api = payments(&ns.name).await;

    // Store a Payment the controller's types refuse: loosen the CRD (as an
    // older schema would have been), create it, and restore the CRD.
    let bad = manifest("pay-bad", 100).replace("\"card\"", "\"cash\"");
    kube.kubectl_ok(&[
        "patch", "crd", "payments.paysaga.dev", "--type=json", "-p",
        r#"[{"op":"remove","path":"/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/method/enum"}]"#,
    ])
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the loosened CRD to take effect",
        || {
            let out = kube.kubectl_with_input(&["create", "-n", &ns.name, "-f", "-"], &bad);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    let crds = paysaga_testenv::workspace_root().join("crds");
    kube.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &crds.display().to_string(),
    ])
    .unwrap();

    // The controller says it cannot read it, and goes on with the others.
    eventually(Duration::from_secs(30), "an InvalidObject event", || {
        let reasons = event_reasons(&ns.name);
        if reasons.contains("InvalidObject") {
            Ok(())
        } else {
            Err(reasons)
        }
    });
    kubectl_apply(&ns.name, &manifest("pay-good", 100));
    wait_for(&api, "pay-good", "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });
}

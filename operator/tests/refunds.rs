//! Refunds the Kubernetes way, on the real parts: kube-apiserver + etcd
//! (RBAC on), the Temporal dev server, the worker with its PostgreSQL
//! ledger, the simulators — and the controller as a process with the chart's
//! ServiceAccount. Users apply Refund objects with kubectl.

mod common;

use common::*;

use std::sync::OnceLock;
use std::time::Duration;

use kube::api::{Api, DeleteParams};
use paysaga_api::external::{CallbackOutcome, Scenario};
use paysaga_api::names::{PAYMENT_LABEL, REFUND_FINALIZER};
use paysaga_api::refund::is_payment_hold;
use paysaga_api::saga::refund_reasons;
use paysaga_api::{Phase, Refund, RefundPhase};
use paysaga_testenv::{Service, block_on, eventually};

struct Stack {
    database_url: String,
    _worker: Service,
    _controller: Service,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let database_url = paysaga_testenv::postgres().database("refunds").unwrap();
        let worker = Service::payment_worker(
            &paysaga_testenv::run_dir().join("refunds-worker"),
            &paysaga_testenv::temporal().address,
            &database_url,
            "alice:EUR:100000000",
            &paysaga_testenv::sim().url,
        )
        .unwrap();
        let controller = start_controller("refunds-controller", &[]);
        Stack {
            database_url,
            _worker: worker,
            _controller: controller,
        }
    })
}

fn audit_is_clean() {
    let (report, ok) = paysaga_testenv::dev::audit(&stack().database_url).unwrap();
    assert!(ok, "{report}");
}

async fn refunds(ns: &str) -> Api<Refund> {
    Api::namespaced(paysaga_testenv::kube().client().await.unwrap(), ns)
}

fn refund_manifest(name: &str, payment: &str, amount: i64) -> String {
    serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "Refund",
        "metadata": {"name": name},
        "spec": {"paymentName": payment, "amount": amount, "reason": "requestedByCustomer"},
    })
    .to_string()
}

fn refund_phase(r: &Refund) -> Option<RefundPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

fn wait_refund(
    api: &Api<Refund>,
    name: &str,
    what: &str,
    pred: impl Fn(&Refund) -> bool,
) -> Refund {
    eventually(Duration::from_secs(90), &format!("{name}: {what}"), || {
        let r = block_on(api.get(name)).map_err(|e| e.to_string())?;
        if pred(&r) {
            Ok(r)
        } else {
            Err(format!("status {:?}", r.status))
        }
    })
}

fn ended(r: &Refund) -> bool {
    refund_phase(r).is_some_and(|p| p.is_terminal())
}

/// A Payment that succeeded, by kubectl, with `scenario`'s refund knobs.
async fn succeeded_payment(ns: &str, name: &str, amount: i64, refund_knobs: Scenario) {
    let prefix = format!("payment-{ns}-{name}-");
    let s = Scenario {
        callback: Some(CallbackOutcome::Succeeded),
        callback_delay_ms: Some(50),
        ..refund_knobs
    };
    scenario(&prefix, s).await;
    kubectl_apply(ns, &manifest(name, amount));
    let api = payments(ns).await;
    let p = wait_for(&api, name, "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });
    assert!(
        p.status.as_ref().unwrap().charge_id.is_some(),
        "a succeeded payment records its charge: {:?}",
        p.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_the_example_refund_reaches_succeeded_and_the_payment_shows_it() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("rf-example").unwrap();
    let root = paysaga_testenv::workspace_root();
    scenario(
        &format!("payment-{}-", ns.name),
        Scenario {
            callback: Some(CallbackOutcome::Succeeded),
            callback_delay_ms: Some(50),
            ..Scenario::default()
        },
    )
    .await;
    for example in ["examples/payment.yaml", "examples/refund.yaml"] {
        let file = root.join(example).display().to_string();
        if example.ends_with("refund.yaml") {
            let api = payments(&ns.name).await;
            wait_for(&api, "coffee-beans", "Succeeded", |p| {
                phase(p) == Some(Phase::Succeeded)
            });
        }
        kube.kubectl_ok(&["apply", "-n", &ns.name, "-f", &file])
            .unwrap();
    }
    let api = refunds(&ns.name).await;
    let r = wait_refund(&api, "coffee-beans-one-bag", "ended", ended);
    let status = r.status.clone().unwrap();
    assert_eq!(status.phase, Some(RefundPhase::Succeeded), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some(refund_reasons::REFUNDED));
    assert_eq!(status.currency.as_deref(), Some("EUR"));
    assert!(status.gateway_refund_id.is_some() && status.completed_at.is_some());
    assert_eq!(status.payment_refunded_amount, Some(500));
    assert_eq!(status.observed_generation, r.metadata.generation);
    assert!(
        status
            .workflow_id
            .as_deref()
            .unwrap()
            .starts_with(&format!("refund-{}-coffee-beans-one-bag-", ns.name))
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Refunded")
    );
    // Owned by its payment, labelled with it; its finalizer stays until it is
    // deleted, the hold on the payment is let go.
    let payment = payments(&ns.name).await.get("coffee-beans").await.unwrap();
    assert!(
        r.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == payment.metadata.uid.as_ref() && o.kind == "Payment"),
        "{:?}",
        r.metadata.owner_references
    );
    assert_eq!(
        r.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(PAYMENT_LABEL)
            .map(String::as_str),
        Some("coffee-beans")
    );
    assert!(
        r.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == REFUND_FINALIZER)
    );
    // The hold is let go just after the status write: wait for it.
    let payments_api = payments(&ns.name).await;
    let payment = wait_for(
        &payments_api,
        "coffee-beans",
        "hold let go, refunded shown",
        |p| {
            !p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| is_payment_hold(f))
                && p.status.as_ref().and_then(|s| s.refunded_amount) == Some(500)
        },
    );
    assert_eq!(payment.status.unwrap().phase, Some(Phase::Succeeded));

    // What kubectl shows: the refund's columns, the payment's refunded column.
    let table = kube.kubectl_ok(&["get", "rf", "-n", &ns.name]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PAYMENT", "AMOUNT", "CURRENCY", "PHASE", "AGE"]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        [
            "coffee-beans-one-bag",
            "coffee-beans",
            "500",
            "EUR",
            "Succeeded"
        ]
    );
    let pay_table = kube
        .kubectl_ok(&["get", "pay", "coffee-beans", "-n", &ns.name])
        .unwrap();
    let header: Vec<&str> = pay_table
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let refunded = header
        .iter()
        .position(|h| *h == "REFUNDED")
        .expect("a REFUNDED column");
    let row: Vec<&str> = pay_table
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[refunded], "500", "{pay_table}");
    // Its Events: started, refunded.
    let reasons = kube
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            &ns.name,
            "--field-selector",
            "regarding.kind=Refund",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .unwrap();
    assert_eq!(reasons.trim(), "Started Refunded", "{reasons}");
    audit_is_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_up_to_the_captured_amount_then_one_more_fails_and_an_unpaid_one_fails_at_once() {
    stack();
    let ns = paysaga_testenv::kube().namespace("rf-limits").unwrap();
    let ns = ns.name.as_str();
    succeeded_payment(ns, "pay-1", 1_000, Scenario::default()).await;
    let api = refunds(ns).await;
    kubectl_apply(ns, &refund_manifest("rf-a", "pay-1", 600));
    kubectl_apply(ns, &refund_manifest("rf-b", "pay-1", 400));
    for name in ["rf-a", "rf-b"] {
        let r = wait_refund(&api, name, "ended", ended);
        assert_eq!(
            refund_phase(&r),
            Some(RefundPhase::Succeeded),
            "{:?}",
            r.status
        );
    }
    let r = {
        kubectl_apply(ns, &refund_manifest("rf-c", "pay-1", 1));
        wait_refund(&api, "rf-c", "ended", ended)
    };
    let status = r.status.unwrap();
    assert_eq!(status.phase, Some(RefundPhase::Failed));
    assert_eq!(
        status.reason.as_deref(),
        Some(refund_reasons::EXCEEDS_REFUNDABLE),
        "{status:?}"
    );
    let pays = payments(ns).await;
    wait_for(&pays, "pay-1", "refunded 1000", |p| {
        p.status.as_ref().and_then(|s| s.refunded_amount) == Some(1_000)
    });

    // A payment still waiting for its confirmation: refused at once.
    in_flight_payment(&pays, ns, "pay-open", 700).await;
    kubectl_apply(ns, &refund_manifest("rf-open", "pay-open", 100));
    let r = wait_refund(&api, "rf-open", "ended", ended);
    let status = r.status.unwrap();
    assert_eq!(
        status.reason.as_deref(),
        Some(refund_reasons::PAYMENT_NOT_SUCCEEDED)
    );
    assert!(status.message.unwrap().contains("Processing"));
    // No such payment.
    kubectl_apply(ns, &refund_manifest("rf-none", "pay-none", 100));
    let r = wait_refund(&api, "rf-none", "ended", ended);
    assert_eq!(
        r.status.unwrap().reason.as_deref(),
        Some(refund_reasons::PAYMENT_NOT_FOUND)
    );
    // Cancel the open payment so that the audit judges it ended.
    paysaga_testenv::kube()
        .kubectl_ok(&[
            "annotate",
            "pay",
            "pay-open",
            "-n",
            ns,
            "paysaga.dev/cancel=test over",
        ])
        .unwrap();
    wait_for(&pays, "pay-open", "Cancelled", |p| {
        phase(p) == Some(Phase::Cancelled)
    });
    audit_is_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_payment_waits_for_its_refund_in_flight() {
    stack();
    let ns = paysaga_testenv::kube().namespace("rf-delete").unwrap();
    let ns = ns.name.as_str();
    // The gateway answers the refund 503 four times: about 15 s of retries.
    let slow = Scenario {
        refund_transient_failures: 4,
        ..Scenario::default()
    };
    succeeded_payment(ns, "pay-1", 900, slow).await;
    kubectl_apply(ns, &refund_manifest("rf-slow", "pay-1", 900));
    let api = refunds(ns).await;
    wait_refund(&api, "rf-slow", "Processing", |r| {
        refund_phase(r) == Some(RefundPhase::Processing)
    });
    let pays = payments(ns).await;
    pays.delete("pay-1", &DeleteParams::default())
        .await
        .unwrap();
    // Held while the refund runs.
    let held = pays.get("pay-1").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        held.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| is_payment_hold(f)),
        "{:?}",
        held.metadata.finalizers
    );
    let r = wait_refund(&api, "rf-slow", "ended", ended);
    assert_eq!(
        refund_phase(&r),
        Some(RefundPhase::Succeeded),
        "{:?}",
        r.status
    );
    wait_gone(&pays, "pay-1", "deleted once its refund ended");
    audit_is_clean();
}

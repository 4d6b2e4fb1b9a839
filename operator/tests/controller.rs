//! The controller against the real parts: kube-apiserver + etcd (RBAC on),
//! the Temporal dev server, the worker (PostgreSQL ledger), the simulators
//! and the callback receiver — every one a real process. The controller runs
//! as a process too, with a token of the chart's controller ServiceAccount:
//! the RBAC in `charts/paysaga` is all it has.
//!
//! The tests share one set of simulators and change their global knobs, so
//! they run one at a time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams};
use kube::runtime::{WatchStreamExt, watcher};
use paysaga_api::{Payment, Phase};
use paysaga_testenv::Service;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The worker and the controller shared by this test binary.
fn stack() -> &'static (Service, Service) {
    static STACK: OnceLock<(Service, Service)> = OnceLock::new();
    STACK.get_or_init(|| {
        let temporal = paysaga_testenv::temporal();
        let sim = paysaga_testenv::sim();
        let _api = paysaga_testenv::api();
        let db = paysaga_testenv::postgres().database("controller").unwrap();
        let dir = paysaga_testenv::run_dir();
        let worker = Service::worker(
            &dir.join("worker"),
            &[
                format!("--temporal-address={}", temporal.address),
                format!("--database-url={db}"),
                "--seed-accounts=alice:EUR:100000000".into(),
                format!("--gateway-url={}", sim.url),
                format!("--fraud-url={}", sim.url),
                format!("--notify-url={}", sim.url),
            ],
        )
        .unwrap();
        let kubeconfig = chart_service_account();
        let controller = Service::controller(
            &dir.join("controller"),
            &kubeconfig,
            &temporal.address,
            None,
            &["--confirmation-timeout-secs=120".to_string()],
        )
        .unwrap();
        (worker, controller)
    })
}

const SYSTEM_NAMESPACE: &str = "paysaga-system";

/// Installs the chart's controller ServiceAccount and RBAC (rendered by
/// helm) and returns a kubeconfig with a token of that ServiceAccount.
fn chart_service_account() -> std::path::PathBuf {
    let kube = paysaga_testenv::kube();
    let _ = kube.kubectl_ok(&["create", "namespace", SYSTEM_NAMESPACE]);
    let chart = paysaga_testenv::workspace_root().join("charts/paysaga");
    let rendered = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("helm"))
            .args(["template", "paysaga"])
            .arg(&chart)
            .args([
                "--namespace",
                SYSTEM_NAMESPACE,
                "--show-only",
                "templates/controller-rbac.yaml",
            ]),
    )
    .unwrap();
    kubectl_apply(SYSTEM_NAMESPACE, &rendered);
    kube.service_account_kubeconfig(SYSTEM_NAMESPACE, "paysaga-controller")
        .unwrap()
}

#[test]
fn the_controller_account_can_do_no_more_than_it_uses() {
    stack();
    let kubeconfig = paysaga_testenv::kube()
        .service_account_kubeconfig(SYSTEM_NAMESPACE, "paysaga-controller")
        .unwrap();
    let can = |verb: &str, resource: &str| {
        let out = std::process::Command::new(paysaga_testenv::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["auth", "can-i", verb, resource, "--all-namespaces"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (verb, resource) in [
        ("watch", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev/status"),
        ("create", "events.events.k8s.io"),
    ] {
        assert_eq!(can(verb, resource), "yes", "{verb} {resource}");
    }
    for (verb, resource) in [
        ("create", "payments.paysaga.dev"),
        ("update", "payments.paysaga.dev"),
        ("delete", "payments.paysaga.dev"),
        ("update", "payments.paysaga.dev/status"),
        ("get", "secrets"),
        ("list", "pods"),
        ("create", "events"),
    ] {
        assert_eq!(can(verb, resource), "no", "{verb} {resource}");
    }
}

async fn sim_config(patch: serde_json::Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/admin/config", paysaga_testenv::sim().url))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

fn manifest(name: &str, amount: i64) -> String {
    serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment",
        "metadata": {"name": name},
        "spec": {"userId": "alice", "amount": amount, "currency": "EUR", "method": "card",
                 "notify": {"email": "alice@example.com"}},
    })
    .to_string()
}

fn kubectl_apply(ns: &str, doc: &str) {
    use std::io::Write;
    let mut child = paysaga_testenv::kube()
        .kubectl()
        .args(["apply", "-n", ns, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn payments(ns: &str) -> Api<Payment> {
    Api::namespaced(paysaga_testenv::kube().client().await.unwrap(), ns)
}

/// Waits until the Payment satisfies `pred` (a condition, not a sleep).
async fn wait_for(
    api: &Api<Payment>,
    name: &str,
    what: &str,
    pred: impl Fn(&Payment) -> bool,
) -> Payment {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = api.get(name).await
            && pred(&p)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {name}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(p: &Payment) -> Option<Phase> {
    p.status.as_ref().and_then(|s| s.phase)
}

fn condition(p: &Payment, type_: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_watch_phases_in_order_with_conditions_and_events() {
    let _serial = SERIAL.lock().await;
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
    assert_eq!(seen, [Phase::Pending, Phase::Processing, Phase::Succeeded]);

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
    let events = kube
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .unwrap();
    for reason in [
        "WorkflowStarted",
        "Validated",
        "Debited",
        "Charged",
        "Confirmed",
        "Notified",
        "Succeeded",
    ] {
        assert!(events.contains(reason), "no {reason} event in {events}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_to_cancel_in_flight_and_after_completion() {
    let _serial = SERIAL.lock().await;
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("ctl-cancel").unwrap();
    let api = payments(&ns.name).await;

    // In flight: no confirmation will come until the cancel.
    sim_config(serde_json::json!({"callbackDropRate": 1.0})).await;
    kubectl_apply(&ns.name, &manifest("pay-wait", 500));
    wait_for(&api, "pay-wait", "waiting for the confirmation", |p| {
        p.status.as_ref().and_then(|s| s.step) == Some(paysaga_api::Step::AwaitConfirmation)
    })
    .await;
    sim_config(serde_json::json!({"callbackDropRate": 0.0})).await;
    kube.kubectl_ok(&[
        "annotate",
        "payment",
        "pay-wait",
        "-n",
        &ns.name,
        "paysaga.dev/cancel=changed my mind",
    ])
    .unwrap();
    let p = wait_for(&api, "pay-wait", "Cancelled", |p| {
        phase(p) == Some(Phase::Cancelled)
    })
    .await;
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

    // After completion: too late, nothing else changes.
    kubectl_apply(&ns.name, &manifest("pay-done", 300));
    let done = wait_for(&api, "pay-done", "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    })
    .await;
    kube.kubectl_ok(&[
        "annotate",
        "payment",
        "pay-done",
        "-n",
        &ns.name,
        "paysaga.dev/cancel=too late",
    ])
    .unwrap();
    let p = wait_for(&api, "pay-done", "a too-late condition", |p| {
        condition(p, "CancelRequested").is_some()
    })
    .await;
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
    let _serial = SERIAL.lock().await;
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("ctl-delete").unwrap();
    let api = payments(&ns.name).await;

    sim_config(serde_json::json!({"callbackDropRate": 1.0})).await;
    kubectl_apply(&ns.name, &manifest("pay-inflight", 700));
    let p = wait_for(&api, "pay-inflight", "waiting for the confirmation", |p| {
        p.status.as_ref().and_then(|s| s.step) == Some(paysaga_api::Step::AwaitConfirmation)
    })
    .await;
    sim_config(serde_json::json!({"callbackDropRate": 0.0})).await;
    assert_eq!(
        p.metadata.finalizers.as_deref(),
        Some(&["paysaga.dev/workflow".to_string()][..])
    );
    let workflow_id = p.status.unwrap().workflow_id.unwrap();
    api.delete("pay-inflight", &DeleteParams::default())
        .await
        .unwrap();
    // Gone only once the workflow has compensated and finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get_opt("pay-inflight").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the in-flight payment was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    assert!(
        described.contains("Cancelled"),
        "the workflow did not end cancelled: {described}"
    );

    kubectl_apply(&ns.name, &manifest("pay-finished", 100));
    wait_for(&api, "pay-finished", "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    })
    .await;
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

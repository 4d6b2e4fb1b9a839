//! What the controller's integration tests share: the chart's ServiceAccount,
//! the worker and controller processes, and small helpers.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use kube::api::Api;
use paysaga_api::external::{Scenario, paths};
use paysaga_api::{Payment, Phase};
use paysaga_testenv::{Service, block_on, eventually};

pub const SYSTEM_NAMESPACE: &str = "paysaga-system";

/// Installs the chart's controller ServiceAccount and RBAC (rendered by
/// helm) and returns a kubeconfig with a token of that ServiceAccount.
pub fn chart_service_account() -> std::path::PathBuf {
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

/// The chart's worker ServiceAccount and Roles (rendered by helm with
/// `namespace` as the release's and `more` as further webhook namespaces),
/// and a kubeconfig with its token.
pub fn worker_service_account(namespace: &str, more: &[String]) -> std::path::PathBuf {
    let kube = paysaga_testenv::kube();
    let chart = paysaga_testenv::workspace_root().join("charts/paysaga");
    let mut helm = std::process::Command::new(paysaga_testenv::tool("helm"));
    helm.args(["template", "paysaga"]).arg(&chart).args([
        "--namespace",
        namespace,
        "--show-only",
        "templates/worker.yaml",
    ]);
    if !more.is_empty() {
        helm.arg("--set")
            .arg(format!("worker.webhooks.namespaces={{{}}}", more.join(",")));
    }
    let rendered = paysaga_testenv::process::run(&mut helm).unwrap();
    // Its identity and access only: no Deployment runs on this control plane.
    for doc in rendered.split("\n---") {
        if doc.contains("kind: Deployment") || doc.trim().is_empty() {
            continue;
        }
        let out = paysaga_testenv::kube().kubectl_with_input(&["apply", "-f", "-"], doc);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kube.service_account_kubeconfig(namespace, "paysaga-worker")
        .unwrap()
}

/// An HTTP client for the paysaga API that sends `credential` (an API key
/// or a Kubernetes token) as `Authorization: Bearer`.
pub fn authed_http(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {credential}"))
        .expect("a credential fits in a header");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The result of a closed workflow, from `temporal workflow describe -o
/// json`, decrypted with the test run's keyring: its JSON text.
pub fn decrypted_result(described: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let v: serde_json::Value = serde_json::from_str(described).unwrap();
    let result = &v["result"];
    let payload = temporalio_common::protos::temporal::api::common::v1::Payload {
        metadata: result["metadata"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), b64.decode(v.as_str().unwrap()).unwrap()))
            .collect(),
        data: b64.decode(result["data"].as_str().unwrap()).unwrap(),
        ..Default::default()
    };
    let codec =
        paysaga_common::codec::EncryptionCodec::from_file(paysaga_testenv::codec_keys_file())
            .unwrap();
    let plain = codec.decrypt(payload).unwrap();
    String::from_utf8(plain.data).unwrap()
}

/// The worker, as a process, with a PostgreSQL ledger of its own.
pub fn start_worker() -> Service {
    start_worker_on(&paysaga_testenv::temporal().address)
}

/// The worker against the Temporal at `temporal_address`.
pub fn start_worker_on(temporal_address: &str) -> Service {
    let sim = paysaga_testenv::sim();
    let _api = paysaga_testenv::api();
    let db = paysaga_testenv::postgres().database("controller").unwrap();
    Service::payment_worker(
        &paysaga_testenv::run_dir().join("worker"),
        temporal_address,
        &db,
        "alice:EUR:100000000",
        &sim.url,
    )
    .unwrap()
}

/// A controller process with the chart's ServiceAccount; `name` tells
/// replicas apart (their logs).
pub fn start_controller(name: &str, extra: &[String]) -> Service {
    start_controller_on(name, &paysaga_testenv::temporal().address, extra)
}

/// A controller against the Temporal at `temporal_address`.
pub fn start_controller_on(name: &str, temporal_address: &str, extra: &[String]) -> Service {
    let kubeconfig = chart_service_account();
    let mut args = vec![format!("--lease-namespace={SYSTEM_NAMESPACE}")];
    if !extra
        .iter()
        .any(|a| a.starts_with("--confirmation-timeout-secs"))
    {
        args.push("--confirmation-timeout-secs=120".to_string());
    }
    args.extend(extra.iter().cloned());
    Service::controller(
        &paysaga_testenv::run_dir().join(name),
        &kubeconfig,
        temporal_address,
        None,
        &args,
    )
    .unwrap()
}

/// Steers the simulators for every payment whose workflow ID starts with
/// `prefix` (e.g. `payment-<namespace>-`): tests share the simulators, and
/// each steers only its own payments.
pub async fn scenario(prefix: &str, scenario: Scenario) {
    let url = format!(
        "{}{}/{prefix}*",
        paysaga_testenv::sim().url,
        paths::ADMIN_SCENARIOS
    );
    let resp = reqwest::Client::new()
        .put(url)
        .json(&scenario)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

pub fn manifest(name: &str, amount: i64) -> String {
    serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment",
        "metadata": {"name": name},
        "spec": {"userId": "alice", "amount": amount, "currency": "EUR", "method": "card",
                 "notify": {"email": "alice@example.com"}},
    })
    .to_string()
}

pub fn kubectl_apply(ns: &str, doc: &str) {
    let out = paysaga_testenv::kube().kubectl_with_input(&["apply", "-n", ns, "-f", "-"], doc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub async fn payments(ns: &str) -> Api<Payment> {
    Api::namespaced(paysaga_testenv::kube().client().await.unwrap(), ns)
}

/// Waits until the Payment satisfies `pred` (a condition, not a sleep).
pub fn wait_for(
    api: &Api<Payment>,
    name: &str,
    what: &str,
    pred: impl Fn(&Payment) -> bool,
) -> Payment {
    eventually(Duration::from_secs(60), &format!("{name}: {what}"), || {
        let p = block_on(api.get(name)).map_err(|e| e.to_string())?;
        if pred(&p) {
            Ok(p)
        } else {
            Err(format!("status {:?}", p.status))
        }
    })
}

/// Waits until the Payment is gone.
pub fn wait_gone(api: &Api<Payment>, name: &str, what: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{name}: {what}"),
        || match block_on(api.get_opt(name)).map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!("still there: {:?}", p.status)),
        },
    )
}

pub fn phase(p: &Payment) -> Option<Phase> {
    p.status.as_ref().and_then(|s| s.phase)
}

pub fn condition(p: &Payment, type_: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Creates a Payment that stays in flight (the gateway never confirms its
/// charge) and returns it once it waits for the confirmation.
pub async fn in_flight_payment(api: &Api<Payment>, ns: &str, name: &str, amount: i64) -> Payment {
    scenario(&format!("payment-{ns}-{name}-"), Scenario::default()).await;
    kubectl_apply(ns, &manifest(name, amount));
    wait_for(api, name, "waiting for the confirmation", |p| {
        p.status.as_ref().and_then(|s| s.step) == Some(paysaga_api::Step::AwaitConfirmation)
    })
}

/// The reasons of the Events in `ns` (events.k8s.io), space separated.
pub fn event_reasons(ns: &str) -> String {
    paysaga_testenv::kube()
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .unwrap()
}

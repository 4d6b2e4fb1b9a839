//! The Payment CRD against a real kube-apiserver + etcd: what users see with
//! kubectl, and what the server refuses.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use paysaga_api::{Payment, Phase};
use paysaga_testenv::kube as control_plane;

fn example() -> String {
    paysaga_testenv::workspace_root()
        .join("examples/payment.yaml")
        .display()
        .to_string()
}

#[test]
fn kubectl_apply_example_and_get_shows_the_columns() {
    let env = control_plane();
    let ns = env.namespace("crd-get").unwrap();
    env.kubectl_ok(&["apply", "-n", &ns.name, "-f", &example()])
        .unwrap();

    let table = env
        .kubectl_ok(&["get", "payments", "-n", &ns.name])
        .unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "USER", "AMOUNT", "CURRENCY", "PHASE", "STEP", "REFUNDED", "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        ["coffee-beans", "alice", "1250", "EUR"],
        "row: {row:?}"
    );

    // The short name and the category reach the same object.
    for alias in ["pay", "paysaga"] {
        let names = env
            .kubectl_ok(&["get", alias, "-n", &ns.name, "-o", "name"])
            .unwrap();
        assert_eq!(
            names.trim(),
            "payment.paysaga.dev/coffee-beans",
            "kubectl get {alias}"
        );
    }
}

/// Applies a Payment whose spec is the example's with `field` set to `value`;
/// returns the server's refusal.
fn refusal(namespace: &str, name: &str, field: &str, value: serde_json::Value) -> String {
    let mut spec = serde_json::json!({
        "userId": "alice", "amount": 1250, "currency": "EUR", "method": "card"
    });
    spec[field] = value;
    let doc = serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    });
    let out = control_plane().kubectl_with_input(&["apply", "-f", "-"], &doc.to_string());
    assert!(
        !out.status.success(),
        "the server accepted {field}={}: {}",
        spec[field],
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_server_refuses_invalid_payments_with_a_reason() {
    let env = control_plane();
    let ns = env.namespace("crd-invalid").unwrap();
    let cases = [
        (
            "amount",
            serde_json::json!(0),
            "spec.amount: Invalid value: 0: spec.amount in body should be greater than or equal to 1",
        ),
        (
            "amount",
            serde_json::json!(-5),
            "spec.amount in body should be greater than or equal to 1",
        ),
        (
            "amount",
            serde_json::json!(1_000_000_001i64),
            "spec.amount in body should be less than or equal to",
        ),
        (
            "currency",
            serde_json::json!("eur"),
            "spec.currency in body should match '^[A-Z]{3}$'",
        ),
        (
            "method",
            serde_json::json!("cash"),
            r#"spec.method: Unsupported value: "cash": supported values: "card", "bankTransfer", "wallet""#,
        ),
    ];
    for (i, (field, value, reason)) in cases.into_iter().enumerate() {
        let err = refusal(&ns.name, &format!("bad-{i}"), field, value.clone());
        assert!(
            err.contains(reason),
            "{field}={value}: expected {reason:?} in:\n{err}"
        );
    }
    // Nothing was created.
    let left = env
        .kubectl_ok(&["get", "payments", "-n", &ns.name, "-o", "name"])
        .unwrap();
    assert_eq!(left.trim(), "");
}

#[test]
fn spec_is_immutable_after_creation() {
    let env = control_plane();
    let ns = env.namespace("crd-immutable").unwrap();
    env.kubectl_ok(&["apply", "-n", &ns.name, "-f", &example()])
        .unwrap();
    let out = env
        .kubectl()
        .args([
            "patch",
            "payment",
            "coffee-beans",
            "-n",
            &ns.name,
            "--type=merge",
        ])
        .args(["-p", r#"{"spec":{"amount":99999}}"#])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server accepted a spec edit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec is immutable once the payment is created"),
        "unexpected refusal: {err}"
    );
    let amount = env
        .kubectl_ok(&[
            "get",
            "payment",
            "coffee-beans",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.amount}",
        ])
        .unwrap();
    assert_eq!(amount, "1250");
}

#[tokio::test]
async fn status_subresource_changes_status_and_leaves_spec_alone() {
    let env = control_plane();
    let ns = env.namespace("crd-status").unwrap();
    env.kubectl_ok(&["apply", "-n", &ns.name, "-f", &example()])
        .unwrap();
    let client = env.client().await.unwrap();
    let payments: Api<Payment> = Api::namespaced(client.clone(), &ns.name);

    // One patch to /status that also tries to change spec: the status
    // subresource ignores everything but status.
    let patch = serde_json::json!({
        "status": {"phase": "Processing", "step": "ValidateAccount", "observedGeneration": 1},
        "spec": {"amount": 1},
    });
    let after = payments
        .patch_status(
            "coffee-beans",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let status = after.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Processing));
    assert_eq!(after.spec.amount, 1250);

    let fresh = payments.get("coffee-beans").await.unwrap();
    assert_eq!(fresh.spec.amount, 1250);
    assert_eq!(fresh.status.unwrap().phase, Some(Phase::Processing));
    // The namespace object is real too (RBAC-on API server, admin client).
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get(&ns.name).await.is_ok());
}

/// Every manifest in examples/ (the README applies them) is a Payment, a
/// Refund, a RecurringPayment or a WebhookEndpoint the real API server
/// accepts.
#[test]
fn every_example_is_accepted_by_the_api_server() {
    let env = control_plane();
    let ns = env.namespace("crd-examples").unwrap();
    let dir = paysaga_testenv::workspace_root().join("examples");
    let mut applied = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let file = path.display().to_string();
            let out = env
                .kubectl_ok(&["apply", "--dry-run=server", "-n", &ns.name, "-f", &file])
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                ["payment", "refund", "recurringpayment", "webhookendpoint"]
                    .iter()
                    .any(|kind| out.contains(&format!("{kind}.paysaga.dev/"))),
                "{file}: {out}"
            );
            applied.push(file);
        }
    }
    assert!(applied.len() >= 2, "{applied:?}");
}

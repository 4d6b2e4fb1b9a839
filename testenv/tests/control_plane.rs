//! The test environment itself: RBAC is really on, ServiceAccount credentials
//! are real, and components never outlive their owner.

use std::process::Command;
use std::time::Duration;

use paysaga_testenv::{kube, tool};

/// `kubectl` with a given kubeconfig; returns (success, stdout + stderr).
fn kubectl_as(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_service_account_can_do_exactly_what_rbac_grants() {
    let env = kube();
    let ns = env.namespace("rbac").unwrap();
    let sa = env.service_account_kubeconfig(&ns.name, "reader").unwrap();

    let (ok, out) = kubectl_as(&sa, &["get", "payments", "-n", &ns.name]);
    assert!(!ok, "an account with no role listed payments: {out}");
    assert!(
        out.contains(&format!(
            "User \"system:serviceaccount:{}:reader\" cannot list resource \"payments\"",
            ns.name
        )),
        "{out}"
    );

    env.kubectl_ok(&[
        "create",
        "role",
        "payment-reader",
        "-n",
        &ns.name,
        "--verb=get,list,watch",
        "--resource=payments.paysaga.dev",
    ])
    .unwrap();
    env.kubectl_ok(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        &ns.name,
        "--role=payment-reader",
        &format!("--serviceaccount={}:reader", ns.name),
    ])
    .unwrap();

    let (ok, out) = kubectl_as(&sa, &["get", "payments", "-n", &ns.name]);
    assert!(ok, "the bound account could not list payments: {out}");
    let example = paysaga_testenv::workspace_root().join("examples/payment.yaml");
    let (ok, out) = kubectl_as(
        &sa,
        &[
            "create",
            "-n",
            &ns.name,
            "-f",
            &example.display().to_string(),
        ],
    );
    assert!(
        !ok && out.contains("cannot create resource \"payments\""),
        "create was not refused: {out}"
    );
    let (ok, out) = kubectl_as(&sa, &["get", "payments", "-n", "default"]);
    assert!(
        !ok && out.contains("cannot list resource"),
        "another namespace was readable: {out}"
    );
}

#[test]
fn components_stop_when_their_owner_panics() {
    // A unique argument lets us find exactly this component's process.
    let marker = format!("600.{}", std::process::id());
    let helper = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/owner_panics");
    let out = Command::new(&helper).arg(&marker).output().unwrap();
    assert!(!out.status.success(), "the helper was meant to panic");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the owner dies"));

    let running = || {
        Command::new("pgrep")
            .args(["-f", &format!("^sleep {marker}$")])
            .status()
            .unwrap()
            .success()
    };
    paysaga_testenv::eventually(
        Duration::from_secs(15),
        &format!("sleep {marker} to stop with its owner"),
        || {
            if running() {
                Err("still running".into())
            } else {
                Ok(())
            }
        },
    );
}

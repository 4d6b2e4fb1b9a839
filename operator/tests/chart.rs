//! The Helm chart against the real API server: lint, renders of several
//! values files (checked in as goldens), server-side dry runs, and a real
//! `helm install` creating every object (no pods run here: no kubelet).

use std::path::{Path, PathBuf};
use std::process::Command;

use paysaga_testenv::{kube, process::run, tool, workspace_root};

fn chart() -> PathBuf {
    workspace_root().join("charts/paysaga")
}

fn values_files() -> Vec<(String, PathBuf)> {
    let mut files: Vec<_> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .replace("-values", ""),
                p,
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

fn helm(args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("helm"));
    cmd.env("KUBECONFIG", &kube().admin_kubeconfig).args(args);
    cmd
}

fn render(values: &Path) -> String {
    run(helm(&[
        "template",
        "paysaga",
        &chart().display().to_string(),
        "--namespace",
        "paysaga-system",
    ])
    .arg("-f")
    .arg(values))
    .unwrap()
}

#[test]
fn the_chart_lints_strictly_with_every_values_file() {
    for (name, values) in values_files() {
        let out = run(helm(&["lint", "--strict", &chart().display().to_string()])
            .arg("-f")
            .arg(&values));
        assert!(out.is_ok(), "{name}: {out:?}");
    }
}

#[test]
fn renders_match_their_checked_in_goldens() {
    for (name, values) in values_files() {
        let golden = chart().join("golden").join(format!("{name}.yaml"));
        let rendered = render(&values);
        if std::env::var_os("PAYSAGA_UPDATE_GOLDENS").is_some() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &rendered).unwrap();
        }
        let checked_in = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(
            checked_in == rendered,
            "{} is stale: run `make generate` and commit the result",
            golden.display()
        );
    }
}

#[test]
fn every_render_is_accepted_by_the_api_server() {
    let env = kube();
    let _ = env.kubectl_ok(&["create", "namespace", "paysaga-system"]);
    for (name, values) in values_files() {
        let rendered = render(&values);
        let dry_run =
            || env.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &rendered);
        // A namespace just created may not have reached the admission
        // plugin's cache yet; that, and only that, is retried.
        let out = paysaga_testenv::eventually(
            std::time::Duration::from_secs(10),
            "the new namespace known to admission",
            || {
                let out = dry_run();
                let err = String::from_utf8_lossy(&out.stderr);
                if err.contains("namespaces \"paysaga-system\" not found") {
                    Err(err.into_owned())
                } else {
                    Ok(out)
                }
            },
        );
        assert!(
            out.status.success(),
            "{name}: the API server refused the render:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn helm_install_creates_every_object() {
    let env = kube();
    let ns = env.namespace("chart").unwrap();
    let out = run(&mut helm(&[
        "install",
        "paysaga",
        &chart().display().to_string(),
        "--namespace",
        &ns.name,
        "--wait=false",
    ]));
    assert!(out.is_ok(), "{out:?}");
    let status = run(&mut helm(&["status", "paysaga", "--namespace", &ns.name])).unwrap();
    assert!(status.contains("STATUS: deployed"), "{status}");
    let names = env
        .kubectl_ok(&[
            "get",
            "deploy,sts,svc,ingress,networkpolicy,secret,pvc,sa,role,rolebinding",
            "-n",
            &ns.name,
            "-o",
            "name",
        ])
        .unwrap();
    for expected in [
        "deployment.apps/paysaga-controller",
        "deployment.apps/paysaga-api",
        "deployment.apps/paysaga-worker",
        "deployment.apps/paysaga-sim",
        "deployment.apps/paysaga-temporal",
        "statefulset.apps/paysaga-postgresql",
        "service/paysaga-api",
        "service/paysaga-temporal",
        "ingress.networking.k8s.io/paysaga",
        "networkpolicy.networking.k8s.io/paysaga-default-deny",
        "secret/paysaga-callback",
        "secret/paysaga-db",
        "persistentvolumeclaim/paysaga-temporal",
        "serviceaccount/paysaga-controller",
        "serviceaccount/paysaga-api",
        "role.rbac.authorization.k8s.io/paysaga-api",
    ] {
        assert!(
            names.lines().any(|l| l == expected),
            "{expected} missing from:\n{names}"
        );
    }
    let cluster = env
        .kubectl_ok(&["get", "clusterrole,clusterrolebinding", "-o", "name"])
        .unwrap();
    assert!(
        cluster.contains("clusterrole.rbac.authorization.k8s.io/paysaga-controller"),
        "{cluster}"
    );
    // NOTES.txt says what to do next.
    assert!(
        status.contains("kubectl") && status.contains("helm test paysaga"),
        "{status}"
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    for file in [
        "payment.yaml",
        "idempotencykey.yaml",
        "refund.yaml",
        "recurringpayment.yaml",
    ] {
        let generated = std::fs::read_to_string(workspace_root().join("crds").join(file)).unwrap();
        let in_chart = std::fs::read_to_string(chart().join("crds").join(file)).unwrap();
        assert!(
            generated == in_chart,
            "charts/paysaga/crds/{file} is stale: run `make generate`"
        );
    }
}

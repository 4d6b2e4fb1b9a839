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

/// The render with what the chart generates afresh each time (the ingress'
/// certificate, its CA and key, and when to renew it; the codec keyring) masked, so goldens
/// compare what is decided, not what is random.
fn masked(rendered: &str) -> String {
    const GENERATED: [&str; 5] = [
        "  tls.crt: ",
        "  tls.key: ",
        "  ca.crt: ",
        "    paysaga.dev/tls-renew-after: ",
        // The payload codec's keyring (a random key).
        "  keys.json: ",
    ];
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        match GENERATED.iter().find(|p| line.starts_with(*p)) {
            Some(prefix) => {
                out.push_str(prefix);
                out.push_str("<generated>");
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[test]
fn renders_match_their_checked_in_goldens() {
    for (name, values) in values_files() {
        let golden = chart().join("golden").join(format!("{name}.yaml"));
        let rendered = masked(&render(&values));
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
        // A PrometheusRule needs prometheus-operator's CRDs, which this API
        // server does not have: its rules go to promtool instead
        // (`the_alert_rules_pass_promtool`).
        let all = render(&values);
        let rendered = render_documents(&all)
            .into_iter()
            .filter(|d| !d.contains("\nkind: PrometheusRule\n"))
            .collect::<Vec<_>>()
            .join("\n---\n");
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

/// The documents of a render.
fn render_documents(rendered: &str) -> Vec<&str> {
    rendered
        .split("\n---\n")
        .filter(|d| d.lines().any(|l| l.starts_with("kind: ")))
        .collect()
}

/// The PrometheusRule of every render that has one, and of the defaults
/// with a selector, is a rule file promtool accepts, with each alert.
#[test]
fn the_alert_rules_pass_promtool() {
    let dir = paysaga_testenv::run_dir().join("promtool");
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for (name, values) in values_files() {
        let rendered = render(&values);
        if !rendered.contains("\nkind: PrometheusRule\n") {
            continue;
        }
        let rules = paysaga_testenv::prometheus::render_chart_rules(
            &dir.join(format!("{name}.yaml")),
            &[&format!("--values={}", values.display())],
        );
        let text = std::fs::read_to_string(rules.unwrap()).unwrap();
        for alert in paysaga_testenv::prometheus::CHART_ALERTS {
            assert!(
                text.contains(&format!("- alert: {alert}\n")),
                "{name}: no {alert}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 1, "no values file renders the alerts");
    let defaults = paysaga_testenv::prometheus::render_chart_rules(&dir.join("defaults.yaml"), &[]);
    assert!(defaults.is_ok(), "{defaults:?}");
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
        "secret/paysaga-codec",
        "secret/paysaga-ingress-tls",
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
    for expected in [
        "clusterrole.rbac.authorization.k8s.io/paysaga-controller".to_string(),
        // The API's TokenReview and SubjectAccessReview, per release.
        format!(
            "clusterrole.rbac.authorization.k8s.io/paysaga-{}-api-auth",
            ns.name
        ),
        format!(
            "clusterrolebinding.rbac.authorization.k8s.io/paysaga-{}-api-auth",
            ns.name
        ),
        // The roles callers are bound to.
        "clusterrole.rbac.authorization.k8s.io/paysaga-client".to_string(),
        "clusterrole.rbac.authorization.k8s.io/paysaga-viewer".to_string(),
        "clusterrole.rbac.authorization.k8s.io/paysaga-payload-reader".to_string(),
        "clusterrole.rbac.authorization.k8s.io/paysaga-any-payer".to_string(),
    ] {
        assert!(
            cluster.lines().any(|l| l == expected),
            "{expected} missing from:\n{cluster}"
        );
    }
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
        "webhookendpoint.yaml",
    ] {
        let generated = std::fs::read_to_string(workspace_root().join("crds").join(file)).unwrap();
        let in_chart = std::fs::read_to_string(chart().join("crds").join(file)).unwrap();
        assert!(
            generated == in_chart,
            "charts/paysaga/crds/{file} is stale: run `make generate`"
        );
    }
}

fn secret_field(ns: &str, name: &str, field: &str) -> String {
    kube()
        .kubectl_ok(&[
            "get",
            "secret",
            name,
            "-n",
            ns,
            "-o",
            &format!("jsonpath={{.data.{}}}", field.replace('.', "\\.")),
        ])
        .unwrap()
}

#[test]
fn the_ingress_certificate_is_kept_across_upgrades_and_renewed_for_new_names() {
    let env = kube();
    let ns = env.namespace("chart-tls").unwrap();
    let chart = chart().display().to_string();
    let helm_ok = |args: &[&str]| {
        let out = run(&mut helm(args));
        assert!(out.is_ok(), "{args:?}: {out:?}");
    };
    // One API server, several releases: a release name of its own (its
    // controller's ClusterRole is named after it), and the client
    // ClusterRoles left to the first install.
    let release = "tls";
    helm_ok(&[
        "install",
        release,
        &chart,
        "--namespace",
        &ns.name,
        "--wait=false",
        "--set",
        "api.clientRoles=false",
    ]);
    let secret = &format!("{release}-ingress-tls");
    let (cert, ca) = (
        secret_field(&ns.name, secret, "tls.crt"),
        secret_field(&ns.name, secret, "ca.crt"),
    );
    assert!(!cert.is_empty() && !ca.is_empty(), "no certificate made");
    // The Ingress serves it, for every host (ingress.host is empty).
    let tls = env
        .kubectl_ok(&[
            "get",
            "ingress",
            release,
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.tls[0].secretName}",
        ])
        .unwrap();
    assert_eq!(&tls, secret);

    // An upgrade changing something else keeps it: clients keep trusting it.
    helm_ok(&[
        "upgrade",
        release,
        &chart,
        "--namespace",
        &ns.name,
        "--wait=false",
        "--reuse-values",
        "--set",
        "api.replicas=1",
    ]);
    assert_eq!(secret_field(&ns.name, secret, "tls.crt"), cert);
    assert_eq!(secret_field(&ns.name, secret, "ca.crt"), ca);

    // New names need a new certificate.
    helm_ok(&[
        "upgrade",
        release,
        &chart,
        "--namespace",
        &ns.name,
        "--wait=false",
        "--reuse-values",
        "--set",
        "ingress.host=pay.example.test",
    ]);
    let renewed = secret_field(&ns.name, secret, "tls.crt");
    assert_ne!(renewed, cert);
    let names = env
        .kubectl_ok(&[
            "get",
            "secret",
            secret,
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.metadata.annotations.paysaga\\.dev/tls-names}",
        ])
        .unwrap();
    assert_eq!(names, "pay.example.test");
}

/// The payload codec's keyring is made once and kept across upgrades: a
/// new key would leave every history written before unreadable.
#[test]
fn the_codec_keyring_is_made_once_and_kept_across_upgrades() {
    let env = kube();
    let ns = env.namespace("chart-codec").unwrap();
    let chart = chart().display().to_string();
    let helm_ok = |args: &[&str]| {
        let out = run(&mut helm(args));
        assert!(out.is_ok(), "{args:?}: {out:?}");
    };
    // A release name of its own, the client ClusterRoles left to the first
    // install (cluster-scoped objects of one API server).
    let release = [
        "codec",
        chart.as_str(),
        "--namespace",
        &ns.name,
        "--wait=false",
        "--set",
        "api.clientRoles=false",
    ];
    helm_ok(&[&["install"], &release[..]].concat());
    let keys = secret_field(&ns.name, "codec-codec", "keys.json");
    let keyring = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&keys)
            .unwrap();
        String::from_utf8(raw).unwrap()
    };
    // What the processes read: a keyring they accept.
    let parsed =
        paysaga_common::codec::Keyring::parse(&keyring, std::path::Path::new("paysaga-codec"))
            .expect("the chart's keyring");
    assert_eq!(parsed.key_ids(), vec![parsed.primary().to_string()]);
    helm_ok(&[&["upgrade"], &release[..], &["--set", "api.replicas=1"]].concat());
    assert_eq!(secret_field(&ns.name, "codec-codec", "keys.json"), keys);
    // Every paysaga pod reads it from the mounted Secret.
    for deploy in ["codec-controller", "codec-api", "codec-worker"] {
        let spec = env
            .kubectl_ok(&["get", "deploy", deploy, "-n", &ns.name, "-o", "json"])
            .unwrap();
        assert!(
            spec.contains("\"PAYSAGA_CODEC_KEYS_FILE\"")
                && spec.contains("\"secretName\": \"codec-codec\""),
            "{deploy}: {spec}"
        );
    }
}

//! The cluster tier: the Helm chart installed on a real one-node cluster
//! built on this machine (kubelet, containerd, runc, CNI, kube-proxy,
//! CoreDNS, Traefik, kube-router), its pods really running. One node may run
//! per machine, so this is one test that walks the scenarios in order on one
//! node (each step says what it proves), after proving that a node whose
//! owner was killed is cleaned up by the next start.
//!
//! It prints what it measures (start-up, pods Ready, k6 through the ingress);
//! nothing here asserts a duration.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paysaga_bench::k6;
use paysaga_testenv::cluster::{ChartImages, Release, secs};
use paysaga_testenv::node::host::{self, NODE_IP};
use paysaga_testenv::{NodeEnv, PostgresEnv, eventually, run_dir, temporal_server, workspace_root};
use serde_json::Value;

const NS: &str = "paysaga";

#[test]
fn the_chart_runs_on_a_real_one_node_cluster() {
    let _logs = paysaga_testenv::logs_on_failure();
    let dir = run_dir().join("cluster");
    let forwarding_before = sysctl("net/ipv4/ip_forward");
    let outside_before = host::outside_paths_present();

    let left = a_node_whose_owner_is_killed_leaves_a_mess(&dir);
    let t0 = Instant::now();
    let node = NodeEnv::start(&dir).expect("the next start cleans up and comes up");
    report(
        "node start after a kill -9 (cleaning included)",
        t0.elapsed(),
    );
    for (what, took) in &node.timings {
        eprintln!("cluster:   {what:<28} {}", secs(*took));
    }
    eprintln!(
        "cluster: the killed node had left {} things; all cleaned",
        left.len()
    );

    let t1 = Instant::now();
    let images = ChartImages::build_and_import(&node).expect("images");
    report("images built (or cached) and imported", t1.elapsed());
    let t2 = Instant::now();
    let release = Release::install(&node, "paysaga", NS, &images.values(), &[]).expect("install");
    report("helm install until every pod Ready", t2.elapsed());

    every_workload_is_ready(&release);
    every_container_runs_as_non_root_on_a_read_only_root(&release);
    helm_test_passes(&release);
    a_payment_applied_with_kubectl_succeeds(&release);
    the_workers_admin_port_serves_the_metrics_its_annotations_name(&release);
    cancelling_a_payment_that_waits_on_a_slow_gateway_restores_the_money(&release);
    the_ingress_serves_https_with_the_charts_certificate_and_redirects_http(&release);
    k6_smoke_through_the_ingress_passes(&release);
    network_policies_are_enforced(&release);
    helm_upgrade_with_payments_in_flight_loses_none(&release);
    deleting_pods_under_load_loses_nothing(&release);
    uninstall_then_reinstall_on_the_production_temporal_server_works(release, &images, &dir);

    let folder = node.folder.clone();
    let t3 = Instant::now();
    drop(node);
    report("teardown", t3.elapsed());
    let left = host::leftovers(&folder);
    assert!(left.is_empty(), "the teardown left: {left:#?}");
    assert_eq!(
        sysctl("net/ipv4/ip_forward"),
        forwarding_before,
        "ip_forward is restored"
    );
    assert_eq!(
        host::outside_paths_present(),
        outside_before,
        "what the kubelet and containerd wrote outside the node's folder is gone"
    );
}

fn report(what: &str, took: Duration) {
    eprintln!("cluster: {what}: {}", secs(took));
}

fn sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{name}"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A node owned by another process (`paysaga-cluster --node-only`) that is
/// killed with SIGKILL, with no chance to tear down: what it leaves.
fn a_node_whose_owner_is_killed_leaves_a_mess(dir: &std::path::Path) -> Vec<String> {
    let folder = dir.join("killed");
    let bin = paysaga_testenv::services::binary("paysaga-cluster").unwrap();
    let mut owner = Command::new(bin)
        .arg("--node-only")
        .env("PAYSAGA_CLUSTER_DIR", &folder)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.with_extension("killed.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("node ready"),
        "the first node did not start: {line:?}; see {}",
        dir.with_extension("killed.log").display()
    );
    // A second node while this one runs is refused, and says why.
    let second = NodeEnv::start(&dir.join("second"))
        .err()
        .expect("a second node is refused");
    assert!(
        second.to_string().contains("already runs on this machine"),
        "{second:#}"
    );
    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();
    let left = host::leftovers(&std::fs::canonicalize(&folder).unwrap());
    assert!(
        left.iter().any(|l| l.contains("cni0")) && left.iter().any(|l| l.contains("record")),
        "a killed owner leaves its network and record behind: {left:?}"
    );
    left
}

/// Every Deployment and StatefulSet of the release has all its replicas Ready.
fn every_workload_is_ready(release: &Release) {
    let list = json(release, &["get", "deployments,statefulsets", "-o", "json"]);
    let items = list["items"].as_array().unwrap();
    assert!(
        items.len() >= 6,
        "api, controller, worker, sim, temporal, postgresql: {items:?}"
    );
    for w in items {
        let name = w["metadata"]["name"].as_str().unwrap();
        let want = w["spec"]["replicas"].as_i64().unwrap();
        let ready = w["status"]["readyReplicas"].as_i64().unwrap_or(0);
        assert_eq!(ready, want, "{name}: {ready}/{want} Ready");
        eprintln!("cluster: {name}: {ready}/{want} Ready");
    }
}

/// Read from the running containers themselves (their processes), not from
/// the manifests: each runs as a non-root user on a read-only root.
fn every_container_runs_as_non_root_on_a_read_only_root(release: &Release) {
    let pods = json(release, &["get", "pods", "-o", "json"]);
    let tasks = pids_of_tasks(release.node);
    let mut seen = 0;
    for pod in pods["items"].as_array().unwrap() {
        if pod["status"]["phase"] != "Running" {
            continue;
        }
        for c in pod["status"]["containerStatuses"].as_array().unwrap() {
            let id = c["containerID"]
                .as_str()
                .unwrap()
                .trim_start_matches("containerd://");
            let name = format!(
                "{}/{}",
                pod["metadata"]["name"].as_str().unwrap(),
                c["name"]
            );
            let pid = tasks
                .get(id)
                .unwrap_or_else(|| panic!("{name}: no task {id}"));
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uids: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .unwrap()
                .split_whitespace()
                .map(|u| u.parse().unwrap())
                .collect();
            assert!(
                uids.iter().all(|&u| u != 0),
                "{name} runs as root: {uids:?}"
            );
            let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
            let root = mountinfo
                .lines()
                .find(|l| l.split(' ').nth(4) == Some("/"))
                .unwrap_or_else(|| panic!("{name}: no root mount"));
            let options = root.split(' ').nth(5).unwrap();
            assert!(
                options.split(',').any(|o| o == "ro"),
                "{name}'s root is writable: {root}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 8, "only {seen} containers were looked at");
    eprintln!("cluster: {seen} containers run non-root on a read-only root");
}

/// Container id → the pid of its process, from containerd.
fn pids_of_tasks(node: &NodeEnv) -> BTreeMap<String, u32> {
    let out = node.ctr().args(["tasks", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

fn helm_test_passes(release: &Release) {
    let out = release.test().expect("helm test");
    assert!(out.contains("phase Succeeded"), "{out}");
    eprintln!("cluster: helm test passed");
}

fn a_payment_applied_with_kubectl_succeeds(release: &Release) {
    let t = Instant::now();
    release
        .kubectl_ok(&[
            "apply",
            "-f",
            &workspace_root()
                .join("examples/payment.yaml")
                .display()
                .to_string(),
        ])
        .unwrap();
    wait_phase(
        release,
        "coffee-beans",
        "Succeeded",
        Duration::from_secs(120),
    );
    report(
        "kubectl apply -f examples/payment.yaml until Succeeded",
        t.elapsed(),
    );
}

/// Scrapes the worker where its pod's prometheus.io annotations say: its
/// own counters and the SDK's, after the payments above.
fn the_workers_admin_port_serves_the_metrics_its_annotations_name(release: &Release) {
    let pods = json(
        release,
        &[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=worker",
            "-o",
            "json",
        ],
    );
    let annotations = &pods["items"][0]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{annotations}");
    assert_eq!(
        annotations["prometheus.io/path"], "/metrics",
        "{annotations}"
    );
    let port: u16 = annotations["prometheus.io/port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port: {annotations}"));
    let forward = release
        .port_forward_to(&format!("deployment/{}-worker", release.name), port)
        .unwrap();
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/metrics", forward.url)])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET /metrics: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let succeeded: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("paysaga_payments_finished_total{") && l.contains("phase=\"Succeeded\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    // helm test's payment and examples/payment.yaml (one worker replica).
    assert!(
        succeeded >= 2.0,
        "payments finished Succeeded: {succeeded}\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("temporal_workflow_completed_total")),
        "the SDK's metrics: {text}"
    );
    eprintln!("cluster: the worker's /metrics counts {succeeded} succeeded payments");
}

fn cancelling_a_payment_that_waits_on_a_slow_gateway_restores_the_money(release: &Release) {
    let sim = release.port_forward("paysaga-sim", 8090).unwrap();
    put_json(
        &format!("{}/admin/config", sim.url),
        r#"{"callbackDelayMs":600000}"#,
    );
    let manifest = r#"{"apiVersion":"paysaga.dev/v1alpha1","kind":"Payment","metadata":{"name":"slow-tea"},
        "spec":{"userId":"alice","amount":700,"currency":"EUR","method":"card"}}"#;
    let out = release
        .node
        .kube()
        .kubectl_with_input(&["apply", "-n", NS, "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_step(
        release,
        "slow-tea",
        "AwaitConfirmation",
        Duration::from_secs(60),
    );
    release
        .kubectl_ok(&[
            "annotate",
            "payment",
            "slow-tea",
            "paysaga.dev/cancel=changed my mind",
        ])
        .unwrap();
    wait_phase(release, "slow-tea", "Cancelled", Duration::from_secs(60));
    put_json(
        &format!("{}/admin/config", sim.url),
        r#"{"callbackDelayMs":200}"#,
    );
    let (report, ok) = release.audit().unwrap();
    assert!(ok, "{report}");
    assert!(report.contains("1 cancelled"), "{report}");
    eprintln!("cluster: a payment cancelled while it waited: Cancelled, audit:\n{report}");
}

/// The PEM body (base64, no line breaks) of the first certificate in `text`.
fn first_pem_certificate(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    Some(text[start..end].split_whitespace().collect())
}

fn the_ingress_serves_https_with_the_charts_certificate_and_redirects_http(release: &Release) {
    let tls = release
        .ingress_tls()
        .expect("the chart made the ingress' certificate");
    assert_eq!(tls.url, "https://paysaga.local");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let https = format!("{}/openapi.json", tls.url);
    let chart_ca = tls.curl_args();
    let mut args: Vec<&str> = chart_ca.iter().map(String::as_str).collect();
    args.extend(["-w", "%{http_code}\n%{certs}", &https]);
    // Traefik learns of the Ingress' Secret a moment after the install.
    let served = eventually(
        Duration::from_secs(30),
        "HTTPS through the ingress, verified against the chart's CA",
        || match curl(&args) {
            (0, out, _) if out.starts_with("200") => Ok(out),
            other => Err(format!("{other:?}")),
        },
    );
    // The certificate served is the chart's own, not the controller's default.
    assert_eq!(
        first_pem_certificate(&served),
        first_pem_certificate(&tls.cert_pem),
        "the ingress serves another certificate than the chart's:\n{served}"
    );
    // Without the chart's CA the certificate is not trusted (curl: 60).
    let resolve = format!("{}:443:{NODE_IP}", tls.host);
    let (code, _, err) = curl(&["--resolve", &resolve, &https]);
    assert_eq!(code, 60, "{err}");
    // Plain HTTP is never served: every request is redirected to HTTPS,
    // a POST included (its method kept), and nothing is created.
    let before = payments(release).len();
    for method in ["GET", "POST"] {
        let (code, out, err) = curl(&[
            "-X",
            method,
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"userId":"alice","amount":990,"currency":"EUR","method":"wallet"}"#,
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("{}/v1/payments", release.node.ingress_url),
        ]);
        assert_eq!(code, 0, "{err}");
        let (status, location) = out.split_once(' ').unwrap();
        assert!(
            ["301", "308"].contains(&status)
                && location == format!("https://{NODE_IP}/v1/payments"),
            "plain HTTP {method}: {out}"
        );
    }
    assert_eq!(
        payments(release).len(),
        before,
        "a plain-HTTP request made a payment"
    );
    eprintln!(
        "cluster: the ingress serves HTTPS with the chart's certificate ({}, verified with its CA), plain HTTP is redirected",
        tls.host
    );
}

fn k6_smoke_through_the_ingress_passes(release: &Release) {
    let out = run_dir().join("cluster-k6-smoke");
    std::fs::create_dir_all(&out).unwrap();
    let tls = release.ingress_tls().unwrap();
    // The API asks every caller for a credential (operator/src/http/auth.rs):
    // k6 pays as an API key bound to the chart's paysaga-client role.
    let token = release
        .api_key("k6-smoke", &["paysaga-client"])
        .expect("an API key for k6");
    let run = k6::Run {
        script: "k6/smoke.js",
        env: vec![
            ("BASE_URL".into(), tls.url.clone()),
            ("API_TOKEN".into(), token),
        ],
        out: &out,
        verbose: false,
    }
    .go_over(&tls)
    .unwrap();
    let s = &run.summary;
    let fails = s.get("checks", "fails").unwrap_or(-1.0);
    assert_eq!(
        (run.code, fails),
        (0, 0.0),
        "k6 smoke through the ingress failed: thresholds {:?}; see {}",
        s.failed_thresholds(),
        out.display()
    );
    assert_eq!(s.get("checks", "passes"), Some(40.0), "every check ran");
    eprintln!(
        "cluster: k6 smoke through the ingress: {} checks passed, {} requests, create p95 {:.0} ms, e2e p95 {:.0} ms",
        s.get("checks", "passes").unwrap_or(0.0),
        s.count("http_reqs"),
        s.get("http_req_duration{name:create}", "p(95)")
            .or(s.get("http_req_duration", "p(95)"))
            .unwrap_or(f64::NAN),
        s.get("payment_e2e", "p(95)").unwrap_or(f64::NAN),
    );
    let (report, ok) = release.audit().unwrap();
    assert!(ok, "{report}");
}

/// A pod of the release's namespace that runs `script` in the toolbox image
/// with `labels`; its exit code and output.
fn toolbox_pod(
    release: &Release,
    name: &str,
    labels: &[(&str, &str)],
    script: &str,
) -> (bool, String) {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe",
                "image": release.node.toolbox.reference,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    });
    let out = release
        .node
        .kube()
        .kubectl_with_input(&["apply", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phase = eventually(
        Duration::from_secs(120),
        &format!("pod {name} finishes"),
        || {
            let phase = release
                .kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])
                .unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                Ok(phase)
            } else {
                Err(phase)
            }
        },
    );
    let logs = release.kubectl_ok(&["logs", name]).unwrap_or_default();
    release
        .kubectl_ok(&["delete", "pod", name, "--wait=false"])
        .unwrap();
    (phase == "Succeeded", logs)
}

fn network_policies_are_enforced(release: &Release) {
    let name = ("app.kubernetes.io/name", "paysaga");
    let instance = ("app.kubernetes.io/instance", "paysaga");
    // The worker listens only on its admin port (probes): by its pod's address.
    let worker_ip = release
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=worker",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
        .unwrap();
    let probe = |component: &str| {
        // kube-router programs a new pod's rules a moment after it starts
        // (and rewrites its chains while it does): probe the steady state.
        let script = format!(
            "sleep 5; for t in paysaga-postgresql:5432 paysaga-temporal:7233 paysaga-sim:8090 paysaga-api:80 worker={worker_ip}:8082; do \
               n=${{t%%=*}}; a=${{t#*=}}; h=${{a%:*}}; p=${{a#*:}}; \
               if nc -w 3 $h $p </dev/null 2>/dev/null; then echo \"$n open\"; else echo \"$n closed\"; fi; done"
        );
        let (ok, out) = toolbox_pod(
            release,
            &format!("probe-{component}"),
            &[name, instance, ("app.kubernetes.io/component", component)],
            &script,
        );
        assert!(ok, "{out}");
        out
    };
    // A pod the policies do not name reaches only the API (open to the ingress).
    let stranger = probe("stranger");
    for closed in [
        "paysaga-postgresql:5432 closed",
        "paysaga-temporal:7233 closed",
        "paysaga-sim:8090 closed",
        "worker closed",
    ] {
        assert!(stranger.contains(closed), "{stranger}");
    }
    assert!(stranger.contains("paysaga-api:80 open"), "{stranger}");
    // A scraper (networkPolicy.metricsScrapers: app.kubernetes.io/name=
    // prometheus) reaches the worker's admin port, where the stranger did not.
    let (ok, scraper) = toolbox_pod(
        release,
        "probe-scraper",
        &[("app.kubernetes.io/name", "prometheus")],
        &format!(
            "sleep 5; if nc -w 3 {worker_ip} 8082 </dev/null 2>/dev/null; then echo \"worker open\"; else echo \"worker closed\"; fi"
        ),
    );
    assert!(ok && scraper.contains("worker open"), "{scraper}");
    // The worker's port is open to the node (the kubelet's probes), so the
    // stranger's refusal is the policy's.
    let healthz = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "3",
            &format!("http://{worker_ip}:8082/healthz"),
        ])
        .output()
        .unwrap();
    assert!(
        healthz.status.success(),
        "the node reaches the worker's admin port"
    );
    // The same probe from where the policies allow: the paths work, so the
    // refusals above are the policies' doing.
    let worker = probe("worker");
    for open in [
        "paysaga-postgresql:5432 open",
        "paysaga-temporal:7233 open",
        "paysaga-sim:8090 open",
    ] {
        assert!(worker.contains(open), "{worker}");
    }
    let controller = probe("controller");
    assert!(
        controller.contains("paysaga-temporal:7233 open"),
        "{controller}"
    );
    assert!(
        controller.contains("paysaga-postgresql:5432 closed"),
        "{controller}"
    );
    // No pod traffic leaves the machine: what a pod sends towards the
    // machine's default gateway is dropped by the node's rule on its way out
    // of the bridge (the rule's counter moves).
    let gateway = default_gateway();
    let before = forward_drops();
    let target = gateway.clone().unwrap_or_else(|| "192.0.2.1".into());
    let (ok, out) = toolbox_pod(
        release,
        "probe-outside",
        &[name, instance, ("app.kubernetes.io/component", "stranger")],
        &format!("nc -w 3 {target} 80 </dev/null && echo reached || echo unreachable"),
    );
    assert!(ok && out.contains("unreachable"), "{out}");
    match gateway {
        Some(gw) => assert!(
            forward_drops() > before,
            "packets to {gw} left the bridge without the node's rule dropping them"
        ),
        None => {
            eprintln!("cluster: this machine has no default route; nothing could leave it anyway")
        }
    }
    eprintln!(
        "cluster: NetworkPolicies enforced (stranger: {}; worker: {})",
        stranger.trim().replace('\n', ", "),
        worker.trim().replace('\n', ", ")
    );
}

/// The machine's default gateway, if it has one.
fn default_gateway() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "via")?;
    words.next().map(str::to_string)
}

/// Packets the node's rule dropped on their way out of the bridge.
fn forward_drops() -> u64 {
    let out = Command::new("iptables")
        .args([
            "-w",
            "-t",
            "mangle",
            "-L",
            "PAYSAGA-NODE-FORWARD",
            "-v",
            "-x",
            "-n",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn helm_upgrade_with_payments_in_flight_loses_none(release: &Release) {
    let sim = release.port_forward("paysaga-sim", 8090).unwrap();
    put_json(
        &format!("{}/admin/config", sim.url),
        r#"{"callbackDelayMs":8000}"#,
    );
    let names: Vec<String> = (0..6).map(|i| format!("upgrade-{i}")).collect();
    for name in &names {
        apply_payment(release, name, "load-1", 100);
    }
    for name in &names {
        wait_step(release, name, "AwaitConfirmation", Duration::from_secs(60));
    }
    let t = Instant::now();
    release
        .helm_ok(
            &[
                "upgrade",
                &release.name,
                &paysaga_testenv::cluster::chart().display().to_string(),
                "--namespace",
                &release.namespace,
                "-f",
                &release.values.display().to_string(),
                "--wait",
                "--timeout=10m",
            ],
            &[
                "--set",
                "controller.concurrency=16",
                "--set",
                "worker.maxConcurrentActivities=50",
                "--set",
                "ingress.temporalUi=true",
            ],
        )
        .expect("helm upgrade");
    report(
        "helm upgrade (controller and worker rolled) with 6 payments in flight",
        t.elapsed(),
    );
    // The Temporal UI behind the ingress, once asked for: its page, and its
    // API answering for the release's Temporal namespace.
    let tls = release.ingress_tls().unwrap();
    let get = |path: &str| -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .args(tls.curl_args())
            .arg(format!("{}{path}", tls.url))
            .output()
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(body)
        } else {
            Err(format!("{}: {body}", out.status))
        }
    };
    eventually(
        Duration::from_secs(30),
        "the Temporal UI through the ingress",
        || {
            get("/").and_then(|b| {
                if b.contains("/_app/immutable/") {
                    Ok(())
                } else {
                    Err(b.chars().take(200).collect())
                }
            })
        },
    );
    let namespaces = get("/api/v1/namespaces").expect("the UI's API through the ingress");
    assert!(namespaces.contains(r#""name": "default""#), "{namespaces}");
    put_json(
        &format!("{}/admin/config", sim.url),
        r#"{"callbackDelayMs":200}"#,
    );
    for name in &names {
        wait_phase(release, name, "Succeeded", Duration::from_secs(120));
    }
    let (report, ok) = release.audit().unwrap();
    assert!(ok, "{report}");
}

fn deleting_pods_under_load_loses_nothing(release: &Release) {
    let out = run_dir().join("cluster-k6-load");
    std::fs::create_dir_all(&out).unwrap();
    let before: usize = payments(release).len();
    // A credential for k6, as in k6_smoke_through_the_ingress_passes.
    let token = release
        .api_key("k6-load", &["paysaga-client"])
        .expect("an API key for k6");
    let tls = release.ingress_tls().unwrap();
    let k6 = std::thread::spawn({
        let out = out.clone();
        move || {
            k6::Run {
                script: "k6/load.js",
                env: vec![
                    ("BASE_URL".into(), tls.url.clone()),
                    ("API_TOKEN".into(), token),
                    ("RATE".into(), "2".into()),
                    ("DURATION".into(), "60s".into()),
                ],
                out: &out,
                verbose: false,
            }
            .go_over(&tls)
            .unwrap()
        }
    });
    let pod_of = |component: &str| -> String {
        release
            .kubectl_ok(&[
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/component={component}"),
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ])
            .unwrap()
    };
    let leader = || -> String {
        release
            .kubectl_ok(&[
                "get",
                "lease",
                "paysaga-controller",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])
            .unwrap()
    };
    let mut deleted = Vec::new();
    for (after, victim) in [(10, "worker"), (25, "controller"), (40, "api")] {
        std::thread::sleep(Duration::from_secs(if deleted.is_empty() {
            after
        } else {
            15
        }));
        let pod = if victim == "controller" {
            leader()
        } else {
            pod_of(victim)
        };
        release
            .kubectl_ok(&["delete", "pod", &pod, "--wait=false"])
            .unwrap();
        eprintln!("cluster: deleted {victim} pod {pod} under load");
        deleted.push(pod);
    }
    let run = k6.join().unwrap();
    let s = &run.summary;
    let created = s.count("payments_created") as usize;
    // Every payment made ends, once.
    let all = eventually(
        Duration::from_secs(300),
        "every payment is terminal",
        || {
            let all = payments(release);
            let open: Vec<_> = all
                .iter()
                .filter(|(_, p)| !["Succeeded", "Failed", "Cancelled"].contains(&p.as_str()))
                .collect();
            if open.is_empty() {
                Ok(all.clone())
            } else {
                Err(format!("{open:?}"))
            }
        },
    );
    let made = all.len() - before;
    assert!(
        made >= created,
        "{made} Payments for {created} accepted creates"
    );
    assert_eq!(
        s.rate("payment_completed"),
        Some(1.0),
        "every accepted payment was followed to its end"
    );
    // Correctness only (k6's latency thresholds depend on the machine's
    // load; they are printed, not asserted): no request failed, every check
    // held.
    assert_eq!(
        (s.get("http_req_failed", "passes"), s.get("checks", "fails")),
        (Some(0.0), Some(0.0)),
        "requests failed or checks broke while pods were deleted; see {}",
        out.display()
    );
    let (report, ok) = release.audit().unwrap();
    assert!(ok, "{report}");
    eprintln!(
        "cluster: k6 at 2/s for 60 s through the ingress while deleting {deleted:?}: {created} accepted, {made} Payments made, all terminal; {} requests, {} failed; e2e p95 {:.0} ms; thresholds crossed: {:?}; audit OK",
        s.count("http_reqs"),
        s.get("http_req_failed", "passes").unwrap_or(f64::NAN),
        s.get("payment_e2e", "p(95)").unwrap_or(f64::NAN),
        s.failed_thresholds(),
    );
}

/// Uninstalls the release (CRDs stay), then installs it again with
/// `temporal.mode=external` against the production Temporal server
/// (`go.temporal.io/server` on PostgreSQL, started here on the node's
/// address): no Temporal of the chart's own runs, `helm test` pays through
/// the API, and a Payment applied with kubectl runs its saga on that server.
fn uninstall_then_reinstall_on_the_production_temporal_server_works(
    release: Release,
    images: &ChartImages,
    dir: &std::path::Path,
) {
    let node = release.node;
    release
        .helm_ok(
            &["uninstall", &release.name, "--namespace", NS, "--wait"],
            &[],
        )
        .unwrap();
    node.kubectl_ok(&["get", "crd", "payments.paysaga.dev"])
        .expect("helm keeps CRDs");

    let t = Instant::now();
    let postgres = PostgresEnv::start(&dir.join("temporal-postgres")).expect("PostgreSQL");
    let temporal = temporal_server::start_on(&dir.join("temporal-server"), &postgres, NODE_IP)
        .expect("the production Temporal server on the node's address");
    report(
        "production Temporal server on PostgreSQL ready",
        t.elapsed(),
    );

    let t = Instant::now();
    let address = format!("temporal.address={}", temporal.address);
    let again = Release::install(
        node,
        "paysaga",
        NS,
        &images.values(),
        &["--set", "temporal.mode=external", "--set", &address],
    )
    .expect("reinstall with temporal.mode=external");
    report(
        "helm install again (temporal.mode=external) until every pod Ready",
        t.elapsed(),
    );
    let workloads = again
        .kubectl_ok(&["get", "deployments,statefulsets", "-o", "name"])
        .unwrap();
    assert!(
        !workloads.contains("temporal"),
        "no Temporal of the chart's own runs: {workloads}"
    );
    helm_test_passes(&again);

    let name = "on-production-temporal";
    apply_payment(&again, name, "load-2", 250);
    wait_phase(&again, name, "Succeeded", Duration::from_secs(120));
    let workflow_id = field(&again, name, ".status.workflowId");
    let described = Command::new(paysaga_testenv::tool("temporal"))
        .args(["workflow", "describe", "--output", "json"])
        .args([
            "--address",
            &temporal.host_port,
            "--workflow-id",
            &workflow_id,
        ])
        .output()
        .expect("temporal workflow describe");
    let described: Value = serde_json::from_slice(&described.stdout).unwrap_or_else(|e| {
        panic!(
            "{workflow_id} on the production server: {e}: {}",
            String::from_utf8_lossy(&described.stderr)
        )
    });
    assert_eq!(
        described["workflowExecutionInfo"]["status"], "WORKFLOW_EXECUTION_STATUS_COMPLETED",
        "the saga ran to its end on the production server: {described}"
    );
    eprintln!("cluster: the chart on the production Temporal server: helm test and {name} passed");

    // The release goes before the server it uses.
    again
        .helm_ok(
            &["uninstall", &again.name, "--namespace", NS, "--wait"],
            &[],
        )
        .unwrap();
}

fn json(release: &Release, args: &[&str]) -> Value {
    serde_json::from_str(&release.kubectl_ok(args).unwrap()).unwrap()
}

/// Every Payment of the namespace: name and phase.
fn payments(release: &Release) -> Vec<(String, String)> {
    let list = json(release, &["get", "payments", "-o", "json"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn apply_payment(release: &Release, name: &str, user: &str, amount: u64) {
    let manifest = serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"userId": user, "amount": amount, "currency": "EUR", "method": "card"},
    });
    let out = release
        .node
        .kube()
        .kubectl_with_input(&["apply", "-f", "-"], &manifest.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn field(release: &Release, name: &str, path: &str) -> String {
    release
        .kubectl_ok(&[
            "get",
            "payment",
            name,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
        .unwrap_or_default()
}

fn wait_phase(release: &Release, name: &str, phase: &str, timeout: Duration) {
    wait_field(release, name, ".status.phase", phase, timeout)
}

fn wait_step(release: &Release, name: &str, step: &str, timeout: Duration) {
    wait_field(release, name, ".status.step", step, timeout)
}

fn wait_field(release: &Release, name: &str, path: &str, want: &str, timeout: Duration) {
    eventually(timeout, &format!("payment {name}: {path} = {want}"), || {
        let got = field(release, name, path);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
}

fn put_json(url: &str, body: &str) {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            url,
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PUT {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

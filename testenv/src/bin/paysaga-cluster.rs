//! `make cluster`: paysaga as users deploy it, on a real one-node Kubernetes
//! cluster built on this machine (no Docker, no registry).
//!
//! Starts the node ([`NodeEnv`]), builds and imports the images, runs `helm
//! install paysaga charts/paysaga` and `helm test`, prints how to use it, and
//! tears everything down on Ctrl-C.
//!
//! `paysaga-cluster --node-only` starts the bare node and prints `node ready`
//! (the cluster tier's kill -9 test owns a node this way).

use std::time::Instant;

use anyhow::Result;
use paysaga_testenv::cluster::{ChartImages, Release, make_cluster_dir, secs, short};
use paysaga_testenv::node::host::NODE_IP;
use paysaga_testenv::{NodeEnv, StopSignal};

const NAMESPACE: &str = "paysaga";

const USAGE: &str = "usage: paysaga-cluster [--node-only]
  starts a one-node Kubernetes cluster here, installs the chart and runs helm test;
  --node-only starts the bare node. Ctrl-C tears everything down.";

fn main() -> Result<()> {
    let mut node_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--node-only" => node_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => {
                eprintln!("paysaga-cluster: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    let stop = StopSignal::install()?;
    match up(&stop, node_only) {
        Err(e) if stop.requested() => {
            // helm and kubectl got the Ctrl-C too and gave up; the node is down.
            eprintln!("paysaga cluster: interrupted ({e}); torn down.");
            std::process::exit(130)
        }
        other => other,
    }
}

fn up(stop: &StopSignal, node_only: bool) -> Result<()> {
    let dir = std::env::var_os("PAYSAGA_CLUSTER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(make_cluster_dir);

    let t0 = Instant::now();
    eprintln!("paysaga cluster: starting the node in {}…", short(&dir));
    let node = NodeEnv::start(&dir)?;
    let node_time = t0.elapsed();
    for (what, took) in &node.timings {
        eprintln!("  {what:<28} {}", secs(*took));
    }
    if node_only {
        println!("node ready in {}", secs(node_time));
        stop.wait();
        return Ok(());
    }
    if stop.requested() {
        return Ok(());
    }

    eprintln!("paysaga cluster: building and importing the images…");
    let t1 = Instant::now();
    let images = ChartImages::build_and_import(&node)?;
    let images_time = t1.elapsed();
    if stop.requested() {
        return Ok(());
    }
    eprintln!("paysaga cluster: helm install paysaga charts/paysaga (waiting for every pod)…");
    let t2 = Instant::now();
    let release = Release::install(&node, "paysaga", NAMESPACE, &images.values(), &[])?;
    let install_time = t2.elapsed();
    if stop.requested() {
        return Ok(());
    }
    eprintln!("paysaga cluster: helm test…");
    let test = release.test()?;
    let phase = test
        .lines()
        .rev()
        .find(|l| l.starts_with("phase"))
        .unwrap_or("")
        .to_string();
    let tls = release.ingress_tls()?;

    println!(
        r#"
paysaga runs on a one-node cluster (node {node_time}, images {images_time}, helm install to every pod Ready {install_time}; helm test passed: {phase}).
  Ingress (the API) : {url}/v1/payments ({host} is {NODE_IP}; http:// redirects to https://)
  The chart's CA    : {ca}
  Node folder, logs : {folder}

In another terminal:
  export KUBECONFIG={kubeconfig}
  export PATH={tools}:$PATH
  kubectl -n {NAMESPACE} get pods
  kubectl -n {NAMESPACE} apply -f examples/payment.yaml
  kubectl -n {NAMESPACE} get payments -w
  curl -s --cacert {ca} --resolve {host}:443:{NODE_IP} {url}/v1/payments -H 'content-type: application/json' -d '{{"userId":"alice","amount":990,"currency":"EUR","method":"wallet"}}'
  SSL_CERT_FILE={ca} k6 run --config {k6_config} -e BASE_URL={url} -e RATE=2 -e DURATION=1m k6/load.js

Press Ctrl-C to tear it all down.
"#,
        node_time = secs(node_time),
        images_time = secs(images_time),
        install_time = secs(install_time),
        folder = short(&node.folder),
        url = tls.url,
        host = tls.host,
        ca = short(&tls.ca),
        k6_config = short(&tls.k6_config),
        kubeconfig = node.kubeconfig.display(),
        tools = paysaga_testenv::tool("").display(),
    );
    stop.wait();
    eprintln!("paysaga cluster: tearing down…");
    drop(release);
    drop(node);
    eprintln!("paysaga cluster: stopped; the machine is as it was.");
    Ok(())
}

//! `make dev`: the whole of paysaga on this machine, no Docker.
//!
//! Starts a real control plane (etcd + kube-apiserver), Temporal with its web
//! UI, the simulators, the HTTP API, the worker (ledger on SQLite) and the
//! controller,
//! applies the CRDs, writes `.dev/kubeconfig`, prints what to do next, and
//! stops everything cleanly on Ctrl-C. State is fresh on every start.

use std::path::PathBuf;

use anyhow::{Context, Result};
use paysaga_testenv::{KubeEnv, Service, TemporalEnv, TemporalOptions, free_port, workspace_root};

/// Demo accounts of the dev ledger.
const DEV_ACCOUNTS: &str =
    "alice:EUR:1000000,bob:USD:500000,carol:EUR:1000,dave:EUR:1000000:frozen";

fn main() -> Result<()> {
    let root = workspace_root();
    let dev = std::env::var_os("PAYSAGA_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".dev"));
    let state = dev.join("state");
    if state.exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("clearing {}", state.display()))?;
    }
    std::fs::create_dir_all(&state)?;

    eprintln!("paysaga dev: starting etcd and kube-apiserver…");
    let kube = KubeEnv::start(&state.join("kube"))?;
    kube.apply_crds()?;
    let kubeconfig = dev.join("kubeconfig");
    std::fs::copy(&kube.admin_kubeconfig, &kubeconfig)?;

    eprintln!("paysaga dev: starting Temporal…");
    let temporal = TemporalEnv::start(
        &state.join("temporal"),
        TemporalOptions {
            port: Some(port_or_free(7233)?),
            ui_port: Some(port_or_free(8233)?),
            db_file: Some(state.join("temporal/temporal.db")),
        },
    )?;

    eprintln!("paysaga dev: starting the API, the simulators and the worker…");
    let api = Service::full_api(
        &state.join("api"),
        &temporal.address,
        Some(port_or_free(8080)?),
        &kubeconfig,
        "default",
        &[],
    )?;
    let callback_url = format!("{}/v1/gateway/callbacks", api.url);
    let sim = Service::sim(
        &state.join("sim"),
        &callback_url,
        Some(port_or_free(8090)?),
        &[],
    )?;
    let ledger = state.join("ledger.db");
    let database_url = format!("sqlite://{}?mode=rwc", ledger.display());
    let worker = Service::payment_worker(
        &state.join("worker"),
        &temporal.address,
        &database_url,
        DEV_ACCOUNTS,
        &sim.url,
    )?;

    let controller = Service::controller(
        &state.join("controller"),
        &kubeconfig,
        &temporal.address,
        Some(port_or_free(8081)?),
        &[],
    )?;

    let example = root.join("examples/payment.yaml");
    println!(
        r#"
paysaga dev is up.
  Kubernetes API : {server}
  Temporal       : {temporal} (namespace {ns})
  Temporal UI    : {ui}
  HTTP API       : {api}/v1/payments   (namespace default; gateway callbacks: {callback_url})
    Simulators     : {sim}   (knobs: {sim}/admin/config)
  Controller     : {controller}/metrics, /healthz, /readyz
  Ledger         : {ledger} (accounts {DEV_ACCOUNTS})
  Logs           : {logs}

In another terminal:
  export KUBECONFIG={kubeconfig}
  export PATH={tools}:{bin}:$PATH
  kubectl apply -f {example}
  kubectl get payments -w

  kubectl describe payment coffee-beans                 # conditions and events
  curl -si {api}/v1/payments -H 'Idempotency-Key: order-1' \
    -d '{{"userId":"alice","amount":990,"currency":"EUR","method":"wallet"}}'
  curl -s '{api}/v1/payments?userId=alice'
  kubectl annotate payment coffee-beans paysaga.dev/cancel="changed my mind"
  curl -s '{sim}/notify/v1/messages'                    # what the payer was told
  paysaga-worker audit --database-url '{database_url}'

Press Ctrl-C to stop everything.
"#,
        server = kube.server,
        temporal = temporal.host_port,
        ns = temporal.namespace,
        ui = temporal.ui_url.as_deref().unwrap_or("-"),
        api = api.url,
        sim = sim.url,
        controller = controller.url,
        ledger = ledger.display(),
        logs = state.display(),
        kubeconfig = kubeconfig.display(),
        tools = root.join(".tools/bin").display(),
        bin = root.join("target/debug").display(),
        example = example.display(),
    );

    wait_for_stop_signal()?;
    eprintln!("paysaga dev: stopping…");
    // The controller and the worker first, so in-flight activities finish.
    drop(controller);
    drop(worker);
    drop(sim);
    drop(api);
    drop(temporal);
    drop(kube);
    eprintln!("paysaga dev: stopped.");
    Ok(())
}

/// The preferred port when it is free, so URLs stay the same between runs.
fn port_or_free(preferred: u16) -> std::io::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => free_port(),
    }
}

fn wait_for_stop_signal() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

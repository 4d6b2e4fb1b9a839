//! `make dev`: the whole of paysaga on this machine, no Docker.
//!
//! Starts a real control plane (etcd + kube-apiserver) and Temporal with its
//! web UI, applies the CRDs, writes `.dev/kubeconfig`, prints what to do next,
//! and stops everything cleanly on Ctrl-C. State is fresh on every start.

use std::path::PathBuf;

use anyhow::{Context, Result};
use paysaga_testenv::{KubeEnv, TemporalEnv, TemporalOptions, free_port, workspace_root};

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

    let example = root.join("examples/payment.yaml");
    println!(
        r#"
paysaga dev is up.
  Kubernetes API : {server}
  Temporal       : {temporal} (namespace {ns})
  Temporal UI    : {ui}
  Logs           : {logs}

In another terminal:
  export KUBECONFIG={kubeconfig}
  export PATH={tools}:$PATH
  kubectl apply -f {example}
  kubectl get payments -w

Press Ctrl-C to stop everything.
"#,
        server = kube.server,
        temporal = temporal.host_port,
        ns = temporal.namespace,
        ui = temporal.ui_url.as_deref().unwrap_or("-"),
        logs = state.display(),
        kubeconfig = kubeconfig.display(),
        tools = root.join(".tools/bin").display(),
        example = example.display(),
    );

    wait_for_stop_signal()?;
    eprintln!("paysaga dev: stopping…");
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

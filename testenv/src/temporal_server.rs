//! The production Temporal server (`go.temporal.io/server` 1.32.0, the
//! release inside the pinned dev server, built by `make tools` with its SQL
//! schema tool) on PostgreSQL: the topology production runs, as a test tier.
//!
//! `PAYSAGA_TEMPORAL=production` makes [`crate::temporal()`] start this one
//! instead of the dev server; `make test` runs the saga, review, controller,
//! refund and recurring-payment tests that way too (`make test-production`
//! alone).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::postgres::PostgresEnv;
use crate::process::{Proc, run};
use crate::temporal::TemporalEnv;
use crate::{free_port, tool};

/// Whether the tests run against the production server
/// (`PAYSAGA_TEMPORAL=production`); anything else is the dev server.
pub fn wanted() -> bool {
    std::env::var("PAYSAGA_TEMPORAL").is_ok_and(|v| v == "production")
}

/// Creates the two databases on `postgres`, applies the schemas embedded in
/// the SQL tool, starts the server on free loopback ports and registers
/// `default`.
pub fn start(dir: &Path, postgres: &PostgresEnv) -> Result<TemporalEnv> {
    start_on(dir, postgres, "127.0.0.1")
}

/// [`start`], every service bound to `ip` instead of loopback: the one-node
/// cluster's pods reach the server at the node's address
/// ([`crate::node::host::NODE_IP`]).
pub fn start_on(dir: &Path, postgres: &PostgresEnv, ip: &str) -> Result<TemporalEnv> {
    std::fs::create_dir_all(dir)?;
    let suffix = crate::unique_name("t").replace('-', "_");
    let (store, visibility) = (format!("temporal_{suffix}"), format!("visibility_{suffix}"));
    for (db, schema) in [
        (&store, "postgresql/v12/temporal"),
        (&visibility, "postgresql/v12/visibility"),
    ] {
        let sql = |args: &[&str]| {
            let mut c = Command::new(tool("temporal-sql-tool"));
            c.args(["--plugin", "postgres12", "--ep", "127.0.0.1"])
                .args([
                    "-p",
                    &postgres.port.to_string(),
                    "-u",
                    crate::postgres::ROLE,
                    "--db",
                    db,
                ])
                .args(args);
            run(&mut c).with_context(|| format!("temporal-sql-tool {args:?} on {db}"))
        };
        sql(&["create-database"])?;
        sql(&["setup-schema", "-v", "0.0"])?;
        sql(&["update-schema", "--schema-name", schema])?;
    }
    let ports = Ports {
        frontend: free_port()?,
        http: free_port()?,
        history: free_port()?,
        matching: free_port()?,
        worker: free_port()?,
        membership: [free_port()?, free_port()?, free_port()?, free_port()?],
        metrics: free_port()?,
    };
    let config = dir.join("temporal-server.yaml");
    std::fs::write(
        &config,
        config_text(postgres.port, &store, &visibility, &ports, ip),
    )?;
    let args = vec![
        format!("--config-file={}", config.display()),
        "--allow-no-auth".to_string(),
        "start".to_string(),
    ];
    let mut proc = Proc::spawn(
        "temporal-server",
        dir,
        "TERM",
        tool("temporal-server"),
        &args,
    )?;
    let host_port = format!("{ip}:{}", ports.frontend);
    let temporal = |args: &[&str]| {
        Command::new(tool("temporal"))
            .args(args)
            .args(["--address", &host_port])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    proc.wait_ready(Duration::from_secs(90), || {
        temporal(&["operator", "cluster", "health"])
    })?;
    let namespace = "default".to_string();
    if !temporal(&["operator", "namespace", "create", "--namespace", &namespace]) {
        anyhow::bail!("registering the namespace {namespace} failed");
    }
    // The frontend knows a new namespace once its registry refreshes (up to
    // 10 s): ready when a workflow can be started in it.
    let probe = crate::unique_name("namespace-probe");
    proc.wait_ready(Duration::from_secs(60), || {
        temporal(&[
            "workflow",
            "start",
            "--namespace",
            &namespace,
            "--type",
            "probe",
            "--task-queue",
            &probe,
            "--workflow-id",
            &probe,
        ])
    })?;
    temporal(&[
        "workflow",
        "terminate",
        "--namespace",
        &namespace,
        "--workflow-id",
        &probe,
    ]);
    Ok(TemporalEnv::from_parts(
        host_port,
        format!("http://{ip}:{}/metrics", ports.metrics),
        namespace,
        proc,
    ))
}

struct Ports {
    frontend: u16,
    http: u16,
    history: u16,
    matching: u16,
    worker: u16,
    membership: [u16; 4],
    metrics: u16,
}

/// The server's configuration: PostgreSQL 12+ for both stores, every service
/// in one process bound to `ip`, no archival.
fn config_text(pg_port: u16, store: &str, visibility: &str, p: &Ports, ip: &str) -> String {
    let [m_frontend, m_history, m_matching, m_worker] = p.membership;
    let datastore = |db: &str, conns: u32| {
        format!(
            "      sql:
        pluginName: postgres12
        databaseName: {db}
        connectAddr: 127.0.0.1:{pg_port}
        connectProtocol: tcp
        user: {role}
        password: \"\"
        maxConns: {conns}
        maxIdleConns: {conns}
        maxConnLifetime: 1h
",
            role = crate::postgres::ROLE,
        )
    };
    format!(
        "log:
  stdout: true
  level: warn
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: 4
  datastores:
    default:
{default}    visibility:
{visible}global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: {ip}
  metrics:
    prometheus:
      framework: tally
      timerType: histogram
      listenAddress: {ip}:{metrics}
services:
  frontend:
    rpc: {{grpcPort: {frontend}, httpPort: {http}, membershipPort: {m_frontend}, bindOnIP: {ip}}}
  history:
    rpc: {{grpcPort: {history}, membershipPort: {m_history}, bindOnIP: {ip}}}
  matching:
    rpc: {{grpcPort: {matching}, membershipPort: {m_matching}, bindOnIP: {ip}}}
  worker:
    rpc: {{grpcPort: {worker}, membershipPort: {m_worker}, bindOnIP: {ip}}}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: {ip}:{frontend}
dcRedirectionPolicy:
  policy: noop
",
        default = datastore(store, 20),
        visible = datastore(visibility, 5),
        metrics = p.metrics,
        frontend = p.frontend,
        http = p.http,
        history = p.history,
        matching = p.matching,
        worker = p.worker,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_its_databases_and_ports() {
        let ports = Ports {
            frontend: 1,
            http: 2,
            history: 3,
            matching: 4,
            worker: 5,
            membership: [6, 7, 8, 9],
            metrics: 10,
        };
        let text = config_text(5432, "temporal_a", "visibility_a", &ports, "10.1.2.3");
        for line in [
            "    default:\n      sql:\n        pluginName: postgres12\n        databaseName: temporal_a\n        connectAddr: 127.0.0.1:5432\n",
            "    visibility:\n      sql:\n        pluginName: postgres12\n        databaseName: visibility_a\n",
            "    rpc: {grpcPort: 1, httpPort: 2, membershipPort: 6, bindOnIP: 10.1.2.3}\n",
            "    rpc: {grpcPort: 5, membershipPort: 9, bindOnIP: 10.1.2.3}\n",
            "    broadcastAddress: 10.1.2.3\n",
            "      rpcAddress: 10.1.2.3:1\n",
            "      listenAddress: 10.1.2.3:10\n",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}

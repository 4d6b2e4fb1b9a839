//! The real Temporal server: the Temporal CLI's dev server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::process::Proc;
use crate::{free_port, tool};

pub struct TemporalEnv {
    /// The frontend, `http://127.0.0.1:<port>`, as the Rust SDK wants it.
    pub address: String,
    /// `127.0.0.1:<port>`, as the `temporal` CLI wants it.
    pub host_port: String,
    /// The web UI, when started with one.
    pub ui_url: Option<String>,
    /// The server's Prometheus metrics, `http://127.0.0.1:<port>/metrics`.
    pub metrics_url: String,
    /// The namespace, created and ready.
    pub namespace: String,
    proc: Proc,
}

/// How to start the dev server.
#[derive(Debug, Default, Clone)]
pub struct TemporalOptions {
    /// Frontend port; a free one when `None`.
    pub port: Option<u16>,
    /// Serve the web UI on this port; headless when `None`.
    pub ui_port: Option<u16>,
    /// Keep state in this SQLite file; in memory when `None`.
    pub db_file: Option<std::path::PathBuf>,
    /// SQLite pragmas (`PRAGMA=VALUE`), e.g. `journal_mode=wal`.
    pub sqlite_pragmas: Vec<String>,
    /// The codec endpoint the web UI decodes payloads with (paysaga's
    /// `<api>/codec`).
    pub ui_codec_endpoint: Option<String>,
}

impl TemporalEnv {
    pub fn start(dir: &Path, opts: TemporalOptions) -> Result<TemporalEnv> {
        std::fs::create_dir_all(dir)?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let namespace = "default".to_string();
        let metrics_port = free_port()?;
        let mut args = vec![
            "server".into(),
            "start-dev".into(),
            "--ip=127.0.0.1".into(),
            format!("--port={port}"),
            format!("--http-port={}", free_port()?),
            format!("--metrics-port={metrics_port}"),
            "--log-level=warn".into(),
        ];
        match opts.ui_port {
            Some(ui) => {
                args.push(format!("--ui-port={ui}"));
                args.push("--ui-disable-news-fetch".into());
                if let Some(codec) = &opts.ui_codec_endpoint {
                    args.push(format!("--ui-codec-endpoint={codec}"));
                }
            }
            None => args.push("--headless".into()),
        }
        if let Some(db) = &opts.db_file {
            args.push(format!("--db-filename={}", db.display()));
        }
        for pragma in &opts.sqlite_pragmas {
            args.push(format!("--sqlite-pragma={pragma}"));
        }
        let mut proc = Proc::spawn("temporal", dir, "TERM", tool("temporal"), &args)?;
        let host_port = format!("127.0.0.1:{port}");
        wait_serving(&mut proc, &host_port, &namespace)?;
        Ok(TemporalEnv {
            address: format!("http://{host_port}"),
            host_port,
            ui_url: opts.ui_port.map(|p| format!("http://127.0.0.1:{p}")),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            namespace,
            proc,
        })
    }

    /// A server started some other way ([`crate::temporal_server`]),
    /// answering on `host_port`, headless.
    pub(crate) fn from_parts(
        host_port: String,
        metrics_url: String,
        namespace: String,
        proc: Proc,
    ) -> TemporalEnv {
        TemporalEnv {
            address: format!("http://{host_port}"),
            host_port,
            ui_url: None,
            metrics_url,
            namespace,
            proc,
        }
    }

    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }

    /// The server's own process id (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Kills the server with SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again with the same command line (its state
    /// survives only when it has a `db_file`) and waits until it serves.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.respawn()?;
        wait_serving(&mut self.proc, &self.host_port, &self.namespace)
    }
}

/// Waits until the server at `host_port` answers for `namespace`.
fn wait_serving(proc: &mut Proc, host_port: &str, namespace: &str) -> Result<()> {
    proc.wait_ready(Duration::from_secs(60), || {
        Command::new(tool("temporal"))
            .args([
                "operator",
                "namespace",
                "describe",
                "--namespace",
                namespace,
            ])
            .args(["--address", host_port])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

//! Real PostgreSQL with a throwaway data directory.
//!
//! PostgreSQL refuses to run as root; when we are root (as on these
//! machines), it runs as the unprivileged `postgres` user the Debian package
//! creates, and owns its data directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{Proc, run};
use crate::{free_port, tool};

/// The role every database belongs to; trust authentication on loopback only.
pub const ROLE: &str = "paysaga";

pub struct PostgresEnv {
    pub port: u16,
    proc: Proc,
    _dir: PathBuf,
}

impl PostgresEnv {
    pub fn start(dir: &Path) -> Result<PostgresEnv> {
        PostgresEnv::start_with(dir, false)
    }

    /// [`PostgresEnv::start`]; `durable`: a commit returns only once its WAL
    /// is written (`synchronous_commit=on`), so a killed server loses no
    /// committed transaction, as in production. Without it (throwaway test
    /// data) a server killed with SIGKILL can lose the last ~0.6 s of commits.
    pub fn start_with(dir: &Path, durable: bool) -> Result<PostgresEnv> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("pgdata");
        let socket_dir = dir.join("sock");
        std::fs::create_dir_all(&socket_dir)?;
        let as_root = run(Command::new("id").arg("-u"))?.trim() == "0";
        let as_user = |program: &str| -> Command {
            if as_root {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ]);
                c.arg(tool(program));
                c
            } else {
                Command::new(tool(program))
            }
        };
        if as_root {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir))?;
        }
        run(as_user("initdb").arg("-D").arg(&data).args([
            "-U",
            ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]))
        .context("initdb")?;

        let port = free_port()?;
        let (program, mut args): (PathBuf, Vec<String>) = if as_root {
            (
                "setpriv".into(),
                vec![
                    "--reuid=postgres".into(),
                    "--regid=postgres".into(),
                    "--init-groups".into(),
                    "--".into(),
                    tool("postgres").display().to_string(),
                ],
            )
        } else {
            (tool("postgres"), vec![])
        };
        args.extend([
            "-D".into(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-h".into(),
            "127.0.0.1".into(),
            "-k".into(),
            socket_dir.display().to_string(),
            // The machine does not crash under a test: no fsync. Throwaway
            // data: commits need not wait for the WAL, unless `durable`.
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            format!("synchronous_commit={}", if durable { "on" } else { "off" }),
            "-c".into(),
            "full_page_writes=off".into(),
            "-c".into(),
            "max_connections=200".into(),
        ]);
        // SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients.
        let mut proc = Proc::spawn("postgres", dir, "INT", program, &args)?;
        wait_accepting(&mut proc, port)?;
        Ok(PostgresEnv {
            port,
            proc,
            _dir: dir.to_path_buf(),
        })
    }

    /// Connection URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh database `<prefix>_<unique>` for one test; returns its URL.
    pub fn database(&self, prefix: &str) -> Result<String> {
        let name = crate::unique_name(prefix).replace('-', "_");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs SQL through `psql` against database `db`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        run(Command::new(tool("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                ROLE,
                "-d",
                db,
                "-c",
                sql,
            ]))
    }

    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }

    /// The postmaster's process id; its backends are its children.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Kills the postmaster with SIGKILL (a crash: its backends exit, the
    /// next start recovers from the WAL).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again with the same command line and data
    /// directory, and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        // Backends of a killed postmaster take a moment to notice and exit;
        // until then a new postmaster refuses to start.
        let mut tries = 0;
        loop {
            self.proc.respawn()?;
            match wait_accepting(&mut self.proc, self.port) {
                Ok(()) => return Ok(()),
                Err(e) if tries >= 10 => return Err(e),
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

fn wait_accepting(proc: &mut Proc, port: u16) -> Result<()> {
    proc.wait_ready(Duration::from_secs(60), || {
        Command::new(tool("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", ROLE])
            .args(["-d", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

//! paysaga's own services as real processes: the simulators (`paysaga-sim`)
//! and the HTTP API (`paysaga-operator api`, which receives the gateway's
//! callbacks). They run from the workspace's built binaries: `make test`
//! builds them first (`cargo build --workspace --bins`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::process::Proc;
use crate::{free_port, http_get_ok, workspace_root};

/// The callback secret shared by the simulators and the API in tests and `make dev`.
pub const CALLBACK_SECRET: &str = "paysaga-dev-callback-secret";

/// `env` and the run's payload-encryption keyring
/// ([`crate::codec_keys_file`]): every paysaga process encrypts what it
/// sends to Temporal with the same keys, as in a deployment.
fn with_codec_keys<'a>(
    env: &[(&'a str, &'a std::ffi::OsStr)],
) -> Vec<(&'a str, &'a std::ffi::OsStr)> {
    let mut all = vec![(
        "PAYSAGA_CODEC_KEYS_FILE",
        crate::codec_keys_file().as_os_str(),
    )];
    all.extend_from_slice(env);
    all
}

/// A built binary of the workspace: `target/<profile>/<name>`, where the
/// profile is `$PAYSAGA_PROFILE` (`debug` unless set; the benchmarks use
/// `release`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = std::env::var("PAYSAGA_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(&profile).join(name);
    if !path.exists() {
        let flag = if profile == "debug" {
            ""
        } else {
            " --profile ..."
        };
        bail!(
            "{} is not built: run `cargo build --workspace --bins{flag}` first (make test does for debug)",
            path.display()
        );
    }
    Ok(path)
}

/// A running HTTP service of ours.
pub struct Service {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    proc: Proc,
}

impl Service {
    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }

    /// Stops the service (and waits for it); dropping a stopped one does nothing more.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// The service's own process id (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Kills the service with SIGKILL (a crash: no clean shutdown).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the service again with the same command line and environment
    /// (on the same port) and waits until it is ready: `/healthz` answers,
    /// or, for the worker (no port), it logs that it started once more.
    pub fn restart(&mut self) -> Result<()> {
        let log = self.proc.log_path().to_path_buf();
        let starts = |log: &Path| {
            std::fs::read_to_string(log)
                .map(|l| l.matches("worker started").count())
                .unwrap_or(0)
        };
        let before = starts(&log);
        self.proc.respawn()?;
        let port = self.port;
        self.proc.wait_ready(Duration::from_secs(120), || {
            if port == 0 {
                starts(&log) > before
            } else {
                http_get_ok("127.0.0.1", port, "/healthz")
            }
        })
    }

    fn start_with_env(
        name: &str,
        dir: &Path,
        program: PathBuf,
        mut args: Vec<String>,
        port: u16,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Service> {
        std::fs::create_dir_all(dir)?;
        args.push("--log-format=json".into());
        let env = with_codec_keys(env);
        let mut proc = Proc::spawn_with_env(name, dir, "TERM", program, &args, &env)?;
        proc.wait_ready(Duration::from_secs(30), || {
            http_get_ok("127.0.0.1", port, "/healthz")
        })?;
        Ok(Service {
            url: format!("http://127.0.0.1:{port}"),
            port,
            proc,
        })
    }

    /// `paysaga-operator api` against Temporal at `temporal_address`.
    pub fn api(dir: &Path, temporal_address: &str, port: Option<u16>) -> Result<Service> {
        Service::api_with_env(dir, temporal_address, port, &[])
    }

    /// [`Service::api`] with more environment (e.g.
    /// `PAYSAGA_CALLBACK_SECRET_PREVIOUS`, a rotation under way).
    pub fn api_with_env(
        dir: &Path,
        temporal_address: &str,
        port: Option<u16>,
        extra_env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Service> {
        let port = port.map_or_else(free_port, Ok)?;
        let args = vec![
            "api".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--temporal-address={temporal_address}"),
        ];
        let mut env = vec![("PAYSAGA_CALLBACK_SECRET", CALLBACK_SECRET.as_ref())];
        env.extend_from_slice(extra_env);
        Service::start_with_env(
            "paysaga-api",
            dir,
            binary("paysaga-operator")?,
            args,
            port,
            &env,
        )
    }

    /// The full HTTP API: `paysaga-operator api` with `kubeconfig`'s
    /// credentials, serving Payments in `namespace`.
    pub fn full_api(
        dir: &Path,
        temporal_address: &str,
        port: Option<u16>,
        kubeconfig: &Path,
        namespace: &str,
        extra: &[String],
    ) -> Result<Service> {
        let port = port.map_or_else(free_port, Ok)?;
        let mut args = vec![
            "api".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--temporal-address={temporal_address}"),
            format!("--namespace={namespace}"),
        ];
        args.extend(extra.iter().cloned());
        let name = format!("paysaga-api-{namespace}");
        Service::start_with_env(
            &name,
            dir,
            binary("paysaga-operator")?,
            args,
            port,
            &[
                ("KUBECONFIG", kubeconfig.as_os_str()),
                ("PAYSAGA_CALLBACK_SECRET", CALLBACK_SECRET.as_ref()),
            ],
        )
    }

    /// `paysaga-operator controller` with `kubeconfig`'s credentials against
    /// Temporal at `temporal_address`; ready once it logs that it started.
    /// `url` is its admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub fn controller(
        dir: &Path,
        kubeconfig: &Path,
        temporal_address: &str,
        admin_port: Option<u16>,
        extra: &[String],
    ) -> Result<Service> {
        std::fs::create_dir_all(dir)?;
        let port = admin_port.map_or_else(free_port, Ok)?;
        let mut args = vec![
            "controller".to_string(),
            "--log-format=json".into(),
            format!("--temporal-address={temporal_address}"),
            format!("--admin-listen=127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn_with_env(
            "paysaga-controller",
            dir,
            "TERM",
            binary("paysaga-operator")?,
            &args,
            &with_codec_keys(&[
                ("KUBECONFIG", kubeconfig.as_os_str()),
                ("PAYSAGA_CALLBACK_SECRET", CALLBACK_SECRET.as_ref()),
            ]),
        )?;
        let log = proc.log_path().to_path_buf();
        proc.wait_ready(Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("controller started"))
        })?;
        Ok(Service {
            url: format!("http://127.0.0.1:{port}"),
            port,
            proc,
        })
    }

    /// `paysaga-worker run` with `args` (Temporal address, database, endpoints…);
    /// ready once it logs that it started. It has no port: `url` is empty.
    pub fn worker(dir: &Path, args: &[String]) -> Result<Service> {
        Service::worker_with_env(dir, args, &[])
    }

    /// [`Service::worker`] with environment variables (secrets go there).
    pub fn worker_with_env(
        dir: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Service> {
        std::fs::create_dir_all(dir)?;
        let mut all = vec!["run".to_string(), "--log-format=json".into()];
        all.extend(args.iter().cloned());
        let mut proc = Proc::spawn_with_env(
            "paysaga-worker",
            dir,
            "TERM",
            binary("paysaga-worker")?,
            &all,
            &with_codec_keys(env),
        )?;
        let log = proc.log_path().to_path_buf();
        proc.wait_ready(Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("worker started"))
        })?;
        Ok(Service {
            url: String::new(),
            port: 0,
            proc,
        })
    }

    /// The worker against Temporal at `temporal_address`, its ledger at
    /// `database_url` with `seed_accounts`, and the simulators at `sim_url`
    /// as gateway, fraud scoring and email/SMS provider.
    pub fn payment_worker(
        dir: &Path,
        temporal_address: &str,
        database_url: &str,
        seed_accounts: &str,
        sim_url: &str,
    ) -> Result<Service> {
        Service::payment_worker_with(
            dir,
            temporal_address,
            database_url,
            seed_accounts,
            sim_url,
            &[],
        )
    }

    /// [`Service::payment_worker`] with `extra` arguments (limits, queues).
    pub fn payment_worker_with(
        dir: &Path,
        temporal_address: &str,
        database_url: &str,
        seed_accounts: &str,
        sim_url: &str,
        extra: &[String],
    ) -> Result<Service> {
        Service::payment_worker_kube(
            dir,
            temporal_address,
            database_url,
            seed_accounts,
            sim_url,
            None,
            extra,
        )
    }

    /// [`Service::payment_worker_with`] with `kubeconfig`'s credentials:
    /// RecurringPayments' firings create Payments with them.
    pub fn payment_worker_kube(
        dir: &Path,
        temporal_address: &str,
        database_url: &str,
        seed_accounts: &str,
        sim_url: &str,
        kubeconfig: Option<&Path>,
        extra: &[String],
    ) -> Result<Service> {
        let mut args = vec![
            format!("--temporal-address={temporal_address}"),
            format!("--seed-accounts={seed_accounts}"),
            format!("--gateway-url={sim_url}"),
            format!("--fraud-url={sim_url}"),
            format!("--notify-url={sim_url}"),
        ];
        args.extend(extra.iter().cloned());
        // The URL may carry a password: the environment, never argv.
        let mut env: Vec<(&str, &std::ffi::OsStr)> =
            vec![("PAYSAGA_DATABASE_URL", database_url.as_ref())];
        if let Some(kubeconfig) = kubeconfig {
            env.push(("KUBECONFIG", kubeconfig.as_os_str()));
        }
        Service::worker_with_env(dir, &args, &env)
    }

    /// `paysaga-sim`, delivering confirmations to `callback_url`.
    pub fn sim(
        dir: &Path,
        callback_url: &str,
        port: Option<u16>,
        extra: &[&str],
    ) -> Result<Service> {
        let port = port.map_or_else(free_port, Ok)?;
        let mut args = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--callback-url={callback_url}"),
            "--seed=7".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Service::start_with_env(
            "paysaga-sim",
            dir,
            binary("paysaga-sim")?,
            args,
            port,
            &[("PAYSAGA_CALLBACK_SECRET", CALLBACK_SECRET.as_ref())],
        )
    }
}

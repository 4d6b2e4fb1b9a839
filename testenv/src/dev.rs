//! The whole of paysaga on this machine, as `make dev` runs it: a real control
//! plane, Temporal, the HTTP API, the simulators, the worker (ledger on
//! SQLite) and the controller. `make dev`, `make load`, the performance
//! harness and the k6 smoke test all start it through [`DevStack::start`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::jaeger::JaegerEnv;
use crate::prometheus::{PrometheusEnv, PrometheusOptions, Target};
use crate::zipkin::ZipkinEnv;
use crate::{KubeEnv, Service, TemporalEnv, TemporalOptions, free_port};

/// Demo accounts of the dev ledger.
pub const DEMO_ACCOUNTS: &str =
    "alice:EUR:1000000,bob:USD:500000,carol:EUR:1000,dave:EUR:1000000:frozen";

/// Accounts the k6 scripts pay from: `load-0` … `load-<n-1>`, EUR, each with
/// 10^12 minor units, so a long run never runs dry and payments spread over
/// many ledger rows (each debit locks its account's row).
pub const LOAD_USERS: usize = 50;
pub const LOAD_BALANCE: i64 = 1_000_000_000_000;

/// Every account the dev ledger opens.
pub fn dev_accounts() -> String {
    let mut s = DEMO_ACCOUNTS.to_string();
    for i in 0..LOAD_USERS {
        s.push_str(&format!(",load-{i}:EUR:{LOAD_BALANCE}"));
    }
    s
}

/// How to start the stack.
#[derive(Debug, Clone, Default)]
pub struct DevOptions {
    /// Prefer the well-known ports (API 8080, simulators 8090, controller
    /// 8081, Temporal 7233, UI 8233) when free, so URLs stay the same.
    pub well_known_ports: bool,
    /// Serve the Temporal web UI.
    pub ui: bool,
    /// Keep Temporal's state in a SQLite file under the state dir (as `make
    /// dev` does) instead of in memory.
    pub temporal_file: bool,
    /// SQLite pragmas for that file (`--sqlite-pragma`), e.g. `journal_mode=wal`.
    pub temporal_pragmas: Vec<String>,
    /// Run the production Temporal server ([`crate::temporal_server`]) on a
    /// PostgreSQL of its own instead of the dev server (the two options
    /// above then do not apply; no web UI).
    pub temporal_production: bool,
    /// Keep the ledger on a PostgreSQL server of its own (as deployed)
    /// instead of SQLite.
    pub ledger_postgres: bool,
    /// The gateway simulator keeps its charges in a file across restarts
    /// (`--state-file`), as a real gateway would.
    pub durable_gateway: bool,
    /// Start Prometheus scraping every component and Temporal, with the
    /// chart's alert rules.
    pub prometheus: bool,
    /// `--set` values the alert rules are rendered with (on top of the
    /// chart's defaults), and how often Prometheus scrapes and evaluates
    /// (5 s when `None`).
    pub alert_sets: Vec<String>,
    pub prometheus_interval: Option<std::time::Duration>,
    /// Start Jaeger and Zipkin and have every paysaga component export its
    /// spans to both: over OTLP to Jaeger (`OTEL_EXPORTER_OTLP_ENDPOINT`), the
    /// backend whose API the tests and tools read, and in Zipkin's format to
    /// Zipkin (`OTEL_EXPORTER_ZIPKIN_ENDPOINT`), whose web UI renders them.
    pub tracing: bool,
    pub api_args: Vec<String>,
    pub sim_args: Vec<String>,
    pub worker_args: Vec<String>,
    pub controller_args: Vec<String>,
}

impl DevOptions {
    /// Temporal's state as `make dev` keeps it: a SQLite file with
    /// [`TEMPORAL_SQLITE_PRAGMAS`].
    pub fn temporal_as_make_dev(self) -> DevOptions {
        DevOptions {
            temporal_file: true,
            temporal_pragmas: TEMPORAL_SQLITE_PRAGMAS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..self
        }
    }
}

/// The running stack. Dropping it stops everything, the controller and the
/// worker first so in-flight activities finish (fields drop in order).
pub struct DevStack {
    /// When [`DevOptions::prometheus`].
    pub prometheus: Option<PrometheusEnv>,
    /// When [`DevOptions::tracing`].
    pub jaeger: Option<JaegerEnv>,
    /// When [`DevOptions::tracing`]: the trace UI.
    pub zipkin: Option<ZipkinEnv>,
    pub controller: Service,
    pub worker: Service,
    /// The worker's admin endpoints: `/metrics`, `/healthz`, `/readyz`.
    pub worker_admin: String,
    pub sim: Service,
    pub api: Service,
    pub temporal: TemporalEnv,
    /// The production Temporal server's PostgreSQL, when
    /// [`DevOptions::temporal_production`] (stopped after the server).
    pub temporal_postgres: Option<crate::postgres::PostgresEnv>,
    /// The ledger's server, when [`DevOptions::ledger_postgres`].
    pub postgres: Option<crate::postgres::PostgresEnv>,
    pub kube: KubeEnv,
    /// A copy of the admin kubeconfig at `<dir>/kubeconfig`.
    pub kubeconfig: PathBuf,
    /// The ledger: `sqlite://…?mode=rwc`.
    pub database_url: String,
    /// Where state and logs live.
    pub state: PathBuf,
    /// An API key of the HTTP API (bound to paysaga-client and
    /// paysaga-payload-reader), also at `<dir>/api-key`.
    pub api_key: String,
    /// That file.
    pub api_key_file: PathBuf,
}

impl DevStack {
    /// Starts everything under `dir` (`dir/state` is cleared first: state is
    /// fresh on every start).
    pub fn start(dir: &Path, opts: &DevOptions) -> Result<DevStack> {
        let state = dir.join("state");
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("clearing {}", state.display()))?;
        }
        std::fs::create_dir_all(&state)?;
        // Outside `state`, so it survives restarts; every process of the
        // stack encrypts its Temporal payloads with it (`PAYSAGA_CODEC_KEYS_FILE`).
        let keys = crate::init_codec_keys_file(&dir.join("codec-keys.json"));
        eprintln!("paysaga dev: payload codec keyring {}", keys.display());
        let port = |preferred: u16| -> Result<Option<u16>> {
            Ok(if opts.well_known_ports {
                Some(port_or_free(preferred)?)
            } else {
                None
            })
        };

        // First: every paysaga component started after it sends it spans.
        let jaeger = if opts.tracing {
            eprintln!("paysaga dev: starting Jaeger…");
            let jaeger = JaegerEnv::start(&state.join("jaeger"), port(16686)?)?;
            crate::process::set_paysaga_env("OTEL_EXPORTER_OTLP_ENDPOINT", &jaeger.otlp_endpoint);
            Some(jaeger)
        } else {
            None
        };
        // Zipkin (a JVM: 10 s or more) starts while the control plane and
        // Temporal do; the paysaga components wait for it.
        let zipkin = if opts.tracing {
            eprintln!("paysaga dev: starting Zipkin…");
            let port = match port(9411)? {
                Some(p) => p,
                None => free_port()?,
            };
            crate::process::set_paysaga_env(
                "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
                &format!("http://127.0.0.1:{port}/api/v2/spans"),
            );
            let dir = state.join("zipkin");
            Some(std::thread::spawn(move || {
                ZipkinEnv::start(&dir, Some(port))
            }))
        } else {
            None
        };
        eprintln!("paysaga dev: starting etcd and kube-apiserver…");
        let kube = KubeEnv::start(&state.join("kube"))?;
        kube.apply_crds()?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::copy(&kube.admin_kubeconfig, &kubeconfig)?;

        // The API's port is chosen first: the Temporal UI is told its codec
        // endpoint when it starts.
        let api_port = match port(8080)? {
            Some(p) => p,
            None => free_port()?,
        };
        let (temporal, temporal_postgres) = if opts.temporal_production {
            eprintln!("paysaga dev: starting PostgreSQL and the production Temporal server…");
            // Durable commits, as production runs it.
            let pg =
                crate::postgres::PostgresEnv::start_with(&state.join("temporal-postgres"), true)?;
            let temporal = crate::temporal_server::start(&state.join("temporal"), &pg)?;
            (temporal, Some(pg))
        } else {
            eprintln!("paysaga dev: starting Temporal…");
            let temporal = TemporalEnv::start(
                &state.join("temporal"),
                TemporalOptions {
                    port: port(7233)?,
                    ui_port: if opts.ui {
                        Some(port_or_free(8233)?)
                    } else {
                        None
                    },
                    db_file: opts
                        .temporal_file
                        .then(|| state.join("temporal/temporal.db")),
                    sqlite_pragmas: opts.temporal_pragmas.clone(),
                    ui_codec_endpoint: opts
                        .ui
                        .then(|| format!("http://127.0.0.1:{api_port}/codec")),
                },
            )?;
            (temporal, None)
        };

        let zipkin = match zipkin {
            Some(starting) => Some(
                starting
                    .join()
                    .map_err(|_| anyhow::anyhow!("starting Zipkin panicked"))??,
            ),
            None => None,
        };
        eprintln!("paysaga dev: starting the API, the simulators and the worker…");
        let api = Service::full_api(
            &state.join("api"),
            &temporal.address,
            Some(api_port),
            &kubeconfig,
            "default",
            &dev_api_args(&temporal, &opts.api_args),
        )?;
        // A credential for the HTTP API, made as the README says.
        let api_key = kube.api_key(
            "default",
            "dev",
            &["paysaga-client", "paysaga-payload-reader"],
        )?;
        let api_key_file = dir.join("api-key");
        write_private(&api_key_file, &api_key)?;
        let callback_url = format!("{}/v1/gateway/callbacks", api.url);
        let mut sim_args: Vec<String> = opts.sim_args.clone();
        if opts.durable_gateway {
            let file = state.join("sim/gateway.json");
            sim_args.push(format!("--state-file={}", file.display()));
        }
        let sim_args: Vec<&str> = sim_args.iter().map(String::as_str).collect();
        let sim = Service::sim(&state.join("sim"), &callback_url, port(8090)?, &sim_args)?;
        let (postgres, database_url) = if opts.ledger_postgres {
            // Durable commits: the chaos harness kills it.
            let pg = crate::postgres::PostgresEnv::start_with(&state.join("postgres"), true)?;
            let url = pg.database("ledger")?;
            (Some(pg), url)
        } else {
            let ledger = state.join("ledger.db");
            (None, format!("sqlite://{}?mode=rwc", ledger.display()))
        };
        // Webhooks to the WebhookEndpoints of `default`, where the README's
        // payments are made.
        let mut worker_args = opts.worker_args.clone();
        let worker_admin_port = match port(8082)? {
            Some(p) => p,
            None => free_port()?,
        };
        worker_args.push(format!("--admin-listen=127.0.0.1:{worker_admin_port}"));
        let worker_admin = format!("http://127.0.0.1:{worker_admin_port}");
        if !worker_args
            .iter()
            .any(|a| a.starts_with("--webhook-namespaces"))
        {
            worker_args.push("--webhook-namespaces=default".into());
        }
        let worker = Service::payment_worker_kube(
            &state.join("worker"),
            &temporal.address,
            &database_url,
            &dev_accounts(),
            &sim.url,
            Some(&kubeconfig),
            &worker_args,
        )?;
        let controller = Service::controller(
            &state.join("controller"),
            &kubeconfig,
            &temporal.address,
            port(8081)?,
            &opts.controller_args,
        )?;
        let prometheus = if opts.prometheus {
            eprintln!("paysaga dev: starting Prometheus…");
            let dir = state.join("prometheus");
            std::fs::create_dir_all(&dir)?;
            let sets: Vec<String> = opts
                .alert_sets
                .iter()
                .map(|s| format!("--set={s}"))
                .collect();
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let rules =
                crate::prometheus::render_chart_rules(&dir.join("paysaga-alerts.yaml"), &sets)?;
            let interval = opts
                .prometheus_interval
                .unwrap_or(std::time::Duration::from_secs(5));
            Some(PrometheusEnv::start(
                &dir,
                &PrometheusOptions {
                    port: port(9090)?,
                    targets: vec![
                        Target::new("paysaga-api", &format!("{}/metrics", api.url)),
                        Target::new("paysaga-controller", &format!("{}/metrics", controller.url)),
                        Target::new("paysaga-worker", &format!("{worker_admin}/metrics")),
                        Target::new("temporal", &temporal.metrics_url),
                    ],
                    rule_files: vec![rules],
                    scrape_interval: interval,
                    evaluation_interval: interval,
                },
            )?)
        } else {
            None
        };
        Ok(DevStack {
            prometheus,
            jaeger,
            zipkin,
            controller,
            worker,
            worker_admin,
            sim,
            api,
            temporal,
            temporal_postgres,
            postgres,
            kube,
            kubeconfig,
            database_url,
            state,
            api_key,
            api_key_file,
        })
    }

    /// Restarts the HTTP API on its port with `extra` arguments instead of
    /// the ones it was started with (the simulators' callbacks keep going
    /// to the same URL).
    pub fn restart_api(&mut self, extra: &[String]) -> Result<()> {
        self.api.stop();
        self.api = Service::full_api(
            &self.state.join("api"),
            &self.temporal.address,
            Some(self.api.port),
            &self.kubeconfig,
            "default",
            &dev_api_args(&self.temporal, extra),
        )?;
        Ok(())
    }

    /// Stops the controller, runs `meanwhile`, then starts it again with
    /// `extra` arguments (pass the ones it was started with to keep them).
    pub fn without_controller<T>(
        &mut self,
        extra: &[String],
        meanwhile: impl FnOnce(&DevStack) -> Result<T>,
    ) -> Result<T> {
        self.controller.stop();
        let out = meanwhile(self)?;
        self.controller = Service::controller(
            &self.state.join("controller"),
            &self.kubeconfig,
            &self.temporal.address,
            Some(self.controller.port),
            extra,
        )?;
        Ok(out)
    }

    /// Runs the ledger audit (`paysaga-worker audit`): its report, and whether
    /// money is conserved.
    pub fn audit(&self) -> Result<(String, bool)> {
        audit(&self.database_url)
    }
}

/// The API's arguments in the dev stack, before `extra`: the Temporal UI
/// (when served) may call the codec endpoint from the developer's browser,
/// which sends no credential (loopback only), and one key drives all of a
/// load run, so its rate is not limited to a client's.
fn dev_api_args(temporal: &TemporalEnv, extra: &[String]) -> Vec<String> {
    let mut args = vec!["--rate-per-caller=0".to_string()];
    if let Some(ui) = &temporal.ui_url {
        let ui = ui.trim_end_matches('/');
        args.push(format!(
            "--codec-cors-origins={ui},{}",
            ui.replace("127.0.0.1", "localhost")
        ));
        args.push("--codec-trust-loopback=true".into());
    }
    args.extend(extra.iter().cloned());
    args
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}

/// `paysaga-worker audit` on `database_url`: its report and its verdict.
pub fn audit(database_url: &str) -> Result<(String, bool)> {
    let out = std::process::Command::new(crate::services::binary("paysaga-worker")?)
        .arg("audit")
        // The URL may carry a password: the environment, never argv.
        .env("PAYSAGA_DATABASE_URL", database_url)
        .output()
        .context("running paysaga-worker audit")?;
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((report, out.status.success()))
}

/// The preferred port when it is free, so URLs stay the same between runs.
pub fn port_or_free(preferred: u16) -> std::io::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => free_port(),
    }
}

/// SQLite settings of the dev server's file in `make dev`: write-ahead
/// logging and no fsync per commit. Dev state is thrown away on every start,
/// so durability across a power cut is not worth a sync per workflow task.
/// (`make perf` reports the difference.)
pub const TEMPORAL_SQLITE_PRAGMAS: &[&str] = &["journal_mode=wal", "synchronous=off"];

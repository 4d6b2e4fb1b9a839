//! The real parts, started for tests and for `make dev`.
//!
//! - [`kube()`]: etcd + kube-apiserver with RBAC on, the CRDs applied;
//! - [`temporal()`]: the Temporal CLI dev server, namespace ready;
//! - [`postgres()`]: PostgreSQL with a throwaway data directory;
//! - [`sim()`] and [`api()`]: paysaga's simulators and HTTP API, as processes;
//! - [`node::NodeEnv`]: a real one-node cluster where pods run (one per
//!   machine; the cluster tier and `make cluster` start it themselves).
//!
//! Each is started once per test binary, on free loopback ports, and shared by
//! its tests; isolation comes from a fresh Kubernetes namespace
//! ([`kube::KubeEnv::namespace`]), Temporal task queue ([`task_queue`]) or
//! database ([`postgres::PostgresEnv::database`]) per test, so tests run in
//! parallel. Components stop when the test binary exits, however it exits.
//! Logs are kept under `target/testenv/<run>/`; a test that fails prints
//! where they are.

pub mod cluster;
pub mod dev;
pub mod go_peer;
pub mod jaeger;
pub mod kube;
pub mod node;
pub mod postgres;
pub mod process;
pub mod prom;
pub mod prometheus;
pub mod relay;
pub mod services;
pub mod temporal;
pub mod temporal_server;
pub mod zipkin;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use crate::dev::{DevOptions, DevStack};
pub use crate::kube::KubeEnv;
pub use crate::node::NodeEnv;
pub use crate::postgres::PostgresEnv;
pub use crate::services::{CALLBACK_SECRET, Service};
pub use crate::temporal::{TemporalEnv, TemporalOptions};

/// The workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testenv lives one level below the workspace root")
        .to_path_buf()
}

/// Path of an installed tool: `$PAYSAGA_TOOLS_BIN/<name>`, by default the
/// workspace's `.tools/bin` that `make tools` fills.
pub fn tool(name: &str) -> PathBuf {
    let bin = std::env::var_os("PAYSAGA_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin"));
    bin.join(name)
}

/// A free TCP port on 127.0.0.1, for a server this process is about to start.
///
/// Ports come from below the kernel's ephemeral range (and below Kubernetes'
/// NodePort range), never from `bind(0)`: an ephemeral port that was free a
/// moment ago can be taken by any outgoing connection before the server binds
/// it, which once failed a CI run ("bind: address already in use" from
/// Temporal). A port is handed out at most once per process, so parallel
/// tests of one binary never get the same one.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    const LOW: u16 = 20_000;
    let high = ephemeral_low().min(30_000);
    let span = u32::from(high - LOW);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let seed = u32::from_str_radix(&random_hex(4), 16).expect("hex");
        let port = LOW + (seed % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port found in {LOW}..{high} after 200 tries"),
    ))
}

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|&low: &u16| low > 21_000)
        .unwrap_or(32_768)
}

/// `n` random bytes as hex, from the kernel.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name unique within this machine: `<prefix>-<pid>-<n>`, DNS-label safe.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Temporal task queue of one's own for one test.
pub fn task_queue(prefix: &str) -> TestTaskQueue {
    TestTaskQueue {
        name: unique_name(prefix),
    }
}

/// `GET http://host:port/path` answered 200 (plain HTTP/1.0, for probes).
pub fn http_get_ok(host: &str, port: u16, path: &str) -> bool {
    http_get_status(host, port, path, &[]) == Some(200)
}

/// The status `GET http://host:port/path` is answered with, sending
/// `headers` (plain HTTP/1.0); `None` when nothing answers.
pub fn http_get_status(host: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    if !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// `GET http://127.0.0.1:port/target`'s body (HTTP/1.0: the body ends with
/// the connection).
pub fn http_get_body(port: u16, target: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| anyhow::anyhow!("connecting to 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (_, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer to {target}: {raw}"))?;
    Ok(body.to_string())
}

/// This test binary's directory for component state and logs.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = workspace_root().join("target/testenv");
        prune_dead_runs(&base);
        let dir = base.join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the testenv run directory");
        dir
    })
}

/// Removes the directories of earlier runs whose process is gone, except the
/// newest few, so the logs of a failed run stay around to read.
fn prune_dead_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let mut dead: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let pid = e
                .file_name()
                .to_str()?
                .strip_prefix("run-")?
                .parse::<u32>()
                .ok()?;
            if Path::new(&format!("/proc/{pid}")).exists() {
                return None;
            }
            Some((e.metadata().and_then(|m| m.modified()).ok()?, e.path()))
        })
        .collect();
    dead.sort();
    let keep = 3;
    for (_, path) in dead.iter().rev().skip(keep) {
        let _ = std::fs::remove_dir_all(path);
    }
}

static CODEC_KEYS: OnceLock<PathBuf> = OnceLock::new();

/// The payload-encryption keyring every paysaga process and client of this
/// test binary uses (`PAYSAGA_CODEC_KEYS_FILE`): two random keys, `test-2`
/// primary, in `codec-keys.json` under the run directory (mode 0600). Give
/// it to in-process clients through `TemporalOpts::codec_keys_file`.
pub fn codec_keys_file() -> &'static Path {
    init_codec_keys_file(&run_dir().join("codec-keys.json"))
}

/// Makes `path` the keyring of this process's paysaga services, writing a
/// fresh one there unless it exists (so `make dev` keeps its keys across
/// restarts). The first call decides: a later one with another path gets the
/// first path back.
pub fn init_codec_keys_file(path: &Path) -> &'static Path {
    CODEC_KEYS.get_or_init(|| {
        write_codec_keys(path, "test-2", &["test-1", "test-2"])
            .unwrap_or_else(|e| panic!("writing the codec keyring {}: {e:#}", path.display()));
        path.to_path_buf()
    })
}

/// Writes a keyring of random keys named `ids` to `path` (mode 0600),
/// unless a file is there already.
pub fn write_codec_keys(path: &Path, primary: &str, ids: &[&str]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    f.write_all(paysaga_common::codec::random_keyring_json(primary, ids).as_bytes())?;
    Ok(())
}

static LOGS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

pub(crate) fn register_log(name: &str, path: &Path) {
    LOGS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_string(), path.to_path_buf()));
}

/// Prints where every component's log is; called when a test fails.
pub fn print_logs() {
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    if logs.is_empty() {
        return;
    }
    eprintln!("testenv: component logs are kept:");
    for (name, path) in logs.iter() {
        eprintln!("  {name}: {}", path.display());
    }
}

fn on_failure_print_logs() {
    if std::thread::panicking() {
        print_logs();
    }
}

/// Held by a test that takes no namespace or task queue: if the test fails,
/// it prints where the component logs are.
#[must_use]
pub struct LogsOnFailure;

pub fn logs_on_failure() -> LogsOnFailure {
    LogsOnFailure
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        on_failure_print_logs();
    }
}

/// A namespace of one's own for one test. Namespaces are not deleted (no
/// namespace controller runs); the control plane goes away with the run.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        on_failure_print_logs();
    }
}

#[derive(Debug)]
pub struct TestTaskQueue {
    pub name: String,
}

impl Drop for TestTaskQueue {
    fn drop(&mut self) {
        on_failure_print_logs();
    }
}

fn shared<T>(
    name: &str,
    cell: &'static OnceLock<Result<T, String>>,
    start: impl FnOnce() -> anyhow::Result<T>,
) -> &'static T {
    let started = cell.get_or_init(|| {
        let t0 = std::time::Instant::now();
        let result = start().map_err(|e| format!("{e:#}"));
        eprintln!(
            "testenv: {name} ready in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        result
    });
    match started {
        Ok(v) => v,
        Err(e) => {
            print_logs();
            panic!("testenv: could not start a component: {e}")
        }
    }
}

/// The control plane shared by this test binary, with the CRDs applied.
pub fn kube() -> &'static KubeEnv {
    static KUBE: OnceLock<Result<KubeEnv, String>> = OnceLock::new();
    shared("etcd + kube-apiserver (CRDs applied)", &KUBE, || {
        let env = KubeEnv::start(&run_dir().join("kube"))?;
        env.apply_crds()?;
        Ok(env)
    })
}

/// The Temporal server shared by this test binary: the dev server (in memory,
/// headless), or with `PAYSAGA_TEMPORAL=production` the production server on
/// PostgreSQL ([`temporal_server`]).
pub fn temporal() -> &'static TemporalEnv {
    static TEMPORAL: OnceLock<Result<TemporalEnv, String>> = OnceLock::new();
    if temporal_server::wanted() {
        return shared(
            "Temporal server (production, PostgreSQL)",
            &TEMPORAL,
            || temporal_server::start(&run_dir().join("temporal-server"), postgres()),
        );
    }
    shared("Temporal dev server", &TEMPORAL, || {
        TemporalEnv::start(&run_dir().join("temporal"), TemporalOptions::default())
    })
}

/// The PostgreSQL server shared by this test binary.
pub fn postgres() -> &'static PostgresEnv {
    static POSTGRES: OnceLock<Result<PostgresEnv, String>> = OnceLock::new();
    shared("PostgreSQL", &POSTGRES, || {
        PostgresEnv::start(&run_dir().join("postgres"))
    })
}

/// The HTTP API (`paysaga-operator api`, the gateway-callback receiver)
/// shared by this test binary, against [`temporal()`].
pub fn api() -> &'static Service {
    static API: OnceLock<Result<Service, String>> = OnceLock::new();
    shared("paysaga-operator api", &API, || {
        Service::api(&run_dir().join("api"), &temporal().address, None)
    })
}

/// The simulators shared by this test binary, delivering callbacks to [`api()`].
/// Tests steer them per payment with scenarios, so they can share one.
pub fn sim() -> &'static Service {
    static SIM: OnceLock<Result<Service, String>> = OnceLock::new();
    shared("paysaga-sim", &SIM, || {
        let callback = format!("{}{}", api().url, "/v1/gateway/callbacks");
        Service::sim(&run_dir().join("sim"), &callback, None, &[])
    })
}

/// Ctrl-C and SIGTERM, caught from the start so that a long start-up can
/// stop cleanly between its steps instead of dying half-way (the default
/// action), and waited for once everything runs.
pub struct StopSignal {
    requested: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rx: std::sync::mpsc::Receiver<()>,
}

impl StopSignal {
    pub fn install() -> anyhow::Result<StopSignal> {
        let requested = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = requested.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The handlers are installed before this returns, so no signal is
        // missed between here and the thread's first poll.
        let (mut term, mut int) = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        std::thread::Builder::new()
            .name("stop-signal".into())
            .spawn(move || {
                rt.block_on(async {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                });
                flag.store(true, Ordering::SeqCst);
                let _ = tx.send(());
            })?;
        Ok(StopSignal { requested, rx })
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Waits for Ctrl-C or SIGTERM (at once if one came already).
    pub fn wait(&self) {
        if !self.requested() {
            let _ = self.rx.recv();
        }
    }
}

/// Polls `check` every 250 ms until it returns `Ok`, and returns that; after
/// `timeout`, panics naming `what` and the last `Err`. The one wait loop
/// tests need: they wait on state, never for a fixed time.
pub fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("{what}: not after {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Runs `f` to completion from synchronous code inside an async test (on a
/// multi-thread runtime): what [`eventually`]'s check needs to ask an API.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        let below = ephemeral_low().min(30_000);
        for port in ports {
            assert!((20_000..below).contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}

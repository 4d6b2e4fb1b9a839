//! Child processes that never outlive the process that started them.
//!
//! Each component runs under a tiny `sh` watchdog that stops it when it is
//! asked to (`Proc::stop`, `Drop`), and also when the owning process is gone —
//! including a test binary that panicked or was killed, where no destructor
//! runs. The component's stdout and stderr go to a log file that is kept.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The watchdog: `sh -c WATCHDOG watchdog <owner-pid> <stop-signal> <cmd> <args>...`.
/// It starts the command, then polls: if the owner is gone, it stops the
/// command (signal, then SIGKILL after 10 s); if the command exits, so does it.
const WATCHDOG: &str = r#"
owner=$1; sig=$2; shift 2
"$@" &
child=$!
stop() {
  kill -s "$sig" "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -s KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  exit 0
}
trap stop TERM INT HUP
while kill -0 "$owner" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill -0 "$child" 2>/dev/null && stop
wait "$child"
"#;

/// A running component.
#[derive(Debug)]
pub struct Proc {
    name: String,
    watchdog: Child,
    log: PathBuf,
    /// How it was started, to start it again alike ([`Proc::respawn`]).
    launch: Launch,
}

#[derive(Debug, Clone)]
struct Launch {
    stop_signal: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
}

impl Launch {
    fn spawn(&self, log: &Path, append: bool) -> Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.stop_signal)
            .arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))
    }
}

/// Environment every paysaga binary this process starts from now on gets
/// (before its own): where traces go, when they are exported.
static PAYSAGA_ENV: std::sync::Mutex<Vec<(String, std::ffi::OsString)>> =
    std::sync::Mutex::new(Vec::new());

/// Gives `key=value` to every paysaga binary started from now on (by this
/// test binary or `make dev`), e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn set_paysaga_env(key: &str, value: &str) {
    let mut env = PAYSAGA_ENV.lock().unwrap_or_else(|e| e.into_inner());
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.into()));
}

impl Proc {
    /// Starts `program args...`, logging to `<log_dir>/<name>.log`. `stop_signal`
    /// is what asks the program to shut down cleanly (e.g. `TERM`, or `INT` for
    /// PostgreSQL's fast shutdown).
    pub fn spawn(
        name: &str,
        log_dir: &Path,
        stop_signal: &str,
        program: impl AsRef<Path>,
        args: &[String],
    ) -> Result<Proc> {
        Proc::spawn_with_env(name, log_dir, stop_signal, program, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        log_dir: &Path,
        stop_signal: &str,
        program: impl AsRef<Path>,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let program = program.as_ref().to_path_buf();
        let ours = program
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with("paysaga-"));
        let mut all: Vec<(String, std::ffi::OsString)> = if ours {
            PAYSAGA_ENV
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            Vec::new()
        };
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_os_string())));
        let launch = Launch {
            stop_signal: stop_signal.to_string(),
            program,
            args: args.to_vec(),
            env: all,
        };
        let watchdog = launch
            .spawn(&log, false)
            .with_context(|| format!("starting {name}"))?;
        crate::register_log(name, &log);
        Ok(Proc {
            name: name.to_string(),
            watchdog,
            log,
            launch,
        })
    }

    /// Kills the component with SIGKILL (no chance to clean up, as a crash
    /// or an OOM kill) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.watchdog.wait();
    }

    /// Starts the component again, with the same command line and
    /// environment, logging on to the same file. Stops it first if it runs.
    pub fn respawn(&mut self) -> Result<()> {
        self.stop();
        self.watchdog = self
            .launch
            .spawn(&self.log, true)
            .with_context(|| format!("restarting {}", self.name))?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The component's own process id (the watchdog's child), while it runs.
    pub fn pid(&self) -> Option<u32> {
        let w = self.watchdog.id();
        std::fs::read_to_string(format!("/proc/{w}/task/{w}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `ready` until it returns true, failing early (with the log's tail)
    /// if the process exits, or after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.watchdog.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready after {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks the component to stop and waits until it has.
    pub fn stop(&mut self) {
        if matches!(self.watchdog.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.watchdog.id().to_string())
                .status();
            let _ = self.watchdog.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a short command to completion; fails with its output if it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

//! The Go SDK peer (`bench/go-peer`): a Go worker running a synthetic saga
//! of paysaga's shape (its history matches `PaymentWorkflow`'s event for
//! event), so the harness can set paysaga's Rust worker beside the Go SDK on
//! the same server. Built from its source with the machine's Go (modules
//! from the Go module proxy, pinned by its `go.sum`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{Proc, run};
use crate::temporal::TemporalEnv;
use crate::workspace_root;

/// The synthetic payment's workflow type, and its fraud check's.
pub const PAYMENT_WORKFLOW: &str = "SyntheticPaymentWorkflow";
pub const FRAUD_WORKFLOW: &str = "SyntheticFraudCheckWorkflow";
pub const TASK_QUEUE: &str = "paysaga-go-peer";
pub const FRAUD_TASK_QUEUE: &str = "paysaga-go-peer-fraud";

/// The synthetic saga's input (`PaymentInput` in `bench/go-peer/main.go`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyntheticInput {
    pub payment_id: String,
    pub amount: i64,
    pub confirmation_timeout_secs: u64,
    pub fraud_task_queue: String,
}

impl SyntheticInput {
    pub fn new(payment_id: &str, amount: i64, confirmation_timeout_secs: u64) -> SyntheticInput {
        SyntheticInput {
            payment_id: payment_id.to_string(),
            amount,
            confirmation_timeout_secs,
            fraud_task_queue: FRAUD_TASK_QUEUE.into(),
        }
    }
}

/// The fraud check's workflow id for a synthetic payment.
pub fn fraud_workflow_id(payment_id: &str) -> String {
    format!("{payment_id}-fraud")
}

/// Builds the peer (incrementally: a second build is a cache hit) into
/// `target/go-peer/` and returns its path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let out = root.join("target/go-peer/paysaga-go-peer");
    run(Command::new("go")
        .current_dir(root.join("bench/go-peer"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg("."))
    .context("building the Go SDK peer (bench/go-peer) with go")?;
    Ok(out)
}

pub struct GoPeer {
    proc: Proc,
}

impl GoPeer {
    /// Builds the peer and starts it polling its two task queues on `temporal`.
    pub fn start(dir: &Path, temporal: &TemporalEnv) -> Result<GoPeer> {
        std::fs::create_dir_all(dir)?;
        let binary = build()?;
        let mut proc = Proc::spawn(
            "go-peer",
            dir,
            "TERM",
            binary,
            &[
                format!("--address={}", temporal.host_port),
                format!("--namespace={}", temporal.namespace),
                format!("--task-queue={TASK_QUEUE}"),
                format!("--fraud-task-queue={FRAUD_TASK_QUEUE}"),
            ],
        )?;
        let log = proc.log_path().to_path_buf();
        proc.wait_ready(std::time::Duration::from_secs(30), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("paysaga-go-peer: polling"))
        })?;
        Ok(GoPeer { proc })
    }

    /// The peer's process id (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn log(&self) -> &Path {
        self.proc.log_path()
    }
}

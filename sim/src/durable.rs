//! The gateway's memory across restarts (`--state-file`): a real gateway
//! does not forget the charges it accepted when it restarts, so neither
//! does the simulator when asked. After every change to its charges,
//! answers or refunds, the gateway's state (with the confirmations still
//! to be sent and the last ID handed out) is written to the file whole
//! (a temporary file renamed over it: a crash leaves the old or the new
//! one, never half). At start the file is read back and the confirmations
//! due are scheduled again. Off by default: it costs a write per change.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gateway::Gateway;

/// What the file holds: the gateway (its pending confirmations included).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub gateway: Gateway,
    /// The last ID handed out (charges and refunds share the counter).
    pub last_id: u64,
}

/// Where the state goes.
#[derive(Debug, Clone)]
pub(crate) struct StateFile(PathBuf);

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile(path.into())
    }

    /// What the file holds; nothing yet when it does not exist.
    pub fn load(&self) -> std::io::Result<Saved> {
        match std::fs::read(&self.0) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes `saved` in place of what the file held.
    pub fn store(&self, saved: &SavedRef<'_>) -> std::io::Result<()> {
        let tmp = tmp_path(&self.0);
        let bytes = serde_json::to_vec(saved).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.0)
    }
}

/// [`Saved`], borrowed (to write without copying).
#[derive(Serialize)]
pub(crate) struct SavedRef<'a> {
    pub gateway: &'a Gateway,
    pub last_id: u64,
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

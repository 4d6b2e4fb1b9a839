//! What the controller keeps of each payment between reconciles, in one
//! place: its consecutive failures (kube has no per-object backoff), its
//! last status write (for pacing), and what its workflow's history told
//! (the follower's view, and the long polls that keep it).
//!
//! One entry a payment, by workflow ID, made when first needed (a follow, a
//! failure) and dropped whole by one [`Tracker::forget`]: once the payment
//! is finished and written, deleted, or found finished in the cache. Nothing
//! else removes entries, so nothing is forgotten by halves.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::follow::Following;
use super::plan::pace::Change;

/// One payment's runtime state.
#[derive(Default)]
pub struct Tracked {
    /// Consecutive failed reconciles.
    pub failures: u32,
    /// When its status was last written, and how many step-only writes it
    /// had since its last other one.
    pub last_write: Option<(Instant, u32)>,
    /// What its workflow's history told, and the polls following it.
    pub follow: Following,
}

/// What pacing needs to know of a payment's writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pacing {
    /// Since its last status write; `None` if never written (by this process).
    pub since_write: Option<Duration>,
    /// Step-only writes since its last other one.
    pub step_writes: u32,
}

/// Changes of the workflow that status does not show yet, by when they
/// happened (for the change → status latency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// The oldest progress not shown.
    pub progress: Option<SystemTime>,
    /// The close.
    pub closed: Option<SystemTime>,
}

/// Every payment's runtime state.
#[derive(Default)]
pub struct Tracker {
    entries: Mutex<HashMap<String, Tracked>>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tracked>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the payment's entry, made if it has none.
    pub fn entry<R>(&self, id: &str, f: impl FnOnce(&mut Tracked) -> R) -> R {
        f(self.lock().entry(id.to_string()).or_default())
    }

    /// Runs `f` on the payment's entry if it has one.
    pub fn existing<R>(&self, id: &str, f: impl FnOnce(&mut Tracked) -> R) -> Option<R> {
        self.lock().get_mut(id).map(f)
    }

    /// A reconcile failed: how many in a row now.
    pub fn failed(&self, id: &str) -> u32 {
        self.entry(id, |t| {
            t.failures += 1;
            t.failures
        })
    }

    /// A reconcile succeeded: the next failure backs off from the start.
    pub fn succeeded(&self, id: &str) {
        self.existing(id, |t| t.failures = 0);
    }

    pub fn pacing(&self, id: &str) -> Pacing {
        self.existing(id, |t| t.last_write)
            .flatten()
            .map_or(Pacing::default(), |(at, n)| Pacing {
                since_write: Some(at.elapsed()),
                step_writes: n,
            })
    }

    pub fn pending(&self, id: &str) -> Pending {
        self.existing(id, |t| t.follow.pending).unwrap_or_default()
    }

    /// Status was written, showing `shown` of the pending changes (those
    /// seen since stay pending). Counts the write for pacing; a payment
    /// forgotten meanwhile stays forgotten.
    pub fn written(&self, id: &str, change: Change, shown: Pending) {
        self.existing(id, |t| {
            let steps = match change {
                Change::Step => t.last_write.map_or(0, |(_, n)| n) + 1,
                Change::Phase => 0,
            };
            t.last_write = Some((Instant::now(), steps));
            let pending = &mut t.follow.pending;
            if pending.progress == shown.progress {
                pending.progress = None;
            }
            if pending.closed == shown.closed {
                pending.closed = None;
            }
        });
    }

    /// Drops everything kept of the payment, and stops following it.
    pub fn forget(&self, id: &str) {
        if let Some(t) = self.lock().remove(id) {
            t.follow.stop();
        }
    }

    /// How many workflow histories are being followed.
    pub fn following(&self) -> usize {
        self.lock().values().filter(|t| t.follow.polling()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_forget_drops_failures_pacing_and_what_was_followed() {
        let t = Tracker::default();
        assert_eq!((t.failed("p"), t.failed("p")), (1, 2));
        t.written("p", Change::Phase, Pending::default());
        t.entry("p", |e| {
            e.follow.pending.closed = Some(SystemTime::UNIX_EPOCH)
        });
        assert!(t.pacing("p").since_write.is_some());
        t.forget("p");
        assert_eq!(t.pacing("p"), Pacing::default());
        assert_eq!(t.pending("p"), Pending::default());
        assert_eq!(t.failed("p"), 1, "counted afresh");
    }

    #[test]
    fn a_write_counts_step_writes_and_clears_only_what_it_showed() {
        let t = Tracker::default();
        let (a, b) = (
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1),
        );
        t.entry("p", |e| e.follow.pending.progress = Some(a));
        t.written("p", Change::Step, t.pending("p"));
        t.written("p", Change::Step, Pending::default());
        assert_eq!(t.pacing("p").step_writes, 2);
        assert_eq!(t.pending("p"), Pending::default());
        // Progress seen after the observation stays pending.
        t.entry("p", |e| e.follow.pending.progress = Some(b));
        t.written(
            "p",
            Change::Phase,
            Pending {
                progress: Some(a),
                closed: None,
            },
        );
        assert_eq!(t.pacing("p").step_writes, 0);
        assert_eq!(t.pending("p").progress, Some(b));
    }

    #[test]
    fn success_and_writes_never_make_an_entry() {
        let t = Tracker::default();
        t.succeeded("gone");
        t.written("gone", Change::Phase, Pending::default());
        assert_eq!(t.lock().len(), 0);
    }
}

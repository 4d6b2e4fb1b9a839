//! When to write a status: what changes the phase or outcome at once, step
//! progress no more often than a doubling interval. A saga that finishes
//! within the interval is written twice: when it starts and when it ends.

use std::time::Duration;

use paysaga_api::PaymentStatus;

use super::conditions;
use crate::controller::tracker::Pacing;

/// What a status write would show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Only which step runs, and the steps' conditions.
    Step,
    /// Anything else: the start, the phase, the outcome, a cancel, Temporal
    /// being unreachable.
    Phase,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Step => "step",
            Change::Phase => "phase",
        }
    }
}

/// When to write the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Unchanged,
    Now(Change),
    /// Step progress only, and the last write was recent: write (whatever is
    /// current then) once this has passed.
    After(Duration),
}

fn without_steps(s: &PaymentStatus) -> PaymentStatus {
    PaymentStatus {
        step: None,
        conditions: s
            .conditions
            .iter()
            .filter(|c| !conditions::is_step(c))
            .cloned()
            .collect(),
        ..s.clone()
    }
}

/// The wait before the next step-only write (or progress poll) after `n`
/// of them: `interval`, then doubling, at most 32 × `interval`. A slow saga
/// costs a few writes more, not one per interval: when everything is slow
/// (an overloaded Temporal, say), per-payment work must not grow with the
/// delay, or the overload feeds itself.
pub fn step_gap(interval: Duration, n: u32) -> Duration {
    interval * (1u32 << n.min(5))
}

/// Paces a write of `desired` over `current`, given the payment's last
/// writes ([`Pacing`]). Pure.
pub fn pace(
    current: &PaymentStatus,
    desired: &PaymentStatus,
    pacing: Pacing,
    interval: Duration,
) -> Write {
    if current == desired {
        return Write::Unchanged;
    }
    if without_steps(current) != without_steps(desired) {
        return Write::Now(Change::Phase);
    }
    let gap = step_gap(interval, pacing.step_writes);
    match pacing.since_write {
        Some(since) if since < gap => Write::After(gap - since),
        _ => Write::Now(Change::Step),
    }
}

//! One reconcile of one Payment, as the pipeline it is: observe (I/O) →
//! plan (pure) → act (I/O) → write the status and tell the Events (I/O).
//! And what to do when it fails: back off, per payment.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use paysaga_api::names::workflow_id;

use super::Context;
use super::act::act;
use super::cache::Cached;
use super::observe::observe;
use super::plan::{Requeue, plan};
use super::status::write_status;
use crate::temporal::{SignalError, TemporalError};

/// What can go wrong in a reconcile, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // observe
    /// A finished Payment, read whole because something was asked of it.
    #[error("failed to read the payment: {0}")]
    Read(#[source] kube::Error),
    #[error("failed to observe the workflow: {0}")]
    Observe(#[source] TemporalError),
    // act
    #[error("failed to add the finalizer: {0}")]
    AddFinalizer(#[source] kube::Error),
    /// The finalizer of a payment deleted once it could go.
    #[error("failed to remove the finalizer: {0}")]
    RemoveFinalizer(#[source] kube::Error),
    #[error("failed to start the workflow: {0}")]
    Start(#[source] TemporalError),
    /// A `cancel` signal that Temporal refused (not one to a closed workflow).
    #[error("failed to signal cancel: {0}")]
    Cancel(#[source] SignalError),
    /// A `review` signal that Temporal refused.
    #[error("failed to signal the review decision: {0}")]
    Review(#[source] SignalError),
    /// An `expedite` signal that Temporal refused.
    #[error("failed to signal expedite: {0}")]
    Expedite(#[source] SignalError),
    /// Setting the cancel annotation back to the reason signalled.
    #[error("failed to set the cancel annotation back: {0}")]
    RestoreAnnotation(#[source] kube::Error),
    /// Removing the annotations of a request answered.
    #[error("failed to remove the annotations of an answered request: {0}")]
    ConsumeAnnotations(#[source] kube::Error),
    /// Deleting a finished payment whose TTL has run out.
    #[error("failed to delete an expired payment: {0}")]
    Expire(#[source] kube::Error),
    /// Writing the record of a deleted payment's Idempotency-Key (the
    /// Payment is held until it is written).
    #[error("failed to keep the deleted payment's Idempotency-Key: {0}")]
    KeepIdempotencyKey(#[source] kube::Error),
    // write_status
    #[error("failed to write status: {0}")]
    WriteStatus(#[source] kube::Error),
}

impl Error {
    /// For metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe(_)
            | Error::Start(_)
            | Error::Cancel(_)
            | Error::Review(_)
            | Error::Expedite(_) => "temporal",
            Error::Read(_)
            | Error::AddFinalizer(_)
            | Error::RemoveFinalizer(_)
            | Error::Expire(_)
            | Error::KeepIdempotencyKey(_)
            | Error::ConsumeAnnotations(_)
            | Error::RestoreAnnotation(_)
            | Error::WriteStatus(_) => "kubernetes",
        }
    }
}

#[tracing::instrument(skip_all, fields(
    payment = %cached.name_any(),
    namespace = cached.namespace().unwrap_or_default(),
    workflow_id = workflow_id(cached.meta()),
    request_id = tracing::field::Empty,
))]
pub async fn reconcile(cached: Arc<Cached>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let observed = observe(&cached, &ctx).await?;
    let plan = plan(&observed, &ctx.settings);
    let applied = act(plan, &observed, &ctx).await?;
    let requeue = write_status(applied, &observed, &ctx).await?;
    let id = observed.id.clone();
    let action = match requeue {
        Requeue::AwaitChange => Action::await_change(),
        Requeue::After(wait) => Action::requeue(wait),
        Requeue::Backoff => match observed.into_error() {
            // Said on the Payment; now back off like any failure.
            Some(e) => return Err(e),
            None => Action::requeue(super::plan::SAFETY_NET),
        },
    };
    ctx.tracker.succeeded(&id);
    Ok(action)
}

/// 1 s, 2 s, 4 s … capped at 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// A failed reconcile comes back after its payment's own backoff (kube has
/// none per object).
pub fn error_policy(cached: Arc<Cached>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.category());
    let failures = ctx.tracker.failed(&workflow_id(cached.meta()));
    let retry_in = backoff(failures - 1);
    tracing::warn!(
        payment = %cached.name_any(),
        category = error.category(),
        error = %error,
        failures,
        ?retry_in,
        "reconcile failed"
    );
    Action::requeue(retry_in)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_is_capped() {
        let secs: Vec<u64> = (0..9).map(|n| super::backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}

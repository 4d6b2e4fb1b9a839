//! `paysaga-operator controller`: Payment objects drive workflows, and
//! status flows back as the workflows move.
//!
//! Reconcile is a pipeline: observe (the object, its workflow) → decide
//! ([`decide::decide`], pure) → act (start, signal) → at most one status
//! write, by server-side apply, only when something changed and paced
//! ([`decide::pace`]). Wake-ups, and what is known of each workflow, come
//! from the objects (create, annotate, delete) and from the workflows'
//! histories ([`follow`]), not from a fixed short poll.

pub mod cached;
pub mod decide;
pub mod follow;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use paysaga_api::names::{CONTROLLER_FIELD_MANAGER, FINALIZER, workflow_id};
use paysaga_api::{Payment, PaymentStatus, Phase};

use crate::temporal::{Observation, PaymentWorkflows, Started, TemporalError};
use cached::{Cached, Held, key_of};
use decide::{Facts, Settings, Write, decide, payment_workflow_id, reasons};
use follow::Follower;

/// What can go wrong in a reconcile, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to observe the workflow: {0}")]
    Observe(#[source] TemporalError),
    #[error("failed to start the workflow: {0}")]
    Start(#[source] TemporalError),
    #[error("failed to signal cancel: {0}")]
    Cancel(#[source] crate::temporal::SignalError),
    #[error("failed to write status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("failed to read the payment: {0}")]
    Read(#[source] kube::Error),
    #[error("failed to delete an expired payment: {0}")]
    Expire(#[source] kube::Error),
    /// Deleted while in flight: the object stays until compensation is done.
    #[error("waiting for workflow {0} to finish compensating before the object can go")]
    StillCompensating(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// For metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe(_) | Error::Start(_) | Error::Cancel(_) => "temporal",
            Error::WriteStatus(_) | Error::Expire(_) | Error::Read(_) => "kubernetes",
            Error::Finalizer(_) => "finalizer",
            Error::StillCompensating(_) => "waiting",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub workflows: PaymentWorkflows,
    pub settings: Settings,
    pub recorder: Recorder,
    pub follower: Follower,
    pub metrics: Arc<metrics::Metrics>,
    /// Consecutive failures per payment, for its backoff (kube has none per object).
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// When each in-flight payment's status was last written, and how many
    /// step-only writes it had since its last other one (for pacing).
    pub last_write: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>,
}

/// 1 s, 2 s, 4 s … capped at 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

fn object_key(p: &impl ResourceExt) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Readiness: the API server answers (checked now and then, one cheap list).
/// Started before leader election: a replica waiting to lead is a hot
/// standby and as ready as the leader; if only the leader were ready, a
/// Deployment of two would never be Ready (`helm install --wait` showed it).
pub fn spawn_readiness_probe(client: Client, metrics: Arc<metrics::Metrics>) {
    let probe: Api<Payment> = Api::all(client);
    tokio::spawn(async move {
        loop {
            let ok = probe
                .list(&kube::api::ListParams::default().limit(1))
                .await
                .is_ok();
            metrics
                .kube_ok
                .store(ok, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(if ok { 15 } else { 2 })).await;
        }
    });
}

/// Runs the controller until a shutdown signal.
pub async fn run(
    client: Client,
    temporal: temporalio_client::Client,
    settings: Settings,
    concurrency: u16,
    metrics: Arc<metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let payments: Api<Cached> = Api::all(client.clone());
    let (follower, rx) = Follower::new(temporal.clone(), settings.status_step_interval, &metrics);
    let reporter = Reporter {
        controller: "paysaga-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        workflows: PaymentWorkflows::new(temporal),
        settings,
        follower,
        metrics: metrics.clone(),
        failures: Default::default(),
        last_write: Default::default(),
    });
    let triggers =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    // Only changes a user or the API server makes wake a Payment: not the
    // controller's own status writes (no reconcile storms). Progress of the
    // workflow arrives through the wake-ups.
    let (reader, writer) = reflector::store();
    // The cache keeps each Payment compact ([`cached`]). The initial list
    // comes in pages (a list at any resource version would come whole from
    // the watch cache: tens of MB at once with 10k Payments).
    let objects = reflector(
        writer,
        watcher(payments, watcher::Config::default().page_size(250)),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(relevant_change, PredicateConfig::default());
    Controller::for_stream(objects, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(payment = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

#[tracing::instrument(skip_all, fields(
    payment = %g.name_any(),
    namespace = g.namespace().unwrap_or_default(),
    workflow_id = workflow_id(
        &g.namespace().unwrap_or_default(),
        &g.name_any(),
        g.meta().uid.as_deref().unwrap_or_default(),
    ),
))]
async fn reconcile(g: Arc<Cached>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let ns = g.namespace().unwrap_or_default();
    let api: Api<Payment> = Api::namespaced(ctx.client.clone(), &ns);
    let p = match g.held() {
        Held::Payment(p) => Arc::new(*p),
        Held::Finished(ended) => {
            // Nothing to do for a finished payment nobody asked anything of,
            // but to wait for its TTL; otherwise read it whole, once.
            let done = |action| {
                forget_failures(&ctx, g.as_ref());
                Ok(action)
            };
            if !g.asked() {
                match decide::ttl_left(ended, &ctx.settings, Timestamp::now()) {
                    None => return done(Action::await_change()),
                    Some(left) if !left.is_zero() => return done(Action::requeue(left)),
                    Some(_) => {}
                }
            }
            match api.get_opt(&g.name_any()).await {
                Ok(Some(p)) => Arc::new(p),
                Ok(None) => return done(Action::await_change()),
                Err(e) => return Err(Error::Read(e)),
            }
        }
        Held::Invalid(invalid) => {
            // Permanently invalid until someone changes it: say so, and wait
            // for a change rather than retrying. The other payments go on.
            ctx.metrics.failure("invalid");
            tracing::warn!(error = %invalid, "a Payment could not be read");
            let note = format!("this Payment cannot be read by the controller: {invalid}");
            publish(
                &ctx,
                &g.object_ref(&()),
                EventType::Warning,
                reasons::INVALID_OBJECT,
                note,
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let result = finalizer(&api, FINALIZER, p, |event| async {
        match event {
            Finalizer::Apply(p) => apply(&p, &ctx).await,
            Finalizer::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        forget_failures(&ctx, g.as_ref());
    }
    result
}

/// A reconcile succeeded: the payment's next failure backs off from the start.
fn forget_failures(ctx: &Context, p: &Cached) {
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&object_key(p));
}

/// What, in a Payment, calls for a reconcile: its identity, spec, cancel
/// annotation, finalizers and deletion — everything but its status.
fn relevant_change(p: &Cached) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = p.meta();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    p.annotations()
        .get(paysaga_api::names::CANCEL_ANNOTATION)
        .hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .hash(&mut h);
    Some(h.finish())
}

/// observe → decide → act → one status write.
async fn apply(p: &Payment, ctx: &Context) -> Result<Action, Error> {
    let began = std::time::Instant::now();
    let id = payment_workflow_id(p);
    let key = object_key(p);
    let observed = match observe(p, ctx, &id).await {
        Ok(o) => o,
        Err(e) => {
            // Say so on the Payment, and come back with backoff; the
            // followers resume by themselves when Temporal returns.
            let status = decide::unreachable_status(p, &e.to_string(), Timestamp::now());
            write_status(p, ctx, status, None).await?;
            return Err(e);
        }
    };
    let plan = decide(
        &Facts {
            payment: p,
            workflow: &observed,
            now: Timestamp::now(),
        },
        &ctx.settings,
    );
    let mut status = plan.status.clone();

    if let Some(input) = &plan.start {
        match ctx
            .workflows
            .start(input, &ctx.settings.payments_task_queue)
            .await
            .map_err(Error::Start)?
        {
            Started::New { run_id } => {
                tracing::info!(workflow_id = %id, %run_id, "workflow started");
                ctx.metrics.workflows_started.inc();
                ctx.metrics
                    .start_latency
                    .observe(accepted_to_now(p).unwrap_or(began.elapsed()).as_secs_f64());
                status = decide::started(status, run_id, Timestamp::now());
            }
            Started::Existing => {
                // Started before (by us before a restart, or another
                // replica): follow it and let its history tell the rest.
                tracing::debug!(workflow_id = %id, "workflow already started");
                ctx.follower.ensure(&id, key_of(p));
                return Ok(Action::requeue(Duration::from_secs(300)));
            }
        }
    }
    if let Some(reason) = &plan.cancel {
        match ctx.workflows.cancel(&id, reason).await {
            Ok(()) => {
                publish(
                    ctx,
                    &p.object_ref(&()),
                    EventType::Normal,
                    reasons::CANCEL_REQUESTED,
                    format!("cancel requested: {reason}"),
                )
                .await
            }
            // Finished between observing and signalling: the next wake-up says so.
            Err(crate::temporal::SignalError::NotFound(_)) => {}
            Err(e) => return Err(Error::Cancel(e)),
        }
    }
    if plan
        .status
        .conditions
        .iter()
        .any(|c| c.reason == reasons::TOO_LATE_TO_CANCEL)
        && !p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == reasons::TOO_LATE_TO_CANCEL)
        })
    {
        publish(
            ctx,
            &p.object_ref(&()),
            EventType::Warning,
            reasons::TOO_LATE_TO_CANCEL,
            "the payment had already finished; nothing changed".into(),
        )
        .await;
    }

    let (since_write, step_writes) = ctx
        .last_write
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .map_or((None, 0), |(t, n)| (Some(t.elapsed()), *n));
    let current = p.status.clone().unwrap_or_default();
    let mut come_back = None;
    match decide::pace(
        &current,
        &status,
        since_write,
        step_writes,
        ctx.settings.status_step_interval,
    ) {
        Write::Unchanged => ctx.metrics.status_patch("unchanged"),
        Write::After(wait) => {
            ctx.metrics.status_patch("paced");
            come_back = Some(wait);
        }
        Write::Now(change) => {
            let (progress, closed) = ctx.follower.pending(&id);
            write_status(p, ctx, status, Some(change)).await?;
            ctx.follower.written(&id);
            let steps = match change {
                decide::Change::Step => step_writes + 1,
                decide::Change::Phase => 0,
            };
            ctx.last_write
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), (std::time::Instant::now(), steps));
            // Each kind of change, from when it happened to now that it shows.
            let now = std::time::SystemTime::now();
            for (kind, at) in [
                (decide::Change::Step, progress),
                (decide::Change::Phase, closed),
            ] {
                if let Some(latency) = at.and_then(|at| now.duration_since(at).ok()) {
                    ctx.metrics.status_latency(kind, latency);
                }
            }
        }
    }

    let result = if plan.finished && come_back.is_none() {
        ctx.follower.forget(&id);
        ctx.last_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        match plan.expires_in {
            Some(left) if left.is_zero() => {
                let api: Api<Payment> =
                    Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
                match api.delete(&p.name_any(), &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(e) => return Err(Error::Expire(e)),
                }
                tracing::info!(workflow_id = %id, "finished payment deleted after its TTL; its history stays in Temporal");
                Ok(Action::await_change())
            }
            Some(left) => Ok(Action::requeue(left)),
            None => Ok(Action::await_change()),
        }
    } else {
        ctx.follower.ensure(&id, key_of(p));
        // Progress arrives through the follower; the requeue is a safety net,
        // or the end of a paced write's wait.
        Ok(Action::requeue(
            come_back.unwrap_or(Duration::from_secs(300)),
        ))
    };
    ctx.metrics
        .watched_workflows
        .set(ctx.follower.count() as i64);
    result
}

/// What is known of the payment's workflow, asking Temporal only when
/// nothing else tells: the followed history first; then the Payment's own
/// status (a recorded end, or no run yet: start it, a duplicate start is
/// refused); then Temporal itself (after a restart, or an outage).
async fn observe(p: &Payment, ctx: &Context, id: &str) -> Result<Observation, Error> {
    if let Some(o) = ctx.follower.observation(id) {
        ctx.metrics
            .temporal_ok
            .store(true, std::sync::atomic::Ordering::Relaxed);
        return Ok(o);
    }
    if decide::records_the_end(p) {
        return Ok(Observation::Recorded);
    }
    if p.status.as_ref().is_none_or(|s| s.run_id.is_none()) {
        return Ok(Observation::Absent);
    }
    let observed = ctx.workflows.observe(id).await.map_err(Error::Observe);
    ctx.metrics
        .temporal_ok
        .store(observed.is_ok(), std::sync::atomic::Ordering::Relaxed);
    observed
}

/// How long ago the API accepted the payment (its millisecond stamp), if it did.
fn accepted_to_now(p: &Payment) -> Option<Duration> {
    let stamp = p
        .annotations()
        .get(paysaga_api::names::ACCEPTED_AT_ANNOTATION)?;
    let at: Timestamp = stamp.parse().ok()?;
    let ms = Timestamp::now().as_millisecond() - at.as_millisecond();
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Deleting a payment: an in-flight one is cancelled and the object stays
/// until its compensations are done; a finished one goes at once.
async fn cleanup(p: &Payment, ctx: &Context) -> Result<Action, Error> {
    let id = payment_workflow_id(p);
    let observed = match ctx.follower.observation(&id) {
        Some(o) => o,
        None if decide::records_the_end(p) => Observation::Recorded,
        None => ctx.workflows.observe(&id).await.map_err(Error::Observe)?,
    };
    match observed {
        Observation::Absent | Observation::Closed { .. } | Observation::Recorded => {
            ctx.follower.forget(&id);
            ctx.last_write
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&object_key(p));
            Ok(Action::await_change())
        }
        Observation::Running { .. } => {
            let already = p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == decide::conditions::CANCEL_REQUESTED)
            });
            if !already {
                match ctx
                    .workflows
                    .cancel(&id, "the Payment object was deleted")
                    .await
                {
                    Ok(()) | Err(crate::temporal::SignalError::NotFound(_)) => {}
                    Err(e) => return Err(Error::Cancel(e)),
                }
                publish(
                    ctx,
                    &p.object_ref(&()),
                    EventType::Normal,
                    reasons::CANCEL_REQUESTED,
                    "deleted while in flight: cancelling".into(),
                )
                .await;
            }
            ctx.follower.ensure(&id, key_of(p));
            // Not done until the workflow closes; its wake-up brings us back.
            Err(Error::StillCompensating(id))
        }
    }
}

/// Writes the whole status by server-side apply, only when it changed,
/// then tells what happened in Events: how the payment ended (one Event,
/// naming each step), and a Warning for each step that failed.
async fn write_status(
    p: &Payment,
    ctx: &Context,
    status: PaymentStatus,
    change: Option<decide::Change>,
) -> Result<(), Error> {
    let current = p.status.clone().unwrap_or_default();
    if status == current {
        ctx.metrics.status_patch("unchanged");
        return Ok(());
    }
    let api: Api<Payment> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1",
        "kind": "Payment",
        "status": status,
    });
    let written = api
        .patch_status(
            &p.name_any(),
            &PatchParams::apply(CONTROLLER_FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await;
    ctx.metrics.status_patch(match (&written, change) {
        (Err(_), _) => "error",
        (Ok(_), Some(decide::Change::Step)) => "applied_step",
        (Ok(_), _) => "applied",
    });
    written.map_err(Error::WriteStatus)?;

    let obj = p.object_ref(&());
    for e in decide::step_events(&current.conditions, &status.conditions) {
        publish(ctx, &obj, EventType::Warning, e.reason, e.note).await;
    }
    if status.phase != current.phase
        && let Some(phase) = status.phase.filter(|ph| ph.is_terminal())
    {
        let kind = if phase == Phase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = decide::outcome_note(&status);
        publish(ctx, &obj, kind, &format!("{phase:?}"), note).await;
    }
    Ok(())
}

async fn publish(
    ctx: &Context,
    obj: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, obj).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

fn error_policy(p: Arc<Cached>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.category());
    if let Error::Finalizer(inner) = error
        && let kube::runtime::finalizer::Error::CleanupFailed(Error::StillCompensating(_)) =
            inner.as_ref()
    {
        // The workflow's wake-up brings the object back; this is a safety net.
        return Action::requeue(Duration::from_secs(10));
    }
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(object_key(p.as_ref())).or_insert(0);
        *n += 1;
        *n
    };
    let retry_in = backoff(failures - 1);
    tracing::warn!(
        payment = %p.name_any(),
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

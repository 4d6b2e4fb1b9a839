//! RecurringPayment objects keep Temporal Schedules: observe (the object,
//! its Schedule, the Payments it made) → [`plan`] (pure) → act (finalizer,
//! create/update/delete the Schedule, orphan the Payments of a deleted
//! object) → status and Events. The Payments it made wake it as they
//! change; a sweep removes Schedules whose object is gone.

pub mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use paysaga_api::names::{RECURRING_FINALIZER, RECURRING_LABEL};
use paysaga_api::recurring::schedule_id;
use paysaga_api::{Payment, RecurringPayment, RecurringPhase};
use serde_json::json;

use super::act::{add_finalizer, apply_status, json_patch, remove_finalizer, tell_event};
use crate::schedules::{ScheduleFailure, Schedules};
use plan::{Plan, Seen, Step, plan, set_ready};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to list the payments it made: {0}")]
    ListPayments(#[source] kube::Error),
    #[error("{0}")]
    Schedule(#[source] ScheduleFailure),
    #[error("failed to {what}: {source}")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn kube_err(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

pub struct Context {
    client: Client,
    schedules: Schedules,
    recorder: Recorder,
    task_queue: String,
    /// Where RecurringPayments may fire; empty: everywhere.
    namespaces: Vec<String>,
}

/// Runs the RecurringPayment controller (and the sweep of Schedules whose
/// object is gone) until the task is dropped.
pub async fn run(
    client: Client,
    temporal: temporalio_client::Client,
    task_queue: String,
    namespaces: Vec<String>,
) {
    let reporter = Reporter {
        controller: "paysaga-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        schedules: Schedules::new(temporal),
        client: client.clone(),
        task_queue,
        namespaces,
    });
    let objects: Api<RecurringPayment> = Api::all(client.clone());
    let payments: Api<Payment> = Api::all(client);
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(writer, watcher(objects, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .predicate_filter(relevant_change, Default::default());
    let sweeper = tokio::spawn(sweep_forever(ctx.clone(), reader.clone()));
    Controller::for_stream(stream, reader)
        // The Payments it made wake it: counts, the last payment, and the
        // end of the one a skipped firing waited for.
        .watches(
            payments,
            watcher::Config::default().labels(RECURRING_LABEL),
            |p: Payment| {
                let name = p.labels().get(RECURRING_LABEL)?.clone();
                Some(ObjectRef::new(&name).within(&p.namespace()?))
            },
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "recurring payment reconcile failed");
            }
        })
        .await;
    sweeper.abort();
}

fn relevant_change(r: &RecurringPayment) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = r.meta();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .hash(&mut h);
    Some(h.finish())
}

#[tracing::instrument(skip_all, fields(
    recurring = %object.name_any(),
    namespace = object.namespace().unwrap_or_default(),
))]
async fn reconcile(object: Arc<RecurringPayment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = object.namespace().unwrap_or_default();
    let id = schedule_id(&object.metadata);
    let schedule = ctx.schedules.describe(&id).await.map_err(Error::Schedule)?;
    let payments: Api<Payment> = Api::namespaced(ctx.client.clone(), &ns);
    let made = payments
        .list(&ListParams::default().labels(&format!("{RECURRING_LABEL}={}", object.name_any())))
        .await
        .map_err(Error::ListPayments)?
        .items;
    let seen = Seen {
        object: &object,
        schedule: schedule.as_ref(),
        payments: &made,
        now: Timestamp::now(),
        task_queue: &ctx.task_queue,
        namespaces: &ctx.namespaces,
    };
    let plan = plan(&seen);
    act(&object, &id, plan, &ctx).await
}

fn error_policy(object: Arc<RecurringPayment>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(recurring = %object.name_any(), error = %error, "recurring payment reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

async fn act(
    object: &RecurringPayment,
    id: &str,
    mut plan: Plan,
    ctx: &Context,
) -> Result<Action, Error> {
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let objects: Api<RecurringPayment> = Api::namespaced(ctx.client.clone(), &ns);
    let payments: Api<Payment> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = object.uid().unwrap_or_default();
    for step in std::mem::take(&mut plan.steps) {
        let updating = matches!(step, Step::Update(_));
        let done = match step {
            Step::AddFinalizer => {
                let patch = add_finalizer(object.finalizers(), RECURRING_FINALIZER);
                json_patch(&objects, &name, patch)
                    .await
                    .map_err(kube_err("add the finalizer"))?;
                Ok(())
            }
            Step::Create(desired) => ctx.schedules.create(id, &desired).await.map(|made| {
                tracing::info!(schedule_id = id, made, "schedule in place");
            }),
            Step::Update(desired) => ctx.schedules.update(id, &desired).await,
            Step::Delete => {
                ctx.schedules.delete(id).await.map_err(Error::Schedule)?;
                tracing::info!(schedule_id = id, "schedule deleted");
                Ok(())
            }
            Step::Orphan(names) => {
                for payment in names {
                    let p = payments
                        .get_opt(&payment)
                        .await
                        .map_err(kube_err("read a payment it made"))?;
                    let Some(p) = p else { continue };
                    let kept: Vec<_> = p
                        .owner_references()
                        .iter()
                        .filter(|o| o.uid != uid)
                        .cloned()
                        .collect();
                    let patch = json!({"metadata": {
                        "resourceVersion": p.resource_version(),
                        "ownerReferences": kept,
                    }});
                    payments
                        .patch(&payment, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(kube_err("keep a payment it made"))?;
                }
                Ok(())
            }
            Step::RemoveFinalizer => {
                if let Some(index) = object
                    .finalizers()
                    .iter()
                    .position(|f| f == RECURRING_FINALIZER)
                {
                    json_patch(
                        &objects,
                        &name,
                        remove_finalizer(index, RECURRING_FINALIZER),
                    )
                    .await
                    .map_err(kube_err("remove the finalizer"))?;
                }
                Ok(())
            }
        };
        match done {
            Ok(()) => {}
            // Temporal refused the schedule as the spec gives it: said on the
            // object until the spec changes.
            Err(ScheduleFailure::Refused(why)) => {
                // The Schedule of the spec before fires on unless paused: it
                // is paused until the spec is fixed.
                let paused = if updating {
                    ctx.schedules
                        .pause(id, "paused: Temporal refused the new spec")
                        .await
                        .map_err(Error::Schedule)?;
                    "; the Schedule is paused until the spec is fixed"
                } else {
                    ""
                };
                let why = format!("{why}{paused}");
                let mut status = plan
                    .status
                    .take()
                    .or_else(|| object.status.clone())
                    .unwrap_or_default();
                status.phase = Some(RecurringPhase::Failed);
                status.reason = Some("InvalidSchedule".into());
                status.message = Some(format!("Temporal refused the schedule: {why}"));
                status.observed_generation = object.metadata.generation;
                status.next_runs.clear();
                set_ready(&mut status, Timestamp::now());
                plan.status = Some(status);
                plan.events = vec![plan::Event {
                    warning: true,
                    reason: "InvalidSchedule".into(),
                    note: format!("Temporal refused the schedule: {why}"),
                }];
                plan.requeue = None;
                break;
            }
            Err(e) => return Err(Error::Schedule(e)),
        }
    }
    if let Some(status) = plan.status {
        apply_status(&objects, &name, &status)
            .await
            .map_err(kube_err("write status"))?;
    }
    let reference = object.object_ref(&());
    for e in plan.events {
        tell_event(
            &ctx.recorder,
            &reference,
            e.warning,
            e.reason,
            e.note,
            "Schedule",
        )
        .await;
    }
    Ok(match plan.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Deletes the Schedule `id` if it is a paysaga firing whose RecurringPayment
/// is verifiably gone (no object of that namespace, name and UID): never
/// another application's Schedule, never a live object's.
async fn sweep_one(ctx: &Context, id: &str) -> Result<(), Error> {
    let Some(fire) = ctx.schedules.fires_for(id).await.map_err(Error::Schedule)? else {
        return Ok(());
    };
    let api: Api<RecurringPayment> = Api::namespaced(ctx.client.clone(), &fire.namespace);
    let live = api
        .get_opt(&fire.name)
        .await
        .map_err(kube_err("read the RecurringPayment of a schedule"))?;
    if live.is_some_and(|o| o.uid().as_deref() == Some(fire.uid.as_str())) {
        return Ok(());
    }
    ctx.schedules.delete(id).await.map_err(Error::Schedule)?;
    tracing::info!(schedule_id = %id, "schedule without its object deleted");
    Ok(())
}

/// How often Schedules whose object is gone are looked for.
const SWEEP: Duration = Duration::from_secs(60);

/// Deletes the Schedules of RecurringPayments that no longer exist (deleted
/// while the controller was down with the finalizer removed by hand, or a
/// Schedule made by hand under paysaga's prefix).
async fn sweep_forever(ctx: Arc<Context>, objects: Store<RecurringPayment>) {
    loop {
        tokio::time::sleep(SWEEP).await;
        // The store only spares a look at the objects it holds (listed
        // before it is read, so a Schedule just made has its object there);
        // what is deleted is checked against the API server (sweep_one).
        match ctx.schedules.ids("recurring-").await {
            Ok(ids) => {
                let known: HashSet<String> = objects
                    .state()
                    .iter()
                    .map(|o| schedule_id(&o.metadata))
                    .collect();
                let unknown: Vec<String> = ids
                    .iter()
                    .filter(|id| !known.contains(*id))
                    .cloned()
                    .collect();
                tracing::debug!(
                    listed = ids.len(),
                    unknown = unknown.len(),
                    "schedules swept"
                );
                for id in unknown {
                    if let Err(e) = sweep_one(&ctx, &id).await {
                        tracing::warn!(schedule_id = %id, error = %e, "could not sweep a schedule");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list schedules to sweep"),
        }
    }
}

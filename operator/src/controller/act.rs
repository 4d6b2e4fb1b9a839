//! The third step: carry out the plan's actions, in order. What comes out
//! is [`Applied`], the only thing a status can be written from
//! ([`super::status::write_status`]), and only this module makes one: a
//! status cannot be written before the start it shows has been made (it
//! carries the run the start returned), nor after a start that found the
//! workflow already running (then nothing is written).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use paysaga_api::Payment;
use paysaga_api::idempotency::IdempotencyKey;
use paysaga_api::names::{ACCEPTED_AT_ANNOTATION, FINALIZER};
use serde_json::json;

use super::Context;
use super::observe::Observed;
use super::plan::events::Event;
use super::plan::{Action, Plan, Requeue, SAFETY_NET, StatusWrite, desired};
use super::reconcile::Error;
use crate::temporal::{SignalError, Started};

/// A plan carried out: the status to write (with what the actions
/// returned), the Events to tell, when to come back.
#[derive(Debug)]
pub struct Applied {
    status: Option<StatusWrite>,
    events: Vec<Event>,
    requeue: Requeue,
}

impl Applied {
    pub fn into_parts(self) -> (Option<StatusWrite>, Vec<Event>, Requeue) {
        (self.status, self.events, self.requeue)
    }
}

/// Carries out `plan` for the observed payment.
pub async fn act(plan: Plan, observed: &Observed, ctx: &Context) -> Result<Applied, Error> {
    let Plan {
        actions,
        mut status,
        mut events,
        mut requeue,
    } = plan;
    let id = &observed.id;
    let (name, ns) = (&observed.key.name, observed.key.namespace.as_deref());
    let api: Api<Payment> = Api::namespaced(ctx.client.clone(), ns.unwrap_or_default());
    for action in actions {
        match action {
            Action::AddFinalizer { existing } => {
                json_patch(&api, name, add_finalizer(&existing, FINALIZER))
                    .await
                    .map_err(Error::AddFinalizer)?;
            }
            Action::ReleaseFinalizer { index } => {
                json_patch(&api, name, remove_finalizer(index, FINALIZER))
                    .await
                    .map_err(Error::RemoveFinalizer)?;
            }
            Action::Start(input) => {
                let queue = &ctx.settings.payments_task_queue;
                match ctx
                    .workflows
                    .start(&input, queue)
                    .await
                    .map_err(Error::Start)?
                {
                    Started::New { run_id } => {
                        tracing::info!(workflow_id = %id, %run_id, "workflow started");
                        // Known from the start: the follower need not read the
                        // history at once to learn it.
                        ctx.follower
                            .started(id, &run_id, std::time::SystemTime::now());
                        ctx.metrics.workflows_started.inc();
                        let waited = observed
                            .payment()
                            .and_then(accepted_to_now)
                            .unwrap_or(observed.began.elapsed());
                        ctx.metrics.start_latency.observe(waited.as_secs_f64());
                        if let Some(StatusWrite::Now { status, .. }) = &mut status {
                            **status = desired::started(
                                std::mem::take(&mut **status),
                                run_id,
                                Timestamp::now(),
                            );
                        }
                    }
                    Started::Existing => {
                        // Started before (by us before a restart, or another
                        // replica): follow it and let its history tell the rest.
                        tracing::debug!(workflow_id = %id, "workflow already started");
                        status = None;
                        events.clear();
                        requeue = Requeue::After(SAFETY_NET);
                    }
                }
            }
            Action::SignalCancel { reason } => match ctx.workflows.cancel(id, &reason).await {
                // Finished between observing and signalling: its history says so.
                Ok(()) | Err(SignalError::NotFound(_)) => {}
                Err(e) => return Err(Error::Cancel(e)),
            },
            Action::SignalReview(decision) => match ctx.workflows.review(id, &decision).await {
                Ok(()) | Err(SignalError::NotFound(_)) => {}
                Err(e) => return Err(Error::Review(e)),
            },
            Action::SignalExpedite(req) => match ctx.workflows.expedite(id, &req).await {
                Ok(()) | Err(SignalError::NotFound(_)) => {}
                Err(e) => return Err(Error::Expedite(e)),
            },
            Action::ConsumeAnnotations(answered) => {
                // Each removal is guarded by a test of the value answered: a
                // request changed meanwhile fails the patch, and is answered
                // at the next reconcile.
                let mut ops = Vec::new();
                for (key, value) in &answered {
                    let path = annotation_path(key);
                    ops.push(json!({"op": "test", "path": path, "value": value}));
                    ops.push(json!({"op": "remove", "path": path}));
                }
                if !ops.is_empty() {
                    json_patch(&api, name, json!(ops))
                        .await
                        .map_err(Error::ConsumeAnnotations)?;
                }
            }
            Action::RestoreAnnotation { key, from, to } => {
                let path = annotation_path(&key);
                let ops = json!([
                    {"op": "test", "path": path, "value": from},
                    {"op": "replace", "path": path, "value": to},
                ]);
                json_patch(&api, name, ops)
                    .await
                    .map_err(Error::RestoreAnnotation)?;
            }
            Action::Follow => ctx.follower.ensure(id, observed.key.clone()),
            Action::Forget => ctx.tracker.forget(id),
            Action::DeleteExpired => {
                match api.delete(name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(e) => return Err(Error::Expire(e)),
                }
                tracing::info!(workflow_id = %id, "finished payment deleted after its TTL; its history stays in Temporal");
            }
            Action::KeepIdempotencyKey(spec) => {
                let keys: Api<IdempotencyKey> =
                    Api::namespaced(ctx.client.clone(), ns.unwrap_or_default());
                let record = IdempotencyKey::new(name, *spec);
                match keys.create(&PostParams::default(), &record).await {
                    // Kept by an earlier attempt: the record is written once.
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(e) => return Err(Error::KeepIdempotencyKey(e)),
                }
            }
        }
    }
    ctx.metrics
        .watched_workflows
        .set(ctx.tracker.following() as i64);
    Ok(Applied {
        status,
        events,
        requeue,
    })
}

/// The JSON pointer (RFC 6901) of an annotation: `~` and `/` escaped.
fn annotation_path(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// Adds `finalizer` as kube-runtime's finalizer helper does: guarded by a
/// test of what was seen, so a concurrent change is not lost.
pub(crate) fn add_finalizer(existing: &[String], finalizer: &str) -> serde_json::Value {
    if existing.is_empty() {
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]}])
    } else {
        json!([{"op": "test", "path": "/metadata/finalizers", "value": existing},
               {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer}])
    }
}

/// Removes the finalizer at `index`, if it is still `finalizer` there.
pub(crate) fn remove_finalizer(index: usize, finalizer: &str) -> serde_json::Value {
    let path = format!("/metadata/finalizers/{index}");
    json!([{"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}])
}

/// Tells an Event on `object` (`Warning` or `Normal`); a failure to tell is
/// logged, never an error of the reconcile.
pub(crate) async fn tell_event(
    recorder: &kube::runtime::events::Recorder,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: String,
    note: String,
    action: &str,
) {
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason,
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// Writes a status whole, by server-side apply with the controller's field
/// manager: a field the new status leaves out is removed (a merge patch
/// would keep it).
pub(crate) async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> kube::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(paysaga_api::names::CONTROLLER_FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map(drop)
}

pub(crate) async fn json_patch<K>(
    api: &Api<K>,
    name: &str,
    patch: serde_json::Value,
) -> kube::Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map(drop)
}

/// How long ago the API accepted the payment (its millisecond stamp), if it did.
fn accepted_to_now(p: &Payment) -> Option<Duration> {
    let at: Timestamp = p.annotations().get(ACCEPTED_AT_ANNOTATION)?.parse().ok()?;
    let ms = Timestamp::now().as_millisecond() - at.as_millisecond();
    u64::try_from(ms).ok().map(Duration::from_millis)
}

//! Refund objects drive refund workflows, as Payments drive payment sagas:
//! observe (the Refund, its Payment, its workflow) → [`plan`] (pure) → act
//! (finalizers, owner, the hold on the Payment, start, the Payment's
//! `refundedAmount`, TTL) → status and Events. A running refund's workflow is
//! awaited by a long poll that wakes its Refund when it closes.

pub mod plan;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use paysaga_api::names::{PAYMENT_LABEL, REFUND_FINALIZER};
use paysaga_api::refund::{payment_hold_finalizer, refund_workflow_id};
use paysaga_api::{Payment, Refund};
use serde_json::json;
use tokio::sync::mpsc;

use super::act::{add_finalizer, apply_status, json_patch, remove_finalizer, tell_event};
use crate::temporal::{PaymentWorkflows, Started, TemporalError};
use plan::{Plan, Seen, Step, plan};

/// What can go wrong in a refund's reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read payment {name}: {source}")]
    ReadPayment {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to observe the refund's workflow: {0}")]
    Observe(#[source] TemporalError),
    #[error("failed to start the refund's workflow: {0}")]
    Start(#[source] TemporalError),
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

/// What every refund reconcile shares.
pub struct Context {
    client: Client,
    workflows: PaymentWorkflows,
    recorder: Recorder,
    task_queue: String,
    ttl: Option<Duration>,
    /// Workflows a long poll awaits now.
    awaited: Arc<Mutex<HashSet<String>>>,
    wake: mpsc::UnboundedSender<ObjectRef<Refund>>,
}

/// Runs the refund controller until the task is dropped.
pub async fn run(
    client: Client,
    temporal: temporalio_client::Client,
    task_queue: String,
    ttl: Option<Duration>,
) {
    let (wake, woken) = mpsc::unbounded_channel();
    let reporter = Reporter {
        controller: "paysaga-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        workflows: PaymentWorkflows::new(temporal),
        client: client.clone(),
        task_queue,
        ttl,
        awaited: Arc::default(),
        wake,
    });
    let triggers =
        futures::stream::unfold(
            woken,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    let refunds: Api<Refund> = Api::all(client);
    // The controller's own status writes do not wake it (status is not in
    // the filter); the workflow's end does, through the long poll.
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = kube::runtime::reflector(writer, watcher(refunds, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .predicate_filter(relevant_change, Default::default());
    Controller::for_stream(objects, reader)
        .reconcile_on(triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "refund reconcile failed");
            }
        })
        .await;
}

fn relevant_change(r: &Refund) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = r.meta();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.owner_references
        .iter()
        .flatten()
        .for_each(|o| o.uid.hash(&mut h));
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .hash(&mut h);
    Some(h.finish())
}

#[tracing::instrument(skip_all, fields(
    refund = %refund.name_any(),
    namespace = refund.namespace().unwrap_or_default(),
    payment = %refund.spec.payment_name,
))]
async fn reconcile(refund: Arc<Refund>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = refund.namespace().unwrap_or_default();
    let payments: Api<Payment> = Api::namespaced(ctx.client.clone(), &ns);
    let name = &refund.spec.payment_name;
    let payment = payments
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadPayment {
            name: name.clone(),
            source,
        })?;
    let id = refund_workflow_id(&refund.metadata);
    let finished = refund.status.as_ref().and_then(|s| s.finished()).is_some();
    let run = if finished {
        None
    } else {
        Some(
            ctx.workflows
                .observe_refund(&id)
                .await
                .map_err(Error::Observe)?,
        )
    };
    let seen = Seen {
        refund: &refund,
        payment: payment.as_ref(),
        run: run.as_ref(),
        now: Timestamp::now(),
        ttl: ctx.ttl,
    };
    let plan = plan(&seen);
    act(&refund, payment.as_ref(), &id, plan, &ctx).await
}

fn error_policy(refund: Arc<Refund>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(refund = %refund.name_any(), error = %error, "refund reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

async fn act(
    refund: &Refund,
    payment: Option<&Payment>,
    id: &str,
    plan: Plan,
    ctx: &Context,
) -> Result<Action, Error> {
    let ns = refund.namespace().unwrap_or_default();
    let name = refund.name_any();
    let refunds: Api<Refund> = Api::namespaced(ctx.client.clone(), &ns);
    let payments: Api<Payment> = Api::namespaced(ctx.client.clone(), &ns);
    let hold = payment_hold_finalizer(&refund.uid().unwrap_or_default());
    for step in plan.steps {
        match step {
            Step::AddFinalizer => {
                let patch = add_finalizer(refund.finalizers(), REFUND_FINALIZER);
                json_patch(&refunds, &name, patch)
                    .await
                    .map_err(kube_err("add the refund's finalizer"))?;
            }
            Step::Adopt => {
                let p = payment.expect("adopting needs the payment");
                let mut owners: Vec<_> = refund.owner_references().to_vec();
                if let Some(owner) = p.controller_owner_ref(&()) {
                    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        controller: None,
                        block_owner_deletion: None,
                        ..owner
                    };
                    if !owners.iter().any(|o| o.uid == owner.uid) {
                        owners.push(owner);
                    }
                }
                let patch = json!({"metadata": {
                    "ownerReferences": owners,
                    "labels": {PAYMENT_LABEL: refund.spec.payment_name},
                }});
                refunds
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_err("set the refund's owner"))?;
            }
            Step::Hold => {
                let p = payment.expect("holding needs the payment");
                let patch = add_finalizer(p.finalizers(), &hold);
                json_patch(&payments, &p.name_any(), patch)
                    .await
                    .map_err(kube_err("hold the payment for the refund"))?;
            }
            Step::Start(input) => {
                match ctx
                    .workflows
                    .start_refund(&input, &ctx.task_queue)
                    .await
                    .map_err(Error::Start)?
                {
                    Started::New { run_id } => {
                        tracing::info!(workflow_id = %id, %run_id, "refund workflow started")
                    }
                    Started::Existing => {
                        tracing::debug!(workflow_id = %id, "refund workflow started before")
                    }
                }
            }
            Step::Await => await_close(ctx, id, ObjectRef::from_obj(refund)),
            Step::Release => {
                if let Some(p) = payment
                    && let Some(index) = p.finalizers().iter().position(|f| f == &hold)
                {
                    json_patch(&payments, &p.name_any(), remove_finalizer(index, &hold))
                        .await
                        .map_err(kube_err("release the payment"))?;
                }
            }
            Step::RaiseRefunded(total) => {
                let p = payment.expect("raising needs the payment");
                // Guarded by the version read: two refunds ending at once
                // never set it back (a conflict is retried on a fresh read).
                let patch = json!({
                    "metadata": {"resourceVersion": p.resource_version()},
                    "status": {"refundedAmount": total},
                });
                payments
                    .patch_status(
                        &p.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(kube_err("raise the payment's refunded amount"))?;
            }
            Step::RemoveFinalizer => {
                if let Some(index) = refund
                    .finalizers()
                    .iter()
                    .position(|f| f == REFUND_FINALIZER)
                {
                    json_patch(&refunds, &name, remove_finalizer(index, REFUND_FINALIZER))
                        .await
                        .map_err(kube_err("remove the refund's finalizer"))?;
                }
            }
            Step::Expire => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: refund.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match refunds.delete(&name, &params).await {
                    Ok(_) => tracing::info!("finished refund deleted after its TTL"),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(kube_err("delete an expired refund")(e)),
                }
            }
        }
    }
    if let Some(status) = plan.status {
        apply_status(&refunds, &name, &status)
            .await
            .map_err(kube_err("write the refund's status"))?;
    }
    let reference = refund.object_ref(&());
    for e in plan.events {
        tell_event(
            &ctx.recorder,
            &reference,
            e.warning,
            e.reason,
            e.note,
            "Refund",
        )
        .await;
    }
    Ok(match plan.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Long-polls the workflow until it closes, then wakes the refund; once per
/// workflow, however often the refund is reconciled meanwhile.
fn await_close(ctx: &Context, id: &str, refund: ObjectRef<Refund>) {
    if !ctx
        .awaited
        .lock()
        .expect("awaited lock")
        .insert(id.to_string())
    {
        return;
    }
    let workflows = ctx.workflows.clone();
    let wake = ctx.wake.clone();
    let id = id.to_string();
    let awaited = ctx.awaited.clone();
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        while let Err(e) = workflows.closed(&id).await {
            tracing::debug!(workflow_id = %id, error = %e, "waiting for the refund's workflow; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
        awaited.lock().expect("awaited lock").remove(&id);
        let _ = wake.send(refund);
    });
}

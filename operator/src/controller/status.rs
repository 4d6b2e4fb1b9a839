//! The last step: at most one status write — the whole status by
//! server-side apply with the controller's field manager — then the planned
//! Events.

use std::time::SystemTime;

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use paysaga_api::Payment;
use paysaga_api::names::CONTROLLER_FIELD_MANAGER;

use super::Context;
use super::act::Applied;
use super::observe::Observed;
use super::plan::pace::Change;
use super::plan::{Requeue, StatusWrite};
use super::reconcile::Error;

/// Writes what `applied` says, tells its Events, and says when to come back.
pub async fn write_status(
    applied: Applied,
    observed: &Observed,
    ctx: &Context,
) -> Result<Requeue, Error> {
    let (status, events, requeue) = applied.into_parts();
    match status {
        None => {}
        Some(StatusWrite::Unchanged) => ctx.metrics.status_patch("unchanged"),
        Some(StatusWrite::Paced(_)) => ctx.metrics.status_patch("paced"),
        Some(StatusWrite::Now {
            status,
            change,
            shows,
        }) => {
            let key = &observed.key;
            let api: Api<Payment> = Api::namespaced(
                ctx.client.clone(),
                key.namespace.as_deref().unwrap_or_default(),
            );
            // `refundedAmount` is the refunds' to write (only ever up): never
            // applied from here, where it could be older than a refund's.
            let status = paysaga_api::PaymentStatus {
                refunded_amount: None,
                ..*status
            };
            let body = serde_json::json!({
                "apiVersion": Payment::api_version(&()),
                "kind": Payment::kind(&()),
                "status": status,
            });
            let written = api
                .patch_status(
                    &key.name,
                    &PatchParams::apply(CONTROLLER_FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await;
            ctx.metrics.status_patch(match (&written, change) {
                (Err(_), _) => "error",
                (Ok(_), Change::Step) => "applied_step",
                (Ok(_), Change::Phase) => "applied",
            });
            written.map_err(Error::WriteStatus)?;
            ctx.tracker.written(&observed.id, change, shows);
            // Each kind of change, from when it happened to now that it shows.
            let now = SystemTime::now();
            for (kind, at) in [
                (Change::Step, shows.progress),
                (Change::Phase, shows.closed),
            ] {
                if let Some(latency) = at.and_then(|at| now.duration_since(at).ok()) {
                    ctx.metrics.status_latency(kind, latency);
                }
            }
        }
    }
    for e in events {
        let type_ = match e.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        ctx.metrics.event(type_, e.reason);
        let event = KubeEvent {
            type_: e.type_,
            reason: e.reason.to_string(),
            note: Some(e.note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &observed.reference).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
    Ok(requeue)
}

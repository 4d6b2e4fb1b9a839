//! What a Refund needs, from what was seen of it, its Payment and its
//! workflow. Pure: no client, no clock but the one given.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use paysaga_api::names::REFUND_FINALIZER;
use paysaga_api::refund::{payment_hold_finalizer, refund_workflow_id};
use paysaga_api::saga::{RefundInput, RefundOutcome, refund_reasons};
use paysaga_api::{Payment, Phase, Refund, RefundPhase, RefundStatus};

use crate::controller::plan::time::{system_to_time, to_time};
use crate::temporal::RefundRun;

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The refund's own finalizer: it is not let go while money may move.
    AddFinalizer,
    /// Owner reference to the Payment (deleting it deletes its refunds) and
    /// the label naming it.
    Adopt,
    /// The refund's hold on its Payment: deleting the Payment waits for it.
    Hold,
    Start(Box<RefundInput>),
    /// Wake when the workflow closes.
    Await,
    /// Let go of the hold on the Payment.
    Release,
    /// The Payment's `refundedAmount` up to this (never down).
    RaiseRefunded(i64),
    RemoveFinalizer,
    /// The TTL after the end ran out.
    Expire,
}

/// An Event to tell on the Refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The status to write, when it differs from the object's.
    pub status: Option<RefundStatus>,
    pub events: Vec<Event>,
    /// Come back after this even if nothing wakes the refund.
    pub requeue: Option<Duration>,
}

/// What was seen.
pub struct Seen<'a> {
    pub refund: &'a Refund,
    /// `None`: no such Payment.
    pub payment: Option<&'a Payment>,
    /// The workflow, when asked (not once the refund has finished).
    pub run: Option<&'a RefundRun>,
    pub now: Timestamp,
    /// Finished refunds are deleted this long after they ended.
    pub ttl: Option<Duration>,
}

/// While a refund runs, a look now and then even if no wake-up comes.
pub const SAFETY_NET: Duration = Duration::from_secs(300);

pub const READY: &str = "Ready";

pub fn plan(seen: &Seen) -> Plan {
    let refund = seen.refund;
    let current = refund.status.clone().unwrap_or_default();
    let deleting = refund.metadata.deletion_timestamp.is_some();
    let has_finalizer = refund.finalizers().iter().any(|f| f == REFUND_FINALIZER);
    let mut plan = Plan::default();

    // The Payment's currency, on every status written: a status written
    // from a stale read of the refund (status not yet seen) is applied whole,
    // and a field it left out would be taken away.
    let currency = seen
        .payment
        .map(|p| p.spec.currency.clone())
        .or_else(|| current.currency.clone());
    if current.finished().is_some() {
        finish(seen, &current, &mut plan);
        // One written before this fix lacks it: mended, unless it is going.
        if currency != current.currency && !deleting && !plan.steps.contains(&Step::Expire) {
            plan.status = Some(RefundStatus {
                currency,
                ..current
            });
        }
        return plan;
    }
    let mut status = RefundStatus {
        workflow_id: Some(refund_workflow_id(&refund.metadata)),
        observed_generation: refund.metadata.generation,
        currency,
        ..current.clone()
    };
    match seen.run {
        Some(RefundRun::Closed {
            started_at,
            closed_at,
            status: wf_status,
            outcome,
        }) => {
            status.started_at = started_at.and_then(system_to_time).or(status.started_at);
            status.completed_at = closed_at
                .and_then(system_to_time)
                .or_else(|| Some(to_time(seen.now)));
            let outcome = outcome.clone().unwrap_or_else(|| RefundOutcome {
                phase: RefundPhase::Failed,
                reason: refund_reasons::WORKFLOW_ENDED.to_string(),
                message: format!(
                    "the refund's workflow ended {wf_status:?} without an outcome; check the ledger audit"
                ),
                gateway_refund_id: None,
                payment_refunded_amount: None,
            });
            status.phase = Some(outcome.phase);
            status.reason = Some(outcome.reason.clone());
            status.message = Some(outcome.message.clone());
            status.gateway_refund_id = outcome.gateway_refund_id.clone();
            status.payment_refunded_amount = outcome.payment_refunded_amount;
            plan.events.push(end_event(&status));
            set_ready(&mut status, seen.now);
            finish(seen, &status, &mut plan);
        }
        Some(RefundRun::Running { started_at }) => {
            status.phase = Some(RefundPhase::Processing);
            status.started_at = started_at.and_then(system_to_time).or(status.started_at);
            status.message = Some(if deleting {
                "refunding; the deletion waits for the refund to end".to_string()
            } else {
                "refunding".to_string()
            });
            set_ready(&mut status, seen.now);
            plan.steps.push(Step::Await);
            plan.requeue = Some(SAFETY_NET);
        }
        Some(RefundRun::Absent) | None if deleting => {
            // Never started: nothing moved, nothing to wait for.
            release(seen, &mut plan);
            if has_finalizer {
                plan.steps.push(Step::RemoveFinalizer);
            }
            return plan;
        }
        Some(RefundRun::Absent) | None => {
            if !has_finalizer {
                plan.steps.push(Step::AddFinalizer);
            }
            match refusal(seen) {
                Some((reason, message)) => {
                    status.phase = Some(RefundPhase::Failed);
                    status.reason = Some(reason.to_string());
                    status.message = Some(message);
                    status.completed_at = Some(to_time(seen.now));
                    plan.events.push(end_event(&status));
                    set_ready(&mut status, seen.now);
                    finish(seen, &status, &mut plan);
                }
                None => {
                    let payment = seen.payment.expect("refusal() refuses a missing payment");
                    if !adopted(refund, payment) {
                        plan.steps.push(Step::Adopt);
                    }
                    if !holds(refund, payment) {
                        plan.steps.push(Step::Hold);
                    }
                    plan.steps
                        .push(Step::Start(Box::new(input(refund, payment))));
                    plan.steps.push(Step::Await);
                    status.phase = Some(RefundPhase::Processing);
                    status.message = Some("refunding".to_string());
                    status.reason = None;
                    set_ready(&mut status, seen.now);
                    plan.events.push(Event {
                        warning: false,
                        reason: "Started".into(),
                        note: format!(
                            "refunding {} of payment {}",
                            refund.spec.amount, refund.spec.payment_name
                        ),
                    });
                    plan.requeue = Some(SAFETY_NET);
                }
            }
        }
    }
    if status != current {
        plan.status = Some(status);
    }
    plan
}

/// Why a refund cannot start, judged on its Payment. (The ledger judges
/// again, under a lock: this only spares a workflow that could not succeed.)
fn refusal(seen: &Seen) -> Option<(&'static str, String)> {
    let name = &seen.refund.spec.payment_name;
    let Some(payment) = seen.payment else {
        return Some((
            refund_reasons::PAYMENT_NOT_FOUND,
            format!("no payment {name} in this namespace; nothing refunded"),
        ));
    };
    if payment.metadata.deletion_timestamp.is_some() {
        return Some((
            refund_reasons::PAYMENT_DELETED,
            format!("payment {name} is being deleted; nothing refunded"),
        ));
    }
    let status = payment.status.clone().unwrap_or_default();
    match (status.phase, &status.charge_id) {
        (Some(Phase::Succeeded), Some(_)) => None,
        (Some(Phase::Succeeded), None) => Some((
            refund_reasons::PAYMENT_NOT_SUCCEEDED,
            format!("payment {name} records no gateway charge; nothing refunded"),
        )),
        (phase, _) => Some((
            refund_reasons::PAYMENT_NOT_SUCCEEDED,
            format!(
                "payment {name} has not succeeded ({}); only a succeeded payment can be refunded, nothing refunded",
                phase.map_or("Pending".to_string(), |p| format!("{p:?}"))
            ),
        )),
    }
}

/// The workflow's input, from the Refund and its Payment.
fn input(refund: &Refund, payment: &Payment) -> RefundInput {
    let status = payment.status.clone().unwrap_or_default();
    RefundInput {
        refund_id: refund_workflow_id(&refund.metadata),
        payment_id: paysaga_api::names::workflow_id(&payment.metadata),
        user_id: payment.spec.user_id.clone(),
        amount: refund.spec.amount,
        currency: payment.spec.currency.clone(),
        charge_id: status.charge_id.unwrap_or_default(),
        reason: refund.spec.reason,
        description: refund.spec.description.clone(),
        notify: payment.spec.notify.clone(),
        object: Some(paysaga_api::saga::ObjectName {
            namespace: refund.metadata.namespace.clone().unwrap_or_default(),
            name: refund.metadata.name.clone().unwrap_or_default(),
        }),
        request_id: refund
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(paysaga_api::names::REQUEST_ID_LABEL))
            .cloned(),
    }
}

/// A finished refund: let its Payment go, raise the Payment's refunded
/// amount, let the refund go when deleted, expire it after the TTL.
fn finish(seen: &Seen, status: &RefundStatus, plan: &mut Plan) {
    // Raised first: it is guarded by the Payment's version as read, which
    // letting the hold go would change.
    if let (Some(payment), Some(total)) = (seen.payment, status.payment_refunded_amount) {
        let shown = payment
            .status
            .as_ref()
            .and_then(|s| s.refunded_amount)
            .unwrap_or(0);
        if status.phase == Some(RefundPhase::Succeeded) && shown < total {
            plan.steps.push(Step::RaiseRefunded(total));
        }
    }
    release(seen, plan);
    let refund = seen.refund;
    if refund.metadata.deletion_timestamp.is_some() {
        if refund.finalizers().iter().any(|f| f == REFUND_FINALIZER) {
            plan.steps.push(Step::RemoveFinalizer);
        }
        return;
    }
    if let (Some(ttl), Some(ended)) = (seen.ttl, &status.completed_at) {
        let expires = ended.0 + ttl;
        match expires.duration_since(seen.now).as_secs_f64() {
            left if left <= 0.0 => plan.steps.push(Step::Expire),
            left => plan.requeue = Some(Duration::from_secs_f64(left).max(Duration::from_secs(1))),
        }
    }
}

fn release(seen: &Seen, plan: &mut Plan) {
    if seen.payment.is_some_and(|p| holds(seen.refund, p)) {
        plan.steps.push(Step::Release);
    }
}

/// Whether the Payment holds this refund's finalizer.
fn holds(refund: &Refund, payment: &Payment) -> bool {
    let hold = payment_hold_finalizer(&refund.uid().unwrap_or_default());
    payment.finalizers().contains(&hold)
}

/// Whether the refund names its Payment as owner, and by label.
fn adopted(refund: &Refund, payment: &Payment) -> bool {
    let owned = refund
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == payment.metadata.uid.as_ref());
    let labelled = refund
        .labels()
        .get(paysaga_api::names::PAYMENT_LABEL)
        .is_some_and(|l| l == &refund.spec.payment_name);
    owned && labelled
}

fn end_event(status: &RefundStatus) -> Event {
    Event {
        warning: status.phase != Some(RefundPhase::Succeeded),
        reason: status.reason.clone().unwrap_or_default(),
        note: status.message.clone().unwrap_or_default(),
    }
}

/// `Ready`: True once refunded; False while refunding or once failed. Its
/// time moves only when its status or reason does.
fn set_ready(status: &mut RefundStatus, now: Timestamp) {
    let (value, reason) = match status.phase {
        Some(RefundPhase::Succeeded) => ("True", refund_reasons::REFUNDED.to_string()),
        Some(RefundPhase::Failed) => ("False", status.reason.clone().unwrap_or_default()),
        _ => ("False", "Refunding".to_string()),
    };
    let message = status.message.clone().unwrap_or_default();
    let same = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .is_some_and(|c| c.status == value && c.reason == reason);
    let time = match status.conditions.iter().find(|c| c.type_ == READY) {
        Some(c) if same => c.last_transition_time.clone(),
        _ => to_time(now),
    };
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.push(Condition {
        type_: READY.to_string(),
        status: value.to_string(),
        reason,
        message,
        last_transition_time: time,
        observed_generation: None,
    });
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

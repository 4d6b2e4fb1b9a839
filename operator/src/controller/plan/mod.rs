//! The reconciler's pure middle (no client required): from what was
//! observed ([`Observed`]), the plan — the actions to take, the status to
//! write, the Events to publish and when to come back. Every branch of a
//! reconcile is decided here, and is a row of the table in the tests below.
//!
//! - [`desired`]: the status the object should have;
//! - [`conditions`] and [`events`]: what it says, and what is told;
//! - [`pace`]: when a status is written;
//! - [`time`]: times as status holds them, and the TTL;
//! - [`input`]: the workflow's input.

pub mod conditions;
pub mod desired;
pub mod events;
pub mod input;
pub mod pace;
pub mod reasons;
pub mod time;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use paysaga_api::idempotency::{self, DeletedPayment, IdempotencyKeySpec};
use paysaga_api::names::{
    CANCEL_ANNOTATION, EXPEDITE_ANNOTATION, FINALIZER, IDEMPOTENCY_ANNOTATION, REVIEW_ANNOTATION,
    REVIEW_BY_ANNOTATION, REVIEW_REASON_ANNOTATION,
};
use paysaga_api::saga::{ExpediteRequest, PaymentInput, ReviewDecision};
use paysaga_api::{Payment, PaymentStatus};

use super::observe::{Facts, Object, Observed};
use super::tracker::{Pacing, Pending};
use crate::temporal::Observation;
use events::Event;
use pace::{Change, Write, pace};

/// Settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub payments_task_queue: String,
    pub fraud_task_queue: String,
    pub confirmation_timeout_secs: u64,
    /// Finished Payments are deleted this long after they completed (their
    /// history stays in Temporal); `None` keeps them.
    pub finished_ttl: Option<Duration>,
    /// A payment's status is written at most this often for step progress
    /// alone; everything else (start, phase, outcome, cancel) at once.
    pub status_step_interval: Duration,
    /// When and how a stuck payment goes to a person (into its workflow's input).
    pub escalation: paysaga_api::saga::Escalation,
    /// How long the Idempotency-Key of a deleted Payment is remembered.
    pub idempotency_retention: Duration,
    /// How often the expired records of Idempotency-Keys are swept.
    pub idempotency_sweep: Duration,
    /// The namespaces RecurringPayments may fire in (where the worker may
    /// create Payments); empty: every namespace.
    pub recurring_namespaces: Vec<String>,
}

/// A running payment is looked at again after this long even when nothing
/// woke it: its progress arrives through its history, this is a safety net.
pub const SAFETY_NET: Duration = Duration::from_secs(300);
/// A payment deleted in flight is looked at again after this long while it
/// compensates (its workflow's close wakes it first).
pub const COMPENSATING: Duration = Duration::from_secs(10);

/// Something to do, in the order planned.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hold the payment with the finalizer (it had these finalizers).
    AddFinalizer { existing: Vec<String> },
    /// Let the object go: remove the finalizer, found at this index.
    ReleaseFinalizer { index: usize },
    /// Start the workflow with this input.
    Start(Box<PaymentInput>),
    /// Signal `cancel` with this reason.
    SignalCancel { reason: String },
    /// Signal a reviewer's decision.
    SignalReview(ReviewDecision),
    /// Signal `expedite`.
    SignalExpedite(ExpediteRequest),
    /// Set an annotation back from `from` to `to` (guarded: a value changed
    /// meanwhile fails the patch and is looked at again).
    RestoreAnnotation {
        key: String,
        from: String,
        to: String,
    },
    /// Remove the annotations of a request answered (key, the value answered):
    /// a review decision or an expedite is asked once.
    ConsumeAnnotations(Vec<(String, String)>),
    /// Follow the workflow's history: its changes wake the payment.
    Follow,
    /// Drop all runtime state of the payment (and stop following it).
    Forget,
    /// Delete the finished payment: its TTL has run out.
    DeleteExpired,
    /// Remember the Idempotency-Key of a Payment about to go: a retry of the
    /// request that made it is answered from this record, never paid again.
    KeepIdempotencyKey(Box<IdempotencyKeySpec>),
}

/// The status write planned.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusWrite {
    /// The status already says it all.
    Unchanged,
    /// Step progress only, written recently: come back after this long.
    Paced(Duration),
    /// Write this status now. `shows`: the workflow's changes it shows (for
    /// their latency).
    Now {
        status: Box<PaymentStatus>,
        change: Change,
        shows: Pending,
    },
}

/// When to reconcile the payment again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// When it changes (or its workflow wakes it).
    AwaitChange,
    After(Duration),
    /// The reconcile failed (Temporal could not be asked): back off.
    Backoff,
}

/// What a reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// `None`: nothing is said of the status (nothing to decide it from).
    pub status: Option<StatusWrite>,
    /// Published after the status is written.
    pub events: Vec<Event>,
    pub requeue: Requeue,
}

impl Plan {
    fn only(actions: Vec<Action>, requeue: Requeue) -> Plan {
        Plan {
            actions,
            status: None,
            events: Vec::new(),
            requeue,
        }
    }
}

/// Plans a reconcile. Pure: the same observation gives the same plan.
pub fn plan(observed: &Observed, settings: &Settings) -> Plan {
    let now = observed.now;
    match &observed.object {
        Object::Ended(at) => match time::ttl_left(*at, settings.finished_ttl, now) {
            Some(left) if !left.is_zero() => Plan::only(vec![Action::Forget], Requeue::After(left)),
            _ => Plan::only(vec![Action::Forget], Requeue::AwaitChange),
        },
        Object::Gone => Plan::only(vec![Action::Forget], Requeue::AwaitChange),
        Object::Invalid(why) => Plan {
            events: vec![Event::warning(
                reasons::INVALID_OBJECT,
                format!("this Payment cannot be read by the controller: {why}"),
            )],
            ..Plan::only(Vec::new(), Requeue::AwaitChange)
        },
        Object::Payment(facts) => {
            let Facts {
                payment: p,
                workflow,
                pacing,
                pending,
            } = facts.as_ref();
            let held = p.finalizers().iter().position(|f| f == FINALIZER);
            let deleting = p.metadata.deletion_timestamp.is_some();
            match (held, deleting) {
                (None, false) => Plan::only(
                    vec![Action::AddFinalizer {
                        existing: p.finalizers().to_vec(),
                    }],
                    Requeue::AwaitChange,
                ),
                (None, true) => Plan::only(Vec::new(), Requeue::AwaitChange),
                (Some(index), true) => match workflow {
                    Ok(wf) => release(p, wf, index, now, settings),
                    Err(_) => Plan::only(Vec::new(), Requeue::Backoff),
                },
                (Some(_), false) => match workflow {
                    Ok(wf) => run(p, wf, *pacing, *pending, now, settings),
                    Err(e) => unreachable(p, &e.to_string(), now),
                },
            }
        }
    }
}

/// A payment being deleted: an in-flight one is cancelled (once) and held
/// until its compensations are done; a finished one goes at once, its
/// Idempotency-Key (if it was made with one) remembered first.
fn release(
    p: &Payment,
    wf: &Observation,
    index: usize,
    now: Timestamp,
    settings: &Settings,
) -> Plan {
    match wf {
        Observation::Running { .. } => {
            let mut plan = Plan::only(Vec::new(), Requeue::After(COMPENSATING));
            let current = p.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
            if !conditions::has(current, conditions::CANCEL_REQUESTED, None) {
                plan.actions.push(Action::SignalCancel {
                    reason: "the Payment object was deleted".into(),
                });
                plan.events.push(Event::normal(
                    reasons::CANCEL_REQUESTED,
                    "deleted while in flight: cancelling",
                ));
            }
            plan.actions.push(Action::Follow);
            plan
        }
        Observation::Absent | Observation::Closed { .. } | Observation::Recorded => {
            let mut actions = vec![Action::Forget];
            if let Some(kept) = kept_key(p, wf, now, settings) {
                actions.push(Action::KeepIdempotencyKey(Box::new(kept)));
            }
            actions.push(Action::ReleaseFinalizer { index });
            Plan::only(actions, Requeue::AwaitChange)
        }
    }
}

/// The record of a deleted Payment's Idempotency-Key: how it ended (its
/// workflow's outcome, else what its status says).
fn kept_key(
    p: &Payment,
    wf: &Observation,
    now: Timestamp,
    settings: &Settings,
) -> Option<IdempotencyKeySpec> {
    let key_sha256 = p.annotations().get(IDEMPOTENCY_ANNOTATION)?.clone();
    let status = p.status.clone().unwrap_or_default();
    let outcome = match wf {
        Observation::Closed {
            outcome: Some(o), ..
        } => Some(o),
        _ => None,
    };
    let payment = DeletedPayment {
        uid: p.metadata.uid.clone().unwrap_or_default(),
        phase: outcome.map_or(status.phase.unwrap_or(paysaga_api::Phase::Pending), |o| {
            o.phase
        }),
        reason: outcome.map(|o| o.reason.clone()).or(status.reason),
        message: outcome.map(|o| o.message.clone()).or(status.message),
        created_at: p.metadata.creation_timestamp.clone(),
        completed_at: status.completed_at,
    };
    let expires = now
        .checked_add(settings.idempotency_retention)
        .unwrap_or(now);
    Some(IdempotencyKeySpec {
        user_id: p.spec.user_id.clone(),
        key_sha256,
        request_sha256: idempotency::request_sha256(&p.spec),
        payment,
        deleted_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        expires_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(expires),
    })
}

/// Temporal cannot be reached: say so on the Payment, and back off.
fn unreachable(p: &Payment, error: &str, now: Timestamp) -> Plan {
    let status = desired::unreachable(p, error, now);
    let write = if p.status.as_ref() == Some(&status) {
        StatusWrite::Unchanged
    } else {
        StatusWrite::Now {
            status: Box::new(status),
            change: Change::Phase,
            shows: Pending::default(),
        }
    };
    Plan {
        status: Some(write),
        ..Plan::only(Vec::new(), Requeue::Backoff)
    }
}

/// A payment and its workflow: start it, signal a cancel, write what it
/// shows, then follow it, or — finished — forget it and mind its TTL.
fn run(
    p: &Payment,
    wf: &Observation,
    pacing: Pacing,
    pending: Pending,
    now: Timestamp,
    settings: &Settings,
) -> Plan {
    let current = p.status.clone().unwrap_or_default();
    let mut status = desired::from_workflow(p, wf);
    desired::confirmations_ignored(&mut status, wf, p.metadata.generation, now);
    let mut plan = Plan::only(Vec::new(), Requeue::AwaitChange);
    let start = matches!(wf, Observation::Absent);
    if start {
        plan.actions
            .push(Action::Start(Box::new(input::workflow_input(p, settings))));
    } else if let Some(reason) = desired::cancel_asked(p) {
        // Not started yet: signalled by the reconcile that sees it run.
        desired::answer_cancel(&mut status, reason.clone(), p.metadata.generation, now);
        if status.finished().is_none() {
            plan.events.push(Event::normal(
                reasons::CANCEL_REQUESTED,
                format!("cancel requested: {reason}"),
            ));
            plan.actions.push(Action::SignalCancel { reason });
        }
    } else if let Some((first, asked)) = desired::cancel_changed(p) {
        plan.events.push(Event::warning(
            reasons::CANCEL_ALREADY_REQUESTED,
            format!("the payment is already being cancelled ({first}); the new reason ({asked}) is not passed on and the annotation is set back"),
        ));
        plan.actions.push(Action::RestoreAnnotation {
            key: CANCEL_ANNOTATION.to_string(),
            from: asked,
            to: first,
        });
    }
    if desired::too_late(&status) && !desired::too_late(&current) {
        plan.events.push(Event::warning(
            reasons::TOO_LATE_TO_CANCEL,
            "the payment had already finished; nothing changed",
        ));
    }
    if !start {
        review(p, &mut status, &mut plan, now);
        expedite(p, &mut status, &mut plan, now);
    }

    // A start changes the phase: written at once, whatever the pace.
    let write = if start {
        Write::Now(Change::Phase)
    } else {
        pace(&current, &status, pacing, settings.status_step_interval)
    };
    let (mut then, requeue) = afterwards(&status, write, now, settings);
    plan.status = Some(status_write(
        &current,
        status,
        write,
        pending,
        &mut plan.events,
    ));
    plan.actions.append(&mut then);
    plan.requeue = requeue;
    plan
}

/// A review decision asked for (the annotations): passed on to the
/// workflow, or refused (and said why); either way the request is consumed.
fn review(p: &Payment, status: &mut PaymentStatus, plan: &mut Plan, now: Timestamp) {
    let type_ = conditions::REVIEW_REQUESTED;
    let answer = match desired::review_asked(p, status) {
        desired::ReviewAsk::Nothing => return,
        desired::ReviewAsk::Submit(decision) => {
            let note = desired::describe(&decision);
            plan.actions.push(Action::SignalReview(decision));
            desired::Answer::taken(type_, reasons::REVIEW_SUBMITTED, note)
        }
        desired::ReviewAsk::Refuse { reason, message } => {
            desired::Answer::refused(type_, reason, message)
        }
    };
    tell(p, status, plan, now, answer);
    let asked = [
        REVIEW_ANNOTATION,
        REVIEW_REASON_ANNOTATION,
        REVIEW_BY_ANNOTATION,
    ];
    plan.actions
        .push(Action::ConsumeAnnotations(desired::present(p, &asked)));
}

/// An expedite asked for (the annotation): passed on to the workflow, or
/// too late; either way the request is consumed.
fn expedite(p: &Payment, status: &mut PaymentStatus, plan: &mut Plan, now: Timestamp) {
    let Some(req) = desired::expedite_asked(p) else {
        return;
    };
    let type_ = conditions::EXPEDITE_REQUESTED;
    let answer = match status.finished() {
        None => {
            let why = req.reason.as_deref().map(|r| format!(": {r}"));
            let note = format!("expedite asked by {}{}", req.by, why.unwrap_or_default());
            plan.actions.push(Action::SignalExpedite(req));
            desired::Answer::taken(type_, reasons::EXPEDITE_REQUESTED, note)
        }
        Some(phase) => desired::Answer::refused(
            type_,
            reasons::TOO_LATE_TO_EXPEDITE,
            format!("the payment had already finished ({phase:?}); nothing changed"),
        ),
    };
    tell(p, status, plan, now, answer);
    plan.actions
        .push(Action::ConsumeAnnotations(desired::present(
            p,
            &[EXPEDITE_ANNOTATION],
        )));
}

/// Tells the answer to a request made by annotation: in its condition, and
/// in an Event (Normal when passed on, Warning when refused).
fn tell(
    p: &Payment,
    status: &mut PaymentStatus,
    plan: &mut Plan,
    now: Timestamp,
    answer: desired::Answer,
) {
    let event = if answer.ok {
        Event::normal(answer.reason, answer.message.clone())
    } else {
        Event::warning(answer.reason, answer.message.clone())
    };
    desired::answer(status, &answer, p.metadata.generation, now);
    plan.events.push(event);
}

/// The write of `status` over `current`; written now, it tells its Events.
fn status_write(
    current: &PaymentStatus,
    status: PaymentStatus,
    write: Write,
    pending: Pending,
    events: &mut Vec<Event>,
) -> StatusWrite {
    match write {
        Write::Unchanged => StatusWrite::Unchanged,
        Write::After(wait) => StatusWrite::Paced(wait),
        Write::Now(change) => {
            events.extend(events::step_failures(
                &current.conditions,
                &status.conditions,
            ));
            events.extend(events::review_opened(current, &status));
            events.extend(events::confirmations_ignored(current, &status));
            events.extend(events::ended(current, &status));
            StatusWrite::Now {
                status: Box::new(status),
                change,
                shows: pending,
            }
        }
    }
}

/// What follows the write: a payment in flight is followed, and looked at
/// again when a paced write is due (or after the safety net); a finished
/// one, once written, is forgotten and kept until its TTL runs out.
fn afterwards(
    status: &PaymentStatus,
    write: Write,
    now: Timestamp,
    settings: &Settings,
) -> (Vec<Action>, Requeue) {
    if let Write::After(wait) = write {
        return (vec![Action::Follow], Requeue::After(wait));
    }
    if status.finished().is_none() {
        return (vec![Action::Follow], Requeue::After(SAFETY_NET));
    }
    let ended = status.completed_at.as_ref().map(|t| t.0);
    match ended.and_then(|at| time::ttl_left(at, settings.finished_ttl, now)) {
        Some(left) if left.is_zero() => (
            vec![Action::Forget, Action::DeleteExpired],
            Requeue::AwaitChange,
        ),
        Some(left) => (vec![Action::Forget], Requeue::After(left)),
        None => (vec![Action::Forget], Requeue::AwaitChange),
    }
}

#[cfg(test)]
mod tests;

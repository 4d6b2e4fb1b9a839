//! What a RecurringPayment needs, from what was seen of it, its Schedule and
//! the Payments it made. Pure: no client, no clock but the one given.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use paysaga_api::names::RECURRING_FINALIZER;
use paysaga_api::recurring::{RecurringFire, parse_duration, schedule_id};
use paysaga_api::{Payment, Phase, RecurringPayment, RecurringPaymentStatus, RecurringPhase};

use crate::controller::plan::time::{system_to_time, to_time};
use crate::schedules::{Described, Desired};

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    AddFinalizer,
    /// Create the Schedule (or find it made) and bring it to this.
    Create(Box<Desired>),
    /// Bring the Schedule to this.
    Update(Box<Desired>),
    Delete,
    /// Take the owner reference off these Payments (the object is being
    /// deleted; the Payments it made stay).
    Orphan(Vec<String>),
    RemoveFinalizer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: Option<RecurringPaymentStatus>,
    pub events: Vec<Event>,
    pub requeue: Option<Duration>,
}

/// What was seen.
pub struct Seen<'a> {
    pub object: &'a RecurringPayment,
    /// `None`: no Schedule in Temporal.
    pub schedule: Option<&'a Described>,
    /// The Payments it made that exist (labelled with it).
    pub payments: &'a [Payment],
    pub now: Timestamp,
    pub task_queue: &'a str,
    /// Where RecurringPayments may fire; empty: everywhere.
    pub namespaces: &'a [String],
}

/// The longest name a RecurringPayment may have: its Payments are named
/// `<name>-<yyyymmdd>t<hhmmss>z` and labelled with it (a label value has at
/// most 63 characters).
pub const MAX_NAME: usize = 63;

/// Default catch-up window.
pub const CATCHUP: Duration = Duration::from_secs(60);
/// At most this long between two looks at an active Schedule.
pub const REFRESH: Duration = Duration::from_secs(300);
pub const READY: &str = "Ready";

pub fn plan(seen: &Seen) -> Plan {
    let object = seen.object;
    let current = object.status.clone().unwrap_or_default();
    let has_finalizer = object.finalizers().iter().any(|f| f == RECURRING_FINALIZER);
    let uid = object.uid().unwrap_or_default();
    let mut plan = Plan::default();

    if object.metadata.deletion_timestamp.is_some() {
        if seen.schedule.is_some() {
            plan.steps.push(Step::Delete);
        }
        let owned: Vec<String> = seen
            .payments
            .iter()
            .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
            .map(|p| p.name_any())
            .collect();
        if !owned.is_empty() {
            plan.steps.push(Step::Orphan(owned));
        }
        if has_finalizer {
            plan.steps.push(Step::RemoveFinalizer);
        }
        return plan;
    }
    if !has_finalizer {
        plan.steps.push(Step::AddFinalizer);
    }

    let generation = object.metadata.generation;
    let mut status = RecurringPaymentStatus {
        schedule_id: Some(schedule_id(&object.metadata)),
        schedule: Some(object.spec.schedule.describe()),
        ..current.clone()
    };
    let refused_as_is =
        current.phase == Some(RecurringPhase::Failed) && current.observed_generation == generation;
    if !refused_as_is && let Some((reason, message)) = not_served(seen) {
        // Nothing fires for it: its Schedule (if any, from before) goes.
        if seen.schedule.is_some() {
            plan.steps.push(Step::Delete);
        }
        status.phase = Some(RecurringPhase::Failed);
        status.reason = Some(reason.to_string());
        status.message = Some(message.clone());
        status.next_runs.clear();
        status.observed_generation = generation;
        set_ready(&mut status, seen.now);
        plan.events.push(Event {
            warning: true,
            reason: reason.to_string(),
            note: message,
        });
        plan.status = Some(status);
        return plan;
    }
    match seen.schedule {
        _ if refused_as_is => {}
        None => {
            // Made before (the status names it) but gone: deleted out of
            // band. Payments made by it count on; the limit goes on from them.
            let again = current.schedule_id.is_some() && current.observed_generation.is_some();
            status.payments_made_before = current.payments_made;
            plan.steps
                .push(Step::Create(Box::new(desired(seen, current.payments_made))));
            status.observed_generation = generation;
            plan.events.push(if again {
                Event {
                    warning: true,
                    reason: "ScheduleRecreated".into(),
                    note: "the Schedule was gone from Temporal; made again".into(),
                }
            } else {
                Event {
                    warning: false,
                    reason: "ScheduleCreated".into(),
                    note: format!("Schedule {}", object.spec.schedule.describe()),
                }
            });
        }
        // The spec changed; or the Schedule is not paused as asked (made,
        // but not yet configured when the last reconcile stopped).
        Some(s) if current.observed_generation != generation || s.paused != object.spec.suspend => {
            // Counted from the Schedule as it is now, not the last status.
            let made = current.payments_made_before + s.actions;
            plan.steps.push(Step::Update(Box::new(desired(seen, made))));
            status.observed_generation = generation;
            plan.events.push(Event {
                warning: false,
                reason: "ScheduleUpdated".into(),
                note: format!(
                    "Schedule {}{}",
                    object.spec.schedule.describe(),
                    if object.spec.suspend {
                        ", suspended"
                    } else {
                        ""
                    }
                ),
            });
        }
        Some(_) => {}
    }
    tell(seen, &mut status);
    if status != current {
        plan.status = Some(status.clone());
    }
    plan.requeue = Some(match status.next_runs.first() {
        // Just after the next firing, to show it.
        Some(next) => {
            let secs = next.0.duration_since(seen.now).as_secs_f64().max(0.0);
            Duration::from_secs_f64(secs + 2.0).min(REFRESH)
        }
        None => REFRESH,
    });
    plan
}

/// The Schedule the spec asks for; `made` payments count against the limit.
pub fn desired(seen: &Seen, made: i64) -> Desired {
    let object = seen.object;
    let spec = &object.spec;
    let to_system = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        SystemTime::UNIX_EPOCH + Duration::from_millis(t.0.as_millisecond().max(0) as u64)
    };
    Desired {
        cron: spec.schedule.cron.clone(),
        every: spec.schedule.every.as_deref().and_then(parse_duration),
        time_zone: spec.schedule.time_zone.clone(),
        start: spec.start_at.as_ref().map(to_system),
        end: spec.end_at.as_ref().map(to_system),
        remaining: spec.max_payments.map(|max| (max - made).max(0)),
        paused: spec.suspend,
        overlap: spec.overlap_policy,
        catchup: spec
            .catchup_window
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(CATCHUP),
        fire: RecurringFire {
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            uid: object.uid().unwrap_or_default(),
            template: spec.template.clone(),
        },
        task_queue: seen.task_queue.to_string(),
    }
}

/// Why no Schedule may fire for it: a namespace the worker may not create
/// Payments in, or a name too long for its Payments' names and label.
fn not_served(seen: &Seen) -> Option<(&'static str, String)> {
    let ns = seen.object.namespace().unwrap_or_default();
    if !seen.namespaces.is_empty() && !seen.namespaces.contains(&ns) {
        return Some((
            "NamespaceNotServed",
            format!(
                "recurring payments fire only in {} (where the worker may create Payments); nothing is scheduled here",
                seen.namespaces.join(", ")
            ),
        ));
    }
    let name = seen.object.name_any();
    if name.len() > MAX_NAME {
        return Some((
            "NameTooLong",
            format!(
                "the name has {} characters, more than {MAX_NAME}: its Payments could not be named and labelled after it; nothing is scheduled",
                name.len()
            ),
        ));
    }
    None
}

/// The status as the Schedule and the Payments tell it.
fn tell(seen: &Seen, status: &mut RecurringPaymentStatus) {
    let object = seen.object;
    if let Some(s) = seen.schedule {
        status.payments_made = status.payments_made_before + s.actions;
        status.skipped = s.overlap_skipped;
        status.next_runs = if object.spec.suspend {
            Vec::new()
        } else {
            s.future
                .iter()
                .take(3)
                .filter_map(|t| system_to_time(*t))
                .collect()
        };
    }
    let mut names: Vec<String> = seen.payments.iter().map(|p| p.name_any()).collect();
    names.sort();
    status.last_payment = names.last().cloned().or(status.last_payment.take());
    let ended = |phases: &[Phase]| {
        seen.payments
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.finished())
                    .is_some_and(|ph| phases.contains(&ph))
            })
            .count() as i64
    };
    status.payments_succeeded = ended(&[Phase::Succeeded]);
    status.payments_failed = ended(&[Phase::Failed, Phase::Cancelled]);

    if status.phase == Some(RecurringPhase::Failed)
        && status.observed_generation == object.metadata.generation
    {
        return;
    }
    // Payments made that have not ended (the Schedule's own count of
    // running firings is refreshed only when it next fires: after the last
    // one, never).
    let running = seen
        .payments
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.finished()).is_none())
        .count();
    let limit_reached = seen.schedule.is_some_and(|s| s.remaining == Some(0))
        || object
            .spec
            .max_payments
            .is_some_and(|max| status.payments_made >= max);
    let past_end = object
        .spec
        .end_at
        .as_ref()
        .is_some_and(|end| end.0 <= seen.now);
    let (phase, reason, message) = if (limit_reached || past_end) && running == 0 {
        let why = if limit_reached {
            format!(
                "made all {} payments",
                object.spec.max_payments.unwrap_or_default()
            )
        } else {
            "past endAt".to_string()
        };
        (RecurringPhase::Completed, "Completed", why)
    } else if object.spec.suspend {
        (
            RecurringPhase::Suspended,
            "Suspended",
            "suspended (spec.suspend)".to_string(),
        )
    } else {
        (
            RecurringPhase::Active,
            "Scheduled",
            format!("firing {}", object.spec.schedule.describe()),
        )
    };
    status.phase = Some(phase);
    status.reason = Some(reason.to_string());
    status.message = Some(message);
    set_ready(status, seen.now);
}

/// `Ready`: the Schedule is in Temporal as the spec asks (False once Temporal
/// refused it). Its time moves only when its status or reason does.
pub fn set_ready(status: &mut RecurringPaymentStatus, now: Timestamp) {
    let (value, reason) = match status.phase {
        Some(RecurringPhase::Failed) => ("False", status.reason.clone().unwrap_or_default()),
        _ => ("True", "Scheduled".to_string()),
    };
    let message = status.message.clone().unwrap_or_default();
    let old = status.conditions.iter().find(|c| c.type_ == READY);
    let time = match old {
        Some(c) if c.status == value && c.reason == reason => c.last_transition_time.clone(),
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

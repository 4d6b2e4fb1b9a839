//! The status a Payment should have: what its workflow tells (its run,
//! phase, step, conditions and outcome), a cancel asked for (signalled once,
//! or too late), Temporal being unreachable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use paysaga_api::names::{CANCEL_ANNOTATION, workflow_id};
use paysaga_api::{Payment, PaymentStatus, Phase, Step};

use super::conditions::{self, FALSE, TRUE};
use super::reasons;
use super::time::{system_to_time, to_time};
use crate::temporal::Observation;

/// The status as the workflow tells it (without a cancel asked for).
pub fn from_workflow(p: &Payment, workflow: &Observation) -> PaymentStatus {
    let current = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    let mut status = PaymentStatus {
        workflow_id: Some(workflow_id(&p.metadata)),
        observed_generation: generation,
        ..current.clone()
    };
    match workflow {
        Observation::Absent => status.phase = Some(Phase::Pending),
        Observation::Recorded => {}
        Observation::Running {
            run_id,
            started_at,
            progress,
        } => {
            status.run_id = Some(run_id.clone());
            status.started_at = started_at.and_then(system_to_time).or(status.started_at);
            // A terminal phase comes only with the closed run's outcome (and
            // its completion time), never from a query of a run still closing.
            status.phase = Some(Phase::Processing);
            if let Some(pr) = progress {
                status.step = Some(pr.step);
                status.conditions =
                    conditions::from_history(&pr.history, &current.conditions, generation);
            }
        }
        Observation::Closed {
            run_id,
            started_at,
            closed_at,
            status: wf_status,
            outcome,
        } => {
            status.run_id = Some(run_id.clone());
            status.started_at = started_at.and_then(system_to_time).or(status.started_at);
            status.completed_at = closed_at.and_then(system_to_time).or(status.completed_at);
            match outcome {
                Some(o) => {
                    status.phase = Some(o.phase);
                    status.step = Some(Step::Done);
                    status.reason = Some(o.reason.clone());
                    status.message = Some(o.message.clone());
                    status.conditions =
                        conditions::from_history(&o.history, &current.conditions, generation);
                }
                None => {
                    status.phase = Some(Phase::Failed);
                    status.reason = Some(reasons::WORKFLOW_ENDED_ABNORMALLY.to_string());
                    status.message = Some(format!(
                        "the workflow ended {wf_status:?} without an outcome; check the ledger audit"
                    ));
                }
            }
        }
    }
    status
}

/// A cancel asked for (the annotation) and not answered yet: the reason to
/// signal the workflow with. One signal per request: the condition it sets
/// remembers it.
pub fn cancel_asked(p: &Payment) -> Option<String> {
    let current = p.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    if conditions::has(current, conditions::CANCEL_REQUESTED, None) {
        return None;
    }
    let asked = p.annotations().get(CANCEL_ANNOTATION)?;
    Some(if asked.trim().is_empty() {
        "no reason given".to_string()
    } else {
        asked.clone()
    })
}

/// Answers a cancel asked for in `status`: signalled (the workflow runs),
/// or too late (the payment has finished; nothing else changes).
pub fn answer_cancel(
    status: &mut PaymentStatus,
    reason: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let (cond_status, cond_reason, message) = match status.finished() {
        None => (TRUE, reasons::CANCEL_REQUESTED, reason),
        Some(phase) => (
            FALSE,
            reasons::TOO_LATE_TO_CANCEL,
            format!("the payment had already finished ({phase:?}); nothing was changed"),
        ),
    };
    conditions::set(
        &mut status.conditions,
        Condition {
            type_: conditions::CANCEL_REQUESTED.to_string(),
            status: cond_status.to_string(),
            reason: cond_reason.to_string(),
            message,
            last_transition_time: to_time(now),
            observed_generation: generation,
        },
    );
}

/// Whether `status` answers a cancel as too late.
pub fn too_late(status: &PaymentStatus) -> bool {
    conditions::has(
        &status.conditions,
        conditions::CANCEL_REQUESTED,
        Some(reasons::TOO_LATE_TO_CANCEL),
    )
}

/// The status to show while Temporal cannot be reached: what was known, plus
/// a `TemporalReachable=False` condition saying why. It goes away with the
/// next successful observation.
pub fn unreachable(p: &Payment, error: &str, now: Timestamp) -> PaymentStatus {
    let mut status = p.status.clone().unwrap_or_default();
    conditions::set(
        &mut status.conditions,
        Condition {
            type_: conditions::TEMPORAL_REACHABLE.to_string(),
            status: FALSE.to_string(),
            reason: reasons::TEMPORAL_UNAVAILABLE.to_string(),
            message: error.chars().take(512).collect(),
            last_transition_time: to_time(now),
            observed_generation: p.metadata.generation,
        },
    );
    status
}

/// The status once the workflow has started: it runs from now on.
pub fn started(mut status: PaymentStatus, run_id: String, now: Timestamp) -> PaymentStatus {
    status.run_id = Some(run_id);
    status.phase = Some(Phase::Processing);
    status.started_at = Some(to_time(now));
    status
}

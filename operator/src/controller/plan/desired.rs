//! The status a Payment should have: what its workflow tells (its run,
//! phase, step, conditions, outcome and manual review), a cancel, a review
//! decision or an expedite asked for (each passed on once, or answered why
//! not), Temporal being unreachable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use paysaga_api::names::{
    CANCEL_ANNOTATION, EXPEDITE_ANNOTATION, REVIEW_ANNOTATION, REVIEW_BY_ANNOTATION,
    REVIEW_REASON_ANNOTATION, workflow_id,
};
use paysaga_api::saga::{Decision, ExpediteRequest, ReviewDecision, ReviewState};
use paysaga_api::{Payment, PaymentReview, PaymentStatus, Phase, Step};

use super::conditions::{self, FALSE, TRUE};
use super::reasons;
use super::time::{ms_to_time, system_to_time, to_time};
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
                if let Some(r) = &pr.review {
                    status.review = Some(review_of(r));
                }
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
                    status.charge_id = o.charge_id.clone().or(status.charge_id);
                    status.conditions =
                        conditions::from_history(&o.history, &current.conditions, generation);
                    if let Some(r) = &o.review {
                        status.review = Some(review_of(r));
                    }
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
    needs_review(&mut status, generation);
    status
}

/// `ConfirmationsIgnored`, once the workflow tells of confirmations for
/// another charge: how many and the last. A new one is a new transition
/// (now); while nothing new comes, the condition stays as it is.
pub fn confirmations_ignored(
    status: &mut PaymentStatus,
    workflow: &Observation,
    generation: Option<i64>,
    now: Timestamp,
) {
    let ignored = match workflow {
        Observation::Running {
            progress: Some(pr), ..
        } => &pr.ignored_callbacks,
        Observation::Closed {
            outcome: Some(o), ..
        } => &o.ignored_callbacks,
        _ => return,
    };
    let Some(last) = ignored.last() else {
        return;
    };
    let message = format!(
        "{} confirmation(s) for another charge ignored; the last: {last}",
        ignored.len()
    );
    let told = conditions::get(&status.conditions, conditions::CONFIRMATIONS_IGNORED)
        .is_some_and(|c| c.message == message);
    if !told {
        conditions::replace(
            &mut status.conditions,
            Condition {
                type_: conditions::CONFIRMATIONS_IGNORED.to_string(),
                status: TRUE.to_string(),
                reason: reasons::CHARGE_MISMATCH.to_string(),
                message,
                last_transition_time: to_time(now),
                observed_generation: generation,
            },
        );
    }
}

/// The review as status shows it.
fn review_of(r: &ReviewState) -> PaymentReview {
    let decision = r.decision.as_ref();
    PaymentReview {
        cause: format!("{:?}", r.cause),
        message: r.message.clone(),
        since: Some(ms_to_time(r.since_ms)),
        deadline: Some(ms_to_time(r.deadline_ms)),
        decision: decision.map(|d| format!("{:?}", d.decision)),
        decided_by: decision.map(|d| d.by.clone()),
        decided_at: decision.map(|d| ms_to_time(d.at_ms)),
        reason: decision.and_then(|d| d.reason.clone()),
    }
}

/// `NeedsReview`: `True` while a review waits (reason: its cause), `False`
/// once it ended (approved, rejected, or closed without a decision). Its
/// times are the review's own, so a status computed twice is the same.
fn needs_review(status: &mut PaymentStatus, generation: Option<i64>) {
    let Some(r) = status.review.clone() else {
        return;
    };
    let by = |verb: &str| {
        format!(
            "{verb} by {}{}",
            r.decided_by.clone().unwrap_or_default(),
            r.reason
                .as_deref()
                .map(|why| format!(": {why}"))
                .unwrap_or_default()
        )
    };
    let (state, reason, message, at) = match (r.decision.as_deref(), status.finished()) {
        (None, None) => (TRUE, r.cause.clone(), r.message.clone(), r.since.clone()),
        (Some("Approve"), _) => (
            FALSE,
            reasons::REVIEW_APPROVED.to_string(),
            by("approved"),
            r.decided_at.clone(),
        ),
        (Some(_), _) => (
            FALSE,
            reasons::REVIEW_REJECTED.to_string(),
            by("rejected"),
            r.decided_at.clone(),
        ),
        (None, Some(_)) => (
            FALSE,
            reasons::REVIEW_CLOSED.to_string(),
            format!(
                "the review ended without a decision: {}",
                status.message.clone().unwrap_or_default()
            ),
            status.completed_at.clone(),
        ),
    };
    let Some(at) = at.or_else(|| r.since.clone()) else {
        return;
    };
    conditions::set(
        &mut status.conditions,
        Condition {
            type_: conditions::NEEDS_REVIEW.to_string(),
            status: state.to_string(),
            reason,
            message,
            last_transition_time: at,
            observed_generation: generation,
        },
    );
}

/// Who set an annotation: the field manager that owns it (the cache keeps
/// the managed fields of the annotations that ask something), e.g.
/// `kubectl-annotate`.
pub fn annotation_owner(p: &Payment, key: &str) -> Option<String> {
    let field = format!("f:{key}");
    p.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:metadata"]["f:annotations"].get(&field).is_some())
        })
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.clone())
}

/// The annotations of `keys` that are set, with their values: what a
/// request consumed must still hold when it is removed.
pub fn present(p: &Payment, keys: &[&str]) -> Vec<(String, String)> {
    keys.iter()
        .filter_map(|k| Some((k.to_string(), p.annotations().get(*k)?.clone())))
        .collect()
}

/// What the review annotations ask. Each is a one-shot request: once
/// answered, the controller removes the annotations (as Argo CD does with its
/// refresh annotation), so a later review needs a decision of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewAsk {
    Nothing,
    /// Pass this decision on to the workflow.
    Submit(ReviewDecision),
    /// It cannot be passed on: why.
    Refuse {
        reason: &'static str,
        message: String,
    },
}

/// The review decision asked for, on the open review. Who decided: the HTTP
/// API's caller (`paysaga.dev/review-by`), else the annotation's field manager.
pub fn review_asked(p: &Payment, status: &PaymentStatus) -> ReviewAsk {
    let annotations = p.annotations();
    let Some(value) = annotations.get(REVIEW_ANNOTATION) else {
        return ReviewAsk::Nothing;
    };
    let open =
        status.review.as_ref().is_some_and(|r| r.decision.is_none()) && status.finished().is_none();
    if !open {
        return ReviewAsk::Refuse {
            reason: reasons::NO_REVIEW_OPEN,
            message: format!(
                "{REVIEW_ANNOTATION}={value:?} came when no review was open; nothing changed"
            ),
        };
    }
    let Some(decision) = Decision::parse(value) else {
        return ReviewAsk::Refuse {
            reason: reasons::INVALID_REVIEW_DECISION,
            message: format!("{REVIEW_ANNOTATION} must be approve or reject, not {value:?}"),
        };
    };
    let by = annotations
        .get(REVIEW_BY_ANNOTATION)
        .cloned()
        .filter(|b| !b.trim().is_empty())
        .or_else(|| annotation_owner(p, REVIEW_ANNOTATION))
        .unwrap_or_else(|| "unknown".into());
    let reason = annotations
        .get(REVIEW_REASON_ANNOTATION)
        .cloned()
        .filter(|r| !r.trim().is_empty());
    ReviewAsk::Submit(ReviewDecision {
        decision,
        by,
        reason,
    })
}

/// A decision in words, for the condition and the Event.
pub fn describe(d: &ReviewDecision) -> String {
    format!(
        "{} by {}{}",
        match d.decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        },
        d.by,
        d.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    )
}

/// The expedite asked for (a one-shot request, like a review decision). Who:
/// the annotation's field manager.
pub fn expedite_asked(p: &Payment) -> Option<ExpediteRequest> {
    let value = p.annotations().get(EXPEDITE_ANNOTATION)?;
    Some(ExpediteRequest {
        by: annotation_owner(p, EXPEDITE_ANNOTATION).unwrap_or_else(|| "unknown".into()),
        reason: Some(value.clone()).filter(|v| !v.trim().is_empty()),
    })
}

/// An answer to a request made by annotation: passed on (`ok`) or not, why.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The condition it is told in.
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Answer {
    pub fn taken(type_: &'static str, reason: &'static str, message: String) -> Answer {
        Answer {
            type_,
            ok: true,
            reason,
            message,
        }
    }

    pub fn refused(type_: &'static str, reason: &'static str, message: String) -> Answer {
        Answer {
            type_,
            ok: false,
            reason,
            message,
        }
    }
}

/// Records an answer in its condition: each answer is a new transition, and
/// its time says when the request was answered.
pub fn answer(status: &mut PaymentStatus, a: &Answer, generation: Option<i64>, now: Timestamp) {
    conditions::replace(
        &mut status.conditions,
        Condition {
            type_: a.type_.to_string(),
            status: if a.ok { TRUE } else { FALSE }.to_string(),
            reason: a.reason.to_string(),
            message: a.message.clone(),
            last_transition_time: to_time(now),
            observed_generation: generation,
        },
    );
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

/// A cancel annotation changed after its cancel was signalled: (the reason
/// signalled, the one asked now). The workflow keeps the first; the object
/// must not say otherwise.
pub fn cancel_changed(p: &Payment) -> Option<(String, String)> {
    let conds = p.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    let signalled =
        conditions::get(conds, conditions::CANCEL_REQUESTED).filter(|c| c.status == TRUE)?;
    let asked = p.annotations().get(CANCEL_ANNOTATION)?;
    let same = asked == &signalled.message
        || (asked.trim().is_empty() && signalled.message == "no reason given");
    (!same).then(|| (signalled.message.clone(), asked.clone()))
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

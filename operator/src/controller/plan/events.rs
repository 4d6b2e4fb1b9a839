//! The Events a status write tells: how the payment ended (one Event,
//! naming each step), and a Warning for each step that failed. Steps that
//! succeed have no Event of their own: an Event per step would cost the API
//! server more writes than the payment itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::EventType;
use paysaga_api::{PaymentStatus, Phase};

use super::conditions::{self, FALSE, SKIPPED, TRUE};
use super::reasons;

/// An Event to publish on the Payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl Event {
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Event {
        Event {
            type_: EventType::Normal,
            reason,
            note: note.into(),
        }
    }

    pub fn warning(reason: &'static str, note: impl Into<String>) -> Event {
        Event {
            type_: EventType::Warning,
            reason,
            note: note.into(),
        }
    }
}

/// The reason a failed step's Warning gives, by its condition type.
fn failed_reason(condition_type: &str) -> Option<&'static str> {
    Some(match condition_type {
        conditions::VALIDATED => reasons::VALIDATION_FAILED,
        conditions::FRAUD_CHECKED => reasons::FRAUD_REJECTED,
        conditions::DEBITED => reasons::DEBIT_FAILED,
        conditions::CHARGED => reasons::CHARGE_FAILED,
        conditions::CONFIRMED => reasons::CONFIRMATION_FAILED,
        conditions::NOTIFIED => reasons::NOTIFICATION_FAILED,
        conditions::COMPENSATED => reasons::COMPENSATION_FAILED,
        _ => return None,
    })
}

/// One Warning for each step condition that turned failed between two
/// statuses. A skipped notification (no contact given) is not a failure.
pub fn step_failures(before: &[Condition], after: &[Condition]) -> Vec<Event> {
    after
        .iter()
        .filter(|c| c.status == FALSE && c.reason != SKIPPED)
        .filter(|c| {
            !before
                .iter()
                .any(|b| b.type_ == c.type_ && b.status == c.status)
        })
        .filter_map(|c| {
            let note = if c.message.is_empty() {
                c.type_.clone()
            } else {
                c.message.clone()
            };
            failed_reason(&c.type_).map(|reason| Event::warning(reason, note))
        })
        .collect()
}

/// A Warning when a payment starts waiting for a person (`NeedsReview`
/// turned `True`): what happened and until when.
pub fn review_opened(before: &PaymentStatus, after: &PaymentStatus) -> Option<Event> {
    let open = |s: &PaymentStatus| {
        conditions::get(&s.conditions, conditions::NEEDS_REVIEW).is_some_and(|c| c.status == TRUE)
    };
    if !open(after) || open(before) {
        return None;
    }
    let r = after.review.as_ref()?;
    let deadline = r
        .deadline
        .as_ref()
        .map(|t| format!(" (decide before {}, or it is compensated and failed)", t.0))
        .unwrap_or_default();
    Some(Event::warning(
        reasons::NEEDS_REVIEW,
        format!("{}: {}{deadline}", r.cause, r.message),
    ))
}

/// A Warning for each new `ConfirmationsIgnored`: a signed confirmation
/// named another charge (a gateway bug, or a key in the wrong hands).
pub fn confirmations_ignored(before: &PaymentStatus, after: &PaymentStatus) -> Option<Event> {
    let said = |s: &PaymentStatus| {
        conditions::get(&s.conditions, conditions::CONFIRMATIONS_IGNORED).map(|c| c.message.clone())
    };
    let now = said(after)?;
    (said(before).as_ref() != Some(&now)).then(|| Event::warning(reasons::CHARGE_MISMATCH, now))
}

/// The Event of the payment's end, when `after` is the status that first
/// shows it finished: a Warning for a failure, Normal otherwise.
pub fn ended(before: &PaymentStatus, after: &PaymentStatus) -> Option<Event> {
    let phase = after.finished().filter(|_| after.phase != before.phase)?;
    let note = outcome_note(after);
    Some(match phase {
        Phase::Failed => Event::warning(reasons::FAILED, note),
        Phase::Cancelled => Event::normal(reasons::CANCELLED, note),
        _ => Event::normal(reasons::SUCCEEDED, note),
    })
}

/// The note of the Event that says how a payment ended: its phase, reason
/// and message, then each step as its condition tells it.
pub fn outcome_note(status: &PaymentStatus) -> String {
    let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    // Each thing said once: a reason that repeats the phase ("Cancelled:
    // Cancelled") is left out, and so is a message's prefix that repeats
    // the reason ("Cancelled: cancelled: changed my mind").
    let reason = status.reason.as_deref().filter(|r| *r != phase);
    let message = status.message.as_deref().map(|m| {
        let said = reason.unwrap_or(&phase);
        match m.get(..said.len() + 2) {
            Some(head) if head.eq_ignore_ascii_case(&format!("{said}: ")) => &m[said.len() + 2..],
            _ => m,
        }
    });
    let mut note = [Some(phase.as_str()), reason, message]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let steps: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| conditions::is_step(c))
        .map(|c| match (c.status.as_str(), c.reason.as_str()) {
            (TRUE, _) => c.type_.clone(),
            (_, SKIPPED) => format!("{} skipped", c.type_),
            _ => format!("{} failed", c.type_),
        })
        .collect();
    if !steps.is_empty() {
        note.push_str(&format!(" (steps: {})", steps.join(", ")));
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::tests::rec;
    use paysaga_api::Step;
    use paysaga_api::saga::{StepEvent, StepRecord};

    #[test]
    fn a_warning_per_step_that_failed_and_nothing_for_steps_that_succeeded() {
        let before = conditions::from_history(
            &[rec(Step::ValidateAccount, StepEvent::Completed, 1)],
            &[],
            None,
        );
        let after = conditions::from_history(
            &[
                rec(Step::ValidateAccount, StepEvent::Completed, 1),
                rec(Step::Debit, StepEvent::Completed, 2),
                StepRecord {
                    step: Step::Charge,
                    event: StepEvent::Failed,
                    at_ms: 3,
                    detail: Some("declined".into()),
                },
                rec(Step::Notify, StepEvent::Skipped, 4),
            ],
            &before,
            None,
        );
        assert_eq!(
            step_failures(&before, &after),
            [Event::warning(reasons::CHARGE_FAILED, "declined")]
        );
        assert!(
            step_failures(&after, &after).is_empty(),
            "nothing changed, nothing said"
        );
    }

    #[test]
    fn the_end_is_told_once_with_a_reason_constant_per_phase() {
        let processing = PaymentStatus {
            phase: Some(Phase::Processing),
            ..PaymentStatus::default()
        };
        let ended_as = |phase| PaymentStatus {
            phase: Some(phase),
            reason: Some("Why".into()),
            ..PaymentStatus::default()
        };
        let reason = |phase| ended(&processing, &ended_as(phase)).map(|e| (e.type_, e.reason));
        assert_eq!(
            reason(Phase::Succeeded),
            Some((EventType::Normal, reasons::SUCCEEDED))
        );
        assert_eq!(
            reason(Phase::Failed),
            Some((EventType::Warning, reasons::FAILED))
        );
        assert_eq!(
            reason(Phase::Cancelled),
            Some((EventType::Normal, reasons::CANCELLED))
        );
        assert_eq!(reason(Phase::Processing), None, "not finished");
        let done = ended_as(Phase::Succeeded);
        assert_eq!(ended(&done, &done), None, "told already");
    }

    #[test]
    fn a_confirmation_ignored_is_told_once_and_again_when_another_comes() {
        let with = |message: &str| PaymentStatus {
            conditions: vec![Condition {
                type_: conditions::CONFIRMATIONS_IGNORED.into(),
                status: TRUE.into(),
                reason: reasons::CHARGE_MISMATCH.into(),
                message: message.into(),
                last_transition_time: crate::controller::plan::time::to_time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            }],
            ..Default::default()
        };
        let none = PaymentStatus::default();
        let one = with("1 confirmation(s) for another charge ignored; the last: x");
        let two = with("2 confirmation(s) for another charge ignored; the last: y");
        let told = confirmations_ignored(&none, &one).expect("a first one is told");
        assert_eq!(
            (told.type_, told.reason),
            (EventType::Warning, reasons::CHARGE_MISMATCH)
        );
        assert!(confirmations_ignored(&one, &one).is_none());
        assert!(confirmations_ignored(&one, &two).is_some());
        assert!(confirmations_ignored(&none, &none).is_none());
    }

    #[test]
    fn the_end_says_each_thing_once() {
        let ended = |phase, reason: &str, message: &str| PaymentStatus {
            phase: Some(phase),
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        };
        assert_eq!(
            outcome_note(&ended(
                Phase::Cancelled,
                "Cancelled",
                "cancelled: changed my mind"
            )),
            "Cancelled: changed my mind"
        );
        assert_eq!(
            outcome_note(&ended(
                Phase::Failed,
                "ChargeFailed",
                "the gateway reported the charge failed: no"
            )),
            "Failed: ChargeFailed: the gateway reported the charge failed: no"
        );
    }
}

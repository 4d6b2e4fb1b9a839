//! The Payment's conditions: one per saga step, read from the workflow's
//! step history, plus the controller's own (a cancel asked for, Temporal
//! unreachable).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use paysaga_api::Step;
use paysaga_api::saga::{StepEvent, StepRecord};

use super::time::ms_to_time;

/// Condition types of the saga's steps.
pub const VALIDATED: &str = "Validated";
pub const FRAUD_CHECKED: &str = "FraudChecked";
pub const DEBITED: &str = "Debited";
pub const CHARGED: &str = "Charged";
pub const CONFIRMED: &str = "Confirmed";
pub const NOTIFIED: &str = "Notified";
pub const COMPENSATED: &str = "Compensated";
/// The cancel annotation was seen and the workflow signalled once (or it
/// was too late: `False`, reason `TooLateToCancel`).
pub const CANCEL_REQUESTED: &str = "CancelRequested";
/// Present (`False`) only while Temporal cannot be reached for this payment.
pub const TEMPORAL_REACHABLE: &str = "TemporalReachable";
/// `True` while the payment waits for a person (reason: the review's cause);
/// `False` once the review ended (reason `Approved`, `Rejected`, `Closed`).
pub const NEEDS_REVIEW: &str = "NeedsReview";
/// The review annotation was passed on to the workflow (`True`), or could
/// not be (`False`: `InvalidReviewDecision`, `NoReviewOpen`).
pub const REVIEW_REQUESTED: &str = "ReviewRequested";
/// The last expedite annotation was passed on (`True`), or came too late
/// (`False`, `TooLateToExpedite`).
pub const EXPEDITE_REQUESTED: &str = "ExpediteRequested";
/// `True` (reason `ChargeMismatch`) once a signed confirmation for another
/// charge than the one made was ignored: how many, and the last.
pub const CONFIRMATIONS_IGNORED: &str = "ConfirmationsIgnored";

/// The controller's own conditions: the step history does not speak of
/// them, so they stay as the controller last set them.
const OWN: &[&str] = &[
    CANCEL_REQUESTED,
    NEEDS_REVIEW,
    REVIEW_REQUESTED,
    EXPEDITE_REQUESTED,
    CONFIRMATIONS_IGNORED,
];

/// Condition statuses (`metav1.Condition.status`).
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

/// Reasons of the step conditions.
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
pub const SKIPPED: &str = "Skipped";

/// The condition type of a saga step; `None` for `ManualReview` and `Done`.
fn of_step(step: Step) -> Option<&'static str> {
    Some(match step {
        Step::ValidateAccount => VALIDATED,
        Step::FraudCheck => FRAUD_CHECKED,
        Step::Debit => DEBITED,
        Step::Charge => CHARGED,
        Step::AwaitConfirmation => CONFIRMED,
        Step::Notify => NOTIFIED,
        Step::Compensate => COMPENSATED,
        // Told by the review itself, not by its history lines.
        Step::ManualReview | Step::Done => return None,
    })
}

/// Whether a condition tells a saga step (rather than the controller's own).
pub fn is_step(c: &Condition) -> bool {
    matches!(
        c.type_.as_str(),
        VALIDATED | FRAUD_CHECKED | DEBITED | CHARGED | CONFIRMED | NOTIFIED | COMPENSATED
    )
}

/// Conditions from the step history. A condition keeps its previous
/// transition time while its status does not change.
pub fn from_history(
    history: &[StepRecord],
    previous: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::new();
    for r in history {
        let Some(type_) = of_step(r.step) else {
            continue;
        };
        let (status, reason) = match r.event {
            StepEvent::Started => continue,
            StepEvent::Completed => (TRUE, SUCCEEDED),
            StepEvent::Failed => (FALSE, FAILED),
            StepEvent::Skipped => (FALSE, SKIPPED),
        };
        // A later record of the same step decides (e.g. a failed compensation
        // after a completed one).
        if r.step == Step::Compensate
            && out
                .iter()
                .any(|c| c.type_ == COMPENSATED && c.status == FALSE)
        {
            continue;
        }
        // Compensated says every compensation that ran (the refund, then
        // the credit), not only the last.
        let mut message = r.detail.clone().unwrap_or_default();
        if r.step == Step::Compensate
            && let Some(before) = out.iter().find(|c| c.type_ == COMPENSATED)
            && !before.message.is_empty()
        {
            message = format!("{}; {message}", before.message);
        }
        out.retain(|c| c.type_ != type_);
        out.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: ms_to_time(r.at_ms),
            observed_generation: generation,
        });
    }
    // Conditions the history does not speak of (the controller's own) stay.
    for p in previous {
        if !out.iter().any(|c| c.type_ == p.type_) && OWN.contains(&p.type_.as_str()) {
            out.push(p.clone());
        }
    }
    for c in out.iter_mut() {
        if let Some(p) = previous.iter().find(|p| p.type_ == c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    out
}

/// Sets `c`, replacing a condition of its type unless that one already
/// says the same (then its transition time stays).
pub fn set(conds: &mut Vec<Condition>, c: Condition) {
    if let Some(existing) = conds.iter_mut().find(|e| e.type_ == c.type_) {
        if existing.status == c.status && existing.reason == c.reason {
            return;
        }
        *existing = c;
    } else {
        conds.push(c);
    }
}

/// Sets `c` whatever was there: each time is a new transition (a new
/// request answered), and its time says when.
pub fn replace(conds: &mut Vec<Condition>, c: Condition) {
    conds.retain(|e| e.type_ != c.type_);
    conds.push(c);
}

/// The condition of this type, if any.
pub fn get<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

/// Whether a condition of this type and reason is among `conds`.
pub fn has(conds: &[Condition], type_: &str, reason: Option<&str>) -> bool {
    conds
        .iter()
        .any(|c| c.type_ == type_ && reason.is_none_or(|r| c.reason == r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::tests::rec;

    #[test]
    fn condition_times_come_from_the_workflow_and_are_kept_while_unchanged() {
        let history = vec![rec(Step::ValidateAccount, StepEvent::Completed, 5_000)];
        let first = from_history(&history, &[], Some(1));
        assert_eq!(first[0].last_transition_time, ms_to_time(5_000));
        // Seen again later: the transition time does not move.
        let mut previous = first.clone();
        previous[0].last_transition_time = ms_to_time(4_000);
        let again = from_history(&history, &previous, Some(1));
        assert_eq!(again[0].last_transition_time, ms_to_time(4_000));
    }

    #[test]
    fn a_failed_compensation_is_not_hidden_by_an_earlier_success() {
        let history = vec![
            rec(Step::Compensate, StepEvent::Failed, 1),
            rec(Step::Compensate, StepEvent::Completed, 2),
        ];
        let c = from_history(&history, &[], None);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            (COMPENSATED, FALSE)
        );
    }

    #[test]
    fn compensated_names_every_compensation_that_ran() {
        let comp = |event, at_ms, detail: &str| StepRecord {
            step: Step::Compensate,
            event,
            at_ms,
            detail: Some(detail.into()),
        };
        let history = [
            rec(Step::Compensate, StepEvent::Started, 1),
            comp(StepEvent::Completed, 2, "refunded 12.50 EUR"),
            comp(StepEvent::Completed, 3, "credit: Applied"),
        ];
        let c = from_history(&history, &[], None);
        let compensated = get(&c, COMPENSATED).unwrap();
        assert_eq!(
            (compensated.status.as_str(), compensated.message.as_str()),
            (TRUE, "refunded 12.50 EUR; credit: Applied")
        );
        let failed = [
            comp(StepEvent::Completed, 2, "refunded 12.50 EUR"),
            comp(StepEvent::Failed, 3, "Credit failed after retries: down"),
        ];
        let c = from_history(&failed, &[], None);
        let compensated = get(&c, COMPENSATED).unwrap();
        assert_eq!(
            (compensated.status.as_str(), compensated.message.as_str()),
            (
                FALSE,
                "refunded 12.50 EUR; Credit failed after retries: down"
            )
        );
    }
}

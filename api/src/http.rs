//! The HTTP API's contract (`paysaga-operator api`): what clients send and
//! receive. The Payment and Refund objects stay the single source of truth;
//! these are views of them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    MAX_AMOUNT_MINOR, Payment, PaymentSpec, Phase, RecurringPayment, RecurringPaymentSpec,
    RecurringPhase, Refund, RefundPhase, RefundReason, Step,
};

/// `POST /v1/payments`: the Payment's spec, as JSON.
pub type CreatePayment = PaymentSpec;

/// Header: the same key with the same body returns the same payment.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Response header set (`true`) when a request was answered from an earlier one.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// A payment as the API shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    pub id: String,
    /// Where to follow it: `GET` this.
    pub status_url: String,
    #[serde(flatten)]
    pub spec: PaymentSpec,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Whether a cancel was asked for (the cancel annotation is set).
    pub cancel_requested: bool,
    /// The manual review, while the payment waits for a person or once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::PaymentReview>,
    /// What refunds have given back so far, in minor units (absent before
    /// the first refund succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_amount: Option<i64>,
}

impl PaymentView {
    /// The view of a Payment object; `base` prefixes the status URL.
    pub fn of(p: &Payment, base: &str) -> PaymentView {
        let id = p.metadata.name.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let ts = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| t.0.to_string())
        };
        PaymentView {
            status_url: format!("{base}/v1/payments/{id}"),
            id,
            spec: p.spec.clone(),
            phase: status.phase.unwrap_or(Phase::Pending),
            step: status.step,
            reason: status.reason,
            message: status.message,
            conditions: status.conditions,
            created_at: ts(p.metadata.creation_timestamp.as_ref()),
            started_at: ts(status.started_at.as_ref()),
            completed_at: ts(status.completed_at.as_ref()),
            cancel_requested: p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(crate::names::CANCEL_ANNOTATION)),
            review: status.review,
            refunded_amount: status.refunded_amount,
        }
    }
}

/// `GET /v1/payments`: one page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPage {
    pub items: Vec<PaymentView>,
    /// Pass as `continue` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// `POST /v1/payments/{id}/review`: a decision on a payment in manual review.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewBody {
    /// `approve` (retry the charge, or accept the charge the gateway could
    /// not vouch for) or `reject` (compensate and fail).
    pub decision: crate::saga::Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/payments/{id}/expedite`: stop waiting now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpediteBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/payments/{id}/cancel`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelBody {
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/payments/{id}/refunds`: what to give back of a succeeded
/// payment, and why. The payment is the one in the path.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRefund {
    /// In integer minor units of the payment's currency; at most what the
    /// payment has not had refunded yet.
    #[schemars(range(min = 1, max = MAX_AMOUNT_MINOR))]
    pub amount: i64,
    pub reason: RefundReason,
    /// Free text shown to the payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
}

/// A refund as the API shows it. `reason` is why it was asked for (the
/// spec's); `outcomeReason` is the machine reason of where it is (the
/// status's, e.g. `Refunded` or `ExceedsRefundable`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    pub id: String,
    /// Where to follow it: `GET` this.
    pub status_url: String,
    /// The refunded payment's id.
    pub payment_id: String,
    /// In integer minor units of the payment's currency.
    pub amount: i64,
    pub reason: RefundReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The payment's currency, once the controller has taken the refund up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub phase: RefundPhase,
    /// A machine-readable reason for the phase (CamelCase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_reason: Option<String>,
    /// A human-readable message for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The gateway's id of the refund, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_refund_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl RefundView {
    /// The view of a Refund object; `base` prefixes the status URL.
    pub fn of(r: &Refund, base: &str) -> RefundView {
        let id = r.metadata.name.clone().unwrap_or_default();
        let status = r.status.clone().unwrap_or_default();
        RefundView {
            status_url: format!("{base}/v1/refunds/{id}"),
            id,
            payment_id: r.spec.payment_name.clone(),
            amount: r.spec.amount,
            reason: r.spec.reason,
            description: r.spec.description.clone(),
            currency: status.currency,
            phase: status.phase.unwrap_or(RefundPhase::Pending),
            outcome_reason: status.reason,
            message: status.message,
            gateway_refund_id: status.gateway_refund_id,
            created_at: r
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            completed_at: status.completed_at.map(|t| t.0.to_string()),
        }
    }
}

/// `GET /v1/payments/{id}/refunds`: every refund of the payment, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundPage {
    pub items: Vec<RefundView>,
}

/// `POST /v1/recurring-payments`: the RecurringPayment's spec, as JSON.
pub type CreateRecurringPayment = RecurringPaymentSpec;

/// A recurring payment as the API shows it: its spec, and what its Schedule
/// has done so far (absent until the controller has taken it up).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecurringPaymentView {
    pub id: String,
    /// Where to follow it: `GET` this.
    pub status_url: String,
    /// The Payments it made: `GET` this.
    pub payments_url: String,
    #[serde(flatten)]
    pub spec: RecurringPaymentSpec,
    /// Absent until the controller has taken it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RecurringPhase>,
    /// A machine-readable reason for the phase (CamelCase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Temporal Schedule firing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// The next firings (RFC 3339), as the Schedule tells them (up to three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_runs: Vec<String>,
    /// The id of the newest Payment made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_payment: Option<String>,
    /// Firings that made a Payment.
    pub payments_made: i64,
    /// Of the Payments made that still exist: how many succeeded.
    pub payments_succeeded: i64,
    /// Of the Payments made that still exist: how many failed (or were
    /// cancelled).
    pub payments_failed: i64,
    /// Firings skipped because the payment before had not finished.
    pub skipped: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl RecurringPaymentView {
    /// The view of a RecurringPayment object; `base` prefixes its URLs.
    pub fn of(r: &RecurringPayment, base: &str) -> RecurringPaymentView {
        let id = r.metadata.name.clone().unwrap_or_default();
        let status = r.status.clone().unwrap_or_default();
        RecurringPaymentView {
            status_url: format!("{base}/v1/recurring-payments/{id}"),
            payments_url: format!("{base}/v1/recurring-payments/{id}/payments"),
            id,
            spec: r.spec.clone(),
            phase: status.phase,
            reason: status.reason,
            message: status.message,
            schedule_id: status.schedule_id,
            next_runs: status.next_runs.iter().map(|t| t.0.to_string()).collect(),
            last_payment: status.last_payment,
            payments_made: status.payments_made,
            payments_succeeded: status.payments_succeeded,
            payments_failed: status.payments_failed,
            skipped: status.skipped,
            created_at: r
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
        }
    }
}

/// `GET /v1/recurring-payments`: one page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecurringPaymentPage {
    pub items: Vec<RecurringPaymentView>,
    /// Pass as `continue` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RefundSpec, RefundStatus};

    fn refund(status: Option<RefundStatus>) -> Refund {
        let mut r = Refund::new(
            "rf-1",
            RefundSpec {
                payment_name: "pay-1".into(),
                amount: 500,
                reason: RefundReason::Duplicate,
                description: None,
            },
        );
        r.status = status;
        r
    }

    #[test]
    fn a_refund_not_taken_up_yet_is_pending() {
        let v = RefundView::of(&refund(None), "http://api");
        assert_eq!(v.status_url, "http://api/v1/refunds/rf-1");
        assert_eq!((v.payment_id.as_str(), v.amount), ("pay-1", 500));
        assert_eq!(v.phase, RefundPhase::Pending);
        assert_eq!(v.outcome_reason, None);
    }

    #[test]
    fn the_specs_reason_and_the_statuss_reason_stay_apart() {
        let status = RefundStatus {
            phase: Some(RefundPhase::Succeeded),
            reason: Some("Refunded".into()),
            currency: Some("EUR".into()),
            ..RefundStatus::default()
        };
        let json = serde_json::to_value(RefundView::of(&refund(Some(status)), "")).unwrap();
        assert_eq!(json["reason"], "duplicate");
        assert_eq!(json["outcomeReason"], "Refunded");
        assert_eq!(json["phase"], "Succeeded");
        assert_eq!(json["currency"], "EUR");
        assert_eq!(json["statusUrl"], "/v1/refunds/rf-1");
    }
    #[test]
    fn a_recurring_payment_not_taken_up_yet_has_no_phase() {
        use crate::recurring::{OverlapPolicy, RecurringSchedule};
        use crate::{PaymentMethod, RecurringPaymentStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

        let spec = RecurringPaymentSpec {
            template: PaymentSpec {
                user_id: "alice".into(),
                amount: 990,
                currency: "EUR".into(),
                method: PaymentMethod::Card,
                description: None,
                notify: None,
            },
            schedule: RecurringSchedule {
                cron: Some("0 9 1 * *".into()),
                every: None,
                time_zone: None,
            },
            start_at: None,
            end_at: None,
            max_payments: None,
            suspend: false,
            overlap_policy: OverlapPolicy::Skip,
            catchup_window: None,
        };
        let mut r = RecurringPayment::new("rent", spec);
        let json = serde_json::to_value(RecurringPaymentView::of(&r, "http://api")).unwrap();
        assert_eq!(json["statusUrl"], "http://api/v1/recurring-payments/rent");
        assert_eq!(
            json["paymentsUrl"],
            "http://api/v1/recurring-payments/rent/payments"
        );
        assert_eq!(json["template"]["amount"], 990);
        assert_eq!(json["schedule"]["cron"], "0 9 1 * *");
        assert!(json.get("phase").is_none(), "{json}");
        assert!(json.get("nextRuns").is_none(), "{json}");
        assert_eq!(json["paymentsMade"], 0);

        let due: k8s_openapi::jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        r.status = Some(RecurringPaymentStatus {
            phase: Some(RecurringPhase::Active),
            next_runs: vec![Time(due)],
            payments_made: 3,
            payments_made_before: 1,
            ..RecurringPaymentStatus::default()
        });
        let v = RecurringPaymentView::of(&r, "");
        assert_eq!(v.phase, Some(RecurringPhase::Active));
        assert_eq!(v.next_runs, ["2026-12-01T09:00:00Z"]);
        assert_eq!(v.payments_made, 3);
    }
}

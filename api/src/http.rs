//! The HTTP API's contract (`paysaga-operator api`): what clients send and
//! receive. The Payment object stays the single source of truth; these are
//! views of it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Payment, PaymentSpec, Phase, Step};

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

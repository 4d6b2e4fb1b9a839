//! The `Refund` custom resource (`refunds.paysaga.dev/v1alpha1`): money
//! given back from a payment that succeeded, partly or whole, as an object of
//! its own. Several refunds may name one payment; together they never exceed
//! what was captured (the ledger decides, under a lock on the account).

// Several `printcolumn(type_ = "string", ...)` entries look like repeated
// attributes to clippy; they are distinct columns of the kube derive.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::MAX_AMOUNT_MINOR;

/// What is given back, from which payment, and why. Immutable once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "paysaga.dev",
    version = "v1alpha1",
    kind = "Refund",
    plural = "refunds",
    shortname = "rf",
    category = "paysaga",
    namespaced,
    status = "RefundStatus",
    derive = "PartialEq",
    doc = "A refund of a succeeded Payment in the same namespace, partial or full, executed as a durable workflow: reserved in the ledger, refunded at the gateway, credited to the payer, notified.",
    printcolumn(name = "Payment", type_ = "string", json_path = ".spec.paymentName"),
    printcolumn(
        name = "Amount",
        type_ = "integer",
        json_path = ".spec.amount",
        description = "Amount in minor units (cents)"
    ),
    printcolumn(name = "Currency", type_ = "string", json_path = ".status.currency"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.paymentName",
    selectable = ".status.phase"
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable once the refund is created; create a new Refund instead").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct RefundSpec {
    /// The Payment refunded, in the same namespace. It must have succeeded.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub payment_name: String,
    /// Amount given back, in integer minor units of the payment's currency.
    #[schemars(range(min = 1, max = MAX_AMOUNT_MINOR))]
    pub amount: i64,
    pub reason: RefundReason,
    /// Free text shown to the payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
}

/// Why the money goes back (as the card networks and Stripe word it).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RefundReason {
    RequestedByCustomer,
    Duplicate,
    Fraudulent,
    Other,
}

/// Where a refund is. Written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RefundPhase>,
    /// A machine-readable reason for the phase (CamelCase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard conditions: `Ready` (the refund has ended; `True` when it succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The payment's currency (the refund's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The Temporal workflow running this refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The gateway's id of the refund, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_refund_id: Option<String>,
    /// What the ledger holds as refunded from the payment, this refund
    /// included, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_refunded_amount: Option<i64>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the workflow started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the refund reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

impl RefundStatus {
    /// The terminal phase the refund ended in, if it has finished.
    pub fn finished(&self) -> Option<RefundPhase> {
        self.phase.filter(|p| p.is_terminal())
    }
}

/// The life of a refund: `Pending` → `Processing` → `Succeeded` | `Failed`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RefundPhase {
    Pending,
    Processing,
    Succeeded,
    Failed,
}

impl RefundPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, RefundPhase::Succeeded | RefundPhase::Failed)
    }
}

/// The workflow ID of a Refund object: deterministic (a second start is a
/// duplicate Temporal refuses), new for a re-created object (the UID).
pub fn refund_workflow_id(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    crate::names::object_id("refund", meta)
}

/// The Refund an HTTP request with `key` makes for `payment`: deterministic,
/// so that retries race on one name.
pub fn refund_name(payment: &str, key: &str) -> String {
    crate::idempotency::keyed_name("rf", payment, key)
}

/// The finalizer a refund in flight holds on its Payment (one per refund, so
/// that refunds finishing at once never release each other's).
pub fn payment_hold_finalizer(refund_uid: &str) -> String {
    format!("refund.paysaga.dev/{refund_uid}")
}

/// Whether a finalizer on a Payment is a refund's hold.
pub fn is_payment_hold(finalizer: &str) -> bool {
    finalizer.starts_with("refund.paysaga.dev/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_and_columns_match_the_design() {
        let crd = Refund::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("refunds.paysaga.dev"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["rf".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["paysaga".to_string()]));
        let columns: Vec<&str> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Payment", "Amount", "Currency", "Phase", "Age"]);
    }

    #[test]
    fn names_are_deterministic_and_distinct() {
        assert_eq!(refund_name("pay-1", "k"), refund_name("pay-1", "k"));
        assert_ne!(refund_name("pay-1", "k"), refund_name("pay-2", "k"));
        assert_eq!(refund_name("p", "k").len(), "rf-".len() + 24);
        let hold = payment_hold_finalizer("0d1f-77aa");
        assert!(is_payment_hold(&hold));
        assert!(!is_payment_hold(crate::names::FINALIZER));
    }

    #[test]
    fn spec_round_trips_in_camel_case() {
        let json = serde_json::json!({
            "paymentName": "pay-1", "amount": 500, "reason": "requestedByCustomer"
        });
        let spec: RefundSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.reason, RefundReason::RequestedByCustomer);
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
    }
}

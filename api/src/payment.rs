//! The `Payment` custom resource (`payments.paysaga.dev/v1alpha1`).
//!
//! Single-object validation lives here, in the schema and CEL rules the API
//! server enforces: a Payment that reaches the controller is well formed.

// Several `printcolumn(type_ = "string", ...)` entries look like repeated
// attributes to clippy; they are distinct columns of the kube derive.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest amount one Payment may carry, in minor units (10 million in a
/// two-decimal currency). A bound keeps sums within `i64` everywhere.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000;

/// What the payer asks for. Immutable once created: a payment that changes
/// under a running saga is a different payment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "paysaga.dev",
    version = "v1alpha1",
    kind = "Payment",
    plural = "payments",
    shortname = "pay",
    category = "paysaga",
    namespaced,
    status = "PaymentStatus",
    derive = "PartialEq",
    doc = "A payment executed as a durable saga: validate, debit, fraud check, charge, confirm, notify; compensated in reverse on failure or cancellation.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userId"),
    printcolumn(
        name = "Amount",
        type_ = "integer",
        json_path = ".spec.amount",
        description = "Amount in minor units (cents)"
    ),
    printcolumn(name = "Currency", type_ = "string", json_path = ".spec.currency"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.step"),
    printcolumn(
        name = "Refunded",
        type_ = "integer",
        json_path = ".status.refundedAmount",
        description = "Refunded so far, in minor units"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.userId",
    selectable = ".status.phase",
    selectable = ".status.step"
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable once the payment is created; create a new Payment instead").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct PaymentSpec {
    /// The paying account's owner: letters, digits and `. _ @ + : -`,
    /// starting with a letter or digit (no spaces, control, zero-width or
    /// bidi characters, which `kubectl get` would print raw).
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._@+:-]*$")
    )]
    pub user_id: String,
    /// Amount in integer minor units of `currency` (e.g. cents). Never a float.
    #[schemars(range(min = 1, max = MAX_AMOUNT_MINOR))]
    pub amount: i64,
    /// ISO 4217 currency code, upper case.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"), length(min = 3, max = 3))]
    pub currency: String,
    /// How the payer pays.
    pub method: PaymentMethod,
    /// Free text shown to the payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// Where to tell the payer how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PaymentMethod {
    Card,
    BankTransfer,
    Wallet,
}

/// Contact points for the payer's notifications.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: Option<String>,
    /// E.164 phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\+[1-9][0-9]{6,14}$"), length(max = 16))]
    pub phone: Option<String>,
}

/// Where a payment is. Written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The saga step now running (or the last one, once finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// Standard conditions: Validated, Debited, FraudChecked, Charged, Confirmed, Notified, Compensated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Temporal workflow running this payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The Temporal run of that workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// A machine-readable reason for the phase (CamelCase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the workflow started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the payment reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The payment's manual review, while it waits for a person or once
    /// decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<PaymentReview>,
    /// The gateway's id of the charge that succeeded: what refunds refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
    /// What refunds have given back so far, in minor units (written as
    /// each Refund succeeds, from the ledger's total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_amount: Option<i64>,
}

/// A manual review, as status shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentReview {
    /// `ChargeUnavailable` (the charge never went through) or
    /// `OutcomeUnknown` (charged, but nobody can tell how it ended).
    pub cause: String,
    /// What happened, in words.
    pub message: String,
    pub since: Option<Time>,
    /// When it is compensated and failed if nobody decides.
    pub deadline: Option<Time>,
    /// `Approve` or `Reject`, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PaymentStatus {
    /// The terminal phase the payment ended in, if it has finished. The one
    /// place that says "finished": nothing changes a finished payment any
    /// more, so a cancel asked of it is too late (the HTTP API answers 409,
    /// the controller sets `TooLateToCancel`), and it no longer counts as in
    /// flight.
    pub fn finished(&self) -> Option<Phase> {
        self.phase.filter(|p| p.is_terminal())
    }

    /// When the payment ended, if this status records its end whole: a
    /// terminal phase with its completion time. Then there is nothing left to
    /// ask Temporal about it.
    pub fn recorded_end(&self) -> Option<&Time> {
        self.finished().and(self.completed_at.as_ref())
    }
}

/// The life of a payment: `Pending` → `Processing` → `Succeeded` | `Failed` | `Cancelled`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    /// A terminal phase never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

/// The steps of the payment saga, in the order they normally run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Step {
    ValidateAccount,
    FraudCheck,
    Debit,
    Charge,
    AwaitConfirmation,
    /// Waiting for a person: the charge could not be made, or its outcome
    /// is unknown (`status.review` says which; condition `NeedsReview`).
    ManualReview,
    Notify,
    Compensate,
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn terminal_phases() {
        let terminal: Vec<Phase> = [
            Phase::Pending,
            Phase::Processing,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Cancelled,
        ]
        .into_iter()
        .filter(|p| p.is_terminal())
        .collect();
        assert_eq!(
            terminal,
            [Phase::Succeeded, Phase::Failed, Phase::Cancelled]
        );
    }

    #[test]
    fn finished_is_a_terminal_phase_and_a_recorded_end_has_its_time() {
        let at = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = |phase, completed_at: Option<&Time>| PaymentStatus {
            phase,
            completed_at: completed_at.cloned(),
            ..PaymentStatus::default()
        };
        assert_eq!(status(None, None).finished(), None);
        assert_eq!(status(Some(Phase::Processing), Some(&at)).finished(), None);
        assert_eq!(
            status(Some(Phase::Cancelled), None).finished(),
            Some(Phase::Cancelled)
        );
        assert_eq!(status(Some(Phase::Failed), None).recorded_end(), None);
        assert_eq!(
            status(Some(Phase::Failed), Some(&at)).recorded_end(),
            Some(&at)
        );
        assert_eq!(
            status(Some(Phase::Processing), Some(&at)).recorded_end(),
            None
        );
    }

    #[test]
    fn spec_round_trips_in_camel_case() {
        let json = serde_json::json!({
            "userId": "alice", "amount": 1250, "currency": "EUR", "method": "bankTransfer",
            "notify": {"email": "alice@example.com"}
        });
        let spec: PaymentSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.method, PaymentMethod::BankTransfer);
        assert_eq!(spec.amount, 1250);
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
    }

    #[test]
    fn crd_names_match_the_design() {
        let crd = Payment::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("payments.paysaga.dev"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["pay".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["paysaga".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "User", "Amount", "Currency", "Phase", "Step", "Refunded", "Age"
            ]
        );
    }
}

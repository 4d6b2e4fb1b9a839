//! The payment saga's contract: workflow, signal and query names, and the
//! data the controller, the API and the worker exchange with it.

use serde::{Deserialize, Serialize};

use crate::{Notify, PaymentMethod, Phase, Step};

/// Workflow type of the payment saga (task queue [`crate::names::PAYMENTS_TASK_QUEUE`]).
pub const PAYMENT_WORKFLOW: &str = "PaymentWorkflow";
/// Workflow type of the fraud check child (task queue [`crate::names::FRAUD_TASK_QUEUE`]).
pub const FRAUD_CHECK_WORKFLOW: &str = "FraudCheckWorkflow";
/// Signal carrying a verified [`crate::external::GatewayCallback`].
pub const SIGNAL_GATEWAY_CALLBACK: &str = "gatewayCallback";
/// Signal carrying a [`CancelRequest`].
pub const SIGNAL_CANCEL: &str = "cancel";
/// Query answering a [`PaymentProgress`].
pub const QUERY_STATUS: &str = "status";
/// Memo field where `PaymentWorkflow` publishes its [`PaymentProgress`] as
/// the step changes. The upsert is an event in the workflow's history, so
/// whoever follows the history (the controller) sees progress without
/// querying the worker.
pub const PROGRESS_MEMO: &str = "paysagaProgress";

/// The fraud child's workflow ID for a payment's workflow ID.
pub fn fraud_workflow_id(payment_workflow_id: &str) -> String {
    format!("{payment_workflow_id}-fraud")
}

/// Default wait for the gateway's confirmation.
pub const DEFAULT_CONFIRMATION_TIMEOUT_SECS: u64 = 300;

/// What `PaymentWorkflow` is started with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentInput {
    /// The payment's ID everywhere outside Kubernetes: its workflow ID. Every
    /// idempotency key is derived from it.
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    pub method: PaymentMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// How long to wait for the gateway's confirmation.
    #[serde(default = "default_confirmation_timeout")]
    pub confirmation_timeout_secs: u64,
    /// Task queue of the fraud-check child (where the fraud workers poll).
    #[serde(default = "default_fraud_task_queue")]
    pub fraud_task_queue: String,
    /// Attempts of each compensation before it is reported as failed.
    #[serde(default = "default_compensation_attempts")]
    pub compensation_max_attempts: u32,
}

/// Default attempts of a compensation: with backoff capped at 30 s, about
/// eight minutes of trying before a human is asked to look.
pub const DEFAULT_COMPENSATION_ATTEMPTS: u32 = 20;

fn default_compensation_attempts() -> u32 {
    DEFAULT_COMPENSATION_ATTEMPTS
}

fn default_confirmation_timeout() -> u64 {
    DEFAULT_CONFIRMATION_TIMEOUT_SECS
}

fn default_fraud_task_queue() -> String {
    crate::names::FRAUD_TASK_QUEUE.to_string()
}

/// Idempotency keys of a payment's calls to the outside world, all derived
/// from its ID. (The ledger needs none: its entries are unique on payment and
/// kind.)
pub mod keys {
    pub fn charge(payment_id: &str) -> String {
        format!("{payment_id}-charge")
    }
    pub fn refund(payment_id: &str) -> String {
        format!("{payment_id}-refund")
    }
    pub fn notification(payment_id: &str, channel: &str) -> String {
        format!("{payment_id}-notify-{channel}")
    }
}

/// Payload of the `cancel` signal.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub reason: String,
}

/// What a payment ended as: the workflow's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentOutcome {
    pub phase: Phase,
    /// CamelCase machine reason, e.g. `Confirmed`, `Declined`, `FraudRejected`.
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
    /// Every step's record, from the start to the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepRecord>,
}

/// What happened to a step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StepEvent {
    Started,
    Completed,
    Failed,
    Skipped,
}

/// One line of a payment's history, stamped with workflow time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub step: Step,
    pub event: StepEvent,
    /// Workflow time, Unix milliseconds.
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Answer of the `status` query.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentProgress {
    pub phase: Phase,
    pub step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub history: Vec<StepRecord>,
}

/// What `FraudCheckWorkflow` is started with: what the fraud service scores.
pub type FraudCheckInput = crate::external::FraudScoreRequest;

/// The fraud check's verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FraudVerdict {
    pub pass: bool,
    pub score: u32,
    /// Why, in words (the rules that fired, or the threshold crossed).
    pub reason: String,
}

/// Machine reasons a payment ends with (`PaymentOutcome::reason`).
pub mod reasons {
    pub const CONFIRMED: &str = "Confirmed";
    pub const ACCOUNT_INVALID: &str = "AccountInvalid";
    pub const INSUFFICIENT_FUNDS: &str = "InsufficientFunds";
    pub const FRAUD_REJECTED: &str = "FraudRejected";
    /// The fraud check could not give a verdict (it is not a rejection).
    pub const FRAUD_CHECK_FAILED: &str = "FraudCheckFailed";
    pub const DECLINED: &str = "Declined";
    pub const GATEWAY_FAILED: &str = "GatewayFailed";
    pub const CHARGE_FAILED: &str = "ChargeFailed";
    pub const CONFIRMATION_TIMEOUT: &str = "ConfirmationTimeout";
    pub const CANCELLED: &str = "Cancelled";
    pub const COMPENSATION_FAILED: &str = "CompensationFailed";
}

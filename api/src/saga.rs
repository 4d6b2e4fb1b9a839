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
/// Signal carrying a reviewer's [`ReviewDecision`] on a payment in
/// [`Step::ManualReview`](crate::Step::ManualReview).
pub const SIGNAL_REVIEW: &str = "review";
/// Signal carrying an [`ExpediteRequest`]: stop waiting now.
pub const SIGNAL_EXPEDITE: &str = "expedite";
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
/// Default attempts of a charge (with backoff from 1 s, capped at 10 s:
/// about 45 s of trying) before the saga waits and tries once more.
pub const DEFAULT_CHARGE_ATTEMPTS: u32 = 8;
/// Default wait after a charge kept failing transiently, before one more
/// attempt (the seeds' 30 minutes).
pub const DEFAULT_CHARGE_RETRY_WAIT_SECS: u64 = 30 * 60;
/// Default time a payment waits for a reviewer before it is compensated and
/// failed.
pub const DEFAULT_REVIEW_DEADLINE_SECS: u64 = 24 * 60 * 60;

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
    /// When and how a stuck payment goes to a person (flattened: its fields
    /// sit beside the others, and inputs recorded before it get the defaults).
    #[serde(flatten)]
    pub escalation: Escalation,
    /// Who asked for the payment, as the API authenticated them (the
    /// Payment's `paysaga.dev/requested-by`); the step history's first
    /// record names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The Payment object this saga runs for, when a controller started it:
    /// its end goes to the webhook endpoints of its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectName>,
    /// The request that made the Payment (its `paysaga.dev/request-id`
    /// label): the saga sends it to the outside world as `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A namespaced object's name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

/// When and how a stuck payment goes to a person.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Escalation {
    /// Attempts of the charge before the saga waits `charge_retry_wait_secs`.
    pub charge_max_attempts: u32,
    /// How long to wait, after the charge kept failing transiently, before
    /// the one more attempt that precedes a manual review.
    pub charge_retry_wait_secs: u64,
    /// How long a payment waits for a reviewer before it is compensated and
    /// failed (`ReviewTimeout`).
    pub review_deadline_secs: u64,
    /// Who is told when a payment needs a review (email/SMS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<Notify>,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            charge_max_attempts: DEFAULT_CHARGE_ATTEMPTS,
            charge_retry_wait_secs: DEFAULT_CHARGE_RETRY_WAIT_SECS,
            review_deadline_secs: DEFAULT_REVIEW_DEADLINE_SECS,
            reviewer: None,
        }
    }
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
    /// A refund's call to the gateway: its workflow ID is unique per Refund.
    pub fn charge_refund(refund_id: &str) -> String {
        format!("{refund_id}-gateway")
    }
    pub fn notification(payment_id: &str, channel: &str) -> String {
        format!("{payment_id}-notify-{channel}")
    }
    /// A message about the payment to someone else than the payer (`purpose`
    /// names whom: `review`).
    pub fn notification_for(payment_id: &str, purpose: &str, channel: &str) -> String {
        format!("{payment_id}-notify-{purpose}-{channel}")
    }
}

/// Payload of the `cancel` signal.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub reason: String,
}

/// A reviewer's answer to a payment in manual review.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// Retry the charge (it never went through) or accept it (the gateway
    /// could not tell whether it did).
    Approve,
    /// Give up: compensate and fail.
    Reject,
}

impl Decision {
    /// `approve` | `reject`, as the annotation and the HTTP API spell it.
    pub fn parse(s: &str) -> Option<Decision> {
        match s.trim() {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            _ => None,
        }
    }
}

/// Payload of the `review` signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewDecision {
    pub decision: Decision,
    /// Who decided (the annotation's field manager, or the API caller).
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Payload of the `expedite` signal.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExpediteRequest {
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a payment waits for a person.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ReviewCause {
    /// The charge kept failing transiently past its retries, a wait and one
    /// more attempt: it never went through.
    ChargeUnavailable,
    /// The charge was made but no confirmation came, and the gateway cannot
    /// tell (still pending, or it did not answer).
    OutcomeUnknown,
}

/// A payment's manual review, as the saga publishes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewState {
    pub cause: ReviewCause,
    /// What happened, in words.
    pub message: String,
    /// When the review began (workflow time, Unix milliseconds).
    pub since_ms: i64,
    /// When it is failed if nobody answers.
    pub deadline_ms: i64,
    /// The answer, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ReviewAnswer>,
}

/// A recorded review decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReviewAnswer {
    pub decision: Decision,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Workflow time, Unix milliseconds.
    pub at_ms: i64,
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
    /// The manual review, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewState>,
    /// Confirmations for another charge, ignored (as in [`PaymentProgress`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_callbacks: Vec<String>,
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
    /// The manual review, while one is open or once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewState>,
    /// Signed confirmations for another charge than the one made (its id,
    /// amount or currency), ignored; each described.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_callbacks: Vec<String>,
}

/// What `FraudCheckWorkflow` is started with: what the fraud service scores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FraudCheckInput {
    /// What the fraud service scores (sent as its body).
    #[serde(flatten)]
    pub request: crate::external::FraudScoreRequest,
    /// The request that made the payment: sent as `X-Request-Id`, on the
    /// fraud check's log lines. (Histories from before it have none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

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
    /// Succeeded without a confirmation: the gateway, asked when the
    /// confirmation timer fired, said the charge was captured.
    pub const CONFIRMATION_RECOVERED: &str = "ConfirmationRecovered";
    /// Succeeded because a reviewer accepted a charge whose outcome the
    /// gateway could not tell.
    pub const REVIEW_APPROVED: &str = "ReviewApproved";
    /// Failed because a reviewer rejected it.
    pub const REVIEW_REJECTED: &str = "ReviewRejected";
    /// Failed because nobody reviewed it before the deadline.
    pub const REVIEW_TIMEOUT: &str = "ReviewTimeout";
    pub const CANCELLED: &str = "Cancelled";
    pub const COMPENSATION_FAILED: &str = "CompensationFailed";
}

// ---- refunds ------------------------------------------------------------------------

/// Workflow type of a refund (task queue [`crate::names::PAYMENTS_TASK_QUEUE`]).
pub const REFUND_WORKFLOW: &str = "RefundWorkflow";

/// What `RefundWorkflow` is started with (by the controller, from the
/// Refund and its Payment).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefundInput {
    /// The refund's ID everywhere outside Kubernetes: its workflow ID. The
    /// ledger's row and the gateway's idempotency key derive from it.
    pub refund_id: String,
    /// The refunded payment's ID (its workflow ID).
    pub payment_id: String,
    /// The payment's payer, whose account is credited.
    pub user_id: String,
    pub amount: i64,
    /// The payment's currency as its object says; the ledger must agree.
    pub currency: String,
    /// The gateway's charge refunded.
    pub charge_id: String,
    pub reason: crate::RefundReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where to tell the payer (the payment's contacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// The Refund object, for its webhooks (refunds a controller started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectName>,
    /// The request that made the Refund through the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// How a refund ended: the workflow's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefundOutcome {
    pub phase: crate::RefundPhase,
    /// CamelCase machine reason ([`refund_reasons`]).
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_refund_id: Option<String>,
    /// The payment's total refunded in the ledger after this refund (when
    /// it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_refunded_amount: Option<i64>,
}

/// Machine reasons a refund ends with ([`RefundOutcome::reason`]), and those
/// the controller gives when it does not start one.
pub mod refund_reasons {
    pub const REFUNDED: &str = "Refunded";
    /// The payment has not succeeded (failed, cancelled, still running).
    pub const PAYMENT_NOT_SUCCEEDED: &str = "PaymentNotSucceeded";
    /// No such Payment in the namespace.
    pub const PAYMENT_NOT_FOUND: &str = "PaymentNotFound";
    /// The Payment is being deleted: no new refund starts.
    pub const PAYMENT_DELETED: &str = "PaymentDeleted";
    /// This refund and the earlier ones would give back more than was captured.
    pub const EXCEEDS_REFUNDABLE: &str = "ExceedsRefundable";
    /// The payment was made by another payer than the refund names.
    pub const PAYER_MISMATCH: &str = "PayerMismatch";
    /// The refund's currency is not the payment's.
    pub const CURRENCY_MISMATCH: &str = "CurrencyMismatch";
    /// The gateway refused the refund (permanently).
    pub const GATEWAY_REFUSED: &str = "GatewayRefused";
    /// The workflow ended without an outcome (terminated, timed out).
    pub const WORKFLOW_ENDED: &str = "WorkflowEnded";
}

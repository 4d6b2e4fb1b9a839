//! Reasons of the Events and conditions the controller sets: constants,
//! so that what is said can be searched for and alerted on.

pub const CANCEL_REQUESTED: &str = "CancelRequested";
pub const TOO_LATE_TO_CANCEL: &str = "TooLateToCancel";
/// The cancel annotation changed after a cancel was signalled: the first
/// reason stands (the workflow took it), and the annotation is set back.
pub const CANCEL_ALREADY_REQUESTED: &str = "CancelAlreadyRequested";
/// A payment waits for a person (condition `NeedsReview`).
pub const NEEDS_REVIEW: &str = "NeedsReview";
/// A review decision was passed on to the workflow.
pub const REVIEW_SUBMITTED: &str = "ReviewSubmitted";
/// The review annotation is neither `approve` nor `reject`.
pub const INVALID_REVIEW_DECISION: &str = "InvalidReviewDecision";
/// A review decision came when no review was open (or before it began).
pub const NO_REVIEW_OPEN: &str = "NoReviewOpen";
/// Reasons of `NeedsReview=False` once a review ends.
pub const REVIEW_APPROVED: &str = "Approved";
pub const REVIEW_REJECTED: &str = "Rejected";
pub const REVIEW_CLOSED: &str = "Closed";
pub const EXPEDITE_REQUESTED: &str = "ExpediteRequested";
pub const TOO_LATE_TO_EXPEDITE: &str = "TooLateToExpedite";
/// A signed confirmation named another charge than the one made (its id,
/// amount or currency) and was ignored (condition `ConfirmationsIgnored`).
pub const CHARGE_MISMATCH: &str = "ChargeMismatch";
/// The workflow closed without an outcome (terminated, timed out, failed).
pub const WORKFLOW_ENDED_ABNORMALLY: &str = "WorkflowEndedAbnormally";
pub const TEMPORAL_UNAVAILABLE: &str = "TemporalUnavailable";
/// The object does not deserialize (e.g. stored under an older schema).
pub const INVALID_OBJECT: &str = "InvalidObject";

/// A step that failed, by its condition.
pub const VALIDATION_FAILED: &str = "ValidationFailed";
pub const FRAUD_REJECTED: &str = "FraudRejected";
pub const DEBIT_FAILED: &str = "DebitFailed";
pub const CHARGE_FAILED: &str = "ChargeFailed";
pub const CONFIRMATION_FAILED: &str = "ConfirmationFailed";
pub const NOTIFICATION_FAILED: &str = "NotificationFailed";
pub const COMPENSATION_FAILED: &str = "CompensationFailed";

/// How a payment ended: the Event of its end.
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
pub const CANCELLED: &str = "Cancelled";

//! Reasons of the Events and conditions the controller sets: constants,
//! so that what is said can be searched for and alerted on.

pub const CANCEL_REQUESTED: &str = "CancelRequested";
pub const TOO_LATE_TO_CANCEL: &str = "TooLateToCancel";
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

//! The paysaga contract: the `Payment` custom resource, the names shared by
//! the controller, the worker and the API, the saga's inputs and outputs, and
//! the outside world's HTTP contracts.
//!
//! This crate does no I/O; everything else depends on it, never the reverse.

pub mod external;
pub mod http;
pub mod idempotency;

pub mod names;
pub mod payment;
pub mod recurring;
pub mod refund;
pub mod saga;
pub mod signature;
pub mod webhook;

pub use payment::{
    MAX_AMOUNT_MINOR, Notify, Payment, PaymentMethod, PaymentReview, PaymentSpec, PaymentStatus,
    Phase, Step,
};
pub use recurring::{
    RecurringPayment, RecurringPaymentSpec, RecurringPaymentStatus, RecurringPhase,
};
pub use refund::{Refund, RefundPhase, RefundReason, RefundSpec, RefundStatus};
pub use webhook::{EventType, WebhookEndpoint, WebhookEndpointSpec, WebhookEndpointStatus};

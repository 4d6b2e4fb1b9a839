//! The paysaga contract: the `Payment` custom resource, the names shared by
//! the controller, the worker and the API, and the data they exchange.
//!
//! This crate does no I/O; everything else depends on it, never the reverse.

pub mod names;
pub mod payment;

pub use payment::{
    MAX_AMOUNT_MINOR, Notify, Payment, PaymentMethod, PaymentSpec, PaymentStatus, Phase, Step,
};

//! paysaga-worker: the Temporal workflows and activities of the payment saga.

pub mod ping;
pub mod temporal;

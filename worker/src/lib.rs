//! paysaga-worker: the Temporal workflows and activities of the payment saga,
//! the accounts ledger and its audit.

pub mod activities;
pub mod admin;
pub mod audit;
pub mod ledger;
pub mod metrics;
pub mod ping;
pub mod recurring;
pub mod refund;
pub mod webhooks;
pub mod worker;
pub mod workflows;

#[cfg(test)]
mod replay_tests;

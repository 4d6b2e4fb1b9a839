//! paysaga-operator: the controller, the HTTP API and the CRD generator.
//! (`api` is the contract crate, `paysaga-api`; the HTTP API is [`http`].)

pub mod controller;
pub mod crdgen;
pub mod http;
pub mod openmetrics;
pub mod schedules;
pub mod temporal;

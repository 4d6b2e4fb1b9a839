//! paysaga-operator: the controller, the HTTP API and the CRD generator.

pub mod api;
pub mod controller;
pub mod crdgen;
pub mod temporal;

//! paysaga-operator: the controller, the HTTP API and the CRD generator.

pub mod crdgen;
pub mod telemetry;

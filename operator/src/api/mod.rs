//! `paysaga-operator api`: the HTTP API. Stateless; scales horizontally.
//! Errors are RFC 9457 `application/problem+json`.

pub mod callbacks;
pub mod problem;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use paysaga_api::external::paths;

use crate::temporal::PaymentWorkflows;

/// What the handlers share.
pub struct AppState {
    pub workflows: PaymentWorkflows,
    pub callbacks: callbacks::CallbackVerifier,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(paths::GATEWAY_CALLBACKS, post(callbacks::receive))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

//! `paysaga-operator api`: the HTTP API. Scales horizontally: the Payment
//! objects are the only state that matters; what an instance keeps is its
//! watch of them ([`watched`]), which every replica rebuilds alike. Errors
//! are RFC 9457 `application/problem+json`. One instance serves one
//! namespace.

pub mod auth;
pub mod body;
pub mod callbacks;
pub mod codec;
pub mod metrics;
pub mod openapi;
pub mod payments;
pub mod problem;
pub mod recurring;
pub mod refunds;
pub mod request_id;
pub mod watched;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::api::{Api, ListParams};
use paysaga_api::Payment;
use paysaga_api::external::paths;
use tower::ServiceBuilder;

use crate::temporal::PaymentWorkflows;
use problem::Problem;

/// What the handlers share.
pub struct AppState {
    pub workflows: PaymentWorkflows,
    pub callbacks: callbacks::CallbackVerifier,
    /// `None` when no Kubernetes credentials were found: the API then only
    /// receives gateway callbacks, and `/v1/payments` answers 503.
    pub kube: Option<kube::Client>,
    /// The namespace's Payments as the API's watch shows them: admission
    /// and reads (see [`watched`]).
    pub watched: Arc<watched::Watched>,
    /// Refuse new payments at this many in flight; 0: no limit.
    pub max_payments_in_flight: usize,
    /// The namespace Payments are made in and read from.
    pub namespace: String,
    /// Prefix of `statusUrl`s (empty: relative URLs).
    pub base_url: String,
    pub metrics: Arc<metrics::HttpMetrics>,
    /// Who may call the guarded routes ([`auth`]); `None` without
    /// Kubernetes credentials (every guarded route then answers 503).
    pub auth: Option<Arc<auth::Auth>>,
    /// The Temporal payload codec behind `/codec/encode` and `/codec/decode`
    /// ([`codec`]); `None` without a keyring (those routes answer 503).
    pub codec: Option<codec::CodecEndpoint>,
}

impl AppState {
    pub fn payments(&self) -> Result<Api<Payment>, Problem> {
        match &self.kube {
            Some(client) => Ok(Api::namespaced(client.clone(), &self.namespace)),
            None => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this API instance has no Kubernetes credentials; it only receives gateway callbacks",
            )),
        }
    }
}

/// The API's routes. At most `max_in_flight` requests are worked on at once;
/// past that, requests are refused at once with 503 and `Retry-After`, never
/// queued into a timeout.
pub fn router(state: Arc<AppState>, max_in_flight: usize) -> Router {
    // Every route here asks for a credential and RBAC access (see [`auth`]).
    let guarded = Router::new()
        .route("/v1/payments", post(payments::create).get(payments::list))
        .route("/v1/payments/{id}", get(payments::get))
        .route("/v1/payments/{id}/cancel", post(payments::cancel))
        .route("/v1/payments/{id}/review", post(payments::review))
        .route("/v1/payments/{id}/expedite", post(payments::expedite))
        .route(
            "/v1/payments/{id}/refunds",
            post(refunds::create).get(refunds::list),
        )
        .route("/v1/refunds/{id}", get(refunds::get))
        .route(
            "/v1/recurring-payments",
            post(recurring::create).get(recurring::list),
        )
        .route(
            "/v1/recurring-payments/{id}",
            get(recurring::get).delete(recurring::delete),
        )
        .route(
            "/v1/recurring-payments/{id}/suspend",
            post(recurring::suspend),
        )
        .route(
            "/v1/recurring-payments/{id}/resume",
            post(recurring::resume),
        )
        .route(
            "/v1/recurring-payments/{id}/payments",
            get(recurring::payments),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ));
    // The Temporal codec-server protocol (the UI and CLI decode with it):
    // guarded the same way, and callable from the Temporal UI's origin
    // (CORS; preflights are answered before the guard, browsers send them
    // without credentials).
    let codec = Router::new()
        .route("/codec/encode", post(codec::encode))
        .route("/codec/decode", post(codec::decode))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::codec_cors,
        ));
    let api = Router::new()
        .merge(guarded)
        .merge(codec)
        // The gateway signs its callbacks (HMAC): no bearer credential.
        .route(paths::GATEWAY_CALLBACKS, post(callbacks::receive))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    overloaded()
                }))
                .load_shed()
                .concurrency_limit(max_in_flight),
        );
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::serve))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::document_text(),
                )
            }),
        )
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such route").into_response() })
        .layer(axum::extract::DefaultBodyLimit::max(
            problem::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(problem::every_error))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

fn overloaded() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in flight; retry shortly",
    )
    .retry_after(1)
}

/// Ready only when the Kubernetes API and Temporal both answer.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let kube = match state.payments() {
        Ok(api) => tokio::time::timeout(
            Duration::from_secs(2),
            api.list(&ListParams::default().limit(1)),
        )
        .await
        .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    };
    let temporal = tokio::time::timeout(Duration::from_secs(2), state.workflows.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    if kube && temporal {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: kubernetes reachable={kube}, temporal reachable={temporal}"),
        )
            .into_response()
    }
}

//! The API's Prometheus metrics: request latency by route and status code,
//! and where reads of one payment were answered from.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `watch` (the API's own watch) or `apiserver` (a read through it).
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    /// `current` or `previous`: the signing secret that verified a callback.
    pub secret: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `unauthenticated`, `forbidden` or `rate_limited`.
    pub reason: &'static str,
}

pub struct HttpMetrics {
    pub requests: Family<RouteLabels, Histogram>,
    pub payment_reads: Family<SourceLabels, Counter>,
    pub callbacks_verified: Family<SecretLabels, Counter>,
    pub auth_refusals: Family<RefusedLabels, Counter>,
    registry: Registry,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let mut registry = Registry::with_prefix("paysaga_api");
        registry.register(
            "request_duration_seconds",
            "HTTP request latency by route and status code",
            requests.clone(),
        );
        let payment_reads = Family::<SourceLabels, Counter>::default();
        registry.register(
            "payment_reads",
            "Reads of one payment (GET /v1/payments/{id}) by where they were answered from",
            payment_reads.clone(),
        );
        let auth_refusals = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Requests refused before their handler: no valid credential, no RBAC access, or over the caller's rate",
            auth_refusals.clone(),
        );
        let callbacks_verified = Family::<SecretLabels, Counter>::default();
        registry.register(
            "gateway_callbacks_verified",
            "Gateway callbacks taken, by the signing secret that verified them (a rotation is over once `previous` stops growing)",
            callbacks_verified.clone(),
        );
        HttpMetrics {
            requests,
            payment_reads,
            callbacks_verified,
            auth_refusals,
            registry,
        }
    }
}

impl HttpMetrics {
    pub fn payment_read(&self, source: &'static str) {
        self.payment_reads
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    pub fn auth_refused(&self, reason: &'static str) {
        self.auth_refusals
            .get_or_create(&RefusedLabels { reason })
            .inc();
    }

    pub fn callback_verified(&self, with: paysaga_api::signature::SignedWith) {
        self.callbacks_verified
            .get_or_create(&SecretLabels {
                secret: with.as_str(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        crate::openmetrics::encode(&self.registry)
    }
}

/// Times every request, labelled by its route template (not the raw path).
pub async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .get_or_create(&RouteLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .observe(t0.elapsed().as_secs_f64());
    resp
}

pub async fn serve(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.encode();
    ([("content-type", crate::openmetrics::CONTENT_TYPE)], text).into_response()
}

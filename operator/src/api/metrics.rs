//! The API's Prometheus metrics: request latency by route and status code.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
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

pub struct HttpMetrics {
    pub requests: Family<RouteLabels, Histogram>,
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
        HttpMetrics { requests, registry }
    }
}

impl HttpMetrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
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
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

//! The worker's admin endpoints: for the kubelet's probes `/healthz` (the
//! process answers) and `/readyz` (the ledger is open and both task queues
//! are polled), for Prometheus `/metrics` ([`crate::metrics`]). Served on
//! `--admin-listen` only when it is set (the chart sets it; tests that start
//! many workers at once do not).
//!
//! Without them a Deployment counts a worker Ready the moment its process
//! starts, even while it cannot reach Temporal or its database: on a real
//! node, `helm install --wait` then passes with a worker that polls nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{self, Metrics};

/// Whether the worker polls its task queues.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub fn router(ready: Readiness, metrics: Metrics) -> Router {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("building the metrics client");
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (metrics, http) = (metrics.clone(), http.clone());
                async move {
                    match metrics.scrape(&http).await {
                        Some(Ok(text)) => {
                            ([("content-type", metrics::CONTENT_TYPE)], text).into_response()
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reading the metrics exporter");
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("the metrics exporter did not answer: {e}"),
                            )
                                .into_response()
                        }
                        None => (StatusCode::NOT_FOUND, "metrics are not exported").into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.get();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: not polling its task queues",
                        )
                    }
                }
            }),
        )
}

/// Binds `listen` and serves the endpoints in the background; returns the
/// address bound.
pub async fn serve(
    listen: &str,
    ready: Readiness,
    metrics: Metrics,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the admin endpoints to {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(admin = %addr, "admin endpoints (/healthz, /readyz, /metrics) listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(ready, metrics)).await {
            tracing::error!(error = %e, "admin endpoints stopped");
        }
    });
    Ok(addr)
}

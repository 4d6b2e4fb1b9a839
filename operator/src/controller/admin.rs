//! The controller's admin endpoints: `/metrics`, `/healthz` (the process
//! answers) and `/readyz` (the API server and Temporal answered their last
//! calls), and what readiness is made of.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use kube::Client;
use kube::api::{Api, ListParams};
use paysaga_api::Payment;

use super::metrics::Metrics;
use crate::temporal::PaymentWorkflows;

/// Whether the parts the controller needs answered their last calls.
#[derive(Debug, Default)]
pub struct Readiness {
    kube: AtomicBool,
    temporal: AtomicBool,
}

impl Readiness {
    pub fn kube(&self, ok: bool) {
        self.kube.store(ok, Ordering::Relaxed);
    }

    pub fn temporal(&self, ok: bool) {
        self.temporal.store(ok, Ordering::Relaxed);
    }

    /// `Ok` when ready; otherwise what is not.
    pub fn check(&self) -> Result<(), String> {
        let kube = self.kube.load(Ordering::Relaxed);
        let temporal = self.temporal.load(Ordering::Relaxed);
        if kube && temporal {
            Ok(())
        } else {
            Err(format!(
                "not ready: kubernetes reachable={kube}, temporal reachable={temporal}"
            ))
        }
    }
}

/// Readiness of the API server: checked now and then, one cheap list.
/// Started before leader election: a replica waiting to lead is a hot
/// standby and as ready as the leader; if only the leader were ready, a
/// Deployment of two would never be Ready (`helm install --wait` showed it).
pub fn spawn_readiness_probe(client: Client, readiness: Arc<Readiness>) {
    let probe: Api<Payment> = Api::all(client);
    tokio::spawn(async move {
        loop {
            let ok = probe.list(&ListParams::default().limit(1)).await.is_ok();
            readiness.kube(ok);
            tokio::time::sleep(Duration::from_secs(if ok { 15 } else { 2 })).await;
        }
    });
}

/// Asks Temporal every `interval` (every 2 s at most while it does not
/// answer) whether it answers, so readiness and the `temporal_reachable`
/// metric (what the Temporal-unreachable alert reads) tell even when no
/// payment is reconciled. Started before leader election, like the API
/// server's probe: a standby reports too.
pub fn spawn_temporal_probe(
    workflows: PaymentWorkflows,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let failing = interval.min(Duration::from_secs(2));
    tokio::spawn(async move {
        loop {
            let ok = tokio::time::timeout(Duration::from_secs(2), workflows.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if !ok {
                tracing::warn!("Temporal did not answer the controller's probe");
            }
            readiness.temporal(ok);
            metrics.temporal_reachable.set(i64::from(ok));
            tokio::time::sleep(if ok { interval } else { failing }).await;
        }
    });
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move { ([("content-type", crate::openmetrics::CONTENT_TYPE)], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let answer = match readiness.check() {
                    Ok(()) => (StatusCode::OK, "ready".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                };
                async move { answer }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_both_answered() {
        let r = Readiness::default();
        assert_eq!(
            r.check(),
            Err("not ready: kubernetes reachable=false, temporal reachable=false".into())
        );
        r.kube(true);
        assert!(r.check().is_err());
        r.temporal(true);
        assert_eq!(r.check(), Ok(()));
    }
}

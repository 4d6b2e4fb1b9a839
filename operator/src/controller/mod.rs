//! `paysaga-operator controller`: Payment objects drive workflows, and
//! status flows back as the workflows move.
//!
//! A reconcile ([`reconcile`]) is a pipeline, one module per step:
//! [`observe`] (the object from the [`cache`], its workflow from the
//! [`follow`]ed history or Temporal, its pacing from the [`tracker`]) →
//! [`plan`] (pure: the actions, the status, the Events, when to come back)
//! → [`act`] (start, signal, follow, forget, finalizers, TTL) → [`status`]
//! (at most one status write, by server-side apply, then the Events).
//! Wake-ups come from the objects (create, annotate, delete) and from the
//! workflows' histories, not from a fixed short poll. Around it: the
//! [`leader`] election, the [`admin`] endpoints and the [`metrics`].

pub mod act;
pub mod admin;
pub mod cache;
pub mod follow;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod recurring;
pub mod refunds;
pub mod status;
pub mod tracker;

#[cfg(test)]
mod shell_tests;

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::temporal::PaymentWorkflows;
use admin::Readiness;
use cache::Cached;
use follow::{Follower, Wakes};
use plan::Settings;
use tracker::Tracker;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub workflows: PaymentWorkflows,
    pub settings: Settings,
    pub recorder: Recorder,
    pub follower: Follower,
    /// Every payment's runtime state.
    pub tracker: Arc<Tracker>,
    pub metrics: Arc<metrics::Metrics>,
    pub readiness: Arc<Readiness>,
}

impl Context {
    /// The context of a controller; also the receiver of the wake-ups the
    /// followed histories send.
    pub fn new(
        client: Client,
        temporal: temporalio_client::Client,
        settings: Settings,
        metrics: Arc<metrics::Metrics>,
        readiness: Arc<Readiness>,
    ) -> (Context, Wakes) {
        let tracker = Arc::new(Tracker::default());
        let (follower, wakes) = Follower::new(
            temporal.clone(),
            tracker.clone(),
            settings.status_step_interval,
            &metrics,
        );
        let reporter = Reporter {
            controller: "paysaga-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            workflows: PaymentWorkflows::new(temporal),
            settings,
            follower,
            tracker,
            metrics,
            readiness,
        };
        (ctx, wakes)
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: Client,
    temporal: temporalio_client::Client,
    settings: Settings,
    concurrency: u16,
    metrics: Arc<metrics::Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let payments: Api<Cached> = Api::all(client.clone());
    let sweeper = tokio::spawn(keys::sweep_forever(
        client.clone(),
        settings.idempotency_sweep,
    ));
    let refunds = tokio::spawn(refunds::run(
        client.clone(),
        temporal.clone(),
        settings.payments_task_queue.clone(),
        settings.finished_ttl,
    ));
    let recurring = tokio::spawn(recurring::run(
        client.clone(),
        temporal.clone(),
        settings.payments_task_queue.clone(),
        settings.recurring_namespaces.clone(),
    ));
    let (ctx, rx) = Context::new(client, temporal, settings, metrics, readiness);
    let ctx = Arc::new(ctx);
    let triggers =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    // Only changes a user or the API server makes wake a Payment: not the
    // controller's own status writes (no reconcile storms). Progress of the
    // workflow arrives through the wake-ups.
    let (reader, writer) = reflector::store();
    let metrics = ctx.metrics.clone();
    metrics.watch_open_payments(Some(reader.clone()));
    // The cache keeps each Payment compact ([`cache`]). The initial list
    // comes in pages (a list at any resource version would come whole from
    // the watch cache: tens of MB at once with 10k Payments).
    let objects = reflector(
        writer,
        watcher(payments, watcher::Config::default().page_size(250)),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(relevant_change, PredicateConfig::default());
    Controller::for_stream(objects, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(payment = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
    metrics.watch_open_payments(None);
    sweeper.abort();
    refunds.abort();
    recurring.abort();
}

/// What, in a Payment, calls for a reconcile: its identity, spec, the
/// annotations that ask something of it (cancel, review, expedite),
/// finalizers and deletion — everything but its status.
fn relevant_change(p: &Cached) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let meta = p.meta();
    meta.uid.hash(&mut h);
    meta.generation.hash(&mut h);
    for a in paysaga_api::names::ASK_ANNOTATIONS {
        p.annotations().get(*a).hash(&mut h);
    }
    meta.finalizers.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .hash(&mut h);
    Some(h.finish())
}

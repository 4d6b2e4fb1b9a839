//! `paysaga-sim`: the outside world the payment saga talks to, as real HTTP
//! services on one listen address.
//!
//! | service | routes | module |
//! |---|---|---|
//! | payment gateway | `POST /gateway/v1/charges`, `GET /gateway/v1/charges/{chargeId}` (what became of a charge), `POST /gateway/v1/charges/{chargeId}/refunds` (partial or full refund of a captured charge), `POST /gateway/v1/refunds` (the saga's compensation), signed confirmations | [`gateway`], [`callbacks`] |
//! | fraud scoring | `POST /fraud/v1/score` | [`fraud`] |
//! | email/SMS provider | `POST`/`GET /notify/v1/messages` | [`notify`] |
//! | merchants' webhook receivers | `POST /merchant/v1/{name}/events`, `PUT`/`GET /admin/merchants/{name}` | [`merchant`] |
//! | knobs and audit | `/admin/config`, `/admin/scenarios/{paymentId}`, `/admin/gateway-ledger`, `/healthz` | [`admin`] |
//!
//! The contract (paths, DTOs, signatures) lives in [`paysaga_api::external`]
//! and [`paysaga_api::signature`]. All state is in memory. Random faults come
//! from one seeded generator, so a run with the same seed and the same
//! sequence of requests makes the same decisions; a payment with a
//! [`Scenario`] is fully deterministic.

pub mod admin;
pub mod callbacks;
pub mod cli;
mod durable;
pub mod error;
pub mod fraud;
pub mod gateway;
pub mod merchant;
pub mod notify;
pub mod rng;
mod validate;

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use paysaga_api::external::{Scenario, SimConfig, paths};
use paysaga_common::telemetry;
use tokio::net::TcpListener;

pub use callbacks::RetryPolicy;
pub use error::ApiError;

/// How a simulator starts.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// The initial knobs (changed at run time through `PUT /admin/config`).
    pub config: SimConfig,
    /// HMAC key of the gateway's confirmations.
    pub callback_secret: Vec<u8>,
    /// Seed of the random faults.
    pub seed: u64,
    /// How confirmations are retried.
    pub retry: RetryPolicy,
    /// Keep the gateway's charges in this file across restarts
    /// ([`durable`]); in memory only when `None`.
    pub state_file: Option<std::path::PathBuf>,
}

impl SimSettings {
    /// Defaults: no latency, no faults, immediate confirmations, seed 0.
    pub fn new(callback_secret: impl Into<Vec<u8>>) -> Self {
        Self {
            config: SimConfig::default(),
            callback_secret: callback_secret.into(),
            seed: 0,
            retry: RetryPolicy::default(),
            state_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("the callback secret is empty")]
    EmptySecret,
    #[error("failed to build the HTTP client for confirmations")]
    HttpClient(#[source] reqwest::Error),
    #[error("failed to read the gateway's state file {0}")]
    StateFile(std::path::PathBuf, #[source] std::io::Error),
}

/// The simulators' shared state. Handlers get it as `State<Arc<Sim>>`.
#[derive(Debug)]
pub struct Sim {
    callback_secret: Arc<[u8]>,
    retry: RetryPolicy,
    http: reqwest::Client,
    state_file: Option<durable::StateFile>,
    /// Everything mutable, behind one lock: a simulator does not need more,
    /// and one lock cannot deadlock. Never held across an `.await`.
    state: Mutex<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: SimConfig,
    /// By payment ID, or by an ID prefix and `*` (see [`scenario`]).
    pub(crate) scenarios: HashMap<String, Scenario>,
    pub(crate) rng: rng::SplitMix64,
    pub(crate) gateway: gateway::Gateway,
    pub(crate) outbox: notify::Outbox,
    pub(crate) merchants: merchant::Merchants,
    pub(crate) ids: Ids,
}

/// The payment's scenario: its own, else that of the longest prefix (a key
/// `prefix*`) its ID starts with, copied to the payment the first time so
/// that what it uses up (transient failures) is its own. A prefix steers
/// payments whose IDs are not known in advance: every payment of one
/// Kubernetes namespace, say.
pub(crate) fn scenario<'a>(
    scenarios: &'a mut HashMap<String, Scenario>,
    payment_id: &str,
) -> Option<&'a mut Scenario> {
    if !scenarios.contains_key(payment_id) {
        let by_prefix = scenarios
            .iter()
            .filter_map(|(k, s)| Some((k.strip_suffix('*')?, s)))
            .filter(|(prefix, _)| payment_id.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, s)| s.clone())?;
        scenarios.insert(payment_id.to_string(), by_prefix);
    }
    scenarios.get_mut(payment_id)
}

/// IDs like `ch_000001`, unique within one simulator run (and the same from
/// one run to the next for the same requests).
#[derive(Debug, Default)]
pub(crate) struct Ids {
    last: u64,
}

impl Ids {
    pub(crate) fn next(&mut self, prefix: &str) -> String {
        self.last += 1;
        format!("{prefix}_{:06}", self.last)
    }
}

impl Sim {
    pub fn new(settings: SimSettings) -> Result<Arc<Self>, SimError> {
        admin::validate_config(&settings.config).map_err(SimError::InvalidConfig)?;
        if settings.callback_secret.is_empty() {
            return Err(SimError::EmptySecret);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("paysaga-sim/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SimError::HttpClient)?;
        let state_file = settings.state_file.clone().map(durable::StateFile::new);
        let saved = match &state_file {
            Some(file) => file.load().map_err(|e| {
                SimError::StateFile(settings.state_file.clone().unwrap_or_default(), e)
            })?,
            None => durable::Saved::default(),
        };
        Ok(Arc::new(Self {
            callback_secret: settings.callback_secret.into(),
            retry: settings.retry,
            http,
            state_file,
            state: Mutex::new(State {
                config: settings.config,
                scenarios: HashMap::new(),
                rng: rng::SplitMix64::new(settings.seed),
                gateway: saved.gateway,
                outbox: notify::Outbox::default(),
                merchants: merchant::Merchants::default(),
                ids: Ids {
                    last: saved.last_id,
                },
            }),
        }))
    }

    /// Schedules the confirmations a previous run left unsent (with a state
    /// file). Call once, inside the runtime, after [`Sim::new`].
    pub fn resume(self: &Arc<Self>) -> usize {
        let pending: Vec<callbacks::Confirmation> =
            self.lock().gateway.pending.values().cloned().collect();
        for confirmation in &pending {
            callbacks::spawn_confirmation(self.clone(), confirmation.clone());
        }
        pending.len()
    }

    /// Writes the gateway's state to its file, when it has one. A failed
    /// write is logged: the simulator goes on (as in memory).
    pub(crate) fn persist(&self, state: &State) {
        let Some(file) = &self.state_file else {
            return;
        };
        let saved = durable::SavedRef {
            gateway: &state.gateway,
            last_id: state.ids.last,
        };
        if let Err(e) = file.store(&saved) {
            tracing::error!(error = %e, "failed to write the gateway's state file");
        }
    }

    /// The state, even if a handler panicked while holding it (the data is
    /// plain maps that every step leaves consistent).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current knobs.
    pub fn config(&self) -> SimConfig {
        self.lock().config.clone()
    }

    /// Waits `latencyMs` (the simulated services' response time).
    pub(crate) async fn simulate_latency(&self) {
        let latency = self.lock().config.latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
    }
}

/// Every simulated service on one router.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(paths::CHARGES, post(gateway::charge))
        .route(
            &format!("{}/{{charge_id}}", paths::CHARGES),
            get(gateway::charge_status),
        )
        .route(
            &paths::charge_refunds("{charge_id}"),
            post(gateway::refund_charge),
        )
        .route(paths::REFUNDS, post(gateway::refund))
        .route(paths::FRAUD_SCORE, post(fraud::score))
        .route(paths::MESSAGES, post(notify::send).get(notify::list))
        .route(
            paths::ADMIN_CONFIG,
            get(admin::get_config).put(admin::put_config),
        )
        .route(
            &format!("{}/{{payment_id}}", paths::ADMIN_SCENARIOS),
            get(admin::get_scenario)
                .put(admin::put_scenario)
                .delete(admin::delete_scenario),
        )
        .route(paths::ADMIN_GATEWAY_LEDGER, get(admin::gateway_ledger))
        .route(&paths::merchant_events("{name}"), post(merchant::receive))
        .route(
            &format!("{}/{{name}}", paths::ADMIN_MERCHANTS),
            get(merchant::get).put(merchant::put),
        )
        .route("/healthz", get(admin::healthz))
        .fallback(error::not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(sim)
}

/// Serves the simulators on `listener` until `shutdown` completes, then
/// finishes the requests in flight. Confirmations still waiting to be sent
/// are abandoned.
pub async fn serve(
    listener: TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Logs each request; every line logged while it is handled carries its
/// `X-Request-Id` (span field `request_id`, empty without one).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(paysaga_api::names::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = if matches!(path.as_str(), "/healthz" | "/metrics") {
        tracing::debug_span!("request", request_id = %request_id)
    } else {
        tracing::info_span!(
            "request",
            otel.name = %telemetry::route_name(method.as_str(), &path),
            otel.kind = "server",
            request_id = %request_id,
        )
    };
    telemetry::follow_headers(&span, req.headers());
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix milliseconds now (0 if the clock is before 1970).
pub(crate) fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

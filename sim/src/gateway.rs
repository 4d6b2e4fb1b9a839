//! The payment gateway: charges (confirmed later by a signed callback, see
//! [`crate::callbacks`]) and refunds.
//!
//! A new charge is decided in this order ([`decide_charge`]):
//! 1. the simulated latency;
//! 2. a transient fault (503 `unavailable`): the payment's [`Scenario`] while
//!    it has `transientFailures` left, else `transientFailureRate`. Nothing is
//!    recorded but the attempt, so a retry with the same key can succeed;
//! 3. a decline (402 `declined`): the scenario's `decline`, else
//!    `declineRate`. Recorded: a retry with the same key is declined again;
//! 4. otherwise accepted: 201 `pending`, and a confirmation is scheduled.
//!
//! A payment with a scenario is deterministic: its rates are not drawn.
//! Charges are idempotent by `idempotencyKey` (a repeat answers the first
//! answer, 200 instead of 201, and schedules nothing); reusing a key for a
//! different payment, amount, currency or method is a 400.
//!
//! There are two kinds of refund:
//! - **the saga's compensation** (`POST /gateway/v1/refunds`, [`refund`]):
//!   gives back whatever the payment's charges still hold, pending or
//!   captured, partial refunds deducted; refunding nothing is a success.
//!   Idempotent by its key; subject only to `transientFailureRate`;
//! - **a refund of a captured charge** (`POST
//!   /gateway/v1/charges/{chargeId}/refunds`, [`refund_charge`]), partial or
//!   full, decided after the body is validated and the latency waited, in
//!   this order:
//!   1. its key: a repeat with the same charge, payment, amount and currency
//!      answers the recorded answer (a refund with 200 instead of 201,
//!      refunding nothing more); the same key for anything else is a 400;
//!   2. a transient fault (503): the scenario's `refundTransientFailures`
//!      while it has some left, else (without a scenario)
//!      `transientFailureRate`. Not recorded;
//!   3. the charge: unknown → 404; of another payment, or in another
//!      currency → 400; pending or failed → 409 `notCaptured` (not recorded:
//!      it may yet be captured);
//!   4. the scenario's `refuseRefunds` → 402 `refundRefused`, recorded;
//!   5. more than the charge has left → 409 `overRefund`, recorded. A fully
//!      refunded charge (`refunded`) is an over-refund too, with 0 left,
//!      rather than `notCaptured`: it was captured, and the caller learns
//!      there is nothing left;
//!   6. otherwise refunded, 201, recorded: the charge stays `succeeded`
//!      while partly refunded and becomes `refunded` once fully.
//!
//! The state is behind one lock, held from the key's check to the answer's
//! record, so refunds racing for the same charge are decided one after the
//! other: two asking for its last cent get one 201 and one `overRefund`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use paysaga_api::{
    PaymentMethod,
    external::{
        CallbackOutcome, ChargeLookup, ChargeRefundRequest, ChargeRefundResponse, ChargeRequest,
        ChargeResponse, ChargeStatus, ErrorBody, GatewayLedgerEntry, RefundRequest, RefundResponse,
        Scenario, SimConfig, error_codes,
    },
};

use crate::{
    ApiError, Sim,
    callbacks::{self, ConfirmationPlan, plan_confirmation},
    error::AppJson,
    rng::{SplitMix64, happens},
    validate,
};

/// What the gateway holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Gateway {
    /// Charge requests by idempotency key.
    charge_keys: HashMap<String, ChargeKey>,
    /// Accepted charges by charge ID.
    charges: HashMap<String, Charge>,
    /// Compensation refund answers by idempotency key.
    refund_keys: HashMap<String, RefundKey>,
    /// Answers to refunds of a charge by idempotency key (a key of its own
    /// namespace: the compensation's keys are not these).
    #[serde(default)]
    charge_refund_keys: HashMap<String, ChargeRefundKey>,
    /// Confirmations not yet settled, by charge ID (kept with the state, so
    /// a restarted gateway still sends them).
    #[serde(default)]
    pub(crate) pending: HashMap<String, callbacks::Confirmation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChargeKey {
    request: ChargeFingerprint,
    /// Requests received with this key, including those answered 503.
    attempts: u32,
    /// The recorded answer; `None` while only transient faults were answered.
    answer: Option<ChargeAnswer>,
}

/// The fields a repeat with the same key must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChargeFingerprint {
    payment_id: String,
    amount: i64,
    currency: String,
    method: PaymentMethod,
}

impl ChargeFingerprint {
    fn of(req: &ChargeRequest) -> Self {
        Self {
            payment_id: req.payment_id.clone(),
            amount: req.amount,
            currency: req.currency.clone(),
            method: req.method,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ChargeAnswer {
    Accepted(ChargeResponse),
    Declined(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    payment_id: String,
    charge_id: String,
    idempotency_key: String,
    amount: i64,
    currency: String,
    status: ChargeStatus,
    refunded_amount: i64,
    /// The charge request's `X-Request-Id`.
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefundKey {
    payment_id: String,
    answer: RefundResponse,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChargeRefundKey {
    request: ChargeRefundFingerprint,
    answer: ChargeRefundAnswer,
}

/// The fields a repeat of a charge refund with the same key must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChargeRefundFingerprint {
    charge_id: String,
    payment_id: String,
    amount: i64,
    currency: String,
}

impl ChargeRefundFingerprint {
    fn of(charge_id: &str, req: &ChargeRefundRequest) -> Self {
        Self {
            charge_id: charge_id.to_owned(),
            payment_id: req.payment_id.clone(),
            amount: req.amount,
            currency: req.currency.clone(),
        }
    }
}

/// A charge refund's recorded answer: a retry with the same key gets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ChargeRefundAnswer {
    Refunded(ChargeRefundResponse),
    Refused(String),
    OverRefund(String),
}

impl ChargeRefundAnswer {
    /// The answer as sent: 201 the first time, 200 for a repeat.
    fn reply(
        &self,
        first: bool,
    ) -> Result<(StatusCode, Json<ChargeRefundResponse>), ChargeRefundError> {
        match self {
            ChargeRefundAnswer::Refunded(response) => {
                let status = if first {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok((status, Json(response.clone())))
            }
            ChargeRefundAnswer::Refused(m) => Err(ChargeRefundError::Refused(m.clone())),
            ChargeRefundAnswer::OverRefund(m) => Err(ChargeRefundError::OverRefund(m.clone())),
        }
    }
}

/// What became of a pending charge when its confirmation came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// The charge now has the confirmation's outcome: send it.
    Settled,
    /// The charge is no longer pending (refunded meanwhile, or unknown): send nothing.
    NotPending(Option<ChargeStatus>),
}

impl Gateway {
    /// Applies a confirmation's outcome to a pending charge.
    pub(crate) fn settle(&mut self, charge_id: &str, outcome: CallbackOutcome) -> Settlement {
        self.pending.remove(charge_id);
        match self.charges.get_mut(charge_id) {
            Some(charge) if charge.status == ChargeStatus::Pending => {
                charge.status = match outcome {
                    CallbackOutcome::Succeeded => ChargeStatus::Succeeded,
                    CallbackOutcome::Failed => ChargeStatus::Failed,
                };
                Settlement::Settled
            }
            other => Settlement::NotPending(other.map(|c| c.status)),
        }
    }

    /// Refunds every charge of the payment that still holds money (pending
    /// or succeeded), each for what it has left after its partial refunds;
    /// returns the amount refunded.
    fn refund_held(&mut self, payment_id: &str) -> i64 {
        let mut total = 0;
        for charge in self.charges.values_mut() {
            if charge.payment_id == payment_id
                && matches!(
                    charge.status,
                    ChargeStatus::Pending | ChargeStatus::Succeeded
                )
            {
                total += charge.amount - charge.refunded_amount;
                charge.status = ChargeStatus::Refunded;
                charge.refunded_amount = charge.amount;
            }
        }
        total
    }

    /// Every accepted charge, sorted by payment ID (then charge ID). Declined
    /// charges and keys answered only 503 hold nothing and are not listed.
    pub(crate) fn ledger(&self) -> Vec<GatewayLedgerEntry> {
        let mut entries: Vec<_> = self
            .charges
            .values()
            .map(|c| GatewayLedgerEntry {
                payment_id: c.payment_id.clone(),
                charge_id: c.charge_id.clone(),
                amount: c.amount,
                currency: c.currency.clone(),
                status: c.status,
                attempts: self
                    .charge_keys
                    .get(&c.idempotency_key)
                    .map_or(0, |k| k.attempts),
                refunded_amount: c.refunded_amount,
                request_id: c.request_id.clone(),
            })
            .collect();
        entries.sort_by(|a, b| (&a.payment_id, &a.charge_id).cmp(&(&b.payment_id, &b.charge_id)));
        entries
    }
}

// ---- decisions (pure) ------------------------------------------------------------

/// The random draws one new charge attempt may use, each uniform in `[0, 1)`.
/// All four are drawn for every attempt so the stream does not depend on
/// which branch was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChargeDraws {
    pub transient: f64,
    pub decline: f64,
    pub drop: f64,
    pub failure: f64,
}

impl ChargeDraws {
    pub fn draw(rng: &mut SplitMix64) -> Self {
        Self {
            transient: rng.next_f64(),
            decline: rng.next_f64(),
            drop: rng.next_f64(),
            failure: rng.next_f64(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeDecision {
    /// Answer 503; `from_scenario`: this uses up one of the scenario's
    /// `transientFailures`.
    Unavailable { from_scenario: bool },
    /// Answer 402, and record it.
    Decline { reason: &'static str },
    /// Record the charge, answer 201, confirm as planned.
    Accept(ConfirmationPlan),
}

/// What to answer to a new charge attempt (one whose key has no recorded
/// answer yet).
pub fn decide_charge(
    config: &SimConfig,
    scenario: Option<&Scenario>,
    draws: ChargeDraws,
) -> ChargeDecision {
    match scenario {
        Some(s) if s.transient_failures > 0 => ChargeDecision::Unavailable {
            from_scenario: true,
        },
        Some(s) if s.decline => ChargeDecision::Decline {
            reason: "declined by the payment's scenario",
        },
        None if happens(config.transient_failure_rate, draws.transient) => {
            ChargeDecision::Unavailable {
                from_scenario: false,
            }
        }
        None if happens(config.decline_rate, draws.decline) => ChargeDecision::Decline {
            reason: "declined at random (declineRate)",
        },
        _ => ChargeDecision::Accept(plan_confirmation(
            config,
            scenario,
            draws.drop,
            draws.failure,
        )),
    }
}

/// What to answer to a new refund of a charge (one whose key has no
/// recorded answer yet). No client required.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChargeRefundDecision {
    /// Answer 503, record nothing; `from_scenario`: this uses up one of the
    /// scenario's `refundTransientFailures`.
    Unavailable { from_scenario: bool },
    /// 404: the gateway has no such charge.
    UnknownCharge,
    /// 400: the request does not match the charge. Not recorded.
    Mismatch(String),
    /// 409 `notCaptured` (pending or failed). Not recorded: a pending
    /// charge may yet be captured.
    NotCaptured(ChargeStatus),
    /// 402 `refundRefused` (the scenario's `refuseRefunds`), recorded.
    Refuse,
    /// 409 `overRefund`, recorded; `left`: what the charge has left.
    OverRefund { left: i64 },
    /// Refund, answer 201, record it; `refunded_amount`: the charge's
    /// refunded amount with this refund.
    Refund { refunded_amount: i64 },
}

/// Decides a new refund of `charge` (`None`: unknown) asked by `req`, in the
/// order of the module doc. `transient_draw` is uniform in `[0, 1)`, drawn
/// for every new attempt.
fn decide_charge_refund(
    config: &SimConfig,
    scenario: Option<&Scenario>,
    transient_draw: f64,
    charge: Option<&Charge>,
    req: &ChargeRefundRequest,
) -> ChargeRefundDecision {
    let transient = match scenario {
        Some(s) => s.refund_transient_failures > 0,
        None => happens(config.transient_failure_rate, transient_draw),
    };
    if transient {
        return ChargeRefundDecision::Unavailable {
            from_scenario: scenario.is_some(),
        };
    }
    let Some(charge) = charge else {
        return ChargeRefundDecision::UnknownCharge;
    };
    if charge.payment_id != req.payment_id {
        return ChargeRefundDecision::Mismatch(format!(
            "charge {:?} belongs to another payment than {:?}",
            charge.charge_id, req.payment_id
        ));
    }
    if charge.currency != req.currency {
        return ChargeRefundDecision::Mismatch(format!(
            "charge {:?} is in {}, not {}",
            charge.charge_id, charge.currency, req.currency
        ));
    }
    match charge.status {
        ChargeStatus::Succeeded | ChargeStatus::Refunded => {}
        status @ (ChargeStatus::Pending | ChargeStatus::Failed) => {
            return ChargeRefundDecision::NotCaptured(status);
        }
    }
    if scenario.is_some_and(|s| s.refuse_refunds) {
        return ChargeRefundDecision::Refuse;
    }
    let left = charge.amount - charge.refunded_amount;
    if req.amount > left {
        return ChargeRefundDecision::OverRefund { left };
    }
    ChargeRefundDecision::Refund {
        refunded_amount: charge.refunded_amount + req.amount,
    }
}

// ---- handlers --------------------------------------------------------------------

fn validate_charge(req: &ChargeRequest) -> Result<(), ApiError> {
    validate::non_empty("paymentId", &req.payment_id)?;
    validate::non_empty("idempotencyKey", &req.idempotency_key)?;
    validate::positive_amount(req.amount)?;
    validate::currency(&req.currency)?;
    if let Some(url) = &req.callback_url {
        validate::http_url("callbackUrl", url).map_err(ApiError::BadRequest)?;
    }
    Ok(())
}

/// `POST /gateway/v1/charges`.
#[tracing::instrument(skip_all, fields(payment_id = %req.payment_id, key = %req.idempotency_key))]
pub async fn charge(
    State(sim): State<Arc<Sim>>,
    headers: axum::http::HeaderMap,
    AppJson(req): AppJson<ChargeRequest>,
) -> Result<(StatusCode, Json<ChargeResponse>), ApiError> {
    let request_id = headers
        .get(paysaga_api::names::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    validate_charge(&req)?;
    sim.simulate_latency().await;

    let (response, confirmation) = {
        let mut guard = sim.lock();
        let state = &mut *guard;
        let fingerprint = ChargeFingerprint::of(&req);
        let key = state
            .gateway
            .charge_keys
            .entry(req.idempotency_key.clone())
            .or_insert_with(|| ChargeKey {
                request: fingerprint.clone(),
                attempts: 0,
                answer: None,
            });
        if key.request != fingerprint {
            return Err(ApiError::BadRequest(format!(
                "idempotency key {:?} was first used for a different charge ({:?})",
                req.idempotency_key, key.request
            )));
        }
        key.attempts += 1;
        match &key.answer {
            Some(ChargeAnswer::Accepted(first)) => {
                tracing::info!(charge_id = %first.charge_id, attempts = key.attempts, "repeated charge: first answer replayed");
                return Ok((StatusCode::OK, Json(first.clone())));
            }
            Some(ChargeAnswer::Declined(reason)) => {
                tracing::info!(attempts = key.attempts, "repeated charge: declined again");
                return Err(ApiError::Declined(reason.clone()));
            }
            None => {}
        }

        let draws = ChargeDraws::draw(&mut state.rng);
        let scenario = crate::scenario(&mut state.scenarios, &req.payment_id);
        match decide_charge(&state.config, scenario.as_deref(), draws) {
            ChargeDecision::Unavailable { from_scenario } => {
                let why = match scenario {
                    Some(s) if from_scenario => {
                        s.transient_failures -= 1;
                        format!(
                            "simulated transient fault (scenario, {} left)",
                            s.transient_failures
                        )
                    }
                    _ => "simulated transient fault (transientFailureRate)".to_owned(),
                };
                tracing::info!(attempts = key.attempts, "charge answered 503: {why}");
                return Err(ApiError::Unavailable(why));
            }
            ChargeDecision::Decline { reason } => {
                key.answer = Some(ChargeAnswer::Declined(reason.to_owned()));
                tracing::info!(attempts = key.attempts, "charge declined: {reason}");
                sim.persist(state);
                return Err(ApiError::Declined(reason.to_owned()));
            }
            ChargeDecision::Accept(plan) => {
                let charge_id = state.ids.next("ch");
                let response = ChargeResponse {
                    charge_id: charge_id.clone(),
                    status: ChargeStatus::Pending,
                };
                key.answer = Some(ChargeAnswer::Accepted(response.clone()));
                state.gateway.charges.insert(
                    charge_id.clone(),
                    Charge {
                        payment_id: req.payment_id.clone(),
                        charge_id: charge_id.clone(),
                        idempotency_key: req.idempotency_key.clone(),
                        amount: req.amount,
                        currency: req.currency.clone(),
                        status: ChargeStatus::Pending,
                        refunded_amount: 0,
                        request_id: request_id.clone(),
                    },
                );
                tracing::info!(%charge_id, amount = req.amount, currency = %req.currency, ?plan, "charge accepted");
                let confirmation = plan.outcome.map(|outcome| callbacks::Confirmation {
                    payment_id: req.payment_id.clone(),
                    charge_id,
                    outcome,
                    amount: req.amount,
                    currency: req.currency.clone(),
                    delay: Duration::from_millis(plan.delay_ms),
                    copies: plan.copies,
                    deliver: plan.deliver,
                    callback_url: req.callback_url.clone(),
                    request_id: request_id.clone(),
                    traceparent: paysaga_common::telemetry::traceparent(),
                });
                if let Some(c) = &confirmation {
                    state.gateway.pending.insert(c.charge_id.clone(), c.clone());
                }
                sim.persist(state);
                (response, confirmation)
            }
        }
    };

    match confirmation {
        Some(confirmation) => callbacks::spawn_confirmation(sim.clone(), confirmation),
        None => {
            tracing::info!(charge_id = %response.charge_id, "confirmation dropped: none will be sent")
        }
    }
    Ok((StatusCode::CREATED, Json(response)))
}

/// `GET /gateway/v1/charges/{chargeId}`: what became of a charge, so a
/// payment whose confirmation never came can ask. `404` for a charge the
/// gateway does not know; `503` while the payment's scenario says the
/// gateway cannot be asked.
pub async fn charge_status(
    State(sim): State<Arc<Sim>>,
    Path(charge_id): Path<String>,
) -> Result<Json<ChargeLookup>, ApiError> {
    sim.simulate_latency().await;
    let state = sim.lock();
    let charge = state
        .gateway
        .charges
        .get(&charge_id)
        .ok_or_else(|| ApiError::NotFound(format!("no charge {charge_id:?}")))?;
    if state
        .scenarios
        .get(&charge.payment_id)
        .is_some_and(|s| s.status_unavailable)
    {
        return Err(ApiError::Unavailable(
            "simulated outage of the status endpoint (scenario)".into(),
        ));
    }
    Ok(Json(ChargeLookup {
        charge_id: charge.charge_id.clone(),
        payment_id: charge.payment_id.clone(),
        amount: charge.amount,
        currency: charge.currency.clone(),
        status: charge.status.into(),
    }))
}

fn validate_refund(req: &RefundRequest) -> Result<(), ApiError> {
    validate::non_empty("paymentId", &req.payment_id)?;
    validate::non_empty("idempotencyKey", &req.idempotency_key)?;
    validate::positive_amount(req.amount)?;
    validate::currency(&req.currency)
}

/// `POST /gateway/v1/refunds`.
#[tracing::instrument(skip_all, fields(payment_id = %req.payment_id, key = %req.idempotency_key))]
pub async fn refund(
    State(sim): State<Arc<Sim>>,
    AppJson(req): AppJson<RefundRequest>,
) -> Result<Json<RefundResponse>, ApiError> {
    validate_refund(&req)?;
    sim.simulate_latency().await;

    let mut guard = sim.lock();
    let state = &mut *guard;
    if let Some(first) = state.gateway.refund_keys.get(&req.idempotency_key) {
        if first.payment_id != req.payment_id {
            return Err(ApiError::BadRequest(format!(
                "idempotency key {:?} was first used for payment {:?}",
                req.idempotency_key, first.payment_id
            )));
        }
        tracing::info!("repeated refund: first answer replayed");
        return Ok(Json(first.answer.clone()));
    }
    if happens(state.config.transient_failure_rate, state.rng.next_f64()) {
        tracing::info!("refund answered 503 (transientFailureRate)");
        return Err(ApiError::Unavailable(
            "simulated transient fault (transientFailureRate)".to_owned(),
        ));
    }
    let refunded_amount = state.gateway.refund_held(&req.payment_id);
    let answer = RefundResponse {
        refund_id: (refunded_amount > 0).then(|| state.ids.next("re")),
        refunded_amount,
    };
    if refunded_amount > 0 && refunded_amount != req.amount {
        tracing::warn!(
            requested = req.amount,
            refunded_amount,
            "refunded what the gateway held, which differs from the amount asked"
        );
    }
    tracing::info!(refund_id = ?answer.refund_id, refunded_amount, "refund done");
    state.gateway.refund_keys.insert(
        req.idempotency_key.clone(),
        RefundKey {
            payment_id: req.payment_id.clone(),
            answer: answer.clone(),
        },
    );
    sim.persist(state);
    Ok(Json(answer))
}

/// What a refund of a charge answers when it does not refund: the errors
/// every service answers, and its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeRefundError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// More than the charge has left (409 `overRefund`).
    #[error("over refund: {0}")]
    OverRefund(String),
    /// The charge is not captured (409 `notCaptured`).
    #[error("not captured: {0}")]
    NotCaptured(String),
    /// The gateway will not refund the charge (402 `refundRefused`): permanent.
    #[error("refund refused: {0}")]
    Refused(String),
}

impl ChargeRefundError {
    pub fn status(&self) -> StatusCode {
        match self {
            ChargeRefundError::Api(e) => e.status(),
            ChargeRefundError::OverRefund(_) | ChargeRefundError::NotCaptured(_) => {
                StatusCode::CONFLICT
            }
            ChargeRefundError::Refused(_) => StatusCode::PAYMENT_REQUIRED,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (code, message) = match self {
            ChargeRefundError::Api(e) => return e.body(),
            ChargeRefundError::OverRefund(m) => (error_codes::OVER_REFUND, m),
            ChargeRefundError::NotCaptured(m) => (error_codes::NOT_CAPTURED, m),
            ChargeRefundError::Refused(m) => (error_codes::REFUND_REFUSED, m),
        };
        ErrorBody {
            code: code.to_owned(),
            message: message.clone(),
        }
    }
}

impl IntoResponse for ChargeRefundError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

fn validate_charge_refund(req: &ChargeRefundRequest) -> Result<(), ApiError> {
    validate::non_empty("paymentId", &req.payment_id)?;
    validate::non_empty("idempotencyKey", &req.idempotency_key)?;
    validate::positive_amount(req.amount)?;
    validate::currency(&req.currency)
}

/// `POST /gateway/v1/charges/{chargeId}/refunds`: a partial or full refund
/// of a captured charge, decided as the module doc says.
#[tracing::instrument(skip_all, fields(%charge_id, payment_id = %req.payment_id, key = %req.idempotency_key))]
pub async fn refund_charge(
    State(sim): State<Arc<Sim>>,
    Path(charge_id): Path<String>,
    AppJson(req): AppJson<ChargeRefundRequest>,
) -> Result<(StatusCode, Json<ChargeRefundResponse>), ChargeRefundError> {
    validate_charge_refund(&req)?;
    sim.simulate_latency().await;

    let mut guard = sim.lock();
    let state = &mut *guard;
    let fingerprint = ChargeRefundFingerprint::of(&charge_id, &req);
    if let Some(first) = state.gateway.charge_refund_keys.get(&req.idempotency_key) {
        if first.request != fingerprint {
            return Err(ApiError::BadRequest(format!(
                "idempotency key {:?} was first used for a different refund ({:?})",
                req.idempotency_key, first.request
            ))
            .into());
        }
        tracing::info!(answer = ?first.answer, "repeated charge refund: first answer replayed");
        return first.answer.reply(false);
    }

    let draw = state.rng.next_f64();
    let scenario = crate::scenario(&mut state.scenarios, &req.payment_id);
    let charge = state.gateway.charges.get_mut(&charge_id);
    let answer = match decide_charge_refund(
        &state.config,
        scenario.as_deref(),
        draw,
        charge.as_deref(),
        &req,
    ) {
        ChargeRefundDecision::Unavailable { from_scenario } => {
            let why = match scenario {
                Some(s) if from_scenario => {
                    s.refund_transient_failures -= 1;
                    format!(
                        "simulated transient fault (scenario, {} left)",
                        s.refund_transient_failures
                    )
                }
                _ => "simulated transient fault (transientFailureRate)".to_owned(),
            };
            tracing::info!("charge refund answered 503: {why}");
            return Err(ApiError::Unavailable(why).into());
        }
        ChargeRefundDecision::UnknownCharge => {
            return Err(ApiError::NotFound(format!("no charge {charge_id:?}")).into());
        }
        ChargeRefundDecision::Mismatch(why) => return Err(ApiError::BadRequest(why).into()),
        ChargeRefundDecision::NotCaptured(status) => {
            return Err(ChargeRefundError::NotCaptured(format!(
                "charge {charge_id:?} is {status:?}, not captured: nothing to refund"
            )));
        }
        ChargeRefundDecision::Refuse => ChargeRefundAnswer::Refused(format!(
            "refund of charge {charge_id:?} refused by the payment's scenario"
        )),
        ChargeRefundDecision::OverRefund { left } => ChargeRefundAnswer::OverRefund(format!(
            "refund of {} {} exceeds what charge {charge_id:?} has left: {left} {}",
            req.amount, req.currency, req.currency
        )),
        ChargeRefundDecision::Refund { refunded_amount } => {
            let charge = charge.expect("a refund is decided for a known charge");
            charge.refunded_amount = refunded_amount;
            if refunded_amount == charge.amount {
                charge.status = ChargeStatus::Refunded;
            }
            ChargeRefundAnswer::Refunded(ChargeRefundResponse {
                refund_id: state.ids.next("re"),
                charge_id: charge_id.clone(),
                amount: req.amount,
                currency: req.currency.clone(),
                charge_refunded_amount: refunded_amount,
            })
        }
    };
    tracing::info!(?answer, "charge refund decided");
    let reply = answer.reply(true);
    state.gateway.charge_refund_keys.insert(
        req.idempotency_key.clone(),
        ChargeRefundKey {
            request: fingerprint,
            answer,
        },
    );
    sim.persist(state);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_DRAW: ChargeDraws = ChargeDraws {
        transient: 0.99,
        decline: 0.99,
        drop: 0.99,
        failure: 0.99,
    };
    const LOW_DRAW: ChargeDraws = ChargeDraws {
        transient: 0.01,
        decline: 0.01,
        drop: 0.01,
        failure: 0.01,
    };

    fn config(transient: f64, decline: f64) -> SimConfig {
        SimConfig {
            transient_failure_rate: transient,
            decline_rate: decline,
            callback_delay_ms: 7,
            ..SimConfig::default()
        }
    }

    fn accept(outcome: Option<CallbackOutcome>, delay_ms: u64, copies: u32) -> ChargeDecision {
        ChargeDecision::Accept(ConfirmationPlan {
            outcome,
            delay_ms,
            copies,
            deliver: true,
        })
    }

    #[test]
    fn charge_decisions() {
        let flaky = Scenario {
            transient_failures: 2,
            callback: Some(CallbackOutcome::Succeeded),
            ..Scenario::default()
        };
        let declining = Scenario {
            decline: true,
            ..Scenario::default()
        };
        let flaky_and_declining = Scenario {
            transient_failures: 1,
            decline: true,
            ..Scenario::default()
        };
        let confirming = Scenario {
            callback: Some(CallbackOutcome::Failed),
            callback_delay_ms: Some(3),
            callback_copies: 2,
            ..Scenario::default()
        };
        let silent = Scenario::default();
        let unavailable = |from_scenario| ChargeDecision::Unavailable { from_scenario };
        let declined = |reason| ChargeDecision::Decline { reason };
        let table: Vec<(
            &str,
            SimConfig,
            Option<&Scenario>,
            ChargeDraws,
            ChargeDecision,
        )> = vec![
            (
                "no faults",
                config(0.0, 0.0),
                None,
                LOW_DRAW,
                accept(Some(CallbackOutcome::Succeeded), 7, 1),
            ),
            (
                "transient rate fires",
                config(0.5, 0.0),
                None,
                LOW_DRAW,
                unavailable(false),
            ),
            (
                "transient rate misses",
                config(0.5, 0.0),
                None,
                NO_DRAW,
                accept(Some(CallbackOutcome::Succeeded), 7, 1),
            ),
            (
                "transient before decline",
                config(1.0, 1.0),
                None,
                LOW_DRAW,
                unavailable(false),
            ),
            (
                "decline rate fires",
                config(0.0, 0.5),
                None,
                LOW_DRAW,
                declined("declined at random (declineRate)"),
            ),
            (
                "decline rate misses",
                config(0.0, 0.5),
                None,
                NO_DRAW,
                accept(Some(CallbackOutcome::Succeeded), 7, 1),
            ),
            (
                "scenario failures first",
                config(0.0, 0.0),
                Some(&flaky),
                NO_DRAW,
                unavailable(true),
            ),
            (
                "scenario failures before decline",
                config(0.0, 0.0),
                Some(&flaky_and_declining),
                NO_DRAW,
                unavailable(true),
            ),
            (
                "scenario decline",
                config(0.0, 0.0),
                Some(&declining),
                NO_DRAW,
                declined("declined by the payment's scenario"),
            ),
            (
                "a scenario ignores the rates",
                config(1.0, 1.0),
                Some(&confirming),
                LOW_DRAW,
                accept(Some(CallbackOutcome::Failed), 3, 2),
            ),
            (
                "an empty scenario never confirms",
                config(0.0, 0.0),
                Some(&silent),
                NO_DRAW,
                accept(None, 7, 1),
            ),
        ];
        for (name, config, scenario, draws, want) in table {
            assert_eq!(decide_charge(&config, scenario, draws), want, "{name}");
        }
    }

    fn charge(id: &str, payment: &str, amount: i64, status: ChargeStatus) -> Charge {
        Charge {
            payment_id: payment.into(),
            charge_id: id.into(),
            idempotency_key: format!("{id}-key"),
            amount,
            currency: "EUR".into(),
            status,
            refunded_amount: 0,
            request_id: None,
        }
    }

    fn gateway(charges: Vec<Charge>) -> Gateway {
        let mut g = Gateway::default();
        for c in charges {
            g.charges.insert(c.charge_id.clone(), c);
        }
        g
    }

    #[test]
    fn refunds_take_back_what_is_held() {
        let table = [
            ("nothing", vec![], 0),
            (
                "pending",
                vec![charge("c1", "p", 100, ChargeStatus::Pending)],
                100,
            ),
            (
                "succeeded",
                vec![charge("c1", "p", 100, ChargeStatus::Succeeded)],
                100,
            ),
            (
                "failed",
                vec![charge("c1", "p", 100, ChargeStatus::Failed)],
                0,
            ),
            (
                "refunded",
                vec![refunded(
                    charge("c1", "p", 100, ChargeStatus::Refunded),
                    100,
                )],
                0,
            ),
            (
                "other payment",
                vec![charge("c1", "q", 100, ChargeStatus::Succeeded)],
                0,
            ),
            (
                "two charges",
                vec![
                    charge("c1", "p", 100, ChargeStatus::Succeeded),
                    charge("c2", "p", 50, ChargeStatus::Pending),
                ],
                150,
            ),
            (
                "partly refunded",
                vec![refunded(
                    charge("c1", "p", 100, ChargeStatus::Succeeded),
                    30,
                )],
                70,
            ),
        ];
        for (name, charges, want) in table {
            let mut g = gateway(charges);
            assert_eq!(g.refund_held("p"), want, "{name}");
            assert_eq!(g.refund_held("p"), 0, "{name}: twice");
            for c in g.charges.values().filter(|c| c.payment_id == "p") {
                if c.status == ChargeStatus::Refunded {
                    assert_eq!(c.refunded_amount, c.amount, "{name}: all given back");
                }
            }
        }
    }

    fn refunded(mut c: Charge, amount: i64) -> Charge {
        c.refunded_amount = amount;
        c
    }

    fn refund_of(payment: &str, amount: i64, currency: &str) -> ChargeRefundRequest {
        ChargeRefundRequest {
            payment_id: payment.into(),
            idempotency_key: "k".into(),
            amount,
            currency: currency.into(),
        }
    }

    #[test]
    fn charge_refund_decisions() {
        use ChargeRefundDecision as D;
        struct Case {
            name: &'static str,
            config: SimConfig,
            scenario: Option<Scenario>,
            draw: f64,
            charge: Option<Charge>,
            request: ChargeRefundRequest,
            want: ChargeRefundDecision,
        }
        let captured = || charge("c1", "p", 100, ChargeStatus::Succeeded);
        let base = || Case {
            name: "",
            config: config(0.0, 0.0),
            scenario: None,
            draw: 0.99,
            charge: Some(captured()),
            request: refund_of("p", 40, "EUR"),
            want: D::Refund {
                refunded_amount: 40,
            },
        };
        let flaky = Scenario {
            refund_transient_failures: 1,
            refuse_refunds: true,
            ..Scenario::default()
        };
        let refusing = Scenario {
            refuse_refunds: true,
            ..Scenario::default()
        };
        let cases = [
            Case {
                name: "a partial refund",
                ..base()
            },
            Case {
                name: "the whole amount",
                request: refund_of("p", 100, "EUR"),
                want: D::Refund {
                    refunded_amount: 100,
                },
                ..base()
            },
            Case {
                name: "the rest of a partly refunded charge",
                charge: Some(refunded(captured(), 60)),
                want: D::Refund {
                    refunded_amount: 100,
                },
                ..base()
            },
            Case {
                name: "a cent too much",
                charge: Some(refunded(captured(), 61)),
                want: D::OverRefund { left: 39 },
                ..base()
            },
            Case {
                name: "a fully refunded charge has nothing left",
                charge: Some(refunded(
                    charge("c1", "p", 100, ChargeStatus::Refunded),
                    100,
                )),
                request: refund_of("p", 1, "EUR"),
                want: D::OverRefund { left: 0 },
                ..base()
            },
            Case {
                name: "pending",
                charge: Some(charge("c1", "p", 100, ChargeStatus::Pending)),
                want: D::NotCaptured(ChargeStatus::Pending),
                ..base()
            },
            Case {
                name: "failed",
                charge: Some(charge("c1", "p", 100, ChargeStatus::Failed)),
                want: D::NotCaptured(ChargeStatus::Failed),
                ..base()
            },
            Case {
                name: "unknown charge",
                charge: None,
                want: D::UnknownCharge,
                ..base()
            },
            Case {
                name: "another payment",
                request: refund_of("q", 40, "EUR"),
                want: D::Mismatch("charge \"c1\" belongs to another payment than \"q\"".into()),
                ..base()
            },
            Case {
                name: "another currency",
                request: refund_of("p", 40, "USD"),
                want: D::Mismatch("charge \"c1\" is in EUR, not USD".into()),
                ..base()
            },
            Case {
                name: "transient rate fires",
                config: config(0.5, 0.0),
                draw: 0.01,
                want: D::Unavailable {
                    from_scenario: false,
                },
                ..base()
            },
            Case {
                name: "transient rate misses",
                config: config(0.5, 0.0),
                ..base()
            },
            Case {
                name: "transient before unknown charge",
                config: config(1.0, 0.0),
                draw: 0.01,
                charge: None,
                want: D::Unavailable {
                    from_scenario: false,
                },
                ..base()
            },
            Case {
                name: "scenario failures first",
                scenario: Some(flaky.clone()),
                want: D::Unavailable {
                    from_scenario: true,
                },
                ..base()
            },
            Case {
                name: "a scenario ignores the rate",
                config: config(1.0, 0.0),
                draw: 0.01,
                scenario: Some(Scenario::default()),
                ..base()
            },
            Case {
                name: "scenario refuses",
                scenario: Some(refusing.clone()),
                want: D::Refuse,
                ..base()
            },
            Case {
                name: "refused before over-refund",
                scenario: Some(refusing.clone()),
                request: refund_of("p", 1000, "EUR"),
                want: D::Refuse,
                ..base()
            },
            Case {
                name: "not captured before refused",
                scenario: Some(refusing),
                charge: Some(charge("c1", "p", 100, ChargeStatus::Pending)),
                want: D::NotCaptured(ChargeStatus::Pending),
                ..base()
            },
        ];
        for c in cases {
            let got = decide_charge_refund(
                &c.config,
                c.scenario.as_ref(),
                c.draw,
                c.charge.as_ref(),
                &c.request,
            );
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn charge_refund_errors_have_their_status_and_code() {
        let table = [
            (
                ChargeRefundError::OverRefund("x".into()),
                409,
                error_codes::OVER_REFUND,
            ),
            (
                ChargeRefundError::NotCaptured("x".into()),
                409,
                error_codes::NOT_CAPTURED,
            ),
            (
                ChargeRefundError::Refused("x".into()),
                402,
                error_codes::REFUND_REFUSED,
            ),
            (
                ApiError::NotFound("x".into()).into(),
                404,
                error_codes::NOT_FOUND,
            ),
        ];
        for (err, status, code) in table {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.body().code, code, "{err}");
            assert_eq!(err.body().message, "x");
        }
    }

    #[test]
    fn a_state_file_without_charge_refunds_still_loads() {
        let old = r#"{"charge_keys":{},"charges":{},"refund_keys":{}}"#;
        let g: Gateway = serde_json::from_str(old).expect("an old state file");
        assert!(g.charge_refund_keys.is_empty());
    }

    #[test]
    fn settlement_only_moves_a_pending_charge() {
        let mut g = gateway(vec![
            charge("c1", "p", 100, ChargeStatus::Pending),
            charge("c2", "q", 100, ChargeStatus::Refunded),
        ]);
        assert_eq!(g.settle("c1", CallbackOutcome::Failed), Settlement::Settled);
        assert_eq!(g.charges["c1"].status, ChargeStatus::Failed);
        assert_eq!(
            g.settle("c1", CallbackOutcome::Succeeded),
            Settlement::NotPending(Some(ChargeStatus::Failed))
        );
        assert_eq!(
            g.settle("c2", CallbackOutcome::Succeeded),
            Settlement::NotPending(Some(ChargeStatus::Refunded))
        );
        assert_eq!(
            g.settle("nope", CallbackOutcome::Succeeded),
            Settlement::NotPending(None)
        );
    }

    #[test]
    fn ledger_is_sorted_by_payment() {
        let g = gateway(vec![
            charge("c3", "b", 1, ChargeStatus::Pending),
            charge("c1", "c", 2, ChargeStatus::Pending),
            charge("c2", "a", 3, ChargeStatus::Pending),
        ]);
        let order: Vec<_> = g.ledger().into_iter().map(|e| e.payment_id).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }
}

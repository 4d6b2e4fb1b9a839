//! The saga's activities: all of its I/O. Each one is idempotent, keyed by the
//! payment ID, and says whether a failure is permanent (non-retryable, with a
//! type name the workflow matches on) or transient (retried with backoff).

use std::sync::Arc;
use std::time::Duration;

use paysaga_api::external::{
    Channel, ChargeLookup, ChargeRefundRequest, ChargeRefundResponse, ChargeRequest,
    ChargeResponse, ChargeState, ErrorBody, FraudScoreResponse, NotificationRequest, RefundRequest,
    RefundResponse, error_codes, paths,
};
use paysaga_api::saga::{FraudCheckInput, keys};
use paysaga_api::{Notify, PaymentMethod};
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::ledger::{Applied, Ledger, LedgerError, RefundClaim, RefundState};
use crate::metrics::Metrics;

/// Failure type names the workflow tells apart (non-retryable).
pub mod failure_types {
    pub const ACCOUNT_INVALID: &str = "AccountInvalid";
    pub const INSUFFICIENT_FUNDS: &str = "InsufficientFunds";
    pub const ALREADY_COMPENSATED: &str = "AlreadyCompensated";
    pub const DECLINED: &str = "Declined";
    pub const BAD_REQUEST: &str = "BadRequest";
    /// A refund the ledger refuses: the failure type is the refund's reason
    /// ([`paysaga_api::saga::refund_reasons`]).
    pub use paysaga_api::saga::refund_reasons::{
        CURRENCY_MISMATCH, EXCEEDS_REFUNDABLE, GATEWAY_REFUSED, PAYER_MISMATCH,
        PAYMENT_NOT_SUCCEEDED,
    };
}

/// A permanent failure: the retry policy stops at once.
pub(crate) fn permanent(type_name: &str, message: String) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name(type_name.to_string())
            .non_retryable(true)
            .build(),
    )
}

/// A transient failure: the retry policy backs off and tries again.
pub(crate) fn transient(message: String) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(message))
}

fn ledger_error(e: LedgerError) -> ActivityError {
    match &e {
        LedgerError::InsufficientFunds { .. } => {
            permanent(failure_types::INSUFFICIENT_FUNDS, e.to_string())
        }
        LedgerError::AlreadyCompensated(_) => {
            permanent(failure_types::ALREADY_COMPENSATED, e.to_string())
        }
        e if e.is_permanent() => permanent(failure_types::ACCOUNT_INVALID, e.to_string()),
        _ => transient(e.to_string()),
    }
}

/// A ledger error of a refund: its refusals are permanent, with the refund's
/// reason as their type; a database fault is transient.
fn refund_ledger_error(e: LedgerError) -> ActivityError {
    let type_name = match &e {
        LedgerError::PaymentNotRefundable { .. } => failure_types::PAYMENT_NOT_SUCCEEDED,
        LedgerError::RefundCurrencyMismatch { .. } => failure_types::CURRENCY_MISMATCH,
        LedgerError::RefundPayerMismatch { .. } => failure_types::PAYER_MISMATCH,
        LedgerError::ExceedsRefundable { .. } => failure_types::EXCEEDS_REFUNDABLE,
        e if e.is_permanent() => failure_types::BAD_REQUEST,
        _ => return transient(e.to_string()),
    };
    permanent(type_name, e.to_string())
}

/// Where the outside world is.
#[derive(clap::Args, Clone, Debug)]
pub struct Endpoints {
    /// Base URL of the payment gateway.
    #[arg(
        long,
        env = "PAYSAGA_GATEWAY_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub gateway_url: String,
    /// Base URL of the fraud-scoring service.
    #[arg(
        long,
        env = "PAYSAGA_FRAUD_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub fraud_url: String,
    /// Base URL of the email/SMS provider.
    #[arg(
        long,
        env = "PAYSAGA_NOTIFY_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub notify_url: String,
    /// Where the gateway should deliver its confirmations (paysaga's callback
    /// receiver); the gateway's own setting when unset.
    #[arg(long, env = "PAYSAGA_CALLBACK_URL")]
    pub callback_url: Option<String>,
}

/// The span an activity runs in: its log lines name the payment and the
/// request that made it (`request_id`, as the API's, the controller's and
/// the simulators' do). In a trace it is the child of the SDK's
/// `RunActivity:<name>`, named `<name>`, with the request id.
fn activity_span(
    activity: &'static str,
    payment_id: &str,
    request_id: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        "activity",
        otel.name = activity,
        activity,
        payment = %payment_id,
        request_id = request_id.unwrap_or_default(),
    )
}

/// Runs an activity's body in `span`.
async fn in_span<T>(
    span: tracing::Span,
    body: impl std::future::Future<Output = Result<T, ActivityError>>,
) -> Result<T, ActivityError> {
    tracing::Instrument::instrument(body, span).await
}

/// An HTTP client with a bounded time per request.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .expect("building the HTTP client")
}

/// POSTs JSON; classifies the answer ([`classify`]).
async fn post_json<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
    idempotency_key: &str,
    body: &Req,
) -> Result<Result<Resp, (u16, ErrorBody)>, ActivityError> {
    post_json_as(http, url, idempotency_key, None, body).await
}

/// [`post_json`] on behalf of request `request_id` (its `X-Request-Id`).
async fn post_json_as<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
    idempotency_key: &str,
    request_id: Option<&str>,
    body: &Req,
) -> Result<Result<Resp, (u16, ErrorBody)>, ActivityError> {
    let mut req = http.post(url).header(
        paysaga_api::external::IDEMPOTENCY_KEY_HEADER,
        idempotency_key,
    );
    if let Some(id) = request_id {
        req = req.header(paysaga_api::names::REQUEST_ID_HEADER, id);
    }
    let resp = traced(req).json(body).send().await;
    classify("POST", url, resp).await
}

/// GETs JSON; classifies the answer ([`classify`]).
async fn get_json<Resp: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
) -> Result<Result<Resp, (u16, ErrorBody)>, ActivityError> {
    let resp = traced(http.get(url)).send().await;
    classify("GET", url, resp).await
}

/// The request with the activity's `traceparent` (when traces are
/// exported): the outside world's spans are its children.
pub(crate) fn traced(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match paysaga_common::telemetry::traceparent() {
        Some(tp) => req.header(paysaga_common::telemetry::TRACEPARENT, tp),
        None => req,
    }
}

/// A network error, a 5xx, 408 or 429 is transient (the retry policy tries
/// again); a success is parsed; any other answer, `Ok(Err(body))`, is for
/// the caller to judge.
async fn classify<Resp: for<'de> Deserialize<'de>>(
    method: &str,
    url: &str,
    resp: reqwest::Result<reqwest::Response>,
) -> Result<Result<Resp, (u16, ErrorBody)>, ActivityError> {
    let resp = resp.map_err(|e| transient(format!("{method} {url}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        let parsed = resp
            .json::<Resp>()
            .await
            .map_err(|e| transient(format!("{method} {url}: unreadable answer: {e}")))?;
        return Ok(Ok(parsed));
    }
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
        code: status.as_str().to_string(),
        message: text,
    });
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        return Err(transient(format!(
            "{method} {url}: {status}: {}",
            body.message
        )));
    }
    Ok(Err((status.as_u16(), body)))
}

// ---- inputs and outputs ----------------------------------------------------------

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccountOp {
    pub payment_id: String,
    pub user_id: String,
    pub currency: String,
    pub amount: i64,
    /// The request that made the payment (log lines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeOp {
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub method: PaymentMethod,
    /// Sent to the gateway as `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeReceipt {
    pub charge_id: String,
    /// Which attempt succeeded (1 = first).
    pub attempt: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeStatusOp {
    pub payment_id: String,
    pub charge_id: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NotifyOp {
    pub payment_id: String,
    pub notify: Option<Notify>,
    pub subject: String,
    pub body: String,
    /// Whom the message is for, when not the payer (`review`): part of its
    /// idempotency key, so it is not mistaken for the payer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Sent to the provider as `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeOp {
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    pub phase: String,
    pub reason: String,
    /// The Payment object, for its webhooks (sagas a controller started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<paysaga_api::saga::ObjectName>,
    /// The request that made the payment, for its webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A refund's call to the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRefundOp {
    pub refund_id: String,
    pub payment_id: String,
    pub charge_id: String,
    pub amount: i64,
    pub currency: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRefundOp {
    pub refund_id: String,
    pub gateway_refund_id: String,
    /// What its webhook event says (refunds a controller started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<RefundEvent>,
}

/// A refund's facts for its `refund.*` webhook event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefundEvent {
    /// The Refund object.
    pub object: paysaga_api::saga::ObjectName,
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRefundOp {
    pub refund_id: String,
    pub reason: String,
    /// What its webhook event says (refunds a controller started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<RefundEvent>,
}

// ---- the payments queue's activities ------------------------------------------------

pub struct SagaActivities {
    pub ledger: Ledger,
    pub http: reqwest::Client,
    pub endpoints: Endpoints,
    pub metrics: Metrics,
    /// Starts the deliveries of payments' events; none when no namespace's
    /// webhooks are watched.
    pub webhooks: Option<Arc<crate::webhooks::Dispatcher>>,
}

/// A gateway answer as [`Metrics::gateway_request`] labels it.
fn gateway_outcome<T>(answer: &Result<Result<T, (u16, ErrorBody)>, ActivityError>) -> &'static str {
    match answer {
        Ok(Ok(_)) => "ok",
        Ok(Err((_, body))) if body.code == error_codes::DECLINED => "declined",
        Ok(Err((404, _))) => "not_found",
        Ok(Err(_)) => "refused",
        Err(_) => "unavailable",
    }
}

impl SagaActivities {
    /// Sends a request to the gateway and counts its answer.
    async fn gateway<T>(
        &self,
        operation: &str,
        request: impl std::future::Future<Output = Result<Result<T, (u16, ErrorBody)>, ActivityError>>,
    ) -> Result<Result<T, (u16, ErrorBody)>, ActivityError> {
        let answer = request.await;
        self.metrics
            .gateway_request(operation, gateway_outcome(&answer));
        answer
    }
}

#[activities]
impl SagaActivities {
    /// The account exists, is active, holds the currency and enough money.
    #[activity(name = "validateAccount")]
    pub async fn validate_account(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: AccountOp,
    ) -> Result<(), ActivityError> {
        let span = activity_span("validateAccount", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            self.metrics
                .ledger(
                    "validate",
                    self.ledger.validate(&op.user_id, &op.currency, op.amount),
                )
                .await
                .map_err(ledger_error)
        })
        .await
    }

    /// Debits the account once per payment.
    #[activity(name = "debit")]
    pub async fn debit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: AccountOp,
    ) -> Result<Applied, ActivityError> {
        let span = activity_span("debit", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            self.metrics
                .ledger(
                    "debit",
                    self.ledger
                        .debit(&op.payment_id, &op.user_id, &op.currency, op.amount),
                )
                .await
                .map_err(ledger_error)
        })
        .await
    }

    /// Compensation of `debit`: credits back what was debited, once.
    #[activity(name = "credit")]
    pub async fn credit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: AccountOp,
    ) -> Result<Applied, ActivityError> {
        let span = activity_span("credit", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            let credited = self
                .metrics
                .ledger(
                    "credit",
                    self.ledger
                        .credit(&op.payment_id, &op.user_id, &op.currency),
                )
                .await;
            let result = match &credited {
                Ok(Applied::Moved) => "done",
                Ok(Applied::AlreadyDone) => "already_done",
                Ok(Applied::Nothing) => "nothing",
                Err(_) => "failed",
            };
            self.metrics.compensation("debit", result);
            credited.map_err(ledger_error)
        })
        .await
    }

    /// Charges through the gateway. 503s are retried by the activity's retry
    /// policy (with the same idempotency key); a decline is permanent.
    #[activity(name = "charge")]
    pub async fn charge(
        self: Arc<Self>,
        ctx: ActivityContext,
        op: ChargeOp,
    ) -> Result<ChargeReceipt, ActivityError> {
        let span = activity_span("charge", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            let attempt = ctx.info().attempt;
            let key = keys::charge(&op.payment_id);
            tracing::info!(
                payment_id = %op.payment_id,
                request_id = op.request_id.as_deref().unwrap_or_default(),
                attempt,
                "charging at the gateway"
            );
            let req = ChargeRequest {
                payment_id: op.payment_id.clone(),
                idempotency_key: key.clone(),
                amount: op.amount,
                currency: op.currency,
                method: op.method,
                callback_url: self.endpoints.callback_url.clone(),
            };
            let url = format!("{}{}", self.endpoints.gateway_url, paths::CHARGES);
            match self
                .gateway(
                    "charge",
                    post_json_as::<_, ChargeResponse>(
                        &self.http,
                        &url,
                        &key,
                        op.request_id.as_deref(),
                        &req,
                    ),
                )
                .await?
            {
                Ok(resp) => Ok(ChargeReceipt {
                    charge_id: resp.charge_id,
                    attempt,
                }),
                Err((402, body)) | Err((_, body)) if body.code == error_codes::DECLINED => {
                    Err(permanent(
                        failure_types::DECLINED,
                        format!("declined by the gateway: {}", body.message),
                    ))
                }
                Err((status, body)) => Err(permanent(
                    failure_types::BAD_REQUEST,
                    format!(
                        "the gateway refused the charge ({status} {}): {}",
                        body.code, body.message
                    ),
                )),
            }
        })
        .await
    }

    /// Compensation of `charge`: refunds whatever the gateway holds for the
    /// payment (a timed-out charge may have gone through). Idempotent.
    #[activity(name = "refund")]
    pub async fn refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: ChargeOp,
    ) -> Result<i64, ActivityError> {
        let span = activity_span("refund", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            let key = keys::refund(&op.payment_id);
            let request_id = op.request_id;
            let req = RefundRequest {
                payment_id: op.payment_id,
                idempotency_key: key.clone(),
                amount: op.amount,
                currency: op.currency,
            };
            let url = format!("{}{}", self.endpoints.gateway_url, paths::REFUNDS);
            let answer = self
                .gateway(
                    "refund",
                    post_json_as::<_, RefundResponse>(
                        &self.http,
                        &url,
                        &key,
                        request_id.as_deref(),
                        &req,
                    ),
                )
                .await;
            let result = match &answer {
                Ok(Ok(resp)) if resp.refunded_amount == 0 => "nothing",
                Ok(Ok(_)) => "done",
                _ => "failed",
            };
            self.metrics.compensation("charge", result);
            match answer? {
                Ok(resp) => Ok(resp.refunded_amount),
                // A refund refused outright is not something to give up on: money
                // may be held. Retry (and surface it through the attempts).
                Err((status, body)) => Err(transient(format!(
                    "the gateway refused the refund ({status} {}): {}",
                    body.code, body.message
                ))),
            }
        })
        .await
    }

    /// Asks the gateway what became of a charge whose confirmation did not
    /// come. A charge it does not know (`404`) is `Unknown`; an outage is
    /// transient (retried by the policy, then the saga treats the answer as
    /// unknown).
    #[activity(name = "chargeStatus")]
    pub async fn charge_status(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: ChargeStatusOp,
    ) -> Result<ChargeState, ActivityError> {
        let url = format!(
            "{}{}",
            self.endpoints.gateway_url,
            paths::charge(&op.charge_id)
        );
        match self
            .gateway("status", get_json::<ChargeLookup>(&self.http, &url))
            .await?
        {
            Ok(found) if found.payment_id == op.payment_id => Ok(found.status),
            Ok(found) => Err(permanent(
                failure_types::BAD_REQUEST,
                format!(
                    "the gateway says charge {} belongs to payment {}, not {}",
                    op.charge_id, found.payment_id, op.payment_id
                ),
            )),
            Err((404, _)) => Ok(ChargeState::Unknown),
            Err((status, body)) => Err(permanent(
                failure_types::BAD_REQUEST,
                format!(
                    "the gateway refused the status request ({status} {}): {}",
                    body.code, body.message
                ),
            )),
        }
    }

    /// Tells the payer, by email and/or SMS. No contact → nothing to do.
    #[activity(name = "notify")]
    pub async fn notify(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: NotifyOp,
    ) -> Result<u32, ActivityError> {
        let span = activity_span("notify", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            let Some(notify) = op.notify else {
                return Ok(0);
            };
            let targets = [(Channel::Email, notify.email), (Channel::Sms, notify.phone)];
            let mut sent = 0;
            for (channel, to) in targets {
                let Some(to) = to else { continue };
                let channel_name = match channel {
                    Channel::Email => "email",
                    Channel::Sms => "sms",
                };
                let key = match &op.purpose {
                    Some(purpose) => keys::notification_for(&op.payment_id, purpose, channel_name),
                    None => keys::notification(&op.payment_id, channel_name),
                };
                let req = NotificationRequest {
                    idempotency_key: key.clone(),
                    payment_id: op.payment_id.clone(),
                    channel,
                    to,
                    subject: op.subject.clone(),
                    body: op.body.clone(),
                };
                let url = format!("{}{}", self.endpoints.notify_url, paths::MESSAGES);
                if let Err((status, body)) = post_json_as::<_, serde_json::Value>(
                    &self.http,
                    &url,
                    &key,
                    op.request_id.as_deref(),
                    &req,
                )
                .await?
                {
                    return Err(permanent(
                        failure_types::BAD_REQUEST,
                        format!(
                            "the {channel_name} provider refused the message ({status}): {}",
                            body.message
                        ),
                    ));
                }
                sent += 1;
            }
            Ok(sent)
        })
        .await
    }

    /// Reserves a refund in the ledger: the payment succeeded, for this
    /// payer and currency, and this refund with the earlier ones stays within
    /// what was captured. Idempotent by refund ID (answers the state).
    #[activity(name = "reserveRefund")]
    pub async fn reserve_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        claim: RefundClaim,
    ) -> Result<RefundState, ActivityError> {
        self.metrics
            .ledger("reserve_refund", self.ledger.reserve_refund(&claim))
            .await
            .map_err(refund_ledger_error)
    }

    /// Refunds part or all of a captured charge at the gateway, once per
    /// refund (its idempotency key). 5xx are retried by the policy; any
    /// refusal (over-refund, not captured, refused) is permanent.
    #[activity(name = "refundCharge")]
    pub async fn refund_charge(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: ChargeRefundOp,
    ) -> Result<String, ActivityError> {
        let key = keys::charge_refund(&op.refund_id);
        let req = ChargeRefundRequest {
            payment_id: op.payment_id,
            idempotency_key: key.clone(),
            amount: op.amount,
            currency: op.currency,
        };
        let url = format!(
            "{}{}",
            self.endpoints.gateway_url,
            paths::charge_refunds(&op.charge_id)
        );
        match self
            .gateway(
                "refund_charge",
                post_json::<_, ChargeRefundResponse>(&self.http, &url, &key, &req),
            )
            .await?
        {
            Ok(resp) => Ok(resp.refund_id),
            Err((status, body)) => Err(permanent(
                failure_types::GATEWAY_REFUSED,
                format!(
                    "the gateway refused the refund ({status} {}): {}",
                    body.code, body.message
                ),
            )),
        }
    }

    /// Credits the payer what the gateway refunded, once; answers the
    /// payment's total refunded.
    #[activity(name = "completeRefund")]
    pub async fn complete_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: CompleteRefundOp,
    ) -> Result<i64, ActivityError> {
        let total = self
            .metrics
            .ledger(
                "complete_refund",
                self.ledger
                    .complete_refund(&op.refund_id, &op.gateway_refund_id),
            )
            .await
            .map(|(_, total)| total)
            .map_err(refund_ledger_error)?;
        self.refund_event(
            &op.refund_id,
            op.event.as_ref(),
            "Succeeded",
            paysaga_api::saga::refund_reasons::REFUNDED,
        )
        .await?;
        Ok(total)
    }

    /// Gives a reservation up: the refund failed and nothing moved.
    #[activity(name = "releaseRefund")]
    pub async fn release_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: ReleaseRefundOp,
    ) -> Result<Applied, ActivityError> {
        let applied = self
            .metrics
            .ledger(
                "release_refund",
                self.ledger.release_refund(&op.refund_id, &op.reason),
            )
            .await
            .map_err(refund_ledger_error)?;
        self.refund_event(
            &op.refund_id,
            op.event.as_ref(),
            "Failed",
            paysaga_api::saga::refund_reasons::GATEWAY_REFUSED,
        )
        .await?;
        Ok(applied)
    }

    /// Starts the deliveries of a refund's event, once the ledger holds how
    /// it ended (again on a retry: once per endpoint and event).
    async fn refund_event(
        &self,
        refund_id: &str,
        event: Option<&RefundEvent>,
        phase: &str,
        reason: &str,
    ) -> Result<(), ActivityError> {
        let (Some(webhooks), Some(e)) = (&self.webhooks, event) else {
            return Ok(());
        };
        let ended = crate::webhooks::Ended {
            object: &e.object,
            payment_id: &e.payment_id,
            refund_id: Some(refund_id),
            user_id: &e.user_id,
            amount: e.amount,
            currency: &e.currency,
            phase,
            reason,
            request_id: e.request_id.as_deref(),
        };
        webhooks.dispatch(&ended).await.map_err(transient)?;
        Ok(())
    }

    /// Records how the payment ended, for the audit.
    #[activity(name = "recordOutcome")]
    pub async fn record_outcome(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: OutcomeOp,
    ) -> Result<(), ActivityError> {
        let span = activity_span("recordOutcome", &op.payment_id, op.request_id.as_deref());
        in_span(span, async move {
            let changed = self
                .metrics
                .ledger(
                    "record_outcome",
                    self.ledger.record_outcome(
                        &op.payment_id,
                        &op.user_id,
                        op.amount,
                        &op.currency,
                        &op.phase,
                        &op.reason,
                    ),
                )
                .await
                .map_err(ledger_error)?;
            // Counted when the ledger first holds the end, not on a retry.
            if changed && op.phase != "Processing" && op.phase != "Pending" {
                self.metrics.payment_finished(&op.phase, &op.reason);
            }
            // Started on a retry too (once per endpoint and event: the workflow
            // ID), so that an attempt that failed after recording loses none.
            if let (Some(webhooks), Some(object)) = (&self.webhooks, &op.object) {
                let ended = crate::webhooks::Ended {
                    object,
                    payment_id: &op.payment_id,
                    refund_id: None,
                    user_id: &op.user_id,
                    amount: op.amount,
                    currency: &op.currency,
                    phase: &op.phase,
                    reason: &op.reason,
                    request_id: op.request_id.as_deref(),
                };
                webhooks.dispatch(&ended).await.map_err(transient)?;
            }
            Ok(())
        })
        .await
    }
}

// ---- the fraud queue's activities ------------------------------------------------------

pub struct FraudActivities {
    pub http: reqwest::Client,
    pub fraud_url: String,
}

#[activities]
impl FraudActivities {
    /// Asks the fraud-scoring service for a risk score (0–100).
    #[activity(name = "scoreFraud")]
    pub async fn score(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: FraudCheckInput,
    ) -> Result<FraudScoreResponse, ActivityError> {
        let span = activity_span(
            "scoreFraud",
            &req.request.payment_id,
            req.request_id.as_deref(),
        );
        in_span(span, async move {
            let url = format!("{}{}", self.fraud_url, paths::FRAUD_SCORE);
            let key = format!("{}-fraud", req.request.payment_id);
            match post_json_as::<_, FraudScoreResponse>(
                &self.http,
                &url,
                &key,
                req.request_id.as_deref(),
                &req.request,
            )
            .await?
            {
                Ok(score) => Ok(score),
                Err((status, body)) => Err(permanent(
                    failure_types::BAD_REQUEST,
                    format!(
                        "fraud scoring refused the request ({status}): {}",
                        body.message
                    ),
                )),
            }
        })
        .await
    }
}

//! The outside world's HTTP contracts: the payment gateway, the email/SMS
//! provider and fraud scoring. `paysaga-sim` serves them; the worker's
//! activities call them. Amounts are integer minor units.

use serde::{Deserialize, Serialize};

use crate::PaymentMethod;

/// Paths, relative to a simulator's base URL.
pub mod paths {
    pub const CHARGES: &str = "/gateway/v1/charges";
    /// `GET {CHARGES}/{charge_id}`: what became of a charge ([`super::ChargeLookup`]).
    pub fn charge(charge_id: &str) -> String {
        format!("{CHARGES}/{charge_id}")
    }
    pub const REFUNDS: &str = "/gateway/v1/refunds";
    /// `POST {CHARGES}/{charge_id}/refunds`: a partial or full refund of a
    /// captured charge ([`super::ChargeRefundRequest`]).
    pub fn charge_refunds(charge_id: &str) -> String {
        format!("{CHARGES}/{charge_id}/refunds")
    }
    pub const FRAUD_SCORE: &str = "/fraud/v1/score";
    pub const MESSAGES: &str = "/notify/v1/messages";
    pub const ADMIN_CONFIG: &str = "/admin/config";
    /// `PUT {ADMIN_SCENARIOS}/{payment_id}`: per-payment behaviour.
    pub const ADMIN_SCENARIOS: &str = "/admin/scenarios";
    /// `GET`: every charge and refund the gateway holds, for audits.
    pub const ADMIN_GATEWAY_LEDGER: &str = "/admin/gateway-ledger";
    /// Where the gateway's signed confirmations are delivered (served by `paysaga-operator api`).
    pub const GATEWAY_CALLBACKS: &str = "/v1/gateway/callbacks";
    /// `POST`: a merchant's webhook receiver, one per name
    /// ([`super::MerchantConfig`]).
    pub fn merchant_events(merchant: &str) -> String {
        format!("/merchant/v1/{merchant}/events")
    }
    /// `PUT {ADMIN_MERCHANTS}/{name}` sets up a receiver
    /// ([`super::MerchantConfig`]); `GET` answers what it received
    /// ([`super::MerchantRecord`]).
    pub const ADMIN_MERCHANTS: &str = "/admin/merchants";
}

/// Header carrying the idempotency key of a side-effecting request.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

// ---- gateway -------------------------------------------------------------------

/// `POST /gateway/v1/charges`. Idempotent by `idempotency_key`: a repeat returns
/// the first answer and charges (and confirms) nothing more.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    pub payment_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
    pub method: PaymentMethod,
    /// Where to send the asynchronous confirmation; the simulator's configured
    /// callback URL when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// `200`/`201` answer to a charge: accepted, confirmation to follow by callback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeResponse {
    pub charge_id: String,
    pub status: ChargeStatus,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ChargeStatus {
    /// Accepted; the outcome comes by callback.
    Pending,
    Succeeded,
    Failed,
    Refunded,
}

/// `GET /gateway/v1/charges/{chargeId}`: what the gateway knows of a charge.
/// An unknown charge is a `404`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeLookup {
    pub charge_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: ChargeState,
}

/// A charge's state as the status endpoint words it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ChargeState {
    /// The money was taken.
    Captured,
    Failed,
    /// Accepted, not settled yet.
    Pending,
    /// Taken and given back.
    Refunded,
    /// The gateway has no such charge (a `404`), or cannot tell.
    Unknown,
}

impl From<ChargeStatus> for ChargeState {
    fn from(s: ChargeStatus) -> Self {
        match s {
            ChargeStatus::Pending => ChargeState::Pending,
            ChargeStatus::Succeeded => ChargeState::Captured,
            ChargeStatus::Failed => ChargeState::Failed,
            ChargeStatus::Refunded => ChargeState::Refunded,
        }
    }
}

/// `POST /gateway/v1/refunds`. Refunds whatever the gateway holds for the
/// payment (the charge may or may not have happened: a timed-out charge call
/// may still have gone through). Idempotent; refunding nothing is a success.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    pub payment_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefundResponse {
    /// `None` when there was nothing to refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub refunded_amount: i64,
}

/// `POST /gateway/v1/charges/{chargeId}/refunds`: give back `amount` of a
/// captured charge. Idempotent by `idempotency_key` (a repeat answers the
/// first answer and refunds nothing more; the same key for another charge or
/// amount is a 400). Refused (`409 overRefund`) past what the charge has
/// left, (`409 notCaptured`) for a charge not captured, and (`402
/// refundRefused`) when the gateway will not refund it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRefundRequest {
    /// The payment the charge belongs to (checked).
    pub payment_id: String,
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRefundResponse {
    pub refund_id: String,
    pub charge_id: String,
    pub amount: i64,
    pub currency: String,
    /// Refunded from the charge so far, this refund included.
    pub charge_refunded_amount: i64,
}

/// Body of every 4xx/5xx answer of the simulators.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `declined`, `unavailable`.
    pub code: String,
    pub message: String,
}

/// Codes in [`ErrorBody::code`].
pub mod error_codes {
    /// The gateway declined the charge (402): permanent.
    pub const DECLINED: &str = "declined";
    /// A transient fault (503): retry with backoff.
    pub const UNAVAILABLE: &str = "unavailable";
    pub const BAD_REQUEST: &str = "badRequest";
    pub const NOT_FOUND: &str = "notFound";
    /// A refund past what the charge has left (409).
    pub const OVER_REFUND: &str = "overRefund";
    /// A refund of a charge that is not captured (409).
    pub const NOT_CAPTURED: &str = "notCaptured";
    /// The gateway will not refund the charge (402): permanent.
    pub const REFUND_REFUSED: &str = "refundRefused";
}

/// The gateway's asynchronous confirmation, POSTed (signed, see
/// [`crate::signature`]) to [`paths::GATEWAY_CALLBACKS`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayCallback {
    /// The payment's ID at the gateway = its workflow ID.
    pub payment_id: String,
    pub charge_id: String,
    pub outcome: CallbackOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the charge was for, in minor units, when the gateway says (the
    /// saga takes a confirmation only for the charge it made: its id, and
    /// these when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CallbackOutcome {
    Succeeded,
    Failed,
}

// ---- fraud scoring -------------------------------------------------------------

/// `POST /fraud/v1/score`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FraudScoreRequest {
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    pub method: PaymentMethod,
}

/// A risk score from 0 (none) to 100 (certain fraud), with the rules that fired.
/// The caller decides what score it rejects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FraudScoreResponse {
    pub score: u32,
    pub reasons: Vec<String>,
}

// ---- notifications ---------------------------------------------------------------

/// `POST /notify/v1/messages`. Idempotent by `idempotency_key`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRequest {
    pub idempotency_key: String,
    pub payment_id: String,
    pub channel: Channel,
    /// An email address or an E.164 phone number.
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Channel {
    Email,
    Sms,
}

/// A recorded message: `GET /notify/v1/messages?paymentId=..&to=..` lists them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    #[serde(flatten)]
    pub request: NotificationRequest,
    /// Unix milliseconds when the provider accepted it.
    pub received_at_ms: i64,
}

// ---- simulator knobs ---------------------------------------------------------------

/// The simulators' global behaviour (`GET`/`PUT /admin/config`; `PUT` merges
/// the fields given). Rates are probabilities in `[0, 1]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SimConfig {
    /// Added to every request before it is answered.
    pub latency_ms: u64,
    /// Share of gateway calls answered 503 (before doing anything).
    pub transient_failure_rate: f64,
    /// Share of charges declined (402).
    pub decline_rate: f64,
    /// Delay before the charge confirmation is sent.
    pub callback_delay_ms: u64,
    /// Share of confirmations that report a failed charge.
    pub callback_failure_rate: f64,
    /// Share of charges whose confirmation is lost: the charge succeeds at
    /// the gateway, the callback never arrives (the saga asks the status
    /// endpoint when its timer fires).
    pub callback_drop_rate: f64,
    /// Share of fraud scores forced to 100.
    pub fraud_reject_rate: f64,
    /// Where confirmations go when a charge names no `callbackUrl`.
    pub callback_url: Option<String>,
}

/// Deterministic behaviour for one payment (`PUT /admin/scenarios/{paymentId}`),
/// overriding the rates of [`SimConfig`]. For tests and demos.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Scenario {
    /// Answer this many charge attempts with 503 before going on.
    pub transient_failures: u32,
    /// Decline the charge (402).
    pub decline: bool,
    /// The confirmation to send; `None` = never send one.
    pub callback: Option<CallbackOutcome>,
    /// Delay before the confirmation is sent; the global delay when `None`.
    pub callback_delay_ms: Option<u64>,
    /// Send the confirmation this many times (duplicates must be harmless).
    pub callback_copies: u32,
    /// Fraud score to return instead of the rules' score.
    pub fraud_score: Option<u32>,
    /// The charge settles as `callback` says, but the confirmation is never
    /// delivered (a lost callback): only the status endpoint tells.
    pub lose_callback: bool,
    /// The status endpoint answers `503` for this payment's charge (the
    /// gateway cannot be asked).
    pub status_unavailable: bool,
    /// Answer this many refund requests of the payment's charge with 503
    /// before going on.
    pub refund_transient_failures: u32,
    /// Refuse every refund of the payment's charge (402 `refundRefused`).
    pub refuse_refunds: bool,
}

/// `GET /admin/gateway-ledger`: what the gateway holds, per payment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayLedgerEntry {
    pub payment_id: String,
    pub charge_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: ChargeStatus,
    /// Charge attempts received, including those answered 503.
    pub attempts: u32,
    pub refunded_amount: i64,
    /// The `X-Request-Id` the charge came with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

// ---- a merchant's webhook receiver ------------------------------------------------

/// How a merchant's receiver behaves (`PUT /admin/merchants/{name}`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MerchantConfig {
    /// The signing secret it verifies events with.
    pub secret: String,
    /// Answer `503` to this many deliveries before accepting.
    #[serde(default)]
    pub fail_first: u32,
    /// Answer this status to every delivery (a receiver that is broken for
    /// good, until set up again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<u16>,
}

/// One request a receiver got.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MerchantReceipt {
    /// The `X-Paysaga-Event-Id` header.
    pub event_id: String,
    pub signature_valid: bool,
    /// What it answered.
    pub status: u16,
    pub at_ms: i64,
}

/// What a receiver got (`GET /admin/merchants/{name}`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MerchantRecord {
    /// Every request, in order.
    pub receipts: Vec<MerchantReceipt>,
    /// The events accepted, once each (by id), in order.
    pub events: Vec<serde_json::Value>,
    /// Accepted deliveries of an event already accepted.
    pub duplicates: u32,
}

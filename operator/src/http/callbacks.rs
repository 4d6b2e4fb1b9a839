//! `POST /v1/gateway/callbacks`: the gateway's signed confirmations.
//!
//! Verified before anything else: malformed headers → 400; a forged
//! signature, a stale timestamp or a replayed delivery → 401; then the
//! payment's workflow is signalled (unknown or finished payment → 404;
//! Temporal unavailable → 503, so the gateway retries).
//!
//! The signing secret rotates without downtime: while
//! `PAYSAGA_CALLBACK_SECRET_PREVIOUS` is set, a callback signed with it is
//! taken as well as one signed with the current secret. Which one verified
//! each callback is logged and counted
//! (`paysaga_api_gateway_callbacks_verified_total{secret="current|previous"}`),
//! so the operator sees when the gateway has stopped using the old one and
//! the previous secret can be dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use paysaga_api::external::GatewayCallback;
use paysaga_api::signature::{self, SIGNATURE_HEADER, Signed, SignedWith, TIMESTAMP_HEADER};

use super::AppState;
use super::problem::Problem;
use crate::temporal::SignalError;

/// Checks signatures and remembers the deliveries taken, so a captured one
/// cannot be replayed within the tolerance window. A delivery is keyed on its
/// decoded signature, never on how its headers are spelled. It is remembered
/// from the moment it is taken (so two copies at once are not both acted on)
/// and forgotten again if acting on it failed for a reason that may pass
/// ([`CallbackVerifier::forget`]): the gateway resends the identical bytes,
/// and those must be taken then. The memory is per replica; a replay reaching
/// another replica is still harmless, because the workflow takes only the
/// first confirmation.
pub struct CallbackVerifier {
    secret: Vec<u8>,
    /// The secret being rotated out, accepted until it is dropped.
    previous: Option<Vec<u8>>,
    tolerance_secs: i64,
    seen: Mutex<HashMap<Signed, i64>>,
}

/// At most this many deliveries are remembered; the oldest go first.
const MAX_SEEN: usize = 100_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Signature(signature::SignatureError),
    Replayed,
}

impl CallbackVerifier {
    pub fn new(secret: impl Into<Vec<u8>>, tolerance_secs: i64) -> Self {
        CallbackVerifier {
            secret: secret.into(),
            previous: None,
            tolerance_secs,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Also accepts deliveries signed with `previous` (a rotation under way).
    pub fn with_previous(mut self, previous: Option<impl Into<Vec<u8>>>) -> Self {
        self.previous = previous.map(Into::into);
        self
    }

    /// Whether a previous secret is accepted too.
    pub fn rotating(&self) -> bool {
        self.previous.is_some()
    }

    /// Verifies one delivery at time `now` (Unix seconds) and takes it: the
    /// same delivery again is a replay until [`forget`](Self::forget). Says
    /// which secret verified it.
    pub fn take(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(Signed, SignedWith), Refusal> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (signed, with) = signature::verify_rotating(
            &self.secret,
            self.previous.as_deref(),
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            body,
            now,
            self.tolerance_secs,
        )
        .map_err(Refusal::Signature)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, &mut expires| expires > now);
        if seen.len() >= MAX_SEEN {
            // Under a flood, forget the entries closest to expiry.
            let mut by_expiry: Vec<(i64, Signed)> = seen.iter().map(|(k, v)| (*v, *k)).collect();
            by_expiry.sort_by_key(|(expires, _)| *expires);
            for (_, k) in by_expiry.into_iter().take(MAX_SEEN / 10) {
                seen.remove(&k);
            }
        }
        if seen.insert(signed, now + 2 * self.tolerance_secs).is_some() {
            return Err(Refusal::Replayed);
        }
        Ok((signed, with))
    }

    /// Forgets a delivery taken but not acted on, so that its identical
    /// resend is taken.
    pub fn forget(&self, signed: &Signed) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(signed);
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub async fn receive(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (signed, with) = match state.callbacks.take(&headers, &body, unix_now()) {
        Ok(taken) => taken,
        Err(Refusal::Signature(e)) if e.is_malformed() => {
            return Problem::new(StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        Err(Refusal::Signature(e)) => {
            tracing::warn!(error = %e, rotating = state.callbacks.rotating(), "refused a gateway callback");
            return Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
        Err(Refusal::Replayed) => {
            tracing::warn!("refused a replayed gateway callback");
            return Problem::new(
                StatusCode::UNAUTHORIZED,
                "this delivery was already received (replay)",
            )
            .into_response();
        }
    };
    state.metrics.callback_verified(with);
    let cb: GatewayCallback = match serde_json::from_slice(&body) {
        Ok(cb) => cb,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                format!("invalid callback body: {e}"),
            )
            .into_response();
        }
    };
    match state.workflows.gateway_callback(&cb).await {
        Ok(()) => {
            tracing::info!(payment_id = %cb.payment_id, outcome = ?cb.outcome, secret = with.as_str(), "gateway callback delivered");
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({"accepted": true})),
            )
                .into_response()
        }
        Err(SignalError::NotFound(id)) => Problem::new(
            StatusCode::NOT_FOUND,
            format!("no payment in progress with id {id}"),
        )
        .into_response(),
        Err(e) => {
            // Not acted on: the gateway's resend of these very bytes must be
            // taken, not refused as a replay.
            state.callbacks.forget(&signed);
            tracing::error!(error = %e, payment_id = %cb.payment_id, "could not deliver a gateway callback");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn a_delivery_is_accepted_once() {
        let v = CallbackVerifier::new("k", 300);
        let body = br#"{"paymentId":"p"}"#;
        let sig = signature::sign(b"k", 1_000, body);
        assert!(v.take(&headers(1_000, &sig), body, 1_001).is_ok());
        assert_eq!(
            v.take(&headers(1_000, &sig), body, 1_002),
            Err(Refusal::Replayed)
        );
        // A fresh signature of the same body (a gateway retry) is not a replay.
        let again = signature::sign(b"k", 1_003, body);
        assert!(v.take(&headers(1_003, &again), body, 1_003).is_ok());
    }

    #[test]
    fn a_replay_spelled_differently_is_still_a_replay() {
        let v = CallbackVerifier::new("k", 300);
        let body = br#"{"paymentId":"p"}"#;
        let sig = signature::sign(b"k", 1_000, body);
        assert!(v.take(&headers(1_000, &sig), body, 1_000).is_ok());
        let hex = sig.strip_prefix("v1=").unwrap();
        let mixed: String = hex
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        for spelling in [
            format!("v1={}", hex.to_ascii_uppercase()),
            format!("v1={mixed}"),
            format!(" v1={hex} "),
        ] {
            assert_eq!(
                v.take(&headers(1_000, &spelling), body, 1_001),
                Err(Refusal::Replayed),
                "{spelling}"
            );
        }
        // The timestamp spelled with a leading zero signs the same content.
        let mut h = headers(1_000, &sig);
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_static("01000"));
        assert_eq!(v.take(&h, body, 1_001), Err(Refusal::Replayed));
    }

    #[test]
    fn a_delivery_forgotten_is_taken_again() {
        let v = CallbackVerifier::new("k", 300);
        let body = br#"{"paymentId":"p"}"#;
        let sig = signature::sign(b"k", 1_000, body);
        let (signed, _) = v.take(&headers(1_000, &sig), body, 1_000).unwrap();
        v.forget(&signed);
        assert_eq!(
            v.take(&headers(1_000, &sig), body, 1_001),
            Ok((signed, SignedWith::Current))
        );
        assert_eq!(
            v.take(&headers(1_000, &sig), body, 1_002),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn forged_and_stale_deliveries_are_refused() {
        let v = CallbackVerifier::new("k", 300);
        let body = b"{}";
        let forged = signature::sign(b"not-the-key", 1_000, body);
        assert_eq!(
            v.take(&headers(1_000, &forged), body, 1_000),
            Err(Refusal::Signature(signature::SignatureError::Mismatch))
        );
        let old = signature::sign(b"k", 1_000, body);
        assert!(matches!(
            v.take(&headers(1_000, &old), body, 2_000),
            Err(Refusal::Signature(signature::SignatureError::Stale { .. }))
        ));
    }

    #[test]
    fn during_a_rotation_the_previous_secret_is_accepted_too() {
        let v = CallbackVerifier::new("new", 300).with_previous(Some("old"));
        assert!(v.rotating());
        let body = br#"{"paymentId":"p"}"#;
        let with_new = signature::sign(b"new", 1_000, body);
        let with_old = signature::sign(b"old", 1_001, body);
        let with_neither = signature::sign(b"other", 1_002, body);
        assert!(matches!(
            v.take(&headers(1_000, &with_new), body, 1_000),
            Ok((_, SignedWith::Current))
        ));
        assert!(matches!(
            v.take(&headers(1_001, &with_old), body, 1_001),
            Ok((_, SignedWith::Previous))
        ));
        // Neither: refused as a forgery, as without a rotation (401).
        assert_eq!(
            v.take(&headers(1_002, &with_neither), body, 1_002),
            Err(Refusal::Signature(signature::SignatureError::Mismatch))
        );
        // A delivery signed with the previous secret is remembered as well.
        assert_eq!(
            v.take(&headers(1_001, &with_old), body, 1_003),
            Err(Refusal::Replayed)
        );
        // Once the previous secret is dropped, it is just a wrong one.
        let after = CallbackVerifier::new("new", 300).with_previous(None::<Vec<u8>>);
        assert!(!after.rotating());
        assert_eq!(
            after.take(&headers(1_001, &with_old), body, 1_001),
            Err(Refusal::Signature(signature::SignatureError::Mismatch))
        );
    }
}

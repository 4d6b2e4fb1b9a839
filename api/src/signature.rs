//! Signatures of the gateway's callbacks: HMAC-SHA256 over
//! `"<unix-seconds>.<raw body>"`, sent as
//! `X-Paysaga-Timestamp: <unix-seconds>` and `X-Paysaga-Signature: v1=<hex>`.
//! Pure functions: the caller supplies the clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "X-Paysaga-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Paysaga-Signature";
/// How far a callback's timestamp may be from the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// The `X-Paysaga-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("timestamp is {skew_secs} s away from now, outside the {tolerance_secs} s tolerance")]
    Stale { skew_secs: i64, tolerance_secs: i64 },
    #[error("signature does not match the body")]
    Mismatch,
}

impl SignatureError {
    /// Malformed requests are the sender's bug (400); the rest are refusals (401).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            SignatureError::Missing(_) | SignatureError::Malformed(_)
        )
    }
}

/// A verified delivery: its signature decoded. One delivery has one `Signed`
/// however its headers are spelled (hex case, spaces, a leading zero in the
/// timestamp), so replay memory keyed on it cannot be fooled by re-spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signed(pub [u8; 32]);

/// Checks a callback: the timestamp within `tolerance_secs` of `now`, and the
/// signature over it and the raw body. Comparison is constant-time.
pub fn verify(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<Signed, SignatureError> {
    let ts_raw = timestamp_header.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let sig_raw = signature_header.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let timestamp: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed(TIMESTAMP_HEADER))?;
    let sig_hex = sig_raw
        .trim()
        .strip_prefix("v1=")
        .ok_or(SignatureError::Malformed(SIGNATURE_HEADER))?;
    let sig = hex::decode(sig_hex).map_err(|_| SignatureError::Malformed(SIGNATURE_HEADER))?;
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            skew_secs: skew,
            tolerance_secs,
        });
    }
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| SignatureError::Mismatch)?;
    // verify_slice took only the 32 bytes of a SHA-256 MAC.
    let signed = <[u8; 32]>::try_from(sig.as_slice()).map_err(|_| SignatureError::Mismatch)?;
    Ok(Signed(signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";
    const BODY: &[u8] = br#"{"paymentId":"p","chargeId":"c","outcome":"succeeded"}"#;

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify(SECRET, ts, sig, body, now, DEFAULT_TOLERANCE_SECS).map(|_| ())
    }

    #[test]
    fn a_signed_body_verifies() {
        let sig = sign(SECRET, 1_000, BODY);
        assert!(sig.starts_with("v1="));
        assert_eq!(check(Some("1000"), Some(&sig), BODY, 1_010), Ok(()));
    }

    #[test]
    fn refusals() {
        let sig = sign(SECRET, 1_000, BODY);
        let forged = sign(b"other", 1_000, BODY);
        // (timestamp header, signature header, body, now, expected refusal)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a [u8],
            i64,
            SignatureError,
        );
        let table: Vec<Case> = vec![
            (
                None,
                Some(&sig),
                BODY,
                1_000,
                SignatureError::Missing(TIMESTAMP_HEADER),
            ),
            (
                Some("1000"),
                None,
                BODY,
                1_000,
                SignatureError::Missing(SIGNATURE_HEADER),
            ),
            (
                Some("soon"),
                Some(&sig),
                BODY,
                1_000,
                SignatureError::Malformed(TIMESTAMP_HEADER),
            ),
            (
                Some("1000"),
                Some("deadbeef"),
                BODY,
                1_000,
                SignatureError::Malformed(SIGNATURE_HEADER),
            ),
            (
                Some("1000"),
                Some("v1=zz"),
                BODY,
                1_000,
                SignatureError::Malformed(SIGNATURE_HEADER),
            ),
            (
                Some("1000"),
                Some(&forged),
                BODY,
                1_000,
                SignatureError::Mismatch,
            ),
            (
                Some("1000"),
                Some(&sig),
                b"{}",
                1_000,
                SignatureError::Mismatch,
            ),
            // The timestamp is signed: moving it breaks the signature.
            (
                Some("1001"),
                Some(&sig),
                BODY,
                1_000,
                SignatureError::Mismatch,
            ),
            (
                Some("1000"),
                Some(&sig),
                BODY,
                1_301,
                SignatureError::Stale {
                    skew_secs: 301,
                    tolerance_secs: 300,
                },
            ),
            (
                Some("1000"),
                Some(&sig),
                BODY,
                699,
                SignatureError::Stale {
                    skew_secs: -301,
                    tolerance_secs: 300,
                },
            ),
        ];
        for (ts, s, body, now, want) in table {
            assert_eq!(
                check(ts, s, body, now),
                Err(want.clone()),
                "{ts:?} {s:?} now={now}"
            );
        }
        assert!(SignatureError::Missing(TIMESTAMP_HEADER).is_malformed());
        assert!(!SignatureError::Mismatch.is_malformed());
    }
}

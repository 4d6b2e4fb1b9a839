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

/// Which of the receiver's secrets verified a delivery. During a rotation
/// the receiver holds two: the new one (`Current`) and the one being
/// replaced (`Previous`), so a gateway still signing with the old secret is
/// not refused while it is switched over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignedWith {
    Current,
    Previous,
}

impl SignedWith {
    /// `current` or `previous`: a metric label and a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            SignedWith::Current => "current",
            SignedWith::Previous => "previous",
        }
    }
}

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
    verify_rotating(
        secret,
        None,
        timestamp_header,
        signature_header,
        body,
        now,
        tolerance_secs,
    )
    .map(|(signed, _)| signed)
}

/// [`verify`] against the current secret, then against the previous one if
/// a rotation is under way; says which matched. Headers and the clock are
/// checked once (a malformed or stale delivery is refused whatever the key);
/// a signature matching neither secret is a [`SignatureError::Mismatch`].
pub fn verify_rotating(
    current: &[u8],
    previous: Option<&[u8]>,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(Signed, SignedWith), SignatureError> {
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
    // A SHA-256 MAC is 32 bytes; anything else matches no secret.
    let signed = <[u8; 32]>::try_from(sig.as_slice()).map_err(|_| SignatureError::Mismatch)?;
    let matches = |secret: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&signed).is_ok()
    };
    if matches(current) {
        return Ok((Signed(signed), SignedWith::Current));
    }
    match previous {
        Some(previous) if matches(previous) => Ok((Signed(signed), SignedWith::Previous)),
        _ => Err(SignatureError::Mismatch),
    }
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

    #[test]
    fn during_a_rotation_either_secret_verifies_and_says_which() {
        const NEW: &[u8] = b"new-secret";
        const OLD: &[u8] = b"old-secret";
        let verify_with = |key: &[u8], previous: Option<&[u8]>| {
            let sig = sign(key, 1_000, BODY);
            verify_rotating(
                NEW,
                previous,
                Some("1000"),
                Some(&sig),
                BODY,
                1_000,
                DEFAULT_TOLERANCE_SECS,
            )
            .map(|(_, with)| with)
        };
        assert_eq!(verify_with(NEW, Some(OLD)), Ok(SignedWith::Current));
        assert_eq!(verify_with(OLD, Some(OLD)), Ok(SignedWith::Previous));
        assert_eq!(
            verify_with(b"neither", Some(OLD)),
            Err(SignatureError::Mismatch)
        );
        // No rotation under way: the old secret is just a wrong one.
        assert_eq!(verify_with(NEW, None), Ok(SignedWith::Current));
        assert_eq!(verify_with(OLD, None), Err(SignatureError::Mismatch));
        // One delivery is one `Signed` whichever secret verified it.
        let sig = sign(OLD, 1_000, BODY);
        let (a, _) =
            verify_rotating(NEW, Some(OLD), Some("1000"), Some(&sig), BODY, 1_000, 300).unwrap();
        let b = verify(OLD, Some("1000"), Some(&sig), BODY, 1_000, 300).unwrap();
        assert_eq!(a, b);
        // A stale delivery is stale, whichever secret signed it.
        assert!(matches!(
            verify_rotating(NEW, Some(OLD), Some("1000"), Some(&sig), BODY, 2_000, 300),
            Err(SignatureError::Stale { .. })
        ));
    }
}

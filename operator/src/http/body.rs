//! Request bodies: JSON sent as JSON, and every field one the API knows.
//!
//! A typo such as `"notfiy"` must not be dropped silently (the payer would
//! never be told), and kubectl's strict field validation refuses it too; a
//! body sent as another media type is refused rather than guessed at.

use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::Problem;

/// `T` from a JSON body: `application/json` (or `+json`) or 415; every
/// field known, or 422 naming the first that is not; then `T`'s own rules
/// (422 saying what is wrong).
pub fn json<T: DeserializeOwned + Serialize>(
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, Problem> {
    media_type(headers)?;
    let invalid = |e: &dyn std::fmt::Display| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid {what}: {e}"),
        )
    };
    let sent: Value = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
    let parsed: T = serde_json::from_value(sent.clone()).map_err(|e| invalid(&e))?;
    let known = serde_json::to_value(&parsed).map_err(|e| invalid(&e))?;
    if let Some(field) = unknown_field(&sent, &known, "") {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid {what}: unknown field {field:?}"),
        ));
    }
    Ok(parsed)
}

/// As [`json`], with an empty body (of any media type) being `T::default()`.
pub fn json_or_default<T: DeserializeOwned + Serialize + Default>(
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, Problem> {
    if body.is_empty() {
        return Ok(T::default());
    }
    json(headers, body, what)
}

fn media_type(headers: &HeaderMap) -> Result<(), Problem> {
    let sent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = sent.split(';').next().unwrap_or("").trim();
    let json = essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > "application/+json".len()
            && essence
                .get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
            && essence.to_ascii_lowercase().ends_with("+json"));
    if json {
        return Ok(());
    }
    let was = if sent.is_empty() {
        "no Content-Type".to_string()
    } else {
        format!("Content-Type {sent:?}")
    };
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("the body must be sent as application/json ({was} was given)"),
    ))
}

/// The first field of `sent` that `known` (what was understood of it, written
/// back) does not have, as a dotted path. A field sent as `null` is the same
/// as one left out.
fn unknown_field(sent: &Value, known: &Value, at: &str) -> Option<String> {
    let (Value::Object(sent), Value::Object(known)) = (sent, known) else {
        return None;
    };
    sent.iter().find_map(|(key, value)| {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match known.get(key) {
            None if value.is_null() => None,
            None => Some(path),
            Some(k) => unknown_field(value, k, &path),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use paysaga_api::http::{CancelBody, CreatePayment};

    fn typed(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    const GOOD: &str = r#"{"userId":"alice","amount":5,"currency":"EUR","method":"card","notify":{"email":"a@b.c"},"description":null}"#;

    #[test]
    fn json_of_known_fields_is_taken() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            let p: CreatePayment = json(&typed(ct), GOOD.as_bytes(), "payment").unwrap();
            assert_eq!(p.amount, 5, "{ct}");
        }
    }

    #[test]
    fn another_media_type_is_415() {
        for headers in [
            typed("text/plain"),
            typed("application/x-www-form-urlencoded"),
            HeaderMap::new(),
        ] {
            let p = json::<CreatePayment>(&headers, GOOD.as_bytes(), "payment").unwrap_err();
            assert_eq!(p.status, 415, "{p:?}");
            assert!(p.detail.contains("application/json"), "{p:?}");
        }
    }

    #[test]
    fn an_unknown_field_is_422_naming_it() {
        let h = typed("application/json");
        for (body, field) in [
            (
                r#"{"userId":"a","amount":5,"currency":"EUR","method":"card","notfiy":{}}"#,
                "notfiy",
            ),
            (
                r#"{"userId":"a","amount":5,"currency":"EUR","method":"card","notify":{"emial":"x@y.z"}}"#,
                "notify.emial",
            ),
        ] {
            let p = json::<CreatePayment>(&h, body.as_bytes(), "payment").unwrap_err();
            assert_eq!(
                (p.status, p.detail.as_str()),
                (
                    422,
                    format!("invalid payment: unknown field {field:?}").as_str()
                )
            );
        }
    }

    #[test]
    fn an_empty_body_may_be_the_default_whatever_its_type() {
        let c: CancelBody = json_or_default(&HeaderMap::new(), b"", "cancel body").unwrap();
        assert_eq!(c, CancelBody::default());
        let p = json_or_default::<CancelBody>(&HeaderMap::new(), b"{}", "cancel body").unwrap_err();
        assert_eq!(p.status, 415);
    }
}

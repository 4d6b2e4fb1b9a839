//! Checks of request fields shared by the services. Each returns a readable
//! 400 message naming the field.

use crate::ApiError;

pub(crate) fn non_empty(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{field} must not be empty")));
    }
    Ok(())
}

/// Amounts are integer minor units and must be positive.
pub(crate) fn positive_amount(amount: i64) -> Result<(), ApiError> {
    if amount <= 0 {
        return Err(ApiError::BadRequest(format!(
            "amount must be a positive number of minor units, got {amount}"
        )));
    }
    Ok(())
}

/// ISO 4217 style: three upper-case letters.
pub(crate) fn currency(currency: &str) -> Result<(), ApiError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "currency must be three upper-case letters (ISO 4217), got {currency:?}"
        )))
    }
}

/// An absolute `http` or `https` URL.
pub(crate) fn http_url(field: &str, value: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(value)
        .map_err(|err| format!("{field} {value:?} is not a URL: {err}"))?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!("{field} must be http or https, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert!(non_empty("x", "a").is_ok());
        assert!(non_empty("x", " ").is_err());
        for (amount, ok) in [(1, true), (i64::MAX, true), (0, false), (-5, false)] {
            assert_eq!(positive_amount(amount).is_ok(), ok, "{amount}");
        }
        for (c, ok) in [
            ("EUR", true),
            ("eur", false),
            ("EURO", false),
            ("E1R", false),
            ("", false),
        ] {
            assert_eq!(currency(c).is_ok(), ok, "{c}");
        }
        for (u, ok) in [
            ("http://127.0.0.1:8080/v1/gateway/callbacks", true),
            ("https://api.example/cb", true),
            ("ftp://example/x", false),
            ("/relative", false),
            ("not a url", false),
        ] {
            assert_eq!(http_url("u", u).is_ok(), ok, "{u}");
        }
    }
}

//! Errors answered to clients, as [`ErrorBody`] JSON, and the extractors that
//! turn malformed input into them (axum's own rejections answer plain text).

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use paysaga_api::external::{ErrorBody, error_codes};
use serde::de::DeserializeOwned;

/// What a simulated service answers when it does not answer success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The gateway declined the charge (402): permanent.
    #[error("declined: {0}")]
    Declined(String),
    /// A simulated transient fault (503): the caller should retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No such route or object (404).
    #[error("not found: {0}")]
    NotFound(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Declined(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (code, message) = match self {
            ApiError::BadRequest(m) => (error_codes::BAD_REQUEST, m),
            ApiError::Declined(m) => (error_codes::DECLINED, m),
            ApiError::Unavailable(m) => (error_codes::UNAVAILABLE, m),
            ApiError::NotFound(m) => (error_codes::NOT_FOUND, m),
        };
        ErrorBody {
            code: code.to_owned(),
            message: message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

/// `Json<T>` whose rejections (bad JSON, wrong fields, missing content type)
/// are a 400 [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(value)| AppJson(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// `Query<T>` whose rejections are a 400 [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| AppQuery(value))
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
    }
}

/// The router's fallback: unknown routes are a 404 [`ErrorBody`].
pub async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_and_code() {
        let table = [
            (
                ApiError::BadRequest("x".into()),
                400,
                error_codes::BAD_REQUEST,
            ),
            (ApiError::Declined("x".into()), 402, error_codes::DECLINED),
            (
                ApiError::Unavailable("x".into()),
                503,
                error_codes::UNAVAILABLE,
            ),
            (ApiError::NotFound("x".into()), 404, error_codes::NOT_FOUND),
        ];
        for (err, status, code) in table {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.body().code, code, "{err}");
            assert_eq!(err.body().message, "x");
        }
    }
}

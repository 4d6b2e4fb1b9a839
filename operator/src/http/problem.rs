//! RFC 9457 problem details.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// RFC 9457 problem details.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            type_: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// The problem as a response that tells the client when to try again.
    pub fn retry_after(self, secs: u32) -> Response {
        let mut resp = self.into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

/// The longest path this API reads; past it, 414. (hyper itself answers a
/// request line over 64 KiB with a bare 414 before any of this runs.)
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Every error this API answers is `application/problem+json`: a response
/// made outside the handlers — axum's rejections (413 for a body over the
/// limit, 405 for a method a route does not take), the readiness probe's
/// 503 — is rewritten as one, its text kept as the detail and its headers
/// (`Allow`, `Retry-After`) kept. A path too long is refused here (414).
pub async fn every_error(req: Request, next: Next) -> Response {
    let path = req.uri().path().len();
    if path > MAX_PATH_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            format!("the path is {path} bytes long; at most {MAX_PATH_BYTES} are read"),
        )
        .into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let problem_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !(status.is_client_error() || status.is_server_error()) || problem_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let said = String::from_utf8_lossy(&text).trim().to_string();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("this route does not take that method; it takes {allow}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is over this API's limit of {MAX_BODY_BYTES} bytes ({said})")
        }
        _ if said.is_empty() => status.canonical_reason().unwrap_or("Error").to_string(),
        _ => said,
    };
    let (problem, body) = Problem::new(status, detail).into_response().into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(ct) = problem.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}

/// The largest request body read; past it, 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

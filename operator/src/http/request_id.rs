//! One correlation id per request: `X-Request-Id` as the client sent it
//! (checked: it becomes a label value) or one made here, returned on every
//! answer, put on the request's log lines (a span field) and on the objects
//! the request makes (`paysaga.dev/request-id`), from where the controller,
//! the saga and the outside world carry it on. The request's span is the
//! root of its trace, or a child of the client's `traceparent`.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paysaga_api::names::{REQUEST_ID_HEADER, valid_request_id};
use paysaga_common::telemetry;
use tracing::Instrument;

use super::problem::Problem;

/// The request's id, for handlers (`Extension<RequestId>`).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// `req-` and 24 random hex digits.
pub fn new_request_id() -> String {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).expect("the system's random source");
    format!("req-{}", hex::encode(random))
}

/// The outermost layer: takes or makes the id, runs the request in a span
/// that carries it, and answers with it. An id that could not be a label
/// value is refused (`400`), under a new id so that the refusal can be
/// found too.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .map(|v| v.to_str().map(str::to_string));
    let (id, refused) = match given {
        None => (new_request_id(), None),
        Some(Ok(id)) if valid_request_id(&id) => (id, None),
        Some(_) => (
            new_request_id(),
            Some(Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{REQUEST_ID_HEADER} must be 1 to 63 letters, digits, '-', '_' or '.', \
                     starting and ending with a letter or digit"
                ),
            )),
        ),
    };
    // A span per request, a child of the client's `traceparent` when it
    // sent one; probes and scrapes are not traced (a debug span: logs only).
    let path = req.uri().path();
    let span = if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        tracing::debug_span!("request", request_id = %id)
    } else {
        tracing::info_span!(
            "request",
            otel.name = %telemetry::route_name(req.method().as_str(), path),
            otel.kind = "server",
            http.request.method = %req.method(),
            url.path = %path,
            request_id = %id,
        )
    };
    telemetry::follow_headers(&span, req.headers());
    let mut resp = match refused {
        Some(problem) => problem.into_response(),
        None => {
            req.extensions_mut().insert(RequestId(id.clone()));
            next.run(req).instrument(span).await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    resp
}

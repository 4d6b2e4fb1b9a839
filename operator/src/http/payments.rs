//! `/v1/payments`: create (idempotent by key), read, list, cancel, review,
//! expedite. Every
//! answer comes from, or goes to, the Payment object; a read of one payment
//! from the API's watch of it when that is current (see [`super::watched`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use paysaga_api::http::{
    CancelBody, CreatePayment, ExpediteBody, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, PaymentPage,
    PaymentView, ReviewBody,
};
use paysaga_api::names::{
    ACCEPTED_AT_ANNOTATION, CANCEL_ANNOTATION, EXPEDITE_ANNOTATION, FINALIZER, REVIEW_ANNOTATION,
    REVIEW_BY_ANNOTATION, REVIEW_REASON_ANNOTATION,
};
use paysaga_api::saga::Decision;
use paysaga_api::{Payment, Phase, Step};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::watched::Admit;
use super::{AppState, body};

/// Annotation holding the SHA-256 of the idempotency key a Payment was made with.
const IDEMPOTENCY_ANNOTATION: &str = "paysaga.dev/idempotency-key-sha256";

/// The object name for an idempotency key: deterministic, so two replicas
/// given the same key race on one name and the API server picks the winner.
pub fn name_for_key(key: &str) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("pay-{}", &digest[..24])
}

/// Whether `id` can name a Kubernetes object (a DNS subdomain). No Payment
/// can have any other name, so anything else is simply not found.
fn valid_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.as_bytes()[id.len() - 1].is_ascii_alphanumeric()
}

fn not_found(id: &str) -> Response {
    Problem::new(StatusCode::NOT_FOUND, format!("payment {id}: not found")).into_response()
}

/// A kube error as a problem a client can act on.
fn kube_problem(e: kube::Error, what: &str) -> Problem {
    match e {
        kube::Error::Api(status) if status.code == 422 => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, status.message.clone())
        }
        kube::Error::Api(status) if status.code == 404 => {
            Problem::new(StatusCode::NOT_FOUND, format!("{what}: not found"))
        }
        kube::Error::Api(status) if status.code == 400 => {
            Problem::new(StatusCode::BAD_REQUEST, status.message.clone())
        }
        e => {
            tracing::error!(error = %e, "{what}");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{what}: the Kubernetes API is not answering"),
            )
        }
    }
}

fn accepted(view: PaymentView, replayed: bool) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(view)).into_response();
    if replayed {
        resp.headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let spec: CreatePayment = match body::json(&headers, &body, "payment") {
        Ok(s) => s,
        Err(problem) => return problem.into_response(),
    };
    let key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 255 => Some(k.to_string()),
        Some(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 255 visible characters",
            )
            .into_response();
        }
    };
    let api = match state.payments() {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    if let Admit::Full { in_flight, limit } = state.watched.admit(state.max_payments_in_flight) {
        let mut resp = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{in_flight} payments are in flight, at this API's limit of {limit}; nothing was created, retry shortly"
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return resp;
    }
    let mut payment = Payment::new("", spec.clone());
    // The controller's finalizer from the start (one write fewer per
    // payment), and when it was accepted, to the millisecond.
    let mut annotations = BTreeMap::from([(
        ACCEPTED_AT_ANNOTATION.to_string(),
        format!("{:.3}", k8s_openapi::jiff::Timestamp::now()),
    )]);
    let (name, generate_name) = match &key {
        Some(k) => {
            annotations.insert(
                IDEMPOTENCY_ANNOTATION.to_string(),
                hex::encode(Sha256::digest(k.as_bytes())),
            );
            (Some(name_for_key(k)), None)
        }
        None => (None, Some("pay-".to_string())),
    };
    payment.metadata = ObjectMeta {
        name,
        generate_name,
        annotations: Some(annotations),
        finalizers: Some(vec![FINALIZER.to_string()]),
        ..ObjectMeta::default()
    };
    match api.create(&PostParams::default(), &payment).await {
        Ok(created) => {
            if let Some(uid) = &created.metadata.uid {
                state.watched.created(uid);
            }
            accepted(PaymentView::of(&created, &state.base_url), false)
        }
        Err(kube::Error::Api(status)) if status.code == 409 && key.is_some() => {
            // The key was used before: the same body is the same payment.
            let name = payment.metadata.name.clone().unwrap_or_default();
            match api.get(&name).await {
                Ok(existing) if existing.spec == spec => accepted(PaymentView::of(&existing, &state.base_url), true),
                Ok(_) => Problem::new(
                    StatusCode::CONFLICT,
                    "this Idempotency-Key was already used for a different payment; use a new key for a new payment",
                )
                .into_response(),
                Err(e) => kube_problem(e, "reading the earlier payment").into_response(),
            }
        }
        Err(e) => kube_problem(e, "creating the payment").into_response(),
    }
}

pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if !valid_name(&id) {
        return not_found(&id);
    }
    if let Some(view) = state.watched.view(&id) {
        state.metrics.payment_read("watch");
        return Json(view.as_ref()).into_response();
    }
    let api = match state.payments() {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    state.metrics.payment_read("apiserver");
    match api.get(&id).await {
        Ok(p) => Json(PaymentView::of(&p, &state.base_url)).into_response(),
        Err(e) => kube_problem(e, &format!("payment {id}")).into_response(),
    }
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub user_id: Option<String>,
    pub phase: Option<Phase>,
    /// The step a payment is at, e.g. `ManualReview`: the review queue.
    pub step: Option<Step>,
    pub limit: Option<u32>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                format!("invalid query: {}", e.body_text()),
            )
            .into_response();
        }
    };
    let mut selectors = Vec::new();
    if let Some(user) = &q.user_id {
        if user.is_empty() || user.len() > 128 || user.contains([',', '=', '!']) {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "userId must be 1 to 128 characters, without , = !",
            )
            .into_response();
        }
        selectors.push(format!("spec.userId={user}"));
    }
    if let Some(phase) = q.phase {
        selectors.push(format!("status.phase={phase:?}"));
    }
    if let Some(step) = q.step {
        selectors.push(format!("status.step={step:?}"));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit must be between 1 and 500",
        )
        .into_response();
    }
    let mut params = ListParams::default().limit(limit);
    if !selectors.is_empty() {
        params = params.fields(&selectors.join(","));
    }
    if let Some(c) = &q.continue_token {
        params = params.continue_token(c);
    }
    let api = match state.payments() {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    match api.list(&params).await {
        Ok(list) => Json(PaymentPage {
            items: list
                .items
                .iter()
                .map(|p| PaymentView::of(p, &state.base_url))
                .collect(),
            continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
        })
        .into_response(),
        Err(e) => kube_problem(e, "listing payments").into_response(),
    }
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !valid_name(&id) {
        return not_found(&id);
    }
    let reason = match body::json_or_default::<CancelBody>(&headers, &body, "cancel body") {
        Ok(b) => b.reason,
        Err(problem) => return problem.into_response(),
    };
    let reason = if reason.trim().is_empty() {
        "cancelled through the API".to_string()
    } else {
        reason
    };
    let api = match state.payments() {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    let p = match api.get(&id).await {
        Ok(p) => p,
        Err(e) => return kube_problem(e, &format!("payment {id}")).into_response(),
    };
    // A cancel asked once is taken once, finished or not: the same again
    // changes nothing (a retried request), a new reason is refused (the
    // workflow keeps the first).
    match p.annotations().get(CANCEL_ANNOTATION) {
        Some(first) if first == &reason => {
            return accepted(PaymentView::of(&p, &state.base_url), false);
        }
        Some(first) => {
            return Problem::new(
                StatusCode::CONFLICT,
                format!("a cancel was already asked for payment {id} ({first}); a second reason is not taken"),
            )
            .into_response();
        }
        None => {}
    }
    if let Some(phase) = p.status.as_ref().and_then(|s| s.finished()) {
        return Problem::new(
            StatusCode::CONFLICT,
            format!("payment {id} already finished ({phase:?}); it can no longer be cancelled"),
        )
        .into_response();
    }
    let patch = serde_json::json!({"metadata": {"annotations": {CANCEL_ANNOTATION: reason}}});
    match api
        .patch(&id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => accepted(PaymentView::of(&p, &state.base_url), false),
        Err(e) => kube_problem(e, &format!("cancelling payment {id}")).into_response(),
    }
}

/// Who asks through the API. Callers are not authenticated yet: the API
/// itself is recorded as the one who decided.
const CALLER: &str = "paysaga-api";

/// The payment `id`, read through the API server (what is asked of it must
/// be judged on its current state).
async fn current(state: &AppState, id: &str) -> Result<(kube::Api<Payment>, Payment), Problem> {
    if !valid_name(id) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("payment {id}: not found"),
        ));
    }
    let api = state.payments()?;
    match api.get(id).await {
        Ok(p) => Ok((api, p)),
        Err(e) => Err(kube_problem(e, &format!("payment {id}"))),
    }
}

async fn annotate(
    state: &AppState,
    api: &kube::Api<Payment>,
    id: &str,
    annotations: serde_json::Value,
    what: &str,
) -> Response {
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    match api
        .patch(id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => accepted(PaymentView::of(&p, &state.base_url), false),
        Err(e) => kube_problem(e, &format!("{what} payment {id}")).into_response(),
    }
}

/// `POST /v1/payments/{id}/review`: `{decision: approve|reject, reason?}` on
/// a payment waiting for a person (`NeedsReview=True`), else 409. Sets the
/// review annotations the controller passes on, as `kubectl annotate` would.
pub async fn review(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let what = "review body (decision: approve or reject; reason: text)";
    let ReviewBody { decision, reason } = match body::json::<ReviewBody>(&headers, &body, what) {
        Ok(b) => b,
        Err(problem) => return problem.into_response(),
    };
    let (api, p) = match current(&state, &id).await {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let status = p.status.clone().unwrap_or_default();
    let open =
        status.review.as_ref().is_some_and(|r| r.decision.is_none()) && status.finished().is_none();
    if !open {
        let why = match (status.finished(), &status.review) {
            (Some(phase), _) => format!("already finished ({phase:?})"),
            (None, Some(r)) => format!(
                "its review was decided already ({})",
                r.decision.clone().unwrap_or_default()
            ),
            (None, None) => "not waiting for a review".to_string(),
        };
        return Problem::new(StatusCode::CONFLICT, format!("payment {id} is {why}"))
            .into_response();
    }
    let decision = match decision {
        Decision::Approve => "approve",
        Decision::Reject => "reject",
    };
    let annotations = serde_json::json!({
        REVIEW_ANNOTATION: decision,
        REVIEW_REASON_ANNOTATION: reason.filter(|r| !r.trim().is_empty()),
        REVIEW_BY_ANNOTATION: CALLER,
    });
    annotate(&state, &api, &id, annotations, "reviewing").await
}

/// `POST /v1/payments/{id}/expedite`: `{reason?}`: stop waiting now (the
/// confirmation wait asks the gateway at once, the wait before the last
/// charge attempt retries at once). 409 once finished.
pub async fn expedite(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let ExpediteBody { reason } = match body::json_or_default(&headers, &body, "expedite body") {
        Ok(b) => b,
        Err(problem) => return problem.into_response(),
    };
    let (api, p) = match current(&state, &id).await {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    if let Some(phase) = p.status.as_ref().and_then(|s| s.finished()) {
        return Problem::new(
            StatusCode::CONFLICT,
            format!("payment {id} already finished ({phase:?}); there is nothing to expedite"),
        )
        .into_response();
    }
    // Each expedite changes the annotation (its time is in it): the
    // controller passes on one signal per change.
    let now = k8s_openapi::jiff::Timestamp::now();
    let value = match reason.filter(|r| !r.trim().is_empty()) {
        Some(r) => format!("{now}: {r}"),
        None => now.to_string(),
    };
    annotate(
        &state,
        &api,
        &id,
        serde_json::json!({EXPEDITE_ANNOTATION: value}),
        "expediting",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dns_subdomains_can_name_a_payment() {
        for ok in ["pay-1", "a", "pay-x76pf", "a.b-c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", "ü", &"a".repeat(254)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn keys_name_objects_deterministically() {
        let a = name_for_key("order-42");
        assert_eq!(a, name_for_key("order-42"));
        assert_ne!(a, name_for_key("order-43"));
        assert!(a.starts_with("pay-") && a.len() == 28, "{a}");
    }
}

//! `/v1/payments`: create (idempotent by key), read, list, cancel, review,
//! expedite. Every
//! answer comes from, or goes to, the Payment object; a read of one payment
//! from the API's watch of it when that is current (see [`super::watched`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use paysaga_api::http::{
    CancelBody, CreatePayment, ExpediteBody, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, PaymentPage,
    PaymentView, ReviewBody,
};
use paysaga_api::idempotency::{self, IdempotencyKey};
use paysaga_api::names::{
    ACCEPTED_AT_ANNOTATION, CANCEL_ANNOTATION, CANCEL_BY_ANNOTATION, EXPEDITE_ANNOTATION,
    FINALIZER, IDEMPOTENCY_ANNOTATION, REQUEST_ID_LABEL, REQUESTED_BY_ANNOTATION,
    REVIEW_ANNOTATION, REVIEW_BY_ANNOTATION, REVIEW_REASON_ANNOTATION, TRACEPARENT_ANNOTATION,
};
use paysaga_api::saga::Decision;
use paysaga_api::{Payment, Phase, Step};
use serde::Deserialize;

use super::auth::{self, Caller};
use super::problem::Problem;
use super::request_id::RequestId;
use super::watched::Admit;
use super::{AppState, body};

/// Whether `id` can name a Kubernetes object (a DNS subdomain). No Payment
/// can have any other name, so anything else is simply not found.
pub(super) fn valid_name(id: &str) -> bool {
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
pub(super) fn kube_problem(e: kube::Error, what: &str) -> Problem {
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

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible
/// characters, else 400.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 255 => Ok(Some(k.to_string())),
        Some(_) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 255 visible characters",
        )),
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
    Extension(caller): Extension<Caller>,
    Extension(request): Extension<RequestId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let spec: CreatePayment = match body::json(&headers, &body, "payment") {
        Ok(s) => s,
        Err(problem) => return problem.into_response(),
    };
    if let Err(problem) = auth::act_for(&state, &caller, &spec.user_id).await {
        return problem.into_response();
    }
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(problem) => return problem.into_response(),
    };
    let api = match state.payments() {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    if let Admit::Full { in_flight, limit } = state.watched.admit(state.max_payments_in_flight) {
        return Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{in_flight} payments are in flight, at this API's limit of {limit}; nothing was created, retry shortly"
            ),
        )
        .retry_after(2);
    }
    let mut payment = Payment::new("", spec.clone());
    // The controller's finalizer from the start (one write fewer per
    // payment), and when it was accepted, to the millisecond.
    let mut annotations = BTreeMap::from([
        (
            ACCEPTED_AT_ANNOTATION.to_string(),
            format!("{:.3}", k8s_openapi::jiff::Timestamp::now()),
        ),
        (REQUESTED_BY_ANNOTATION.to_string(), caller.username.clone()),
    ]);
    let (name, generate_name) = match &key {
        Some(k) => {
            annotations.insert(
                IDEMPOTENCY_ANNOTATION.to_string(),
                idempotency::key_sha256(k),
            );
            (Some(idempotency::payment_name(&spec.user_id, k)), None)
        }
        None => (None, Some("pay-".to_string())),
    };
    // A key whose payment was deleted is answered from its record, before
    // anything is created (the controller writes the record before it lets
    // the Payment go, so one of the two always exists).
    if let Some(name) = &name {
        match kept_key(&state, name, &spec).await {
            Ok(Some(answer)) => return answer,
            Ok(None) => {}
            Err(p) => return p.into_response(),
        }
    }
    if let Some(tp) = paysaga_common::telemetry::traceparent() {
        annotations.insert(TRACEPARENT_ANNOTATION.to_string(), tp);
    }
    payment.metadata = ObjectMeta {
        name,
        generate_name,
        labels: Some(BTreeMap::from([(REQUEST_ID_LABEL.to_string(), request.0)])),
        annotations: Some(annotations),
        finalizers: Some(vec![FINALIZER.to_string()]),
        ..ObjectMeta::default()
    };
    match api.create(&PostParams::default(), &payment).await {
        Ok(created) => {
            if let Some(uid) = &created.metadata.uid {
                state.watched.created(uid);
            }
            tracing::info!(
                payment = %created.name_any(),
                namespace = created.namespace().unwrap_or_default(),
                caller = %caller.username,
                "payment accepted"
            );
            accepted(PaymentView::of(&created, &state.base_url), false)
        }
        Err(kube::Error::Api(status)) if status.code == 409 && key.is_some() => {
            // The key was used before: the same body is the same payment.
            let name = payment.metadata.name.clone().unwrap_or_default();
            match api.get(&name).await {
                Ok(existing) if existing.spec == spec => {
                    accepted(PaymentView::of(&existing, &state.base_url), true)
                }
                Ok(_) => key_reused(),
                // Deleted since the create collided: its record is written by now.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    match kept_key(&state, &name, &spec).await {
                        Ok(Some(answer)) => answer,
                        Ok(None) => Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the payment this Idempotency-Key made is being deleted; retry shortly",
                        )
                        .retry_after(1),
                        Err(p) => p.into_response(),
                    }
                }
                Err(e) => kube_problem(e, "reading the earlier payment").into_response(),
            }
        }
        Err(e) => kube_problem(e, "creating the payment").into_response(),
    }
}

fn key_reused() -> Response {
    Problem::new(
        StatusCode::CONFLICT,
        "this Idempotency-Key was already used for a different payment; use a new key for a new payment",
    )
    .into_response()
}

/// The answer to a keyed request whose payment was deleted, if its record is
/// kept: the payment as it last was (202, replayed), or 409 when the request
/// differs. `None`: no record (the key is new, or its payment still exists).
async fn kept_key(
    state: &AppState,
    name: &str,
    spec: &CreatePayment,
) -> Result<Option<Response>, Problem> {
    let Some(client) = &state.kube else {
        return Ok(None);
    };
    let keys: kube::Api<IdempotencyKey> = kube::Api::namespaced(client.clone(), &state.namespace);
    let kept = match keys.get_opt(name).await {
        Ok(Some(kept)) => kept,
        Ok(None) => return Ok(None),
        Err(e) => return Err(kube_problem(e, "reading the Idempotency-Key's record")),
    };
    if kept.spec.request_sha256 != idempotency::request_sha256(spec) {
        return Ok(Some(key_reused()));
    }
    let ts = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| t.0.to_string())
    };
    let was = &kept.spec.payment;
    let gone = format!(
        "this payment was deleted at {}; its Idempotency-Key is kept until {}, and nothing new was created",
        kept.spec.deleted_at.0, kept.spec.expires_at.0
    );
    let view = PaymentView {
        id: name.to_string(),
        status_url: format!("{}/v1/payments/{name}", state.base_url),
        spec: spec.clone(),
        phase: was.phase,
        step: None,
        reason: was.reason.clone(),
        message: Some(match &was.message {
            Some(m) => format!("{m} ({gone})"),
            None => gone,
        }),
        conditions: Vec::new(),
        created_at: ts(&was.created_at),
        started_at: None,
        completed_at: ts(&was.completed_at),
        cancel_requested: false,
        review: None,
        refunded_amount: None,
    };
    Ok(Some(accepted(view, true)))
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
    Extension(caller): Extension<Caller>,
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
    let patch = serde_json::json!({"metadata": {"annotations": {
        CANCEL_ANNOTATION: reason,
        CANCEL_BY_ANNOTATION: caller.username,
    }}});
    match api
        .patch(&id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => accepted(PaymentView::of(&p, &state.base_url), false),
        Err(e) => kube_problem(e, &format!("cancelling payment {id}")).into_response(),
    }
}

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
    Extension(caller): Extension<Caller>,
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
        REVIEW_BY_ANNOTATION: caller.username,
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
}

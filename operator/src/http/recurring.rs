//! `/v1/recurring-payments`: create (idempotent by key), read, list,
//! suspend, resume and delete RecurringPayments, and list the Payments one
//! made.
//!
//! The RecurringPayment object is the request; the controller keeps its
//! Temporal Schedule and writes its status, and each firing makes an
//! ordinary Payment labelled with it. The API only writes the spec (on
//! create, and `spec.suspend`) and deletes the object: the controller's
//! finalizer deletes the Schedule first, and the Payments made stay. An
//! Idempotency-Key holds while its RecurringPayment exists, and no longer.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ObjectMeta;
use paysaga_api::http::{
    CreateRecurringPayment, IDEMPOTENT_REPLAYED, PaymentPage, PaymentView, RecurringPaymentPage,
    RecurringPaymentView,
};
use paysaga_api::names::{RECURRING_LABEL, REQUEST_ID_LABEL, REQUESTED_BY_ANNOTATION};
use paysaga_api::{RecurringPayment, RecurringPhase};
use serde::Deserialize;

use super::auth::{self, Caller};
use super::payments::{idempotency_key, kube_problem, valid_name};
use super::problem::Problem;
use super::{AppState, body};

/// The RecurringPayment made with `key` for the payer `user_id` (the
/// template's): deterministic, so that retries race on one name and the API
/// server picks the winner. Hashed as [`paysaga_api::idempotency::payment_name`]
/// hashes, with its own prefix.
pub fn recurring_name(user_id: &str, key: &str) -> String {
    paysaga_api::idempotency::keyed_name("rpay", user_id, key)
}

/// The namespace's RecurringPayments; the same 503 as
/// [`AppState::payments`] when this instance has no Kubernetes credentials.
fn recurring(state: &AppState) -> Result<Api<RecurringPayment>, Problem> {
    Ok(Api::namespaced(
        state.payments()?.into_client(),
        &state.namespace,
    ))
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("recurring payment {id}: not found"),
    )
}

fn accepted(view: RecurringPaymentView, replayed: bool) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(view)).into_response();
    if replayed {
        resp.headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

/// The recurring payment `id` as it is now, read through the API server, or 404.
async fn current(
    state: &AppState,
    id: &str,
) -> Result<(Api<RecurringPayment>, RecurringPayment), Problem> {
    if !valid_name(id) {
        return Err(not_found(id));
    }
    let api = recurring(state)?;
    match api.get(id).await {
        Ok(r) => Ok((api, r)),
        Err(e) => Err(kube_problem(e, &format!("recurring payment {id}"))),
    }
}

/// The spec as it reads back from the API server: times to the second, as
/// they are stored. A retry is compared with what was stored.
fn as_stored(spec: CreateRecurringPayment) -> CreateRecurringPayment {
    serde_json::to_value(&spec)
        .and_then(serde_json::from_value)
        .unwrap_or(spec)
}

/// The answer to a keyed request whose recurring payment exists: the same
/// request is that one (202, replayed), another one is refused.
fn replay(
    state: &AppState,
    existing: &RecurringPayment,
    asked: &CreateRecurringPayment,
) -> Response {
    if existing.spec == *asked {
        return accepted(RecurringPaymentView::of(existing, &state.base_url), true);
    }
    Problem::new(
        StatusCode::CONFLICT,
        "this Idempotency-Key was already used for a different recurring payment; use a new key for a new one",
    )
    .into_response()
}

/// The RecurringPayment asked for, named `name` (a key's) or generated, with
/// who asked and the request that made it (`kubectl get recurringpayments -l
/// paysaga.dev/request-id=<id>`). The Payments its Schedule fires are made by
/// the worker, not by this request, and carry no request id of their own.
fn recurring_object(
    spec: CreateRecurringPayment,
    name: Option<String>,
    requested_by: &str,
    request_id: &str,
) -> RecurringPayment {
    let mut object = RecurringPayment::new("", spec);
    object.metadata = ObjectMeta {
        generate_name: name.is_none().then(|| "rpay-".to_string()),
        name,
        labels: Some([(REQUEST_ID_LABEL.to_string(), request_id.to_string())].into()),
        annotations: Some(
            [(
                REQUESTED_BY_ANNOTATION.to_string(),
                requested_by.to_string(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    };
    object
}

/// `POST /v1/recurring-payments`: the RecurringPayment's spec → 202 with
/// the object made (or, with the same Idempotency-Key and body, the one made
/// before). The API server validates it (schema and CEL rules): its refusal
/// is 422 with its reason.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(request): Extension<super::request_id::RequestId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let spec: CreateRecurringPayment = match body::json(&headers, &body, "recurring payment") {
        Ok(s) => as_stored(s),
        Err(problem) => return problem.into_response(),
    };
    if let Err(problem) = auth::act_for(&state, &caller, &spec.template.user_id).await {
        return problem.into_response();
    }
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(problem) => return problem.into_response(),
    };
    let api = match recurring(&state) {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    let name = key
        .as_deref()
        .map(|k| recurring_name(&spec.template.user_id, k));
    let object = recurring_object(spec.clone(), name.clone(), &caller.username, &request.0);
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => accepted(RecurringPaymentView::of(&created, &state.base_url), false),
        // The key was used before (or a retry raced this request to the name).
        Err(kube::Error::Api(status)) if status.code == 409 && name.is_some() => {
            let name = name.unwrap_or_default();
            match api.get(&name).await {
                Ok(existing) => replay(&state, &existing, &spec),
                Err(kube::Error::Api(status)) if status.code == 404 => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the recurring payment this Idempotency-Key made is being deleted; retry shortly",
                )
                .retry_after(1),
                Err(e) => kube_problem(e, "reading the earlier recurring payment").into_response(),
            }
        }
        Err(e) => kube_problem(e, "creating the recurring payment").into_response(),
    }
}

/// `GET /v1/recurring-payments/{id}`.
pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match current(&state, &id).await {
        Ok((_, r)) => Json(RecurringPaymentView::of(&r, &state.base_url)).into_response(),
        Err(problem) => problem.into_response(),
    }
}

#[derive(Deserialize, Debug)]
pub struct ListQuery {
    pub limit: Option<u32>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// `limit` and `continue` as list parameters: 400 for a query that does not
/// parse, 422 for a limit out of 1..=500 (50 when unset).
fn page_params(query: Result<Query<ListQuery>, QueryRejection>) -> Result<ListParams, Problem> {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("invalid query: {}", e.body_text()),
            ));
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit must be between 1 and 500",
        ));
    }
    let params = ListParams::default().limit(limit);
    Ok(match &q.continue_token {
        Some(c) => params.continue_token(c),
        None => params,
    })
}

/// `GET /v1/recurring-payments?limit=&continue=`: one page.
pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let params = match page_params(query) {
        Ok(p) => p,
        Err(problem) => return problem.into_response(),
    };
    let api = match recurring(&state) {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    match api.list(&params).await {
        Ok(list) => Json(RecurringPaymentPage {
            items: list
                .items
                .iter()
                .map(|r| RecurringPaymentView::of(r, &state.base_url))
                .collect(),
            continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
        })
        .into_response(),
        Err(e) => kube_problem(e, "listing recurring payments").into_response(),
    }
}

/// Whether `spec.suspend` of `r` may be set to `suspend` as the object
/// stands: 409 once it is `Completed` or being deleted (nothing more will
/// fire). No client required.
fn switchable(r: &RecurringPayment, suspend: bool) -> Result<(), Problem> {
    let id = r.name_any();
    let verb = if suspend { "suspended" } else { "resumed" };
    if r.metadata.deletion_timestamp.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("recurring payment {id} is being deleted; it can no longer be {verb}"),
        ));
    }
    if r.status.as_ref().and_then(|s| s.phase) == Some(RecurringPhase::Completed) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("recurring payment {id} has completed; it can no longer be {verb}"),
        ));
    }
    Ok(())
}

/// Sets `spec.suspend` (the controller pauses or resumes the Schedule): 202
/// with the object; already so, 202 and nothing written. The patch holds
/// the `resourceVersion` judged: when the object changed in between (the
/// controller writes its status at each firing), it is judged again.
async fn set_suspend(state: &AppState, id: &str, suspend: bool) -> Response {
    let verb = if suspend { "suspending" } else { "resuming" };
    for _ in 0..3 {
        let (api, r) = match current(state, id).await {
            Ok(found) => found,
            Err(problem) => return problem.into_response(),
        };
        if let Err(problem) = switchable(&r, suspend) {
            return problem.into_response();
        }
        if r.spec.suspend == suspend {
            return accepted(RecurringPaymentView::of(&r, &state.base_url), false);
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": r.resource_version()},
            "spec": {"suspend": suspend},
        });
        match api
            .patch(id, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(r) => return accepted(RecurringPaymentView::of(&r, &state.base_url), false),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => {
                return kube_problem(e, &format!("{verb} recurring payment {id}")).into_response();
            }
        }
    }
    Problem::new(
        StatusCode::CONFLICT,
        format!("recurring payment {id} kept changing while it was being {verb}; ask again"),
    )
    .into_response()
}

/// `POST /v1/recurring-payments/{id}/suspend`: no more firings until resumed.
pub async fn suspend(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    set_suspend(&state, &id, true).await
}

/// `POST /v1/recurring-payments/{id}/resume`.
pub async fn resume(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    set_suspend(&state, &id, false).await
}

/// `DELETE /v1/recurring-payments/{id}`: 202 with the object as it was. The
/// controller deletes its Schedule before the object goes; the Payments it
/// made stay.
pub async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let (api, r) = match current(&state, &id).await {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    // The object read, not one made again under its name since.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: r.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&id, &params).await {
        // Still there while the controller's finalizer holds it.
        Ok(either) => {
            let was = either.left().unwrap_or(r);
            accepted(RecurringPaymentView::of(&was, &state.base_url), false)
        }
        // Gone since it was read (or made again: not the one asked about).
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            not_found(&id).into_response()
        }
        Err(e) => kube_problem(e, &format!("deleting recurring payment {id}")).into_response(),
    }
}

/// `GET /v1/recurring-payments/{id}/payments?limit=&continue=`: the Payments
/// it made (by label). A name over 63 characters (made with kubectl) cannot
/// be a label value: its Payments are not labelled and none are listed.
pub async fn payments(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let params = match page_params(query) {
        Ok(p) => p,
        Err(problem) => return problem.into_response(),
    };
    if let Err(problem) = current(&state, &id).await {
        return problem.into_response();
    }
    if id.len() > 63 {
        return Json(PaymentPage {
            items: Vec::new(),
            continue_token: None,
        })
        .into_response();
    }
    let api = match state.payments() {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    match api
        .list(&params.labels(&format!("{RECURRING_LABEL}={id}")))
        .await
    {
        Ok(list) => Json(PaymentPage {
            items: list
                .items
                .iter()
                .map(|p| PaymentView::of(p, &state.base_url))
                .collect(),
            continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
        })
        .into_response(),
        Err(e) => kube_problem(
            e,
            &format!("listing the payments of recurring payment {id}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use paysaga_api::recurring::{OverlapPolicy, RecurringSchedule};
    use paysaga_api::{PaymentMethod, PaymentSpec, RecurringPaymentSpec, RecurringPaymentStatus};

    fn spec() -> RecurringPaymentSpec {
        RecurringPaymentSpec {
            template: PaymentSpec {
                user_id: "alice".into(),
                amount: 990,
                currency: "EUR".into(),
                method: PaymentMethod::Card,
                description: None,
                notify: None,
            },
            schedule: RecurringSchedule {
                cron: None,
                every: Some("1h".into()),
                time_zone: None,
            },
            start_at: None,
            end_at: None,
            max_payments: None,
            suspend: false,
            overlap_policy: OverlapPolicy::Skip,
            catchup_window: None,
        }
    }

    fn object(phase: Option<RecurringPhase>, deleting: bool) -> RecurringPayment {
        let mut r = RecurringPayment::new("rent", spec());
        r.status = phase.map(|phase| RecurringPaymentStatus {
            phase: Some(phase),
            ..RecurringPaymentStatus::default()
        });
        if deleting {
            r.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        r
    }

    #[test]
    fn the_object_made_names_who_asked_and_the_request() {
        let keyed = recurring_object(spec(), Some("rpay-x".into()), "alice", "req-1");
        assert_eq!(keyed.name_any(), "rpay-x");
        assert_eq!(keyed.metadata.generate_name, None);
        assert_eq!(keyed.labels()[REQUEST_ID_LABEL], "req-1");
        assert_eq!(keyed.annotations()[REQUESTED_BY_ANNOTATION], "alice");
        let generated = recurring_object(spec(), None, "bob", "req-2");
        assert_eq!(generated.metadata.generate_name.as_deref(), Some("rpay-"));
        assert_eq!(generated.labels()[REQUEST_ID_LABEL], "req-2");
    }

    #[test]
    fn a_key_names_one_recurring_payment_per_payer() {
        assert_eq!(recurring_name("alice", "k1"), recurring_name("alice", "k1"));
        assert_ne!(recurring_name("alice", "k1"), recurring_name("bob", "k1"));
        assert_ne!(recurring_name("ab", "c"), recurring_name("a", "bc"));
        let name = recurring_name("alice", "k1");
        assert!(name.starts_with("rpay-") && name.len() == "rpay-".len() + 24);
        assert!(valid_name(&name) && name.len() <= 63, "{name}");
        // Not the name of the Payment the same key makes.
        assert_ne!(name, paysaga_api::idempotency::payment_name("alice", "k1"));
    }

    #[test]
    fn only_a_recurring_payment_still_firing_can_be_suspended_or_resumed() {
        struct Case {
            phase: Option<RecurringPhase>,
            deleting: bool,
            refused: Option<&'static str>,
        }
        let cases = [
            Case {
                phase: None,
                deleting: false,
                refused: None,
            },
            Case {
                phase: Some(RecurringPhase::Active),
                deleting: false,
                refused: None,
            },
            Case {
                phase: Some(RecurringPhase::Suspended),
                deleting: false,
                refused: None,
            },
            Case {
                phase: Some(RecurringPhase::Failed),
                deleting: false,
                refused: None,
            },
            Case {
                phase: Some(RecurringPhase::Completed),
                deleting: false,
                refused: Some("has completed"),
            },
            Case {
                phase: Some(RecurringPhase::Active),
                deleting: true,
                refused: Some("is being deleted"),
            },
        ];
        for c in cases {
            for suspend in [true, false] {
                match (switchable(&object(c.phase, c.deleting), suspend), c.refused) {
                    (Ok(()), None) => {}
                    (Err(p), Some(words)) => {
                        assert_eq!(p.status, 409, "{p:?}");
                        assert!(p.detail.contains(words), "{words:?} in {p:?}");
                    }
                    (got, want) => panic!("{:?} {}: {got:?}, want {want:?}", c.phase, c.deleting),
                }
            }
        }
    }

    #[test]
    fn a_retry_is_compared_with_the_spec_as_stored() {
        let mut asked = spec();
        asked.start_at = Some(Time("2027-01-01T09:00:00.250Z".parse().unwrap()));
        let stored = as_stored(asked.clone());
        assert_ne!(stored, asked);
        assert_eq!(
            stored.start_at.as_ref().map(|t| t.0.to_string()).as_deref(),
            Some("2027-01-01T09:00:00Z")
        );
        assert_eq!(as_stored(stored.clone()), stored);
    }
}

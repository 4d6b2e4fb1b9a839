//! `/v1/payments/{id}/refunds` and `/v1/refunds/{id}`: ask for a refund of a
//! succeeded payment (idempotent by key), read one, list a payment's.
//!
//! A Refund object is the request and the controller runs it. What the API
//! checks before it creates one (the payment exists, is not being deleted,
//! has succeeded, has that much left to refund) is an early answer for the
//! client, not the decision: refunds asked at once all pass it, and the
//! ledger decides under a lock on the account (one it refuses ends `Failed`,
//! `ExceedsRefundable`). Refunds are owned by their payment and deleted with
//! it, so an Idempotency-Key holds while its refund exists and no longer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Resource, ResourceExt};
use paysaga_api::http::{CreateRefund, IDEMPOTENT_REPLAYED, RefundPage, RefundView};
use paysaga_api::names::{PAYMENT_LABEL, REQUEST_ID_LABEL, REQUESTED_BY_ANNOTATION};
use paysaga_api::refund::refund_name;
use paysaga_api::{Payment, Phase, Refund, RefundSpec};

use super::auth::Caller;
use super::payments::{idempotency_key, kube_problem, valid_name};
use super::problem::Problem;
use super::{AppState, body};

/// The namespace's Refunds; the same 503 as [`AppState::payments`] when this
/// instance has no Kubernetes credentials.
fn refunds(state: &AppState) -> Result<Api<Refund>, Problem> {
    Ok(Api::namespaced(
        state.payments()?.into_client(),
        &state.namespace,
    ))
}

fn not_found(what: &str, id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, format!("{what} {id}: not found"))
}

fn accepted(view: RefundView, replayed: bool) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(view)).into_response();
    if replayed {
        resp.headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

/// The payment `id` as it is now, read through the API server (a refund is
/// judged on the current state, not on the watch's view of it), or 404.
async fn payment(state: &AppState, id: &str) -> Result<Payment, Problem> {
    if !valid_name(id) {
        return Err(not_found("payment", id));
    }
    state
        .payments()?
        .get(id)
        .await
        .map_err(|e| kube_problem(e, &format!("payment {id}")))
}

/// Whether `amount` can be asked back from `payment` as its object stands:
/// 409 while it is being deleted or has not succeeded, 422 past what it has
/// left. No client required.
fn refundable(payment: &Payment, amount: i64) -> Result<(), Problem> {
    let id = payment.name_any();
    if payment.metadata.deletion_timestamp.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("payment {id} is being deleted; it can no longer be refunded"),
        ));
    }
    let status = payment.status.as_ref();
    let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Pending);
    if phase != Phase::Succeeded {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "payment {id} has not succeeded ({phase:?}); only a succeeded payment can be refunded"
            ),
        ));
    }
    let refunded = status.and_then(|s| s.refunded_amount).unwrap_or(0);
    let left = payment.spec.amount.saturating_sub(refunded).max(0);
    if amount > left {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "payment {id}: at most {left} can still be refunded ({refunded} of {} was refunded already)",
                payment.spec.amount
            ),
        ));
    }
    Ok(())
}

/// The Refund object asked for: owned by the payment (deleted with it; not
/// its controller, and not blocking its deletion), labelled with it, named
/// `name` (a key's) or generated. No client required.
fn refund_object(
    payment: &Payment,
    spec: RefundSpec,
    name: Option<String>,
    requested_by: Option<&str>,
    request_id: Option<&str>,
) -> Refund {
    let payment_name = payment.name_any();
    let owner = OwnerReference {
        api_version: Payment::api_version(&()).into_owned(),
        kind: Payment::kind(&()).into_owned(),
        name: payment_name.clone(),
        uid: payment.uid().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: None,
    };
    // A label value holds 63 characters, a Payment's name up to 253: a longer
    // name goes without (`kubectl get refunds -l` misses it; the API lists by
    // `spec.paymentName`, never by label).
    let mut labels = BTreeMap::new();
    if payment_name.len() <= 63 {
        labels.insert(PAYMENT_LABEL.to_string(), payment_name);
    }
    // The request that made it (`kubectl get refunds -l
    // paysaga.dev/request-id=<id>`), carried on into its workflow.
    if let Some(id) = request_id {
        labels.insert(REQUEST_ID_LABEL.to_string(), id.to_string());
    }
    let labels = (!labels.is_empty()).then_some(labels);
    let mut refund = Refund::new("", spec);
    refund.metadata = ObjectMeta {
        generate_name: name.is_none().then(|| "rf-".to_string()),
        name,
        labels,
        annotations: requested_by
            .map(|who| BTreeMap::from([(REQUESTED_BY_ANNOTATION.to_string(), who.to_string())])),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    refund
}

/// The answer to a keyed request whose refund exists: the same request is
/// that refund (202, replayed), another one is refused.
fn replay(state: &AppState, existing: &Refund, asked: &RefundSpec) -> Response {
    if existing.spec == *asked {
        return accepted(RefundView::of(existing, &state.base_url), true);
    }
    Problem::new(
        StatusCode::CONFLICT,
        "this Idempotency-Key was already used for a different refund; use a new key for a new refund",
    )
    .into_response()
}

/// `POST /v1/payments/{id}/refunds`: `{amount, reason, description?}` →
/// 202 with the Refund made (or, with the same Idempotency-Key and body, the
/// one made before).
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Extension(request): Extension<super::request_id::RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let asked: CreateRefund = match body::json(&headers, &body, "refund") {
        Ok(r) => r,
        Err(problem) => return problem.into_response(),
    };
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(problem) => return problem.into_response(),
    };
    if !valid_name(&id) {
        return not_found("payment", &id).into_response();
    }
    let api = match refunds(&state) {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    let spec = RefundSpec {
        payment_name: id.clone(),
        amount: asked.amount,
        reason: asked.reason,
        description: asked.description,
    };
    let name = key.as_deref().map(|k| refund_name(&id, k));
    // A retry is answered from the refund it made, whatever became of the
    // payment since (it may have nothing left to refund by now).
    if let Some(name) = &name {
        match api.get_opt(name).await {
            Ok(Some(existing)) => return replay(&state, &existing, &spec),
            Ok(None) => {}
            Err(e) => return kube_problem(e, "reading the earlier refund").into_response(),
        }
    }
    let payment = match payment(&state, &id).await {
        Ok(p) => p,
        Err(problem) => return problem.into_response(),
    };
    if let Err(problem) = refundable(&payment, spec.amount) {
        return problem.into_response();
    }
    let refund = refund_object(
        &payment,
        spec.clone(),
        name.clone(),
        Some(&caller.username),
        Some(&request.0),
    );
    match api.create(&PostParams::default(), &refund).await {
        Ok(created) => accepted(RefundView::of(&created, &state.base_url), false),
        // A retry of the same request raced this one to the name.
        Err(kube::Error::Api(status)) if status.code == 409 && name.is_some() => {
            match api.get(name.as_deref().unwrap_or_default()).await {
                Ok(existing) => replay(&state, &existing, &spec),
                Err(e) => kube_problem(e, "reading the earlier refund").into_response(),
            }
        }
        Err(e) => kube_problem(e, "creating the refund").into_response(),
    }
}

/// `GET /v1/refunds/{id}`.
pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if !valid_name(&id) {
        return not_found("refund", &id).into_response();
    }
    let api = match refunds(&state) {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    match api.get(&id).await {
        Ok(r) => Json(RefundView::of(&r, &state.base_url)).into_response(),
        Err(e) => kube_problem(e, &format!("refund {id}")).into_response(),
    }
}

/// `GET /v1/payments/{id}/refunds`: every Refund naming the payment (by
/// `spec.paymentName`, so those made with kubectl, without the label, too),
/// oldest first.
pub async fn list(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if let Err(problem) = payment(&state, &id).await {
        return problem.into_response();
    }
    let api = match refunds(&state) {
        Ok(api) => api,
        Err(p) => return p.into_response(),
    };
    let params = ListParams::default().fields(&format!("spec.paymentName={id}"));
    match api.list(&params).await {
        Ok(list) => {
            let mut items = list.items;
            items.sort_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any()));
            Json(RefundPage {
                items: items
                    .iter()
                    .map(|r| RefundView::of(r, &state.base_url))
                    .collect(),
            })
            .into_response()
        }
        Err(e) => kube_problem(e, &format!("listing the refunds of payment {id}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use paysaga_api::{PaymentMethod, PaymentSpec, PaymentStatus, RefundReason};

    fn payment(phase: Option<Phase>, refunded: Option<i64>) -> Payment {
        let mut p = Payment::new(
            "pay-1",
            PaymentSpec {
                user_id: "alice".into(),
                amount: 1000,
                currency: "EUR".into(),
                method: PaymentMethod::Card,
                description: None,
                notify: None,
            },
        );
        p.metadata.uid = Some("0d1f".into());
        p.status = phase.map(|phase| PaymentStatus {
            phase: Some(phase),
            refunded_amount: refunded,
            ..PaymentStatus::default()
        });
        p
    }

    fn spec(amount: i64) -> RefundSpec {
        RefundSpec {
            payment_name: "pay-1".into(),
            amount,
            reason: RefundReason::RequestedByCustomer,
            description: None,
        }
    }

    #[test]
    fn only_what_a_succeeded_payment_has_left_can_be_asked_back() {
        struct Case {
            phase: Option<Phase>,
            refunded: Option<i64>,
            amount: i64,
            answer: Option<(u16, &'static str)>,
        }
        let cases = [
            Case {
                phase: Some(Phase::Succeeded),
                refunded: None,
                amount: 1000,
                answer: None,
            },
            Case {
                phase: Some(Phase::Succeeded),
                refunded: Some(400),
                amount: 600,
                answer: None,
            },
            Case {
                phase: Some(Phase::Succeeded),
                refunded: Some(400),
                amount: 601,
                answer: Some((422, "at most 600 can still be refunded")),
            },
            Case {
                phase: Some(Phase::Succeeded),
                refunded: Some(1000),
                amount: 1,
                answer: Some((422, "at most 0 can still be refunded")),
            },
            Case {
                phase: None,
                refunded: None,
                amount: 1,
                answer: Some((409, "payment pay-1 has not succeeded (Pending)")),
            },
            Case {
                phase: Some(Phase::Processing),
                refunded: None,
                amount: 1,
                answer: Some((409, "has not succeeded (Processing); only a succeeded")),
            },
            Case {
                phase: Some(Phase::Cancelled),
                refunded: None,
                amount: 1,
                answer: Some((409, "has not succeeded (Cancelled)")),
            },
        ];
        for c in cases {
            let got = refundable(&payment(c.phase, c.refunded), c.amount).err();
            match (got, c.answer) {
                (None, None) => {}
                (Some(p), Some((status, words))) => {
                    assert_eq!(p.status, status, "{p:?}");
                    assert!(p.detail.contains(words), "{words:?} in {p:?}");
                }
                (got, want) => panic!("{:?} {}: {got:?}, want {want:?}", c.phase, c.amount),
            }
        }
    }

    #[test]
    fn a_payment_being_deleted_takes_no_refund() {
        let mut p = payment(Some(Phase::Succeeded), None);
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let problem = refundable(&p, 1).unwrap_err();
        assert_eq!(problem.status, 409);
        assert!(problem.detail.contains("being deleted"), "{problem:?}");
    }

    #[test]
    fn a_refund_is_owned_by_its_payment_and_labelled_with_it() {
        let keyed = refund_object(
            &payment(Some(Phase::Succeeded), None),
            spec(5),
            Some("rf-abc".into()),
            Some("system:serviceaccount:shop:checkout"),
            Some("req-1"),
        );
        assert_eq!(
            keyed.annotations()[REQUESTED_BY_ANNOTATION],
            "system:serviceaccount:shop:checkout"
        );
        assert_eq!(keyed.labels()[REQUEST_ID_LABEL], "req-1");
        assert_eq!(
            (
                keyed.metadata.name.as_deref(),
                keyed.metadata.generate_name.as_deref()
            ),
            (Some("rf-abc"), None)
        );
        let owner = &keyed.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("paysaga.dev/v1alpha1", "Payment", "pay-1", "0d1f")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(false), None)
        );
        assert_eq!(keyed.labels()[PAYMENT_LABEL], "pay-1");

        let unkeyed = refund_object(
            &payment(Some(Phase::Succeeded), None),
            spec(5),
            None,
            None,
            None,
        );
        assert_eq!(
            (
                unkeyed.metadata.name,
                unkeyed.metadata.generate_name.as_deref()
            ),
            (None, Some("rf-"))
        );
        // A name too long for a label value: no label, still owned.
        let mut long = payment(Some(Phase::Succeeded), None);
        long.metadata.name = Some("p".repeat(64));
        let r = refund_object(&long, spec(5), None, Some("alice-app"), None);
        assert!(r.metadata.labels.is_none());
        assert_eq!(r.annotations()[REQUESTED_BY_ANNOTATION], "alice-app");
        assert_eq!(r.metadata.owner_references.unwrap()[0].name, "p".repeat(64));
    }
}

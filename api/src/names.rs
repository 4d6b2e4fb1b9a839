//! Names fixed by the design: annotations, finalizer, task queues, IDs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Setting this annotation (value = reason) asks for the payment to be cancelled.
pub const CANCEL_ANNOTATION: &str = "paysaga.dev/cancel";
/// Setting this annotation to `approve` or `reject` answers a payment in
/// manual review (condition `NeedsReview=True`). Only an annotation set (or
/// changed) after the review began counts.
pub const REVIEW_ANNOTATION: &str = "paysaga.dev/review";
/// Why the reviewer decided (optional, beside [`REVIEW_ANNOTATION`]).
pub const REVIEW_REASON_ANNOTATION: &str = "paysaga.dev/review-reason";
/// Who decided, when the HTTP API set the decision for its caller; without
/// it, the field manager that set [`REVIEW_ANNOTATION`] (e.g. `kubectl-annotate`).
pub const REVIEW_BY_ANNOTATION: &str = "paysaga.dev/review-by";
/// Setting (or changing) this annotation asks the payment to stop waiting
/// now (value: a reason, or anything).
pub const EXPEDITE_ANNOTATION: &str = "paysaga.dev/expedite";
/// The annotations by which something is asked of a payment: a change of
/// any of them wakes the controller.
pub const ASK_ANNOTATIONS: &[&str] = &[
    CANCEL_ANNOTATION,
    REVIEW_ANNOTATION,
    REVIEW_REASON_ANNOTATION,
    REVIEW_BY_ANNOTATION,
    EXPEDITE_ANNOTATION,
];
/// Who asked the HTTP API for an object (a Payment, Refund or
/// RecurringPayment), as it authenticated them.
pub const REQUESTED_BY_ANNOTATION: &str = "paysaga.dev/requested-by";
/// The request that made an object (a Payment, Refund or RecurringPayment)
/// through the HTTP API: its `X-Request-Id`, given or made. A label, so that
/// `kubectl get payments -l paysaga.dev/request-id=<id>` finds it.
pub const REQUEST_ID_LABEL: &str = "paysaga.dev/request-id";
/// The memo key of a payment workflow holding the request id that made the
/// Payment (set at start).
pub const REQUEST_ID_MEMO: &str = "requestId";
/// The trace a Payment made through the HTTP API belongs to: the W3C
/// `traceparent` of the request's span. The controller's reconciles (and
/// through them the workflow, its activities and the gateway) are traced as
/// its children.
pub const TRACEPARENT_ANNOTATION: &str = "paysaga.dev/traceparent";
/// The header carrying a request's correlation id: accepted (or made) and
/// returned by the HTTP API, sent by the worker to the outside world and by
/// the gateway with its confirmation.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// Whether `id` can be a request id: 1 to 63 letters, digits, `-`, `_` or
/// `.`, starting and ending with a letter or digit (what a label value may be).
pub fn valid_request_id(id: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&id.len())
        && ends_ok(id.chars().next())
        && ends_ok(id.chars().last())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Who asked the HTTP API to cancel a payment (beside [`CANCEL_ANNOTATION`]).
pub const CANCEL_BY_ANNOTATION: &str = "paysaga.dev/cancel-by";
/// When the HTTP API accepted the payment (RFC 3339, milliseconds): the
/// start of the creation→workflow-start latency (`creationTimestamp` has
/// whole seconds only).
pub const ACCEPTED_AT_ANNOTATION: &str = "paysaga.dev/accepted-at";
/// SHA-256 (hex) of the Idempotency-Key a Payment was made with through the
/// HTTP API: the controller keeps the key ([`crate::idempotency`]) when the
/// Payment is deleted.
pub const IDEMPOTENCY_ANNOTATION: &str = "paysaga.dev/idempotency-key-sha256";
/// Held by the controller while a payment's workflow may still move money.
pub const FINALIZER: &str = "paysaga.dev/workflow";
/// Label on a Refund naming its Payment (set by the API and the controller).
pub const PAYMENT_LABEL: &str = "paysaga.dev/payment";
/// Label on a Payment made by a RecurringPayment, naming it.
pub const RECURRING_LABEL: &str = "paysaga.dev/recurring";
/// Held by the controller on a RecurringPayment until its Schedule is deleted.
pub const RECURRING_FINALIZER: &str = "paysaga.dev/schedule";
/// Held by the controller on a Refund while its workflow may still move money.
pub const REFUND_FINALIZER: &str = "paysaga.dev/refund";
/// Field manager of every status write by the controller.
pub const CONTROLLER_FIELD_MANAGER: &str = "paysaga-controller";

/// Task queue of `PaymentWorkflow` and its activities.
pub const PAYMENTS_TASK_QUEUE: &str = "payments";
/// Task queue of `FraudCheckWorkflow` and its activities.
pub const FRAUD_TASK_QUEUE: &str = "fraud";

/// The workflow ID of a Payment object, from its metadata: deterministic, so
/// a second start of the same object is refused by Temporal as a duplicate
/// instead of paying twice. The UID makes a re-created object with the same
/// name a new payment. The only place this ID is made.
pub fn workflow_id(meta: &ObjectMeta) -> String {
    object_id("payment", meta)
}

/// `<prefix>-<namespace>-<name>-<uid>`: the ID outside Kubernetes of one
/// object (a payment's or refund's workflow, a recurring payment's
/// Schedule). The UID makes a re-created object a new one.
pub fn object_id(prefix: &str, meta: &ObjectMeta) -> String {
    let field = |f: &Option<String>| f.clone().unwrap_or_default();
    let name = meta.name.clone().or_else(|| meta.generate_name.clone());
    format!(
        "{prefix}-{}-{}-{}",
        field(&meta.namespace),
        name.unwrap_or_default(),
        field(&meta.uid)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_label_values() {
        for ok in ["a", "req-1", "0c9f.a_b-C", &"x".repeat(63)] {
            assert!(valid_request_id(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(!valid_request_id(bad), "{bad}");
        }
    }

    #[test]
    fn workflow_id_is_deterministic_and_unique_per_object() {
        let meta = |uid: &str| ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("order-1".into()),
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        };
        let a = workflow_id(&meta("0d1f"));
        assert_eq!(a, "payment-shop-order-1-0d1f");
        assert_eq!(a, workflow_id(&meta("0d1f")));
        assert_ne!(a, workflow_id(&meta("77aa")));
    }
}

//! Webhooks to merchants: the `WebhookEndpoint` custom resource
//! (`webhookendpoints.paysaga.dev/v1alpha1`), the events it receives and how
//! they are signed.
//!
//! An endpoint lives in a namespace and receives the events of that
//! namespace's payments it subscribes to. Each event is a JSON
//! [`WebhookEvent`] with an id unique to the payment and the event type (a
//! retry, or a redelivery, carries the same id: receivers deduplicate on
//! it), POSTed with the gateway callbacks' signature scheme
//! ([`crate::signature`]): `X-Paysaga-Timestamp` and `X-Paysaga-Signature:
//! v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed by the endpoint's
//! Secret. Delivery is a Temporal workflow per endpoint and event, retried
//! with exponential backoff for hours, apart from the payment.

// Several `printcolumn(type_ = "string", ...)` entries look like repeated
// attributes to clippy; they are distinct columns of the kube derive.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The header carrying the event's id (also in the body), so a receiver can
/// deduplicate before parsing.
pub const EVENT_ID_HEADER: &str = "X-Paysaga-Event-Id";
/// The header carrying the event's type.
pub const EVENT_TYPE_HEADER: &str = "X-Paysaga-Event-Type";
/// The key of the signing secret in the endpoint's Secret when
/// `secretRef.key` is not given.
pub const DEFAULT_SECRET_KEY: &str = "secret";
/// The workflow type delivering one event to one endpoint.
pub const DELIVERY_WORKFLOW: &str = "WebhookDeliveryWorkflow";

/// Where a merchant receives events, which ones, and the Secret they are
/// signed with.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "paysaga.dev",
    version = "v1alpha1",
    kind = "WebhookEndpoint",
    plural = "webhookendpoints",
    shortname = "whe",
    category = "paysaga",
    namespaced,
    status = "WebhookEndpointStatus",
    derive = "PartialEq",
    doc = "A merchant's webhook endpoint: the namespace's payment events it subscribes to are POSTed to its URL as signed JSON, each retried with exponential backoff until delivered or given up.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "Delivered",
        type_ = "integer",
        json_path = ".status.delivered",
        description = "Events delivered"
    ),
    printcolumn(
        name = "Last",
        type_ = "string",
        json_path = ".status.lastAttempt.result",
        description = "The last attempt's result"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointSpec {
    /// Where events are POSTed (`http` or `https`).
    #[schemars(
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+[^\s]*$")
    )]
    pub url: String,
    /// The events sent; at least one, each once.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub events: Vec<EventType>,
    /// The Secret (in the endpoint's namespace) holding the signing key.
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret's data; `secret` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// The events an endpoint may receive.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EventType {
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.cancelled")]
    PaymentCancelled,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentCancelled => "payment.cancelled",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundFailed => "refund.failed",
        }
    }

    /// The event of a refund that ended in `phase`.
    pub fn of_refund_phase(phase: &str) -> Option<EventType> {
        match phase {
            "Succeeded" => Some(EventType::RefundSucceeded),
            "Failed" => Some(EventType::RefundFailed),
            _ => None,
        }
    }

    /// The event of a payment that ended in `phase` (as the saga names it);
    /// none for a phase that is not an end.
    pub fn of_payment_phase(phase: &str) -> Option<EventType> {
        match phase {
            "Succeeded" => Some(EventType::PaymentSucceeded),
            "Failed" => Some(EventType::PaymentFailed),
            "Cancelled" => Some(EventType::PaymentCancelled),
            _ => None,
        }
    }
}

/// What deliveries to the endpoint have done. Written by the worker that
/// delivers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointStatus {
    /// The most recent delivery attempt, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<DeliveryAttempt>,
    /// The most recent event delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<DeliveryAttempt>,
    /// The most recent event given up on (every retry failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_given_up: Option<DeliveryAttempt>,
    /// Events delivered (counted by the worker; approximate across
    /// concurrent deliveries, exact in its metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<i64>,
    /// `Delivering`: `True` while the last attempt succeeded, `False` with
    /// reason `Failing` (retrying) or `GaveUp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One attempt to deliver one event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `failed` or `gaveUp`.
    pub result: String,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub time: Time,
}

/// The JSON body POSTed to an endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Unique per payment and event type: a retry carries the same.
    pub id: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// When the payment ended (RFC 3339).
    pub created_at: String,
    pub data: PaymentEventData,
}

/// The payment (or refund of a payment) an event is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentEventData {
    pub namespace: String,
    /// The object's name: the Payment's, or for `refund.*` the Refund's.
    pub name: String,
    /// The payment's ID outside Kubernetes (its workflow ID).
    pub payment_id: String,
    /// For `refund.*`: the refund's ID outside Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub user_id: String,
    /// Integer minor units: the payment's, or for `refund.*` what was
    /// refunded (asked, when it failed).
    pub amount: i64,
    pub currency: String,
    /// How the payment (or the refund) ended.
    pub phase: String,
    pub reason: String,
    /// The `X-Request-Id` of the request that made the payment, when it came
    /// through the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The id of `payment_id`'s event of `type_`: `evt_` and 24 hex digits of
/// a SHA-256, the same every time it is made.
pub fn event_id(payment_id: &str, type_: EventType) -> String {
    let mut h = Sha256::new();
    h.update(payment_id.as_bytes());
    h.update([0]);
    h.update(type_.as_str().as_bytes());
    format!("evt_{}", &hex::encode(h.finalize())[..24])
}

/// The workflow delivering `event_id` to the endpoint with `endpoint_uid`:
/// one per pair, never started twice.
pub fn delivery_workflow_id(endpoint_uid: &str, event_id: &str) -> String {
    format!("webhook-{endpoint_uid}-{event_id}")
}

/// How long deliveries are retried.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRetry {
    pub initial_interval_secs: u64,
    pub maximum_interval_secs: u64,
    /// From the first attempt; then the event is given up.
    pub give_up_after_secs: u64,
}

/// The input of [`DELIVERY_WORKFLOW`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryInput {
    pub namespace: String,
    /// The endpoint's name and uid (a re-created endpoint with the same
    /// name is another one: its events are not this one's).
    pub endpoint: String,
    pub endpoint_uid: String,
    pub event: WebhookEvent,
    pub retry: DeliveryRetry,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_and_columns() {
        let crd = WebhookEndpoint::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("webhookendpoints.paysaga.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["whe".to_string()]));
        let columns: Vec<&str> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["URL", "Delivered", "Last", "Age"]);
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let a = event_id("payment-ns-a-1", EventType::PaymentSucceeded);
        assert_eq!(a, event_id("payment-ns-a-1", EventType::PaymentSucceeded));
        assert_ne!(a, event_id("payment-ns-a-1", EventType::PaymentFailed));
        assert_ne!(a, event_id("payment-ns-a-2", EventType::PaymentSucceeded));
        assert_eq!(a.len(), "evt_".len() + 24);
    }

    #[test]
    fn event_types_are_named_as_merchants_read_them() {
        for t in [
            EventType::PaymentSucceeded,
            EventType::PaymentFailed,
            EventType::PaymentCancelled,
        ] {
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
        assert_eq!(
            EventType::of_payment_phase("Cancelled"),
            Some(EventType::PaymentCancelled)
        );
        assert_eq!(EventType::of_payment_phase("Processing"), None);
    }
}

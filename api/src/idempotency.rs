//! What an `Idempotency-Key` promises, and the record that keeps the promise
//! after its Payment is gone (`idempotencykeys.paysaga.dev/v1alpha1`).
//!
//! A key is scoped to the payer's `userId`: the Payment made with it is
//! named from both ([`payment_name`]), so two clients that happen to pick
//! the same key for different payers make two payments and neither learns
//! of the other. While that Payment exists, its name is the record: a
//! retry's create collides with it. When it is deleted (by a user or by the
//! finished-payment TTL) the controller, before it lets the object go,
//! writes an [`IdempotencyKey`] of the same name; the API answers a retry
//! from it and creates nothing. The record is kept [`DEFAULT_RETENTION`]
//! after the deletion, then swept.

// Several `printcolumn(type_ = "string", ...)` entries look like repeated
// attributes to clippy; they are distinct columns of the kube derive.
#![allow(clippy::duplicated_attributes)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{PaymentSpec, Phase};

/// How long a key is remembered after its Payment was deleted: 30 days.
/// Finished Payments live 7 days (the controller's default TTL), so a key
/// holds for at least 37 days after its payment finished.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The Payment made with `key` for `user_id`: deterministic, so that retries
/// (and two API replicas given the same request) race on one name and the
/// API server picks the winner.
pub fn payment_name(user_id: &str, key: &str) -> String {
    keyed_name("pay", user_id, key)
}

/// `<prefix>-<24 hex>` from SHA-256 of `scope`, a separator and `key`: the
/// deterministic name of an object made with an Idempotency-Key (a payment
/// or recurring payment scoped to its payer, a refund to its payment).
pub fn keyed_name(prefix: &str, scope: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = hex::encode(h.finalize());
    format!("{prefix}-{}", &digest[..24])
}

/// SHA-256 (hex) of a key: what the Payment's annotation and the record
/// hold; the key itself is never stored.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// SHA-256 (hex) of a payment's spec as JSON: a retry must send the same.
pub fn request_sha256(spec: &PaymentSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a PaymentSpec always serializes");
    hex::encode(Sha256::digest(json))
}

/// An Idempotency-Key whose Payment was deleted, remembered so that a retry
/// of the request that made it makes nothing new. Written once by the
/// controller, read by the API, swept after `expiresAt`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "paysaga.dev",
    version = "v1alpha1",
    kind = "IdempotencyKey",
    plural = "idempotencykeys",
    namespaced,
    derive = "PartialEq",
    doc = "An Idempotency-Key of the HTTP API whose Payment was deleted: a retry of the request that made it is answered from here and creates nothing. Named like the Payment it made; swept after expiresAt.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".spec.payment.phase"),
    printcolumn(name = "Deleted", type_ = "date", json_path = ".spec.deletedAt"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an idempotency record is written once").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyKeySpec {
    /// The payer the key was scoped to.
    pub user_id: String,
    /// SHA-256 (hex) of the Idempotency-Key.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub key_sha256: String,
    /// SHA-256 (hex) of the request's payment spec as JSON.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub request_sha256: String,
    /// The Payment the key made, as it was when it was deleted.
    pub payment: DeletedPayment,
    pub deleted_at: Time,
    /// Swept after this.
    pub expires_at: Time,
}

/// A deleted Payment, as its status last said.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedPayment {
    pub uid: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_scoped_to_its_payer() {
        assert_eq!(payment_name("alice", "k1"), payment_name("alice", "k1"));
        assert_ne!(payment_name("alice", "k1"), payment_name("bob", "k1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(payment_name("ab", "c"), payment_name("a", "bc"));
        let name = payment_name("alice", "k1");
        assert_eq!(name.len(), "pay-".len() + 24);
    }
}

//! A Payment as the controller's cache holds it.
//!
//! The cache holds every Payment in the cluster, finished ones too, for as
//! long as they exist. Held as deserialized objects, a finished Payment took
//! about 5 KB (its conditions alone are some thirty small allocations); held
//! as its JSON text, with the few metadata fields the watch and the wake-up
//! filter read kept beside it, it takes about half. A reconcile parses the
//! text again (tens of microseconds, a few times per payment).
//!
//! What is not kept at all: the managed fields and kubectl's copy of the
//! last applied object, which reconciling never reads.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use paysaga_api::Payment;
use paysaga_api::names::CANCEL_ANNOTATION;
use serde::{Deserialize, Deserializer};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One Payment: the metadata the watch and the wake-up filter need, and the
/// whole object as JSON. An object that does not parse as a Payment is kept
/// too (its error shows at reconcile), instead of failing the whole watch.
#[derive(Clone, Debug)]
pub struct Cached {
    /// Name, namespace, uid, resourceVersion, generation, finalizers,
    /// deletion time and the cancel annotation: nothing else.
    meta: ObjectMeta,
    /// The object without its managed fields and last-applied copy.
    json: Box<str>,
}

impl Cached {
    pub fn from_value(mut v: serde_json::Value) -> Cached {
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("managedFields");
            if let Some(a) = m.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                a.remove(LAST_APPLIED);
            }
        }
        let full: ObjectMeta = v
            .get("metadata")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default();
        let cancel = full
            .annotations
            .as_ref()
            .and_then(|a| a.get(CANCEL_ANNOTATION))
            .map(|r| [(CANCEL_ANNOTATION.to_string(), r.clone())].into());
        let meta = ObjectMeta {
            name: full.name,
            namespace: full.namespace,
            uid: full.uid,
            resource_version: full.resource_version,
            generation: full.generation,
            finalizers: full.finalizers,
            deletion_timestamp: full.deletion_timestamp,
            annotations: cancel,
            ..ObjectMeta::default()
        };
        Cached {
            meta,
            json: v.to_string().into_boxed_str(),
        }
    }

    /// The Payment, or why it is not one.
    pub fn payment(&self) -> Result<Payment, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

impl<'de> Deserialize<'de> for Cached {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Cached::from_value)
    }
}

impl Resource for Cached {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Payment::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Payment::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Payment::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        Payment::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Payment::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// The cache's key for a Payment.
pub fn key_of(p: &Payment) -> kube::runtime::reflector::ObjectRef<Cached> {
    kube::runtime::reflector::ObjectRef::new(&p.name_any())
        .within(&p.namespace().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paysaga_api::Phase;
    use serde_json::json;

    fn object() -> serde_json::Value {
        json!({
            "apiVersion": "paysaga.dev/v1alpha1",
            "kind": "Payment",
            "metadata": {
                "name": "p1", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 1, "creationTimestamp": "2026-11-25T10:00:00Z",
                "finalizers": ["paysaga.dev/workflow"],
                "annotations": {
                    "paysaga.dev/accepted-at": "2026-11-25T10:00:00.123Z",
                    CANCEL_ANNOTATION: "changed my mind",
                    LAST_APPLIED: "{\"a\": \"long copy\"}"
                },
                "managedFields": [{"manager": "paysaga-controller", "operation": "Apply",
                                   "fieldsV1": {"f:status": {"f:phase": {}}}}]
            },
            "spec": {"userId": "alice", "amount": 1250, "currency": "EUR", "method": "card"},
            "status": {"phase": "Succeeded", "conditions": [
                {"type": "Charged", "status": "True", "reason": "Charged", "message": "ok",
                 "lastTransitionTime": "2026-11-25T10:00:01Z"}
            ]}
        })
    }

    #[test]
    fn keeps_the_whole_payment_but_what_reconciling_never_reads() {
        let c = Cached::from_value(object());
        let p = c.payment().unwrap();
        assert_eq!(p.spec.amount, 1250);
        assert_eq!(p.status.as_ref().unwrap().phase, Some(Phase::Succeeded));
        assert_eq!(p.status.as_ref().unwrap().conditions.len(), 1);
        assert_eq!(
            p.metadata
                .creation_timestamp
                .as_ref()
                .unwrap()
                .0
                .to_string(),
            "2026-11-25T10:00:00Z"
        );
        let annotations = p.annotations();
        assert!(annotations.contains_key("paysaga.dev/accepted-at"));
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(p.metadata.managed_fields.is_none());
        assert!(!c.json.contains("managedFields") && !c.json.contains("long copy"));
    }

    #[test]
    fn the_metadata_beside_it_is_what_the_watch_and_the_filter_read() {
        let c = Cached::from_value(object());
        let m = c.meta();
        assert_eq!(c.name_any(), "p1");
        assert_eq!(c.namespace().as_deref(), Some("shop"));
        assert_eq!(m.uid.as_deref(), Some("u-1"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.generation, Some(1));
        assert_eq!(m.finalizers.as_ref().unwrap(), &["paysaga.dev/workflow"]);
        assert_eq!(
            c.annotations().keys().collect::<Vec<_>>(),
            [CANCEL_ANNOTATION],
            "only the cancel annotation"
        );
        assert!(m.creation_timestamp.is_none() && m.managed_fields.is_none());
    }

    #[test]
    fn an_object_that_is_not_a_payment_is_kept_with_its_error() {
        let mut o = object();
        o["spec"]["amount"] = json!("twelve");
        let c: Cached = serde_json::from_value(o).unwrap();
        assert_eq!(c.name_any(), "p1");
        let e = c.payment().unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
    }
}

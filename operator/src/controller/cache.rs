//! A Payment as the controller's cache holds it.
//!
//! The cache holds every Payment in the cluster, finished ones too, for as
//! long as they exist: most of them, soon, are finished. Held as
//! deserialized objects, a finished Payment took about 5 KB (its conditions
//! alone are some thirty small allocations). Here:
//!
//! - a Payment whose status records how it ended (a terminal phase and its
//!   completion time, [`paysaga_api::PaymentStatus::recorded_end`]) is held as the few
//!   metadata fields the watch and the wake-up filter read, and when it
//!   ended. Nothing in it is left to reconcile until someone changes it
//!   (deletes it, asks to cancel it) or its TTL runs out; then reconcile
//!   reads it whole from the API server, once;
//! - any other Payment is held as the same metadata and the object's JSON
//!   text, parsed again at each reconcile (tens of microseconds, a few
//!   times per payment).
//!
//! Never kept: kubectl's copy of the last applied object, and the managed
//! fields but for the entries that own a review or expedite annotation
//! (who asked, and when: [`crate::controller::plan::desired::annotation_owner`]).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use paysaga_api::Payment;
#[cfg(test)]
use paysaga_api::names::CANCEL_ANNOTATION;
use paysaga_api::names::{ASK_ANNOTATIONS, EXPEDITE_ANNOTATION, REVIEW_ANNOTATION};
use serde::{Deserialize, Deserializer};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One Payment: the metadata the watch and the wake-up filter need, and
/// either the whole object or when it ended. An object that does not parse
/// as a Payment is kept too (its error shows at reconcile), instead of
/// failing the whole watch.
#[derive(Clone, Debug)]
pub struct Cached {
    /// Name, namespace, uid, resourceVersion, generation, finalizers,
    /// creation and deletion times and the annotations that ask something:
    /// nothing else.
    meta: ObjectMeta,
    body: Body,
}

#[derive(Clone, Debug)]
enum Body {
    /// The object without its managed fields and last-applied copy.
    Json(Box<str>),
    /// Its status records how it ended, at this time.
    Finished(Timestamp),
}

/// What reconcile gets from the cache.
#[derive(Debug)]
pub enum Held {
    Payment(Box<Payment>),
    /// Finished at this time; read it from the API server if there is
    /// anything to do.
    Finished(Timestamp),
    /// Not a Payment: why.
    Invalid(serde_json::Error),
}

impl Cached {
    pub fn from_value(mut v: serde_json::Value) -> Cached {
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            if let Some(serde_json::Value::Array(entries)) = m.remove("managedFields") {
                let kept: Vec<_> = entries.into_iter().filter(owns_a_request).collect();
                if !kept.is_empty() {
                    m.insert("managedFields".into(), kept.into());
                }
            }
            if let Some(a) = m.get_mut("annotations").and_then(|a| a.as_object_mut()) {
                a.remove(LAST_APPLIED);
            }
        }
        // Parsed once: its metadata, and whether it records its end. One
        // that is not a Payment still has metadata.
        let parsed = serde_json::from_value::<Payment>(v.clone()).ok();
        let full: ObjectMeta = match &parsed {
            Some(p) => p.metadata.clone(),
            None => v
                .get("metadata")
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_default(),
        };
        let asks: std::collections::BTreeMap<String, String> = full
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| ASK_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let meta = ObjectMeta {
            name: full.name,
            namespace: full.namespace,
            uid: full.uid,
            resource_version: full.resource_version,
            generation: full.generation,
            finalizers: full.finalizers,
            deletion_timestamp: full.deletion_timestamp,
            creation_timestamp: full.creation_timestamp,
            annotations: (!asks.is_empty()).then_some(asks),
            ..ObjectMeta::default()
        };
        let ended = parsed
            .and_then(|p| p.status)
            .and_then(|s| s.recorded_end().map(|t| t.0));
        let body = match ended {
            Some(at) => Body::Finished(at),
            None => Body::Json(v.to_string().into_boxed_str()),
        };
        Cached { meta, body }
    }

    pub fn held(&self) -> Held {
        match &self.body {
            Body::Json(json) => match serde_json::from_str(json) {
                Ok(p) => Held::Payment(Box::new(p)),
                Err(e) => Held::Invalid(e),
            },
            Body::Finished(at) => Held::Finished(*at),
        }
    }

    /// When it was created, while its status records no end (what the
    /// stuck-payment metric reads); `None` once it has ended.
    pub fn open_since(&self) -> Option<Timestamp> {
        match &self.body {
            Body::Json(_) => self.meta.creation_timestamp.as_ref().map(|t| t.0),
            Body::Finished(_) => None,
        }
    }

    /// Whether someone asked something of it: a delete, a cancel, a review
    /// decision, an expedite.
    pub fn asked(&self) -> bool {
        self.meta.deletion_timestamp.is_some()
            || self
                .meta
                .annotations
                .as_ref()
                .is_some_and(|a| !a.is_empty())
    }
}

/// Whether a managed-fields entry owns an annotation that asks for a review
/// decision or an expedite (the controller needs who set it, and when).
fn owns_a_request(entry: &serde_json::Value) -> bool {
    let annotations = &entry["fieldsV1"]["f:metadata"]["f:annotations"];
    [REVIEW_ANNOTATION, EXPEDITE_ANNOTATION]
        .iter()
        .any(|a| annotations.get(format!("f:{a}")).is_some())
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use paysaga_api::Phase;
    use serde_json::json;

    /// A Payment in flight (no completion time yet).
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
                    LAST_APPLIED: "{\"a\": \"long copy\"}"
                },
                "managedFields": [{"manager": "paysaga-controller", "operation": "Apply",
                                   "fieldsV1": {"f:status": {"f:phase": {}}}}]
            },
            "spec": {"userId": "alice", "amount": 1250, "currency": "EUR", "method": "card"},
            "status": {"phase": "Processing", "step": "Charge", "conditions": [
                {"type": "Validated", "status": "True", "reason": "Succeeded", "message": "",
                 "lastTransitionTime": "2026-11-25T10:00:01Z"}
            ]}
        })
    }

    fn finished() -> serde_json::Value {
        let mut o = object();
        o["status"]["phase"] = json!("Succeeded");
        o["status"]["completedAt"] = json!("2026-11-25T10:00:02Z");
        o
    }

    fn payment(c: &Cached) -> Payment {
        match c.held() {
            Held::Payment(p) => *p,
            other => panic!("not held whole: {other:?}"),
        }
    }

    #[test]
    fn keeps_the_whole_payment_in_flight_but_what_reconciling_never_reads() {
        let c = Cached::from_value(object());
        let p = payment(&c);
        assert_eq!(p.spec.amount, 1250);
        assert_eq!(p.status.as_ref().unwrap().phase, Some(Phase::Processing));
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
    }

    #[test]
    fn a_recorded_end_is_held_as_when_it_ended() {
        let c = Cached::from_value(finished());
        match c.held() {
            Held::Finished(at) => assert_eq!(at.to_string(), "2026-11-25T10:00:02Z"),
            other => panic!("{other:?}"),
        }
        assert!(!c.asked());
        // A terminal phase without its completion time is not a recorded end.
        let mut o = finished();
        o["status"]["completedAt"] = serde_json::Value::Null;
        assert!(matches!(Cached::from_value(o).held(), Held::Payment(_)));
    }

    #[test]
    fn a_delete_or_a_cancel_is_asking() {
        let mut o = finished();
        o["metadata"]["annotations"][CANCEL_ANNOTATION] = json!("changed my mind");
        assert!(Cached::from_value(o).asked());
        let mut o = finished();
        o["metadata"]["deletionTimestamp"] = json!("2026-11-25T10:01:00Z");
        assert!(Cached::from_value(o).asked());
    }

    #[test]
    fn the_metadata_beside_it_is_what_the_watch_and_the_filter_read() {
        let mut o = finished();
        o["metadata"]["annotations"][CANCEL_ANNOTATION] = json!("changed my mind");
        let c = Cached::from_value(o);
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
        assert!(m.managed_fields.is_none());
    }

    #[test]
    fn open_since_its_creation_until_its_end_is_recorded() {
        let open = Cached::from_value(object());
        assert_eq!(
            open.open_since().map(|t| t.to_string()).as_deref(),
            Some("2026-11-25T10:00:00Z")
        );
        assert_eq!(Cached::from_value(finished()).open_since(), None);
    }

    #[test]
    fn an_object_that_is_not_a_payment_is_kept_with_its_error() {
        let mut o = finished();
        o["spec"]["amount"] = json!("twelve");
        let c: Cached = serde_json::from_value(o).unwrap();
        assert_eq!(c.name_any(), "p1");
        match c.held() {
            Held::Invalid(e) => assert!(e.to_string().contains("invalid type"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}

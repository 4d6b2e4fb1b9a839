//! Admission by work in flight: the API refuses new payments (429 with
//! `Retry-After`) while too many accepted ones have not finished. Creating a
//! Payment object is cheap; running its saga is not. Without this, a client
//! faster than the sagas grows a backlog without bound and every payment in
//! it waits longer; with it, the excess is refused before anything is
//! created, so nothing accepted is lost or left waiting for minutes.
//!
//! The count comes from a watch of the namespace's Payments: one not in a
//! terminal phase is in flight. Every replica watches the same objects, so
//! they agree (the limit is soft by a few requests under a burst).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use paysaga_api::{Payment, Phase};

/// Payments accepted and not finished, by uid.
#[derive(Default)]
pub struct InFlight {
    /// uid → still in flight.
    payments: Mutex<HashMap<String, bool>>,
    /// The watch has listed everything once.
    synced: AtomicBool,
}

/// Whether to take one more payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// At capacity: `in_flight` of `limit`.
    Full {
        in_flight: usize,
        limit: usize,
    },
}

fn in_flight(o: &DynamicObject) -> bool {
    let phase = o
        .data
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(|p| serde_json::from_value::<Phase>(p.clone()).ok());
    !phase.is_some_and(Phase::is_terminal)
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.payments.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn count(&self) -> usize {
        self.lock().values().filter(|f| **f).count()
    }

    /// Decides for one more payment. Until the watch has synced, and with a
    /// limit of 0, everything is admitted (the request limit still holds).
    pub fn admit(&self, limit: usize) -> Admit {
        if limit == 0 || !self.synced.load(Ordering::Relaxed) {
            return Admit::Yes;
        }
        let in_flight = self.count();
        if in_flight >= limit {
            Admit::Full { in_flight, limit }
        } else {
            Admit::Yes
        }
    }

    /// A payment just created here counts at once, before the watch tells.
    pub fn created(&self, uid: &str) {
        self.lock().entry(uid.to_string()).or_insert(true);
    }

    fn apply(&self, o: &DynamicObject) {
        if let Some(uid) = &o.metadata.uid {
            self.lock().insert(uid.clone(), in_flight(o));
        }
    }

    fn delete(&self, o: &DynamicObject) {
        if let Some(uid) = &o.metadata.uid {
            self.lock().remove(uid);
        }
    }

    /// Keeps the count from a watch of `namespace`'s Payments, until the process ends.
    pub fn watch(self: Arc<Self>, client: kube::Client, namespace: &str) {
        let resource = ApiResource::erase::<Payment>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
        tokio::spawn(async move {
            let mut init: HashMap<String, bool> = HashMap::new();
            let mut events = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Init) => init.clear(),
                    Ok(Event::InitApply(o)) => {
                        if let Some(uid) = o.metadata.uid.clone() {
                            init.insert(uid, in_flight(&o));
                        }
                    }
                    Ok(Event::InitDone) => {
                        *self.lock() = std::mem::take(&mut init);
                        self.synced.store(true, Ordering::Relaxed);
                    }
                    Ok(Event::Apply(o)) => self.apply(&o),
                    Ok(Event::Delete(o)) => self.delete(&o),
                    Err(e) => {
                        tracing::warn!(error = %e, "watching Payments for admission failed; retrying")
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(uid: &str, phase: Option<&str>) -> DynamicObject {
        let mut o = DynamicObject::new("p", &ApiResource::erase::<Payment>(&()));
        o.metadata.uid = Some(uid.into());
        if let Some(phase) = phase {
            o.data = serde_json::json!({"status": {"phase": phase}});
        }
        o
    }

    #[test]
    fn only_payments_not_finished_count_and_the_limit_refuses() {
        let f = InFlight::default();
        f.apply(&obj("a", None));
        f.apply(&obj("b", Some("Processing")));
        f.apply(&obj("c", Some("Succeeded")));
        f.created("d");
        assert_eq!(f.count(), 3);
        assert_eq!(f.admit(3), Admit::Yes, "not synced yet: admitted");
        f.synced.store(true, Ordering::Relaxed);
        assert_eq!(
            f.admit(3),
            Admit::Full {
                in_flight: 3,
                limit: 3
            }
        );
        assert_eq!(f.admit(4), Admit::Yes);
        assert_eq!(f.admit(0), Admit::Yes, "0 = no limit");
        f.apply(&obj("b", Some("Failed")));
        f.delete(&obj("a", None));
        assert_eq!(f.count(), 1);
        assert_eq!(f.admit(3), Admit::Yes);
    }
}

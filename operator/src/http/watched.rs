//! The API's watch of its namespace's Payments, and the two things it
//! serves from it.
//!
//! **Admission by work in flight**: the API refuses new payments (429 with
//! `Retry-After`) while too many accepted ones have not finished. Creating a
//! Payment object is cheap; running its saga is not. Without this, a client
//! faster than the sagas grows a backlog without bound and every payment in
//! it waits longer; with it, the excess is refused before anything is
//! created, so nothing accepted is lost or left waiting for minutes. One not
//! in a terminal phase is in flight. Every replica watches the same objects,
//! so they agree (the limit is soft by a few requests under a burst).
//!
//! **Reads**: `GET /v1/payments/{id}` answers from the watch's view of the
//! object when it has one, instead of a read through the API server. Clients
//! follow a payment by polling it, about ten times a payment under load, and
//! those reads were the largest share of what the API server spent on a
//! payment. The view lags the object by the watch's delay (milliseconds);
//! a payment the watch has not shown yet (just created), and every read while
//! the watch is failing, goes to the API server as before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use paysaga_api::http::PaymentView;
use paysaga_api::{Payment, PaymentStatus};

/// What the watch knows of one Payment.
struct Seen {
    uid: String,
    in_flight: bool,
    /// `None` when the object did not parse as a Payment.
    view: Option<Arc<PaymentView>>,
}

#[derive(Default)]
struct Known {
    /// By name.
    payments: HashMap<String, Seen>,
    /// uids of payments created here that the watch has not shown yet.
    created: HashSet<String>,
}

/// The Payments of the namespace as the watch last showed them.
pub struct Watched {
    known: Mutex<Known>,
    /// The watch has listed everything once.
    synced: AtomicBool,
    /// The watch's last answer was not an error: views are current.
    fresh: AtomicBool,
    /// Prefix of the views' `statusUrl`s.
    base_url: String,
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

fn seen(o: &DynamicObject, base_url: &str) -> Option<(String, Seen)> {
    let name = o.metadata.name.clone()?;
    let uid = o.metadata.uid.clone()?;
    let (view, status) = match o.clone().try_parse::<Payment>() {
        Ok(p) => (Some(Arc::new(PaymentView::of(&p, base_url))), p.status),
        Err(e) => {
            tracing::warn!(payment = %name, error = %e, "a Payment that does not parse; reads of it go to the API server");
            let status = o.data.get("status").cloned();
            (None, status.and_then(|s| serde_json::from_value(s).ok()))
        }
    };
    let in_flight = status.and_then(|s: PaymentStatus| s.finished()).is_none();
    Some((
        name,
        Seen {
            uid,
            in_flight,
            view,
        },
    ))
}

impl Watched {
    pub fn new(base_url: &str) -> Self {
        Watched {
            known: Mutex::default(),
            synced: AtomicBool::new(false),
            fresh: AtomicBool::new(false),
            base_url: base_url.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Payments accepted and not finished.
    pub fn in_flight(&self) -> usize {
        let known = self.lock();
        known.payments.values().filter(|s| s.in_flight).count() + known.created.len()
    }

    /// Decides for one more payment. Until the watch has synced, and with a
    /// limit of 0, everything is admitted (the request limit still holds).
    pub fn admit(&self, limit: usize) -> Admit {
        if limit == 0 || !self.synced.load(Ordering::Relaxed) {
            return Admit::Yes;
        }
        let in_flight = self.in_flight();
        if in_flight >= limit {
            Admit::Full { in_flight, limit }
        } else {
            Admit::Yes
        }
    }

    /// A payment just created here counts at once, before the watch tells.
    pub fn created(&self, uid: &str) {
        let mut known = self.lock();
        if !known.payments.values().any(|s| s.uid == uid) {
            known.created.insert(uid.to_string());
        }
    }

    /// The payment `name` as the watch last showed it; `None` when the watch
    /// has not shown it or is not current (read it from the API server).
    pub fn view(&self, name: &str) -> Option<Arc<PaymentView>> {
        if !self.fresh.load(Ordering::Relaxed) {
            return None;
        }
        self.lock().payments.get(name).and_then(|s| s.view.clone())
    }

    fn apply(&self, o: &DynamicObject) {
        if let Some((name, s)) = seen(o, &self.base_url) {
            let mut known = self.lock();
            known.created.remove(&s.uid);
            known.payments.insert(name, s);
        }
    }

    fn delete(&self, o: &DynamicObject) {
        if let Some(name) = &o.metadata.name {
            let mut known = self.lock();
            if let Some(s) = known.payments.remove(name) {
                known.created.remove(&s.uid);
            }
        }
    }

    /// Keeps the view from a watch of `namespace`'s Payments, until the process ends.
    pub fn watch(self: Arc<Self>, client: kube::Client, namespace: &str) {
        let resource = ApiResource::erase::<Payment>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
        tokio::spawn(async move {
            let mut init: HashMap<String, Seen> = HashMap::new();
            let mut events = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                // Current again once the watch delivers a change or a full
                // list; not while a list is under way (after a gap, the views
                // may have missed changes until it is done).
                let current = matches!(
                    event,
                    Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)
                );
                match event {
                    Ok(Event::Init) => {
                        self.fresh.store(false, Ordering::Relaxed);
                        init.clear();
                    }
                    Ok(Event::InitApply(o)) => init.extend(seen(&o, &self.base_url)),
                    Ok(Event::InitDone) => {
                        // A full list: what was created here is in it, or
                        // comes next as a change (or was deleted meanwhile).
                        *self.lock() = Known {
                            payments: std::mem::take(&mut init),
                            created: HashSet::new(),
                        };
                        self.synced.store(true, Ordering::Relaxed);
                    }
                    Ok(Event::Apply(o)) => self.apply(&o),
                    Ok(Event::Delete(o)) => self.delete(&o),
                    Err(e) => {
                        // Until the watch answers again, reads go to the API server.
                        self.fresh.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "watching Payments failed; retrying")
                    }
                }
                if current {
                    self.fresh.store(true, Ordering::Relaxed);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paysaga_api::Phase;

    fn obj(name: &str, phase: Option<&str>) -> DynamicObject {
        let mut o = DynamicObject::new(name, &ApiResource::erase::<Payment>(&()));
        o.metadata.uid = Some(format!("uid-{name}"));
        o.data = serde_json::json!({"spec": {
            "userId": "u", "amount": 100, "currency": "EUR", "method": "card"
        }});
        if let Some(phase) = phase {
            o.data["status"] = serde_json::json!({"phase": phase});
        }
        o
    }

    #[test]
    fn only_payments_not_finished_count_and_the_limit_refuses() {
        let w = Watched::new("");
        w.apply(&obj("a", None));
        w.apply(&obj("b", Some("Processing")));
        w.apply(&obj("c", Some("Succeeded")));
        w.created("uid-d");
        w.created("uid-a");
        assert_eq!(w.in_flight(), 3, "a, b and d; a counted once");
        assert_eq!(w.admit(3), Admit::Yes, "not synced yet: admitted");
        w.synced.store(true, Ordering::Relaxed);
        assert_eq!(
            w.admit(3),
            Admit::Full {
                in_flight: 3,
                limit: 3
            }
        );
        assert_eq!(w.admit(4), Admit::Yes);
        assert_eq!(w.admit(0), Admit::Yes, "0 = no limit");
        w.apply(&obj("b", Some("Failed")));
        w.delete(&obj("a", None));
        w.apply(&obj("d", Some("Succeeded")));
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.admit(3), Admit::Yes);
    }

    #[test]
    fn reads_are_served_only_while_the_watch_is_current() {
        let w = Watched::new("http://api");
        w.apply(&obj("a", Some("Processing")));
        assert!(w.view("a").is_none(), "no answer from the watch yet");
        w.fresh.store(true, Ordering::Relaxed);
        let v = w.view("a").expect("seen");
        assert_eq!(v.phase, Phase::Processing);
        assert_eq!(v.status_url, "http://api/v1/payments/a");
        w.apply(&obj("a", Some("Succeeded")));
        assert_eq!(w.view("a").expect("seen").phase, Phase::Succeeded);
        assert!(w.view("b").is_none(), "not seen: read through");
        w.delete(&obj("a", None));
        assert!(w.view("a").is_none());
        w.apply(&obj("a", Some("Processing")));
        w.fresh.store(false, Ordering::Relaxed);
        assert!(w.view("a").is_none(), "the watch failed: read through");
    }
}

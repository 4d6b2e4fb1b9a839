//! The first step of a reconcile: everything known of one payment, in one
//! value. The object comes from the cache (read whole from the API server
//! only when a finished one is asked something or its TTL ran out); its
//! workflow from its followed history, else its own status, else Temporal
//! (after a restart, or an outage); its pacing and pending changes from the
//! [`Tracker`](super::tracker::Tracker).

use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use paysaga_api::Payment;
use paysaga_api::names::workflow_id;

use super::Context;
use super::cache::{Cached, Held};
use super::plan::time::ttl_left;
use super::reconcile::Error;
use super::tracker::{Pacing, Pending};
use crate::temporal::Observation;

/// What a reconcile knows of one payment.
#[derive(Debug)]
pub struct Observed {
    /// Its workflow ID, and its key in the tracker.
    pub id: String,
    /// Its key in the cache (what wakes it).
    pub key: ObjectRef<Cached>,
    /// What its Events are about.
    pub reference: ObjectReference,
    pub now: Timestamp,
    /// When the reconcile began.
    pub began: Instant,
    pub object: Object,
}

/// The object, as far as it was read.
#[derive(Debug)]
pub enum Object {
    /// Finished at this time, nothing asked of it, its TTL not run out: not
    /// read whole (there is nothing to do but wait).
    Ended(Timestamp),
    /// Deleted since the cache showed it.
    Gone,
    /// It does not parse as a Payment: why.
    Invalid(String),
    /// The whole Payment, and its workflow.
    Payment(Box<Facts>),
}

/// A Payment read whole, and what is known of it.
#[derive(Debug)]
pub struct Facts {
    pub payment: Payment,
    pub workflow: Result<Observation, Error>,
    pub pacing: Pacing,
    pub pending: Pending,
}

impl Observed {
    /// The whole Payment, when it was read.
    pub fn payment(&self) -> Option<&Payment> {
        match &self.object {
            Object::Payment(facts) => Some(&facts.payment),
            _ => None,
        }
    }

    /// Why the workflow could not be observed, if it could not.
    pub fn into_error(self) -> Option<Error> {
        match self.object {
            Object::Payment(facts) => facts.workflow.err(),
            _ => None,
        }
    }
}

/// Observes one payment.
pub async fn observe(cached: &Cached, ctx: &Context) -> Result<Observed, Error> {
    let began = Instant::now();
    let now = Timestamp::now();
    let id = workflow_id(cached.meta());
    let mut reference = cached.object_ref(&());
    let object = match cached.held() {
        Held::Payment(p) => whole(*p, &id, ctx).await,
        Held::Invalid(invalid) => {
            // Permanently invalid until someone changes it: said in an
            // Event, and left until it changes. The other payments go on.
            ctx.metrics.failure("invalid");
            tracing::warn!(error = %invalid, "a Payment could not be read");
            Object::Invalid(invalid.to_string())
        }
        Held::Finished(ended)
            if !cached.asked()
                && ttl_left(ended, ctx.settings.finished_ttl, now)
                    .is_none_or(|left| !left.is_zero()) =>
        {
            Object::Ended(ended)
        }
        Held::Finished(_) => {
            let api: Api<Payment> =
                Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
            match api.get_opt(&cached.name_any()).await.map_err(Error::Read)? {
                Some(p) => {
                    reference = p.object_ref(&());
                    whole(p, &id, ctx).await
                }
                None => Object::Gone,
            }
        }
    };
    Ok(Observed {
        key: ObjectRef::from_obj(cached),
        id,
        reference,
        now,
        began,
        object,
    })
}

async fn whole(payment: Payment, id: &str, ctx: &Context) -> Object {
    // The reconcile is traced as a child of the request that made the
    // payment (or, for one made with kubectl, in a trace of its own).
    let annotated = payment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(paysaga_api::names::TRACEPARENT_ANNOTATION))
        .cloned();
    let standing_in = || {
        payment
            .metadata
            .uid
            .as_deref()
            .and_then(paysaga_common::telemetry::traceparent_for_uid)
    };
    paysaga_common::telemetry::follow(
        &tracing::Span::current(),
        annotated.or_else(standing_in).as_deref(),
    );
    // The reconcile's span (and so its every log line) names the request
    // that made the payment.
    if let Some(rid) = payment
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(paysaga_api::names::REQUEST_ID_LABEL))
    {
        tracing::Span::current().record("request_id", rid.as_str());
    }
    Object::Payment(Box::new(Facts {
        workflow: workflow(&payment, id, ctx).await,
        pacing: ctx.tracker.pacing(id),
        pending: ctx.tracker.pending(id),
        payment,
    }))
}

/// What is known of the payment's workflow, asking Temporal only when
/// nothing else tells: the followed history first; then the Payment's own
/// status (a recorded end; or, unless it is being deleted, no run yet:
/// start it, a duplicate start is refused); then Temporal itself.
async fn workflow(p: &Payment, id: &str, ctx: &Context) -> Result<Observation, Error> {
    if let Some(o) = ctx.follower.observation(id) {
        ctx.readiness.temporal(true);
        return Ok(o);
    }
    let status = p.status.as_ref();
    if status.is_some_and(|s| s.recorded_end().is_some()) {
        return Ok(Observation::Recorded);
    }
    if p.metadata.deletion_timestamp.is_none() && status.is_none_or(|s| s.run_id.is_none()) {
        return Ok(Observation::Absent);
    }
    let observed = ctx.workflows.observe(id).await.map_err(Error::Observe);
    ctx.readiness.temporal(observed.is_ok());
    observed
}

//! `RecurringFireWorkflow`: one firing of a RecurringPayment's Schedule.
//! It makes the Payment due (named after the time it was due, so a firing
//! run again finds the Payment it made instead of paying twice) and waits
//! until that payment has ended, so that the Schedule's overlap policy sees
//! a payment still running as a firing still running.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::activities::{permanent, transient};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};
use paysaga_api::names::{ACCEPTED_AT_ANNOTATION, FINALIZER, RECURRING_LABEL};
use paysaga_api::recurring::{FireOutcome, RecurringFire, due_from_workflow_id, payment_name};
use paysaga_api::{Payment, RecurringPayment};
use serde::{Deserialize, Serialize};
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult};

/// Failure types of a firing (non-retryable).
pub mod failure_types {
    /// No Kubernetes credentials, or they may not create the Payment.
    pub const NOT_ALLOWED: &str = "NotAllowed";
    /// A Payment of that name exists and was not made by this RecurringPayment.
    pub const NAME_TAKEN: &str = "PaymentNameTaken";
    /// The API server refused the Payment (invalid).
    pub const INVALID: &str = "InvalidPayment";
    /// The RecurringPayment is gone or being deleted: its firing makes nothing.
    pub const GONE: &str = "RecurringPaymentGone";
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CreateScheduledOp {
    pub fire: RecurringFire,
    /// When the firing was due (RFC 3339, UTC).
    pub due: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwaitPaymentOp {
    pub namespace: String,
    pub name: String,
}

/// The activities of a firing: they talk to the Kubernetes API (as the
/// worker's ServiceAccount: create and get Payments, nothing else).
pub struct RecurringActivities {
    /// `None` when the worker has no Kubernetes credentials: firings fail.
    pub kube: Option<kube::Client>,
}

impl RecurringActivities {
    fn payments(&self, namespace: &str) -> Result<Api<Payment>, ActivityError> {
        match &self.kube {
            Some(client) => Ok(Api::namespaced(client.clone(), namespace)),
            None => Err(permanent(
                failure_types::NOT_ALLOWED,
                "this worker has no Kubernetes credentials: it cannot make recurring payments"
                    .into(),
            )),
        }
    }
}

fn kube_error(what: &str, e: kube::Error) -> ActivityError {
    match &e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
            permanent(failure_types::NOT_ALLOWED, format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            permanent(failure_types::INVALID, format!("{what}: {}", s.message))
        }
        _ => transient(format!("{what}: {e}")),
    }
}

/// The Payment a firing makes: the template, owned by its RecurringPayment,
/// labelled with it, with the controller's finalizer from the start.
pub fn scheduled_payment(fire: &RecurringFire, name: &str, accepted_at: String) -> Payment {
    let mut payment = Payment::new(name, fire.template.clone());
    let mut labels = BTreeMap::new();
    // A label value has at most 63 characters; longer names go unlabelled
    // (the owner reference still names the RecurringPayment).
    if fire.name.len() <= 63 {
        labels.insert(RECURRING_LABEL.to_string(), fire.name.clone());
    }
    payment.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(fire.namespace.clone()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            ACCEPTED_AT_ANNOTATION.to_string(),
            accepted_at,
        )])),
        finalizers: Some(vec![FINALIZER.to_string()]),
        owner_references: Some(vec![OwnerReference {
            api_version: "paysaga.dev/v1alpha1".into(),
            kind: "RecurringPayment".into(),
            name: fire.name.clone(),
            uid: fire.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        }]),
        ..ObjectMeta::default()
    };
    payment
}

#[activities]
impl RecurringActivities {
    /// Creates the Payment due, once: a second attempt (a retry, or the
    /// firing run again) finds the Payment this RecurringPayment made and
    /// answers its name.
    #[activity(name = "createScheduledPayment")]
    pub async fn create_scheduled_payment(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: CreateScheduledOp,
    ) -> Result<String, ActivityError> {
        let due: k8s_openapi::jiff::Timestamp = op.due.parse().map_err(|e| {
            permanent(
                failure_types::INVALID,
                format!("due time {:?}: {e}", op.due),
            )
        })?;
        let name = payment_name(&op.fire.name, due);
        let api = self.payments(&op.fire.namespace)?;
        // A firing still running when its RecurringPayment is deleted makes
        // nothing: the Payments of a deleted one are kept, and one made now
        // would still name it as owner.
        let owners: Api<RecurringPayment> = Api::namespaced(
            self.kube.clone().expect("payments() checked the client"),
            &op.fire.namespace,
        );
        let owner = owners
            .get_opt(&op.fire.name)
            .await
            .map_err(|e| kube_error(&format!("reading recurring payment {}", op.fire.name), e))?;
        let live = owner.is_some_and(|o| {
            o.metadata.uid.as_deref() == Some(op.fire.uid.as_str())
                && o.metadata.deletion_timestamp.is_none()
        });
        if !live {
            return Err(permanent(
                failure_types::GONE,
                format!(
                    "recurring payment {} is gone or being deleted; payment {name} not made",
                    op.fire.name
                ),
            ));
        }
        let accepted_at = format!("{:.3}", k8s_openapi::jiff::Timestamp::now());
        let payment = scheduled_payment(&op.fire, &name, accepted_at);
        match api.create(&PostParams::default(), &payment).await {
            Ok(_) => {
                tracing::info!(payment = %name, recurring = %op.fire.name, "scheduled payment made");
                Ok(name)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api
                    .get(&name)
                    .await
                    .map_err(|e| kube_error(&format!("reading payment {name}"), e))?;
                let ours = existing
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == op.fire.uid);
                if ours {
                    tracing::info!(payment = %name, "scheduled payment made before; not made again");
                    Ok(name)
                } else {
                    Err(permanent(
                        failure_types::NAME_TAKEN,
                        format!(
                            "payment {name} exists and was not made by recurring payment {}",
                            op.fire.name
                        ),
                    ))
                }
            }
            Err(e) => Err(kube_error(&format!("creating payment {name}"), e)),
        }
    }

    /// Waits until the Payment has ended (or is gone); answers its phase.
    /// Heartbeats as it waits, so a crashed worker's wait moves elsewhere.
    #[activity(name = "awaitPayment")]
    pub async fn await_payment(
        self: Arc<Self>,
        ctx: ActivityContext,
        op: AwaitPaymentOp,
    ) -> Result<String, ActivityError> {
        let api = self.payments(&op.namespace)?;
        loop {
            match api.get_opt(&op.name).await {
                Ok(None) => return Ok("Deleted".into()),
                Ok(Some(p)) => {
                    if let Some(phase) = p.status.as_ref().and_then(|s| s.finished()) {
                        return Ok(format!("{phase:?}"));
                    }
                }
                Err(e) => {
                    tracing::debug!(payment = %op.name, error = %e, "reading the payment; retrying")
                }
            }
            let _ = ctx.record_heartbeat(()).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = ctx.cancelled() => return Err(transient("cancelled while waiting".into())),
            }
        }
    }
}

#[workflow]
#[derive(Default)]
pub struct RecurringFireWorkflow;

#[workflow_methods]
impl RecurringFireWorkflow {
    #[run(name = paysaga_api::recurring::RECURRING_FIRE_WORKFLOW)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        fire: RecurringFire,
    ) -> WorkflowResult<FireOutcome> {
        // The Schedule ends each firing's workflow ID with the time it was due.
        let due = due_from_workflow_id(ctx.workflow_id())
            .ok_or_else(|| {
                ApplicationFailure::builder(format!(
                    "workflow ID {:?} does not end with the time it was due",
                    ctx.workflow_id()
                ))
                .non_retryable(true)
                .build()
            })?
            .to_string();
        let namespace = fire.namespace.clone();
        let create = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(1))
                    .backoff_coefficient(2.0)
                    .maximum_interval(Duration::from_secs(30))
                    .maximum_attempts(20)
                    .build(),
            )
            .build();
        let payment = ctx
            .execute_activity(
                RecurringActivities::create_scheduled_payment,
                CreateScheduledOp { fire, due },
                create,
            )
            .await?;
        // A payment may wait days for a reviewer: the wait is long, and
        // heartbeats tell a crashed worker's wait from a long one.
        let wait = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(14 * 86_400))
            .heartbeat_timeout(Duration::from_secs(30))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(1))
                    .maximum_interval(Duration::from_secs(30))
                    .build(),
            )
            .build();
        let phase = ctx
            .execute_activity(
                RecurringActivities::await_payment,
                AwaitPaymentOp {
                    namespace,
                    name: payment.clone(),
                },
                wait,
            )
            .await?;
        Ok(FireOutcome { payment, phase })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_payment_is_owned_labelled_and_finalized() {
        let fire = RecurringFire {
            namespace: "shop".into(),
            name: "rent".into(),
            uid: "0d1f".into(),
            template: serde_json::from_value(serde_json::json!({
                "userId": "alice", "amount": 1000, "currency": "EUR", "method": "card"
            }))
            .unwrap(),
        };
        let p = scheduled_payment(&fire, "rent-20261202t104600z", "t".into());
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("RecurringPayment", "0d1f", Some(true))
        );
        assert_eq!(p.metadata.labels.unwrap()[RECURRING_LABEL], "rent");
        assert_eq!(p.metadata.finalizers.unwrap(), [FINALIZER]);
        assert_eq!(p.spec.amount, 1000);
        let long = RecurringFire {
            name: "r".repeat(64),
            ..fire
        };
        let p = scheduled_payment(&long, "x", "t".into());
        assert!(p.metadata.labels.unwrap().is_empty());
    }
}

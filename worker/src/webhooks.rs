//! Webhooks to merchants ([`paysaga_api::webhook`]).
//!
//! When a payment's end is recorded ([`crate::activities::SagaActivities::record_outcome`]),
//! the [`Dispatcher`] starts one [`WebhookDeliveryWorkflow`] per
//! WebhookEndpoint of the payment's namespace that subscribes to the event.
//! Its workflow ID is made of the endpoint's uid and the event's id, and is
//! never reused: a retried recording starts nothing twice. The payment does
//! not wait for any delivery.
//!
//! The delivery workflow runs [`WebhookActivities::deliver`] with exponential
//! backoff for hours (`--webhook-*` flags). Each attempt reads the endpoint
//! and its Secret again (a fixed URL or a rotated secret applies to the next
//! attempt), signs the event like the gateway's callbacks, POSTs it, and
//! writes the attempt to the endpoint's status. When every retry has failed,
//! the event is given up and the endpoint's status says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::activities::{permanent, transient};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use paysaga_api::saga::ObjectName;
use paysaga_api::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use paysaga_api::webhook::{
    DEFAULT_SECRET_KEY, DeliveryAttempt, DeliveryInput, DeliveryRetry, EVENT_ID_HEADER,
    EVENT_TYPE_HEADER, EventType, PaymentEventData, WebhookEndpoint, WebhookEvent,
    delivery_workflow_id, event_id,
};
use serde::{Deserialize, Serialize};
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdReusePolicy, WorkflowStartOptions};
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ActivityCloseTimeouts, ActivityOptions, WorkflowContext, WorkflowResult};

use crate::metrics::Metrics;

/// Failure types of a delivery that are not retried.
pub mod failure_types {
    /// The endpoint was deleted (or re-created: another uid).
    pub const ENDPOINT_GONE: &str = "EndpointGone";
    /// The endpoint no longer subscribes to the event.
    pub const UNSUBSCRIBED: &str = "Unsubscribed";
}

/// How webhooks are found and retried.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookConfig {
    /// Namespaces whose WebhookEndpoints receive the events of their
    /// payments, comma separated (the worker needs a Role in each); none when empty.
    #[arg(long, env = "PAYSAGA_WEBHOOK_NAMESPACES", default_value = "")]
    pub webhook_namespaces: String,
    /// Wait before a delivery's second attempt; it doubles from there.
    #[arg(long, env = "PAYSAGA_WEBHOOK_INITIAL_RETRY_SECS", default_value_t = 1)]
    pub webhook_initial_retry_secs: u64,
    /// The longest wait between two attempts.
    #[arg(
        long,
        env = "PAYSAGA_WEBHOOK_MAX_RETRY_INTERVAL_SECS",
        default_value_t = 3600
    )]
    pub webhook_max_retry_interval_secs: u64,
    /// How long an event is retried, from its first attempt, before it is given up.
    #[arg(
        long,
        env = "PAYSAGA_WEBHOOK_GIVE_UP_AFTER_SECS",
        default_value_t = 3 * 86_400
    )]
    pub webhook_give_up_after_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            webhook_namespaces: String::new(),
            webhook_initial_retry_secs: 1,
            webhook_max_retry_interval_secs: 3600,
            webhook_give_up_after_secs: 3 * 86_400,
        }
    }
}

impl WebhookConfig {
    pub fn namespaces(&self) -> Vec<String> {
        self.webhook_namespaces
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn retry(&self) -> DeliveryRetry {
        DeliveryRetry {
            initial_interval_secs: self.webhook_initial_retry_secs.max(1),
            maximum_interval_secs: self
                .webhook_max_retry_interval_secs
                .max(self.webhook_initial_retry_secs.max(1)),
            give_up_after_secs: self.webhook_give_up_after_secs.max(1),
        }
    }
}

/// The WebhookEndpoints of each watched namespace, kept by a watch.
#[derive(Clone)]
struct Subscriptions {
    stores: Arc<HashMap<String, Store<WebhookEndpoint>>>,
}

impl Subscriptions {
    /// Watches `namespaces` (one watch each: a Role grants one namespace).
    fn watch(client: &kube::Client, namespaces: &[String]) -> Subscriptions {
        let mut stores = HashMap::new();
        for ns in namespaces {
            let (reader, writer) = reflector::store();
            let api: Api<WebhookEndpoint> = Api::namespaced(client.clone(), ns);
            let namespace = ns.clone();
            tokio::spawn(async move {
                reflector::reflector(writer, watcher(api, watcher::Config::default()))
                    .default_backoff()
                    .for_each(|event| {
                        if let Err(e) = event {
                            tracing::warn!(namespace = %namespace, error = %e, "watching webhook endpoints");
                        }
                        std::future::ready(())
                    })
                    .await;
            });
            stores.insert(ns.clone(), reader);
        }
        Subscriptions {
            stores: Arc::new(stores),
        }
    }

    /// The live endpoints of `namespace` subscribing to `event`; none for a
    /// namespace not watched. An error while the watch has not listed yet.
    async fn of(
        &self,
        namespace: &str,
        event: EventType,
    ) -> Result<Vec<Arc<WebhookEndpoint>>, String> {
        let Some(store) = self.stores.get(namespace) else {
            return Ok(Vec::new());
        };
        tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready())
            .await
            .map_err(|_| format!("the webhook endpoints of {namespace} are not listed yet"))?
            .map_err(|e| format!("watching the webhook endpoints of {namespace}: {e}"))?;
        Ok(store
            .state()
            .into_iter()
            .filter(|e| e.metadata.deletion_timestamp.is_none())
            .filter(|e| e.spec.events.contains(&event))
            .collect())
    }
}

/// What a payment's (or a refund's) end is, for its event.
pub struct Ended<'a> {
    /// The Payment, or the Refund.
    pub object: &'a ObjectName,
    pub payment_id: &'a str,
    /// Set for a refund: the event is `refund.*`.
    pub refund_id: Option<&'a str>,
    pub user_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub phase: &'a str,
    pub reason: &'a str,
    pub request_id: Option<&'a str>,
}

/// Starts deliveries of payments' events.
pub struct Dispatcher {
    subscriptions: Subscriptions,
    client: Client,
    task_queue: String,
    retry: DeliveryRetry,
}

impl Dispatcher {
    /// Watches the configured namespaces' endpoints; `None` without any
    /// (or without Kubernetes credentials).
    pub fn new(
        kube: Option<&kube::Client>,
        config: &WebhookConfig,
        client: Client,
        task_queue: String,
    ) -> Option<Dispatcher> {
        let namespaces = config.namespaces();
        if namespaces.is_empty() {
            return None;
        }
        let Some(kube) = kube else {
            tracing::warn!("no Kubernetes credentials: webhooks are not sent");
            return None;
        };
        Some(Dispatcher {
            subscriptions: Subscriptions::watch(kube, &namespaces),
            client,
            task_queue,
            retry: config.retry(),
        })
    }

    /// Starts the delivery of `ended`'s event to each endpoint that wants
    /// it, once per endpoint and event; answers how many were started now.
    pub async fn dispatch(&self, ended: &Ended<'_>) -> Result<usize, String> {
        let type_ = match ended.refund_id {
            Some(_) => EventType::of_refund_phase(ended.phase),
            None => EventType::of_payment_phase(ended.phase),
        };
        let Some(type_) = type_ else {
            return Ok(0);
        };
        let endpoints = self
            .subscriptions
            .of(&ended.object.namespace, type_)
            .await?;
        if endpoints.is_empty() {
            return Ok(0);
        }
        let event = WebhookEvent {
            id: event_id(ended.refund_id.unwrap_or(ended.payment_id), type_),
            type_: type_.as_str().to_string(),
            created_at: format!("{:.3}", Timestamp::now()),
            data: PaymentEventData {
                namespace: ended.object.namespace.clone(),
                name: ended.object.name.clone(),
                payment_id: ended.payment_id.to_string(),
                refund_id: ended.refund_id.map(str::to_string),
                user_id: ended.user_id.to_string(),
                amount: ended.amount,
                currency: ended.currency.to_string(),
                phase: ended.phase.to_string(),
                reason: ended.reason.to_string(),
                request_id: ended.request_id.map(str::to_string),
            },
        };
        let mut started = 0;
        for endpoint in endpoints {
            let uid = endpoint.metadata.uid.clone().unwrap_or_default();
            let id = delivery_workflow_id(&uid, &event.id);
            let input = DeliveryInput {
                namespace: ended.object.namespace.clone(),
                endpoint: endpoint.metadata.name.clone().unwrap_or_default(),
                endpoint_uid: uid,
                event: event.clone(),
                retry: self.retry.clone(),
            };
            let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .build();
            match self
                .client
                .start_workflow(WebhookDeliveryWorkflow::run, input, options)
                .await
            {
                Ok(_) => {
                    started += 1;
                    tracing::info!(workflow_id = %id, event = %event.id, "webhook delivery started");
                }
                Err(WorkflowStartError::AlreadyStarted { .. }) => {}
                Err(e) => return Err(format!("starting webhook delivery {id}: {e}")),
            }
        }
        Ok(started)
    }
}

/// The given-up event, for the endpoint's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GaveUpOp {
    pub delivery: DeliveryInput,
    pub message: String,
}

/// The activities of a delivery: they read the endpoint and its Secret and
/// write its status (the worker's Role in each webhook namespace).
pub struct WebhookActivities {
    pub kube: Option<kube::Client>,
    pub http: reqwest::Client,
    pub metrics: Metrics,
}

impl WebhookActivities {
    fn client(&self) -> Result<kube::Client, ActivityError> {
        self.kube
            .clone()
            .ok_or_else(|| transient("this worker has no Kubernetes credentials".into()))
    }

    /// The endpoint, if it is still the one the event was for.
    async fn endpoint(&self, d: &DeliveryInput) -> Result<WebhookEndpoint, ActivityError> {
        let api: Api<WebhookEndpoint> = Api::namespaced(self.client()?, &d.namespace);
        let found = api.get_opt(&d.endpoint).await.map_err(|e| {
            transient(format!(
                "reading webhook endpoint {}/{}: {e}",
                d.namespace, d.endpoint
            ))
        })?;
        match found {
            Some(e)
                if e.metadata.uid.as_deref() == Some(d.endpoint_uid.as_str())
                    && e.metadata.deletion_timestamp.is_none() =>
            {
                Ok(e)
            }
            _ => Err(permanent(
                failure_types::ENDPOINT_GONE,
                format!(
                    "webhook endpoint {}/{} is gone: event {} not delivered",
                    d.namespace, d.endpoint, d.event.id
                ),
            )),
        }
    }

    async fn signing_key(&self, ns: &str, e: &WebhookEndpoint) -> Result<Vec<u8>, String> {
        let client = self
            .kube
            .clone()
            .ok_or("this worker has no Kubernetes credentials")?;
        let secrets: Api<Secret> = Api::namespaced(client, ns);
        let name = &e.spec.secret_ref.name;
        let key = e
            .spec
            .secret_ref
            .key
            .as_deref()
            .unwrap_or(DEFAULT_SECRET_KEY);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|err| format!("reading secret {name}: {err}"))?
            .ok_or_else(|| format!("secret {name} does not exist"))?;
        secret
            .data
            .and_then(|d| d.get(key).map(|v| v.0.clone()))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("secret {name} has no key {key:?}"))
    }

    /// Writes the attempt to the endpoint's status (best effort: a status
    /// that cannot be written does not change the delivery's outcome).
    async fn record(&self, d: &DeliveryInput, e: &WebhookEndpoint, attempt: DeliveryAttempt) {
        let Ok(client) = self.client() else { return };
        let api: Api<WebhookEndpoint> = Api::namespaced(client, &d.namespace);
        let old = e.status.clone().unwrap_or_default();
        let (ok, reason) = match attempt.result.as_str() {
            "delivered" => ("True", "Delivered"),
            "gaveUp" => ("False", "GaveUp"),
            _ => ("False", "Failing"),
        };
        let message = match attempt.result.as_str() {
            "delivered" => format!("delivered {} ({})", attempt.event_id, attempt.event_type),
            "gaveUp" => format!(
                "gave up on {} after {} attempts: {}",
                attempt.event_id,
                attempt.attempt,
                attempt.message.clone().unwrap_or_default()
            ),
            _ => format!(
                "attempt {} of {} failed: {}",
                attempt.attempt,
                attempt.event_id,
                attempt.message.clone().unwrap_or_default()
            ),
        };
        let previous = old.conditions.iter().find(|c| c.type_ == "Delivering");
        let since = match previous {
            Some(c) if c.status == ok => c.last_transition_time.clone(),
            _ => attempt.time.clone(),
        };
        let condition = Condition {
            type_: "Delivering".into(),
            status: ok.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: e.metadata.generation,
        };
        let mut status = serde_json::json!({
            "lastAttempt": attempt,
            "conditions": [condition],
        });
        match attempt.result.as_str() {
            "delivered" => {
                status["lastDelivered"] = serde_json::json!(attempt);
                status["delivered"] = serde_json::json!(old.delivered.unwrap_or(0) + 1);
            }
            "gaveUp" => status["lastGivenUp"] = serde_json::json!(attempt),
            _ => {}
        }
        let patch = serde_json::json!({ "status": status });
        if let Err(err) = api
            .patch_status(&d.endpoint, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::warn!(endpoint = %d.endpoint, error = %err, "could not write the webhook endpoint's status");
        }
    }
}

fn attempt(d: &DeliveryInput, n: u32, result: &str) -> DeliveryAttempt {
    DeliveryAttempt {
        event_id: d.event.id.clone(),
        event_type: d.event.type_.clone(),
        attempt: n,
        result: result.into(),
        status_code: None,
        message: None,
        time: Time(Timestamp::now()),
    }
}

#[activities]
impl WebhookActivities {
    /// One attempt to deliver the event: signed, POSTed, recorded on the
    /// endpoint. Any answer but a 2xx (or none) is retried.
    #[activity(name = "deliverWebhook")]
    pub async fn deliver(
        self: Arc<Self>,
        ctx: ActivityContext,
        d: DeliveryInput,
    ) -> Result<u16, ActivityError> {
        let endpoint = self.endpoint(&d).await?;
        let type_ = serde_json::from_value::<EventType>(serde_json::json!(d.event.type_))
            .map_err(|e| permanent(failure_types::UNSUBSCRIBED, e.to_string()))?;
        if !endpoint.spec.events.contains(&type_) {
            return Err(permanent(
                failure_types::UNSUBSCRIBED,
                format!(
                    "webhook endpoint {} no longer wants {}: event {} not delivered",
                    d.endpoint, d.event.type_, d.event.id
                ),
            ));
        }
        let mut tried = attempt(&d, ctx.info().attempt, "failed");
        let outcome = async {
            let key = self.signing_key(&d.namespace, &endpoint).await?;
            let body = serde_json::to_vec(&d.event).map_err(|e| e.to_string())?;
            let now = Timestamp::now().as_second();
            let resp = crate::activities::traced(self.http.post(&endpoint.spec.url))
                .header("content-type", "application/json")
                .header(TIMESTAMP_HEADER, now.to_string())
                .header(SIGNATURE_HEADER, sign(&key, now, &body))
                .header(EVENT_ID_HEADER, &d.event.id)
                .header(EVENT_TYPE_HEADER, &d.event.type_)
                .header(
                    paysaga_api::names::REQUEST_ID_HEADER,
                    d.event.data.request_id.as_deref().unwrap_or(&d.event.id),
                )
                .body(body)
                .send()
                .await
                .map_err(|e| format!("POST {}: {e}", endpoint.spec.url))?;
            Ok::<_, String>(resp.status().as_u16())
        }
        .await;
        let answer = match outcome {
            Ok(code) if (200..300).contains(&code) => {
                tried.result = "delivered".into();
                tried.status_code = Some(code);
                Ok(code)
            }
            Ok(code) => {
                tried.status_code = Some(code);
                tried.message = Some(format!("the receiver answered {code}"));
                Err(format!("the receiver answered {code}"))
            }
            Err(message) => {
                tried.message = Some(message.clone());
                Err(message)
            }
        };
        self.metrics.webhook_attempt(&tried.result);
        tracing::info!(
            event = %d.event.id,
            endpoint = %d.endpoint,
            attempt = tried.attempt,
            result = %tried.result,
            status_code = ?tried.status_code,
            "webhook delivery attempt"
        );
        self.record(&d, &endpoint, tried).await;
        answer.map_err(|m| transient(format!("delivering {} to {}: {m}", d.event.id, d.endpoint)))
    }

    /// Every retry failed: the endpoint's status names the event given up.
    #[activity(name = "webhookGaveUp")]
    pub async fn gave_up(
        self: Arc<Self>,
        _ctx: ActivityContext,
        op: GaveUpOp,
    ) -> Result<(), ActivityError> {
        self.metrics.webhook_attempt("gaveUp");
        let endpoint = match self.endpoint(&op.delivery).await {
            Ok(e) => e,
            // Gone since: nothing left to tell.
            Err(_) => return Ok(()),
        };
        let last = endpoint
            .status
            .as_ref()
            .and_then(|s| s.last_attempt.as_ref())
            .filter(|a| a.event_id == op.delivery.event.id)
            .map_or(0, |a| a.attempt);
        let mut given_up = attempt(&op.delivery, last, "gaveUp");
        given_up.message = Some(op.message);
        self.record(&op.delivery, &endpoint, given_up).await;
        Ok(())
    }
}

/// Delivers one event to one endpoint, retrying until it is delivered or
/// given up; answers what became of it.
#[workflow]
#[derive(Default)]
pub struct WebhookDeliveryWorkflow;

#[workflow_methods]
impl WebhookDeliveryWorkflow {
    #[run(name = paysaga_api::webhook::DELIVERY_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>, d: DeliveryInput) -> WorkflowResult<String> {
        let options =
            ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
                schedule_to_close: Duration::from_secs(d.retry.give_up_after_secs),
                start_to_close: Duration::from_secs(30),
            })
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(d.retry.initial_interval_secs))
                    .backoff_coefficient(2.0)
                    .maximum_interval(Duration::from_secs(d.retry.maximum_interval_secs))
                    .non_retryable_error_types([
                        failure_types::ENDPOINT_GONE,
                        failure_types::UNSUBSCRIBED,
                    ])
                    .build(),
            )
            .build();
        let delivered = ctx
            .execute_activity(WebhookActivities::deliver, d.clone(), options)
            .await;
        let e = match delivered {
            Ok(_) => return Ok("delivered".into()),
            Err(e) => e,
        };
        let message =
            crate::workflows::application_failure(&e).map_or_else(|| e.to_string(), |(_, m)| m);
        if matches!(
            crate::workflows::application_failure(&e),
            Some((
                Some(failure_types::ENDPOINT_GONE | failure_types::UNSUBSCRIBED),
                _
            ))
        ) {
            return Ok(format!("not delivered: {message}"));
        }
        ctx.execute_activity(
            WebhookActivities::gave_up,
            GaveUpOp {
                delivery: d,
                message,
            },
            crate::workflows::quick(),
        )
        .await?;
        Ok("gaveUp".into())
    }
}

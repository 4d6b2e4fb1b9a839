//! Event-driven wake-ups: one long poll of the workflow's history per
//! running payment. When the workflow completes a workflow task (its state,
//! and so its `status` query, may have changed) or closes, the Payment is
//! queued for reconciliation. No payment is polled on a fixed interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube::runtime::reflector::ObjectRef;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::tonic::Code;
use temporalio_client::{Client, NamespacedClient};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;
use tokio::sync::mpsc;

/// The watchers of running payments' histories.
#[derive(Clone)]
pub struct Wakeups {
    client: Client,
    tx: mpsc::Sender<ObjectRef<super::Guarded>>,
    watching: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
    /// The time of the newest change each workflow signalled, not yet
    /// reflected in status: for the change→status latency.
    changed_at: Arc<Mutex<HashMap<String, SystemTime>>>,
}

impl Wakeups {
    pub fn new(client: Client) -> (Wakeups, mpsc::Receiver<ObjectRef<super::Guarded>>) {
        let (tx, rx) = mpsc::channel(4096);
        let w = Wakeups {
            client,
            tx,
            watching: Arc::default(),
            changed_at: Arc::default(),
        };
        (w, rx)
    }

    /// How many histories are being watched.
    pub fn count(&self) -> usize {
        self.watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Watches `workflow_id` (once) and wakes `obj` on each change.
    pub fn ensure(&self, workflow_id: &str, obj: ObjectRef<super::Guarded>) {
        let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        if watching.contains_key(workflow_id) {
            return;
        }
        let this = self.clone();
        let id = workflow_id.to_string();
        let task = tokio::spawn(async move {
            this.watch(&id, obj).await;
            this.watching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
        watching.insert(workflow_id.to_string(), task.abort_handle());
    }

    /// When the workflow last changed, if a change is pending; clears it.
    pub fn take_changed_at(&self, workflow_id: &str) -> Option<SystemTime> {
        self.changed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(workflow_id)
    }

    /// Stops watching (the payment is gone or finished).
    pub fn forget(&self, workflow_id: &str) {
        if let Some(h) = self
            .watching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(workflow_id)
        {
            h.abort();
        }
    }

    async fn watch(&self, workflow_id: &str, obj: ObjectRef<super::Guarded>) {
        let mut client = self.client.clone();
        let mut token = Vec::new();
        let mut backoff = Duration::from_millis(200);
        loop {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: client.namespace(),
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: String::new(),
                }),
                next_page_token: token.clone(),
                wait_new_event: true,
                ..Default::default()
            };
            let response = match WorkflowService::get_workflow_execution_history(
                &mut client,
                temporalio_client::tonic::Request::new(request),
            )
            .await
            {
                Ok(r) => r.into_inner(),
                Err(status) if status.code() == Code::NotFound => return,
                Err(status) => {
                    tracing::debug!(workflow_id, error = %status, "history long poll failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let events = response.history.map(|h| h.events).unwrap_or_default();
            let changed = events.iter().rev().find(|e| {
                matches!(
                    EventType::try_from(e.event_type),
                    Ok(EventType::WorkflowTaskCompleted
                        | EventType::WorkflowExecutionCompleted
                        | EventType::WorkflowExecutionFailed
                        | EventType::WorkflowExecutionTerminated
                        | EventType::WorkflowExecutionCanceled
                        | EventType::WorkflowExecutionTimedOut
                        | EventType::WorkflowExecutionContinuedAsNew)
                )
            });
            if let Some(event) = changed {
                let at = event
                    .event_time
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .unwrap_or_else(SystemTime::now);
                self.changed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(workflow_id.to_string())
                    .or_insert(at);
                if self.tx.send(obj.clone()).await.is_err() {
                    return;
                }
            }
            if response.next_page_token.is_empty() {
                // The history is complete: the workflow has closed.
                let _ = self.tx.send(obj.clone()).await;
                return;
            }
            token = response.next_page_token;
        }
    }
}

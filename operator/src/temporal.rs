//! The operator's view of the payment workflows in Temporal: start, observe,
//! signal — by name, without depending on the worker crate.

use std::time::SystemTime;

use paysaga_api::external::GatewayCallback;
use paysaga_api::names::REQUEST_ID_MEMO;
use paysaga_api::saga::{
    CancelRequest, ExpediteRequest, PAYMENT_WORKFLOW, PaymentInput, PaymentOutcome,
    PaymentProgress, QUERY_STATUS, REFUND_WORKFLOW, RefundInput, RefundOutcome, ReviewDecision,
    SIGNAL_CANCEL, SIGNAL_EXPEDITE, SIGNAL_GATEWAY_CALLBACK, SIGNAL_REVIEW,
};
use temporalio_client::errors::{
    WorkflowGetResultError, WorkflowInteractionError, WorkflowQueryError, WorkflowStartError,
};
use temporalio_client::{
    Client, UntypedQuery, UntypedSignal, UntypedWorkflow, WorkflowDescribeOptions,
    WorkflowExecutionStatus, WorkflowGetResultOptions, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::data_converters::{PayloadConverter, RawValue, TemporalSerializable};

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No such workflow, or it has finished.
    #[error("no running workflow {0}")]
    NotFound(String),
    #[error("failed to signal workflow {id}: {source}")]
    Temporal {
        id: String,
        #[source]
        source: WorkflowInteractionError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    #[error("failed to start workflow {id}: {source}")]
    Start {
        id: String,
        #[source]
        source: WorkflowStartError,
    },
    #[error("failed to describe workflow {id}: {source}")]
    Describe {
        id: String,
        #[source]
        source: WorkflowInteractionError,
    },
    #[error("failed to query workflow {id}: {source}")]
    Query {
        id: String,
        #[source]
        source: WorkflowQueryError,
    },
    #[error("failed to read the result of workflow {id}: {source}")]
    Result {
        id: String,
        #[source]
        source: WorkflowGetResultError,
    },
    #[error("workflow {id} answered something unreadable: {source}")]
    Decode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What starting a payment's workflow did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new run.
    New { run_id: String },
    /// The workflow ID was taken already (a restart, a second replica, a
    /// requeue): nothing was started, no money moves twice.
    Existing,
}

/// A payment's workflow as Temporal sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Never started.
    Absent,
    /// Finished, as the Payment's status already records (a terminal phase
    /// with its completion time): Temporal was not asked again.
    Recorded,
    Running {
        run_id: String,
        started_at: Option<SystemTime>,
        /// The newest progress: as published in the memo (the followed
        /// history), or the `status` query's answer; `None` until a worker
        /// has told any.
        progress: Option<PaymentProgress>,
    },
    /// Finished. `outcome` is `None` when the workflow did not return one
    /// (terminated, failed, timed out); `status` says which.
    Closed {
        run_id: String,
        started_at: Option<SystemTime>,
        closed_at: Option<SystemTime>,
        status: WorkflowExecutionStatus,
        outcome: Option<PaymentOutcome>,
    },
}

/// A refund's workflow as Temporal sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRun {
    Absent,
    Running {
        started_at: Option<SystemTime>,
    },
    Closed {
        started_at: Option<SystemTime>,
        closed_at: Option<SystemTime>,
        status: WorkflowExecutionStatus,
        outcome: Option<RefundOutcome>,
    },
}

/// The workflow `id` as Temporal describes it; `None` when there is none.
async fn describe(
    handle: &temporalio_client::WorkflowHandle<Client, UntypedWorkflow>,
    id: &str,
) -> Result<Option<temporalio_client::WorkflowExecutionDescription>, TemporalError> {
    match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) => Ok(Some(d)),
        Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
        Err(source) => Err(TemporalError::Describe {
            id: id.to_string(),
            source,
        }),
    }
}

/// Payment workflows, addressed by workflow ID.
#[derive(Clone)]
pub struct PaymentWorkflows {
    client: Client,
    converter: PayloadConverter,
}

fn decode<T: serde::de::DeserializeOwned>(id: &str, raw: &RawValue) -> Result<T, TemporalError> {
    let data = raw
        .payloads
        .first()
        .map(|p| p.data.as_slice())
        .unwrap_or(b"null");
    serde_json::from_slice(data).map_err(|source| TemporalError::Decode {
        id: id.to_string(),
        source,
    })
}

impl PaymentWorkflows {
    pub fn new(client: Client) -> Self {
        PaymentWorkflows {
            client,
            converter: PayloadConverter::default(),
        }
    }

    /// Starts the payment's workflow on `task_queue`. The workflow ID is the
    /// payment ID and may never be reused, even after the run has finished:
    /// a second start is refused by Temporal and reported as `Existing`.
    pub async fn start(
        &self,
        input: &PaymentInput,
        task_queue: &str,
    ) -> Result<Started, TemporalError> {
        // The request that made the payment, in the memo: `temporal workflow
        // describe` (with the codec) and the UI show it beside the run.
        let memo = input.request_id.as_ref().map(|id| {
            let mut memo = temporalio_common::MemoValues::new();
            memo.insert(REQUEST_ID_MEMO, id.clone());
            memo
        });
        self.start_once(PAYMENT_WORKFLOW, &input.payment_id, input, task_queue, memo)
            .await
    }

    /// Starts a refund's workflow, once per ID (as [`Self::start`]).
    pub async fn start_refund(
        &self,
        input: &RefundInput,
        task_queue: &str,
    ) -> Result<Started, TemporalError> {
        self.start_once(REFUND_WORKFLOW, &input.refund_id, input, task_queue, None)
            .await
    }

    async fn start_once<T: TemporalSerializable + 'static>(
        &self,
        workflow_type: &str,
        id: &str,
        input: &T,
        task_queue: &str,
        memo: Option<temporalio_common::MemoValues>,
    ) -> Result<Started, TemporalError> {
        let options = WorkflowStartOptions::new(task_queue.to_string(), id.to_string())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .maybe_memo(memo)
            .build();
        let raw = RawValue::from_value(input, &self.converter);
        match paysaga_common::telemetry::in_current_context(self.client.start_workflow(
            UntypedWorkflow::new(workflow_type),
            raw,
            options,
        ))
        .await
        {
            Ok(handle) => Ok(Started::New {
                run_id: handle.run_id().unwrap_or_default().to_string(),
            }),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(Started::Existing),
            Err(source) => Err(TemporalError::Start {
                id: id.to_string(),
                source,
            }),
        }
    }

    /// Where a refund's workflow is: absent, running, or closed with its
    /// outcome (`None` when it returned none).
    pub async fn observe_refund(&self, id: &str) -> Result<RefundRun, TemporalError> {
        let handle = self.client.get_workflow_handle::<UntypedWorkflow>(id);
        let Some(described) = describe(&handle, id).await? else {
            return Ok(RefundRun::Absent);
        };
        let started_at = described.start_time();
        match described.status() {
            WorkflowExecutionStatus::Running => Ok(RefundRun::Running { started_at }),
            WorkflowExecutionStatus::Completed => {
                let raw = handle
                    .get_result(WorkflowGetResultOptions::default())
                    .await
                    .map_err(|source| TemporalError::Result {
                        id: id.to_string(),
                        source,
                    })?;
                Ok(RefundRun::Closed {
                    started_at,
                    closed_at: described.close_time(),
                    status: WorkflowExecutionStatus::Completed,
                    outcome: Some(decode::<RefundOutcome>(id, &raw)?),
                })
            }
            status => Ok(RefundRun::Closed {
                started_at,
                closed_at: described.close_time(),
                status,
                outcome: None,
            }),
        }
    }

    /// Waits (long-polling Temporal) until the workflow `id` has closed, in
    /// whatever way.
    pub async fn closed(&self, id: &str) -> Result<(), TemporalError> {
        let handle = self.client.get_workflow_handle::<UntypedWorkflow>(id);
        match handle.get_result(WorkflowGetResultOptions::default()).await {
            Ok(_)
            | Err(
                WorkflowGetResultError::Failed(_)
                | WorkflowGetResultError::Cancelled { .. }
                | WorkflowGetResultError::Terminated { .. }
                | WorkflowGetResultError::TimedOut
                | WorkflowGetResultError::ContinuedAsNew,
            ) => Ok(()),
            Err(source) => Err(TemporalError::Result {
                id: id.to_string(),
                source,
            }),
        }
    }

    /// Where the payment's workflow is.
    pub async fn observe(&self, id: &str) -> Result<Observation, TemporalError> {
        let handle = self.client.get_workflow_handle::<UntypedWorkflow>(id);
        let Some(described) = describe(&handle, id).await? else {
            return Ok(Observation::Absent);
        };
        let run_id = described.run_id().to_string();
        let started_at = described.start_time();
        match described.status() {
            WorkflowExecutionStatus::Running => {
                let progress = match handle
                    .query(
                        UntypedQuery::new(QUERY_STATUS),
                        RawValue::from_value(&(), &self.converter),
                        WorkflowQueryOptions::default(),
                    )
                    .await
                {
                    Ok(raw) => Some(decode::<PaymentProgress>(id, &raw)?),
                    Err(source) => {
                        // No worker has picked it up yet, or none is up:
                        // running, progress unknown.
                        tracing::debug!(workflow_id = id, error = %source, "status query not answered");
                        None
                    }
                };
                Ok(Observation::Running {
                    run_id,
                    started_at,
                    progress,
                })
            }
            status => {
                let outcome = if status == WorkflowExecutionStatus::Completed {
                    let raw = handle
                        .get_result(WorkflowGetResultOptions::default())
                        .await
                        .map_err(|source| TemporalError::Result {
                            id: id.to_string(),
                            source,
                        })?;
                    Some(decode::<PaymentOutcome>(id, &raw)?)
                } else {
                    None
                };
                Ok(Observation::Closed {
                    run_id,
                    started_at,
                    closed_at: described.close_time(),
                    status,
                    outcome,
                })
            }
        }
    }

    async fn signal<T: TemporalSerializable + 'static>(
        &self,
        workflow_id: &str,
        signal: &str,
        payload: &T,
    ) -> Result<(), SignalError> {
        let handle = self
            .client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id);
        let input = RawValue::from_value(payload, &self.converter);
        paysaga_common::telemetry::in_current_context(handle.signal(
            UntypedSignal::new(signal),
            input,
            WorkflowSignalOptions::default(),
        ))
        .await
        .map_err(|source| match source {
            WorkflowInteractionError::NotFound(_) => SignalError::NotFound(workflow_id.to_string()),
            source => SignalError::Temporal {
                id: workflow_id.to_string(),
                source,
            },
        })
    }

    /// Whether Temporal answers (describing a workflow that does not exist).
    pub async fn ping(&self) -> Result<(), WorkflowInteractionError> {
        let handle = self
            .client
            .get_workflow_handle::<UntypedWorkflow>("paysaga-readiness-probe");
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(_) | Err(WorkflowInteractionError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delivers a verified gateway confirmation to its payment's workflow.
    pub async fn gateway_callback(&self, cb: &GatewayCallback) -> Result<(), SignalError> {
        self.signal(&cb.payment_id, SIGNAL_GATEWAY_CALLBACK, cb)
            .await
    }

    /// Asks a payment's workflow to cancel.
    pub async fn cancel(&self, workflow_id: &str, reason: &str) -> Result<(), SignalError> {
        let req = CancelRequest {
            reason: reason.to_string(),
        };
        self.signal(workflow_id, SIGNAL_CANCEL, &req).await
    }

    /// A reviewer's answer to a payment in manual review.
    pub async fn review(&self, workflow_id: &str, d: &ReviewDecision) -> Result<(), SignalError> {
        self.signal(workflow_id, SIGNAL_REVIEW, d).await
    }

    /// Asks a payment's workflow to stop waiting now.
    pub async fn expedite(
        &self,
        workflow_id: &str,
        req: &ExpediteRequest,
    ) -> Result<(), SignalError> {
        self.signal(workflow_id, SIGNAL_EXPEDITE, req).await
    }
}

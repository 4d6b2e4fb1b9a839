//! The operator's view of the payment workflows in Temporal: signals (and,
//! later, starts and queries) by name, without depending on the worker crate.

use paysaga_api::external::GatewayCallback;
use paysaga_api::saga::{CancelRequest, SIGNAL_CANCEL, SIGNAL_GATEWAY_CALLBACK};
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, UntypedSignal, UntypedWorkflow, WorkflowSignalOptions};
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

/// Payment workflows, addressed by workflow ID.
#[derive(Clone)]
pub struct PaymentWorkflows {
    client: Client,
    converter: PayloadConverter,
}

impl PaymentWorkflows {
    pub fn new(client: Client) -> Self {
        PaymentWorkflows {
            client,
            converter: PayloadConverter::default(),
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
        handle
            .signal(
                UntypedSignal::new(signal),
                input,
                WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|source| match source {
                WorkflowInteractionError::NotFound(_) => {
                    SignalError::NotFound(workflow_id.to_string())
                }
                source => SignalError::Temporal {
                    id: workflow_id.to_string(),
                    source,
                },
            })
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
}

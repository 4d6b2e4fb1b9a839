//! The workflow input for a Payment object.

use paysaga_api::Payment;
use paysaga_api::names::{REQUEST_ID_LABEL, REQUESTED_BY_ANNOTATION, workflow_id};
use paysaga_api::saga::{DEFAULT_COMPENSATION_ATTEMPTS, ObjectName, PaymentInput};

use super::Settings;

pub fn workflow_input(p: &Payment, settings: &Settings) -> PaymentInput {
    PaymentInput {
        payment_id: workflow_id(&p.metadata),
        user_id: p.spec.user_id.clone(),
        amount: p.spec.amount,
        currency: p.spec.currency.clone(),
        method: p.spec.method,
        description: p.spec.description.clone(),
        notify: p.spec.notify.clone(),
        confirmation_timeout_secs: settings.confirmation_timeout_secs,
        fraud_task_queue: settings.fraud_task_queue.clone(),
        compensation_max_attempts: DEFAULT_COMPENSATION_ATTEMPTS,
        escalation: settings.escalation.clone(),
        requested_by: p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REQUESTED_BY_ANNOTATION))
            .cloned(),
        request_id: p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REQUEST_ID_LABEL))
            .cloned(),
        object: Some(ObjectName {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
        }),
    }
}

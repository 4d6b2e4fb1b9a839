//! `RefundWorkflow`: money back from a payment that succeeded. Reserve in
//! the ledger (the payment succeeded, for this payer and currency, and this
//! refund with the earlier ones stays within what was captured), refund at
//! the gateway, credit the payer, tell them. A refusal before the gateway
//! moved money releases the reservation: nothing moves. Once the gateway has
//! refunded, the credit must happen, and is retried until it does.

use std::time::Duration;

use paysaga_api::RefundPhase;
use paysaga_api::saga::{RefundInput, RefundOutcome, refund_reasons};
use temporalio_common::RetryPolicy;
use temporalio_common::error::IncomingError;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext, WorkflowResult};

use crate::activities::{
    ChargeRefundOp, CompleteRefundOp, NotifyOp, ReleaseRefundOp, SagaActivities, failure_types,
};
use crate::ledger::{RefundClaim, RefundState};
use crate::workflows::{format_amount, quick};

/// The gateway's refund: transient faults (5xx, timeouts) retried with
/// backoff, with the same key, for as long as it takes: an unanswered
/// refund may have been made, so it is never given up as "nothing
/// refunded". Every refusal is permanent.
fn gateway_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .maximum_attempts(0)
                .non_retryable_error_types([failure_types::GATEWAY_REFUSED])
                .build(),
        )
        .build()
}

/// What must happen, ledger work whose refusals are permanent: the
/// reservation (a database fault must not read as a refusal), the credit
/// once the gateway refunded, the release once it refused. Retried until it
/// does.
fn must_happen() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .maximum_attempts(0)
                .build(),
        )
        .build()
}

fn failed(reason: &str, message: String) -> RefundOutcome {
    RefundOutcome {
        phase: RefundPhase::Failed,
        reason: reason.to_string(),
        message,
        gateway_refund_id: None,
        payment_refunded_amount: None,
    }
}

/// The refund's reason for a refusal (the non-retryable type name) and its
/// message.
fn refusal(e: &ActivityExecutionError, fallback: &'static str) -> (String, String) {
    match e.cause() {
        Some(IncomingError::Application(af)) => (
            af.type_name().unwrap_or(fallback).to_string(),
            af.source_error().to_string(),
        ),
        _ => (fallback.to_string(), e.to_string()),
    }
}

/// The refund's webhook facts, when a controller started it (its input
/// names the Refund object).
fn refund_event(input: &RefundInput) -> Option<crate::activities::RefundEvent> {
    input
        .object
        .clone()
        .map(|object| crate::activities::RefundEvent {
            object,
            payment_id: input.payment_id.clone(),
            user_id: input.user_id.clone(),
            amount: input.amount,
            currency: input.currency.clone(),
            request_id: input.request_id.clone(),
        })
}

#[workflow]
#[derive(Default)]
pub struct RefundWorkflow;

#[workflow_methods]
impl RefundWorkflow {
    #[run(name = paysaga_api::saga::REFUND_WORKFLOW)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RefundInput,
    ) -> WorkflowResult<RefundOutcome> {
        let amount = format_amount(input.amount, &input.currency);
        let claim = RefundClaim {
            refund_id: input.refund_id.clone(),
            payment_id: input.payment_id.clone(),
            user_id: input.user_id.clone(),
            currency: input.currency.clone(),
            amount: input.amount,
        };
        match ctx
            .execute_activity(SagaActivities::reserve_refund, claim, must_happen())
            .await
        {
            Ok(RefundState::Reserved) => {}
            // A new run of a refund the ledger already settled (its ID is
            // the workflow's, which Temporal never reuses): say what it holds.
            Ok(RefundState::Succeeded {
                gateway_refund_id,
                payment_refunded,
            }) => {
                return Ok(RefundOutcome {
                    phase: RefundPhase::Succeeded,
                    reason: refund_reasons::REFUNDED.to_string(),
                    message: format!("{amount} refunded (recorded earlier)"),
                    gateway_refund_id,
                    payment_refunded_amount: Some(payment_refunded),
                });
            }
            Ok(RefundState::Failed { reason }) => {
                return Ok(failed(
                    refund_reasons::GATEWAY_REFUSED,
                    format!("failed earlier: {reason}"),
                ));
            }
            Err(e) => {
                let (reason, message) = refusal(&e, refund_reasons::PAYMENT_NOT_SUCCEEDED);
                return Ok(failed(&reason, format!("nothing refunded: {message}")));
            }
        }

        let op = ChargeRefundOp {
            refund_id: input.refund_id.clone(),
            payment_id: input.payment_id.clone(),
            charge_id: input.charge_id.clone(),
            amount: input.amount,
            currency: input.currency.clone(),
        };
        let gateway_refund_id = match ctx
            .execute_activity(SagaActivities::refund_charge, op, gateway_options())
            .await
        {
            Ok(id) => id,
            // Only a refusal ends here (anything else is retried): nothing
            // was refunded, so the reservation is given up.
            Err(e) => {
                let (reason, message) = refusal(&e, refund_reasons::GATEWAY_REFUSED);
                let release = ReleaseRefundOp {
                    refund_id: input.refund_id.clone(),
                    reason: message.clone(),
                    event: refund_event(&input),
                };
                ctx.execute_activity(SagaActivities::release_refund, release, must_happen())
                    .await?;
                return Ok(failed(
                    &reason,
                    format!("nothing refunded or credited: {message}"),
                ));
            }
        };

        let complete = CompleteRefundOp {
            refund_id: input.refund_id.clone(),
            gateway_refund_id: gateway_refund_id.clone(),
            event: refund_event(&input),
        };
        let total = ctx
            .execute_activity(SagaActivities::complete_refund, complete, must_happen())
            .await?;

        let notify = NotifyOp {
            payment_id: input.refund_id.clone(),
            notify: input.notify.clone(),
            subject: format!("Refund of {amount}"),
            body: format!(
                "{amount} of your payment is on its way back to you (refund {gateway_refund_id})."
            ),
            purpose: None,
            request_id: None,
        };
        // Telling the payer is best effort: the money has moved either way.
        let told = ctx
            .execute_activity(SagaActivities::notify, notify, quick())
            .await;
        let message = match told {
            Ok(_) => format!("{amount} refunded and credited"),
            Err(e) => format!("{amount} refunded and credited; telling the payer failed: {e}"),
        };
        Ok(RefundOutcome {
            phase: RefundPhase::Succeeded,
            reason: refund_reasons::REFUNDED.to_string(),
            message,
            gateway_refund_id: Some(gateway_refund_id),
            payment_refunded_amount: Some(total),
        })
    }
}

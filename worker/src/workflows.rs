//! The payment saga and its fraud-check child. Orchestration only: all I/O is
//! in activities; time, timers, selection and joins come from the SDK, so
//! every replay takes the same path.

use std::time::Duration;

use paysaga_api::external::{CallbackOutcome, GatewayCallback};
use paysaga_api::saga::{
    CancelRequest, FraudCheckInput, FraudVerdict, PaymentInput, PaymentOutcome, PaymentProgress,
    StepEvent, StepRecord, fraud_workflow_id, reasons,
};
use paysaga_api::{Phase, Step};
use temporalio_common::MemoValue;
use temporalio_common::RetryPolicy;
use temporalio_common::error::IncomingError;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, CancellableFuture, ChildWorkflowOptions,
    SyncWorkflowContext, WorkflowCancellationToken, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

use crate::activities::{
    AccountOp, ChargeOp, FraudActivities, NotifyOp, OutcomeOp, SagaActivities, failure_types,
};

/// Scores at or above this are rejected as fraud.
pub const FRAUD_REJECT_THRESHOLD: u32 = 80;

// ---- activity options -------------------------------------------------------------

/// Ledger and notification calls: short, retried on transient faults.
fn quick() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(10)
                .build(),
        )
        .build()
}

/// The gateway charge: exponential backoff on transient faults; a decline is
/// non-retryable (and so is every other permanent refusal).
fn charge_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(8)
                .non_retryable_error_types([failure_types::DECLINED, failure_types::BAD_REQUEST])
                .build(),
        )
        .build()
}

/// Compensations: they must happen, so they retry for long and are detached
/// from the workflow's cancellation (they still run while it is cancelled).
fn compensation_options(max_attempts: u32) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(max_attempts.max(1))
                .build(),
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Like [`quick`], but detached from cancellation: the end of a cancelled saga.
fn detached(mut opts: ActivityOptions) -> ActivityOptions {
    opts.cancellation_token = Some(WorkflowCancellationToken::new());
    opts
}

// ---- state ---------------------------------------------------------------------------

/// What the saga knows; queried as [`PaymentProgress`].
#[derive(Debug, Clone, Default)]
pub struct SagaState {
    phase: Option<Phase>,
    step: Option<Step>,
    reason: Option<String>,
    message: Option<String>,
    history: Vec<StepRecord>,
    callback: Option<GatewayCallback>,
    duplicate_callbacks: u32,
    cancel: Option<CancelRequest>,
}

impl SagaState {
    pub(crate) fn progress(&self) -> PaymentProgress {
        PaymentProgress {
            phase: self.phase.unwrap_or(Phase::Pending),
            step: self.step.unwrap_or(Step::ValidateAccount),
            reason: self.reason.clone(),
            message: self.message.clone(),
            history: self.history.clone(),
        }
    }

    pub(crate) fn request_cancel(&mut self, req: CancelRequest) {
        if self.cancel.is_none() {
            self.cancel = Some(req);
        }
    }

    pub(crate) fn accept_callback(&mut self, expected_payment: &str, cb: GatewayCallback) {
        if cb.payment_id != expected_payment {
            return;
        }
        if self.callback.is_some() {
            // The gateway may deliver more than once; the first one counts.
            self.duplicate_callbacks += 1;
        } else {
            self.callback = Some(cb);
        }
    }
}

/// Why the forward path stopped.
#[derive(Debug, Clone)]
enum Stop {
    Failed {
        reason: &'static str,
        message: String,
    },
    Cancelled {
        message: String,
    },
}

/// A registered compensation, run in reverse order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compensation {
    Credit,
    Refund,
}

// ---- PaymentWorkflow -------------------------------------------------------------------

/// Patch: record the payment as accepted in the ledger before anything else,
/// so the audit sees a payment from its first moment (not only once money
/// moved). Histories recorded before it replay without it.
pub const PATCH_RECORD_ACCEPTED: &str = "record-accepted";

/// Patch: a compensation that fails after its retries no longer stops the
/// ones after it.
pub const PATCH_COMPENSATE_ALL: &str = "compensate-all";

/// Patch: publish progress in the memo ([`paysaga_api::saga::PROGRESS_MEMO`])
/// when the step changes, so the controller follows the history instead of
/// querying the worker.
pub const PATCH_PROGRESS_MEMO: &str = "progress-memo";

#[workflow]
#[derive(Default)]
pub struct PaymentWorkflow {
    state: SagaState,
    payment_id: String,
}

#[workflow_methods]
impl PaymentWorkflow {
    #[run(name = paysaga_api::saga::PAYMENT_WORKFLOW)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: PaymentInput,
    ) -> WorkflowResult<PaymentOutcome> {
        run_saga(ctx, &input).await
    }

    /// The gateway's verified confirmation. Duplicates are counted and ignored.
    #[signal(name = paysaga_api::saga::SIGNAL_GATEWAY_CALLBACK)]
    pub fn gateway_callback(&mut self, _ctx: &mut SyncWorkflowContext<Self>, cb: GatewayCallback) {
        let id = self.payment_id.clone();
        self.state.accept_callback(&id, cb);
    }

    /// Asks for the payment to be cancelled; acted on at the next safe point.
    #[signal(name = paysaga_api::saga::SIGNAL_CANCEL)]
    pub fn cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, req: CancelRequest) {
        self.state.request_cancel(req);
    }

    #[query(name = paysaga_api::saga::QUERY_STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> PaymentProgress {
        self.state.progress()
    }
}

/// Runs the saga.
async fn run_saga(
    ctx: &mut WorkflowContext<PaymentWorkflow>,
    input: &PaymentInput,
) -> WorkflowResult<PaymentOutcome> {
    ctx.state_mut(|w| w.payment_id = input.payment_id.clone());
    Saga {
        ctx,
        input,
        publish_progress: false,
    }
    .run()
    .await
}

/// The saga's body, over the workflow's context.
struct Saga<'a> {
    ctx: &'a mut WorkflowContext<PaymentWorkflow>,
    input: &'a PaymentInput,
    /// Whether step changes are published in the memo ([`PATCH_PROGRESS_MEMO`]).
    publish_progress: bool,
}

impl Saga<'_> {
    fn now_ms(&self) -> i64 {
        self.ctx
            .workflow_time()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }

    fn record(&self, step: Step, event: StepEvent, detail: Option<String>) {
        let at_ms = self.now_ms();
        self.ctx.state_mut(|w| {
            if event == StepEvent::Started {
                w.state.step = Some(step);
            }
            w.state.history.push(StepRecord {
                step,
                event,
                at_ms,
                detail,
            });
        });
        // One upsert per step change is one per workflow task or so: a step
        // completes in the same task as the next one starts. The fraud
        // verdict arrives on its own, so it is published on its own.
        if self.publish_progress && (event == StepEvent::Started || step == Step::FraudCheck) {
            self.publish();
        }
    }

    /// Upserts the progress memo. A payload that cannot be encoded is a bug
    /// of ours, not the payment's: it is logged and the saga goes on (the
    /// status query and the result still tell the truth).
    fn publish(&self) {
        let progress = self.ctx.state(|w| w.state.progress());
        if let Err(e) = self.ctx.upsert_memo([(
            paysaga_api::saga::PROGRESS_MEMO,
            Some(MemoValue::new(progress)),
        )]) {
            tracing::error!(payment_id = %self.input.payment_id, error = %e, "could not publish progress");
        }
    }

    fn cancel_requested(&self) -> Option<String> {
        self.ctx
            .state(|w| w.state.cancel.as_ref().map(|c| c.reason.clone()))
    }

    fn check_cancel(&self) -> Result<(), Stop> {
        match self.cancel_requested() {
            Some(reason) => Err(Stop::Cancelled {
                message: format!("cancelled: {reason}"),
            }),
            None => Ok(()),
        }
    }

    fn account_op(&self) -> AccountOp {
        AccountOp {
            payment_id: self.input.payment_id.clone(),
            user_id: self.input.user_id.clone(),
            currency: self.input.currency.clone(),
            amount: self.input.amount,
        }
    }

    fn charge_op(&self) -> ChargeOp {
        ChargeOp {
            payment_id: self.input.payment_id.clone(),
            amount: self.input.amount,
            currency: self.input.currency.clone(),
            method: self.input.method,
        }
    }

    async fn run(mut self) -> WorkflowResult<PaymentOutcome> {
        self.ctx
            .state_mut(|w| w.state.phase = Some(Phase::Processing));
        let record_accepted = self.ctx.patched(PATCH_RECORD_ACCEPTED);
        self.publish_progress = self.ctx.patched(PATCH_PROGRESS_MEMO);
        if record_accepted {
            self.record_outcome(Phase::Processing, "Accepted").await;
        }
        let mut compensations = Vec::new();
        let forward = self.forward(&mut compensations).await;
        let outcome = match forward {
            Ok(charge_id) => {
                let amount = format_amount(self.input.amount, &self.input.currency);
                self.notify(
                    format!("Payment of {amount} succeeded"),
                    format!(
                        "Your payment {} of {amount} went through.",
                        self.input.payment_id
                    ),
                )
                .await;
                PaymentOutcome {
                    phase: Phase::Succeeded,
                    reason: reasons::CONFIRMED.to_string(),
                    message: "the gateway confirmed the charge".to_string(),
                    charge_id: Some(charge_id),
                    history: Vec::new(),
                }
            }
            Err(stop) => {
                let (phase, reason, message) = match stop {
                    Stop::Failed { reason, message } => (Phase::Failed, reason, message),
                    Stop::Cancelled { message } => (Phase::Cancelled, reasons::CANCELLED, message),
                };
                let (phase, reason, message) = match self.compensate(&compensations).await {
                    Ok(()) => (phase, reason.to_string(), message),
                    // Money may be held: say so loudly, as a failure of its own.
                    Err(why) => (
                        Phase::Failed,
                        reasons::COMPENSATION_FAILED.to_string(),
                        format!("{message}; compensation failed: {why}"),
                    ),
                };
                let verb = if phase == Phase::Cancelled {
                    "was cancelled"
                } else {
                    "failed"
                };
                // Never tell the payer nothing was taken when a compensation failed.
                let settled = if reason == reasons::COMPENSATION_FAILED {
                    "We are checking your account and will be in touch."
                } else {
                    "Nothing was taken."
                };
                self.notify(
                    format!("Payment {verb}"),
                    format!(
                        "Your payment {} {verb}: {message}. {settled}",
                        self.input.payment_id
                    ),
                )
                .await;
                PaymentOutcome {
                    phase,
                    reason,
                    message,
                    charge_id: None,
                    history: Vec::new(),
                }
            }
        };
        self.finish(&outcome).await;
        let history = self.ctx.state(|w| w.state.history.clone());
        Ok(PaymentOutcome { history, ..outcome })
    }

    /// Validate → fraud check (child, in parallel) → debit → charge → wait for
    /// the confirmation and the fraud verdict. Returns the charge ID.
    async fn forward(&self, compensations: &mut Vec<Compensation>) -> Result<String, Stop> {
        let ctx = &*self.ctx;
        let input = self.input;

        // 1. Validate the account.
        self.record(Step::ValidateAccount, StepEvent::Started, None);
        if let Err(e) = ctx
            .execute_activity(SagaActivities::validate_account, self.account_op(), quick())
            .await
        {
            let (reason, message) = failure(&e, reasons::ACCOUNT_INVALID);
            self.record(
                Step::ValidateAccount,
                StepEvent::Failed,
                Some(message.clone()),
            );
            return Err(Stop::Failed { reason, message });
        }
        self.record(Step::ValidateAccount, StepEvent::Completed, None);
        self.check_cancel()?;

        // 2. The fraud check runs as a child on its own queue, in parallel.
        self.record(Step::FraudCheck, StepEvent::Started, None);
        let fraud_input = FraudCheckInput {
            payment_id: input.payment_id.clone(),
            user_id: input.user_id.clone(),
            amount: input.amount,
            currency: input.currency.clone(),
            method: input.method,
        };
        let child = ctx
            .start_child_workflow(
                FraudCheckWorkflow::run,
                fraud_input,
                ChildWorkflowOptions::builder()
                    .workflow_id(fraud_workflow_id(&input.payment_id))
                    .task_queue(input.fraud_task_queue.clone())
                    .build(),
            )
            .await
            .map_err(|e| {
                let message = format!("could not start the fraud check: {e}");
                self.record(Step::FraudCheck, StepEvent::Failed, Some(message.clone()));
                Stop::Failed {
                    reason: reasons::FRAUD_CHECK_FAILED,
                    message,
                }
            })?;
        let mut verdict = child.result();

        // 3. Debit. The credit is registered first: a debit that timed out
        // may still have happened.
        self.record(Step::Debit, StepEvent::Started, None);
        compensations.push(Compensation::Credit);
        if let Err(e) = ctx
            .execute_activity(SagaActivities::debit, self.account_op(), quick())
            .await
        {
            let (reason, message) = failure(&e, reasons::ACCOUNT_INVALID);
            self.record(Step::Debit, StepEvent::Failed, Some(message.clone()));
            return Err(Stop::Failed { reason, message });
        }
        self.record(Step::Debit, StepEvent::Completed, None);
        self.check_cancel()?;

        // 4. Charge through the gateway; the refund is registered first.
        self.record(Step::Charge, StepEvent::Started, None);
        compensations.push(Compensation::Refund);
        let receipt = match ctx
            .execute_activity(SagaActivities::charge, self.charge_op(), charge_options())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let (reason, message) = failure(&e, reasons::GATEWAY_FAILED);
                self.record(Step::Charge, StepEvent::Failed, Some(message.clone()));
                return Err(Stop::Failed { reason, message });
            }
        };
        self.record(
            Step::Charge,
            StepEvent::Completed,
            Some(format!(
                "charge {} accepted on attempt {}",
                receipt.charge_id, receipt.attempt
            )),
        );
        self.check_cancel()?;

        // 5. Wait for the gateway's confirmation under a durable timer; the
        // fraud verdict joins here; a cancel may arrive at any time.
        self.record(Step::AwaitConfirmation, StepEvent::Started, None);
        let mut timer = ctx.timer(Duration::from_secs(input.confirmation_timeout_secs));
        let mut fraud_passed = false;
        let mut confirmed = false;
        let stop = loop {
            if fraud_passed && confirmed {
                break None;
            }
            select! {
                _ = ctx.wait_condition(|w| w.state.cancel.is_some()) => {
                    break Some(Stop::Cancelled { message: format!(
                        "cancelled: {}", self.cancel_requested().unwrap_or_default()) });
                }
                _ = ctx.cancelled() => {
                    break Some(Stop::Cancelled { message: "the workflow was cancelled".into() });
                }
                v = verdict => match v {
                    Ok(FraudVerdict { pass: true, score, .. }) => {
                        self.record(Step::FraudCheck, StepEvent::Completed, Some(format!("score {score}")));
                        fraud_passed = true;
                    }
                    Ok(FraudVerdict { reason, .. }) => {
                        self.record(Step::FraudCheck, StepEvent::Failed, Some(reason.clone()));
                        break Some(Stop::Failed { reason: reasons::FRAUD_REJECTED, message: reason });
                    }
                    Err(e) => {
                        let message = format!("the fraud check failed: {e}");
                        self.record(Step::FraudCheck, StepEvent::Failed, Some(message.clone()));
                        break Some(Stop::Failed { reason: reasons::FRAUD_CHECK_FAILED, message });
                    }
                },
                _ = ctx.wait_condition(move |w| !confirmed && w.state.callback.is_some()) => {
                    let cb = ctx.state(|w| w.state.callback.clone()).expect("checked by the condition");
                    match cb.outcome {
                        CallbackOutcome::Succeeded => confirmed = true,
                        CallbackOutcome::Failed => break Some(Stop::Failed {
                            reason: reasons::CHARGE_FAILED,
                            message: format!("the gateway reported the charge failed: {}",
                                cb.reason.unwrap_or_else(|| "no reason given".into())),
                        }),
                    }
                }
                _ = timer => {
                    break Some(Stop::Failed {
                        reason: reasons::CONFIRMATION_TIMEOUT,
                        message: format!("no confirmation from the gateway within {} s", input.confirmation_timeout_secs),
                    });
                }
            }
        };
        // The timer lives on the server until cancelled.
        timer.cancel();
        if let Some(stop) = stop {
            let detail = match &stop {
                Stop::Failed { message, .. } | Stop::Cancelled { message } => message.clone(),
            };
            self.record(Step::AwaitConfirmation, StepEvent::Failed, Some(detail));
            return Err(stop);
        }
        self.record(Step::AwaitConfirmation, StepEvent::Completed, None);
        Ok(receipt.charge_id)
    }

    /// Runs the registered compensations in reverse order. Each is idempotent
    /// and retried; one that still fails is reported, never dropped, and (since
    /// [`PATCH_COMPENSATE_ALL`]) does not stop the others: a refund the
    /// gateway refuses must not keep the payer's account debited.
    async fn compensate(&self, compensations: &[Compensation]) -> Result<(), String> {
        if compensations.is_empty() {
            return Ok(());
        }
        self.record(Step::Compensate, StepEvent::Started, None);
        let opts = || compensation_options(self.input.compensation_max_attempts);
        let mut failures = Vec::new();
        for c in compensations.iter().rev() {
            let result = match c {
                Compensation::Refund => self
                    .ctx
                    .execute_activity(SagaActivities::refund, self.charge_op(), opts())
                    .await
                    .map(|refunded| format!("refunded {refunded}")),
                Compensation::Credit => self
                    .ctx
                    .execute_activity(SagaActivities::credit, self.account_op(), opts())
                    .await
                    .map(|applied| format!("credit: {applied:?}")),
            };
            match result {
                Ok(detail) => self.record(Step::Compensate, StepEvent::Completed, Some(detail)),
                Err(e) => {
                    let message = format!("{c:?} failed after retries: {e}");
                    self.record(Step::Compensate, StepEvent::Failed, Some(message.clone()));
                    failures.push(message);
                    if !self.ctx.patched(PATCH_COMPENSATE_ALL) {
                        break;
                    }
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Tells the payer. A notification that cannot be sent does not change
    /// the payment's outcome; it is recorded in the history.
    async fn notify(&self, subject: String, body: String) {
        self.record(Step::Notify, StepEvent::Started, None);
        let op = NotifyOp {
            payment_id: self.input.payment_id.clone(),
            notify: self.input.notify.clone(),
            subject,
            body,
        };
        match self
            .ctx
            .execute_activity(SagaActivities::notify, op, detached(quick()))
            .await
        {
            Ok(0) => self.record(
                Step::Notify,
                StepEvent::Skipped,
                Some("no contact given".into()),
            ),
            Ok(n) => self.record(
                Step::Notify,
                StepEvent::Completed,
                Some(format!("{n} message(s)")),
            ),
            Err(e) => self.record(Step::Notify, StepEvent::Failed, Some(e.to_string())),
        }
    }

    /// Records where the payment is in the ledger, for the audit. A failure
    /// does not change the payment; it is recorded in the history.
    async fn record_outcome(&self, phase: Phase, reason: &str) {
        let op = OutcomeOp {
            payment_id: self.input.payment_id.clone(),
            user_id: self.input.user_id.clone(),
            amount: self.input.amount,
            currency: self.input.currency.clone(),
            phase: format!("{phase:?}"),
            reason: reason.to_string(),
        };
        if let Err(e) = self
            .ctx
            .execute_activity(SagaActivities::record_outcome, op, detached(quick()))
            .await
        {
            self.record(
                Step::Done,
                StepEvent::Failed,
                Some(format!("recording {phase:?} failed: {e}")),
            );
        }
    }

    /// Records the outcome for the audit and publishes it to queries.
    async fn finish(&self, outcome: &PaymentOutcome) {
        self.record_outcome(outcome.phase, &outcome.reason).await;
        self.record(Step::Done, StepEvent::Completed, None);
        self.ctx.state_mut(|w| {
            w.state.step = Some(Step::Done);
            w.state.phase = Some(outcome.phase);
            w.state.reason = Some(outcome.reason.clone());
            w.state.message = Some(outcome.message.clone());
        });
    }
}

/// The failure's machine reason (from a non-retryable type name) and message.
fn failure(e: &ActivityExecutionError, fallback: &'static str) -> (&'static str, String) {
    let app = match e.cause() {
        Some(IncomingError::Application(af)) => Some(af),
        _ => None,
    };
    let reason = match app.and_then(|af| af.type_name()) {
        Some(failure_types::INSUFFICIENT_FUNDS) => reasons::INSUFFICIENT_FUNDS,
        Some(failure_types::ACCOUNT_INVALID) => reasons::ACCOUNT_INVALID,
        Some(failure_types::DECLINED) => reasons::DECLINED,
        Some(failure_types::ALREADY_COMPENSATED) => reasons::CANCELLED,
        _ => fallback,
    };
    let message = app
        .map(|af| af.source_error().to_string())
        .unwrap_or_else(|| e.to_string());
    (reason, message)
}

/// `1250 EUR` → `12.50 EUR` for messages (two-decimal display; the amount
/// itself stays in minor units everywhere).
fn format_amount(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

// ---- FraudCheckWorkflow -------------------------------------------------------------------

#[workflow]
#[derive(Default)]
pub struct FraudCheckWorkflow;

#[workflow_methods]
impl FraudCheckWorkflow {
    /// Scores the payment; rejects at [`FRAUD_REJECT_THRESHOLD`] and above.
    #[run(name = paysaga_api::saga::FRAUD_CHECK_WORKFLOW)]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: FraudCheckInput,
    ) -> WorkflowResult<FraudVerdict> {
        let scored = ctx
            .execute_activity(FraudActivities::score, input, quick())
            .await?;
        let pass = scored.score < FRAUD_REJECT_THRESHOLD;
        let rules = if scored.reasons.is_empty() {
            "no rule fired".to_string()
        } else {
            scored.reasons.join("; ")
        };
        let reason = if pass {
            format!(
                "score {} below {FRAUD_REJECT_THRESHOLD} ({rules})",
                scored.score
            )
        } else {
            format!(
                "fraud score {} at or above {FRAUD_REJECT_THRESHOLD} ({rules})",
                scored.score
            )
        };
        Ok(FraudVerdict {
            pass,
            score: scored.score,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_from_minor_units() {
        assert_eq!(format_amount(1250, "EUR"), "12.50 EUR");
        assert_eq!(format_amount(5, "USD"), "0.05 USD");
    }

    #[test]
    fn the_first_callback_counts_and_duplicates_are_ignored() {
        let cb = |outcome| GatewayCallback {
            payment_id: "p".into(),
            charge_id: "c".into(),
            outcome,
            reason: None,
        };
        let mut s = SagaState::default();
        s.accept_callback(
            "p",
            GatewayCallback {
                payment_id: "other".into(),
                ..cb(CallbackOutcome::Failed)
            },
        );
        assert!(
            s.callback.is_none(),
            "a callback for another payment was taken"
        );
        s.accept_callback("p", cb(CallbackOutcome::Succeeded));
        s.accept_callback("p", cb(CallbackOutcome::Failed));
        assert_eq!(s.callback.unwrap().outcome, CallbackOutcome::Succeeded);
        assert_eq!(s.duplicate_callbacks, 1);
    }
}

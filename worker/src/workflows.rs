//! The payment saga and its fraud-check child. Orchestration only: all I/O is
//! in activities; time, timers, selection and joins come from the SDK, so
//! every replay takes the same path.

use std::time::Duration;

use paysaga_api::external::{CallbackOutcome, ChargeState, GatewayCallback};
use paysaga_api::saga::{
    CancelRequest, Decision, ExpediteRequest, FraudCheckInput, FraudVerdict, PaymentInput,
    PaymentOutcome, PaymentProgress, ReviewAnswer, ReviewCause, ReviewDecision, ReviewState,
    StepEvent, StepRecord, fraud_workflow_id, reasons,
};
use paysaga_api::{Phase, Step};
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_common::error::IncomingError;
use temporalio_common::{ActivityDefinition, MemoValue, RetryPolicy};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflows::select;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, CancellableFuture, ChildWorkflowOptions,
    LocalActivityOptions, SyncWorkflowContext, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};

use crate::activities::{
    AccountOp, ChargeOp, ChargeReceipt, ChargeStatusOp, FraudActivities, NotifyOp, OutcomeOp,
    SagaActivities, failure_types,
};

/// Scores at or above this are rejected as fraud.
pub const FRAUD_REJECT_THRESHOLD: u32 = 80;

// ---- activity options -------------------------------------------------------------

/// Short calls' retries: on transient faults, for about a minute.
fn quick_retry() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(500))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(10))
        .maximum_attempts(10)
        .build()
}

/// Ledger and notification calls: short, retried on transient faults.
pub(crate) fn quick() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(quick_retry())
        .build()
}

/// [`quick`] as a local activity: the same timeout and retries, run by the
/// worker that runs the workflow task, inside it, and recorded as one marker
/// (no activity task, no workflow task of its own). Retries wait in the
/// worker (the SDK turns waits over a minute into workflow timers); a worker
/// that dies mid-attempt loses the workflow task and the next worker runs
/// the attempt again, which every such activity allows (idempotent). No
/// heartbeats: none of them runs long enough to need one.
fn quick_local(detach: bool) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(quick_retry())
        .maybe_cancellation_token(detach.then(WorkflowCancellationToken::new))
        .build()
}

/// The gateway charge: exponential backoff on transient faults, `attempts`
/// in all; a decline is non-retryable (and so is every other permanent
/// refusal).
fn charge_options(attempts: u32) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(attempts.max(1))
                .non_retryable_error_types([failure_types::DECLINED, failure_types::BAD_REQUEST])
                .build(),
        )
        .build()
}

/// Asking the gateway what became of a charge: a few tries, then the saga
/// takes the outcome as unknown.
fn status_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(5)
                .non_retryable_error_types([failure_types::BAD_REQUEST])
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
    /// The gateway's confirmations for this payment, each distinct one once,
    /// in the order they came.
    callbacks: Vec<GatewayCallback>,
    /// Copies of a confirmation already held, and confirmations past
    /// [`MAX_CALLBACKS`]: counted, not kept.
    dropped_callbacks: u32,
    /// The charge made, with [`PATCH_MATCHING_CONFIRMATION`]: only a
    /// confirmation for it counts.
    charge: Option<ChargeMade>,
    cancel: Option<CancelRequest>,
    /// The open (or decided) manual review.
    review: Option<ReviewState>,
    /// A reviewer's answer, taken while a review is open, not acted on yet.
    review_decision: Option<ReviewDecision>,
    /// Answers that came when no review was open (ignored).
    ignored_reviews: u32,
    /// Expedite signals received; each wait acts on those after it began.
    expedites: u32,
}

impl SagaState {
    pub(crate) fn progress(&self) -> PaymentProgress {
        PaymentProgress {
            phase: self.phase.unwrap_or(Phase::Pending),
            step: self.step.unwrap_or(Step::ValidateAccount),
            reason: self.reason.clone(),
            message: self.message.clone(),
            history: self.history.clone(),
            review: self.review.clone(),
            ignored_callbacks: self.ignored_callbacks(),
        }
    }

    /// Takes a reviewer's answer while a review waits for one; any other
    /// answer (no review open, or one answered already) is counted and
    /// ignored.
    pub(crate) fn offer_review(&mut self, d: ReviewDecision) {
        let open = self.review.as_ref().is_some_and(|r| r.decision.is_none());
        if open && self.review_decision.is_none() {
            self.review_decision = Some(d);
        } else {
            self.ignored_reviews += 1;
        }
    }

    pub(crate) fn expedite(&mut self, _req: ExpediteRequest) {
        self.expedites += 1;
    }

    pub(crate) fn request_cancel(&mut self, req: CancelRequest) {
        if self.cancel.is_none() {
            self.cancel = Some(req);
        }
    }

    /// Keeps a confirmation for this payment (the gateway may deliver one
    /// more than once: a copy is only counted). Which one counts is decided
    /// when it is waited for ([`SagaState::confirmation`]): one may come
    /// before the charge is known.
    pub(crate) fn accept_callback(&mut self, expected_payment: &str, cb: GatewayCallback) {
        if cb.payment_id != expected_payment {
            return;
        }
        if self.callbacks.contains(&cb) || self.callbacks.len() >= MAX_CALLBACKS {
            self.dropped_callbacks += 1;
        } else {
            self.callbacks.push(cb);
        }
    }

    /// The confirmation that counts: before [`PATCH_MATCHING_CONFIRMATION`]
    /// the first that came, whatever charge it named; since, the first for
    /// the charge made.
    pub(crate) fn confirmation(&self) -> Option<&GatewayCallback> {
        match &self.charge {
            Some(charge) => self.callbacks.iter().find(|cb| charge.confirmed_by(cb)),
            None => self.callbacks.first(),
        }
    }

    /// The confirmations for another charge than the one made, with it
    /// (none before the charge is known, or without the patch).
    fn ignored(&self) -> impl Iterator<Item = (&ChargeMade, &GatewayCallback)> {
        self.charge.iter().flat_map(|charge| {
            self.callbacks
                .iter()
                .filter(move |cb| !charge.confirmed_by(cb))
                .map(move |cb| (charge, cb))
        })
    }

    /// [`SagaState::ignored`], described.
    pub(crate) fn ignored_callbacks(&self) -> Vec<String> {
        self.ignored()
            .map(|(charge, cb)| charge.refuse(cb))
            .collect()
    }

    fn ignored_count(&self) -> usize {
        self.ignored().count()
    }
}

/// Distinct confirmations kept per payment; a gateway sends one or two.
const MAX_CALLBACKS: usize = 32;

/// The charge the saga made: what a confirmation must name to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChargeMade {
    pub id: String,
    pub amount: i64,
    pub currency: String,
}

impl ChargeMade {
    /// Its id, and its amount and currency when the confirmation says them.
    fn confirmed_by(&self, cb: &GatewayCallback) -> bool {
        cb.charge_id == self.id
            && cb.amount.is_none_or(|a| a == self.amount)
            && cb.currency.as_deref().is_none_or(|c| c == self.currency)
    }

    fn refuse(&self, cb: &GatewayCallback) -> String {
        let what = match (cb.amount, cb.currency.as_deref()) {
            (Some(a), Some(c)) => format!(" of {}", format_amount(a, c)),
            (Some(a), None) => format!(" of {a} (no currency)"),
            (None, Some(c)) => format!(" in {c}"),
            (None, None) => String::new(),
        };
        format!(
            "a {:?} confirmation for charge {}{what} was ignored: the charge made is {} of {}",
            cb.outcome,
            cb.charge_id,
            self.id,
            format_amount(self.amount, &self.currency)
        )
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

/// Patch: a person in the loop. The fraud verdict gates the charge (a
/// rejected payment is never charged); a charge that keeps failing
/// transiently waits (`chargeRetryWaitSecs`) and tries once more; when the
/// confirmation timer fires the gateway is asked what became of the charge;
/// a charge that cannot be made or whose outcome nobody can tell goes to
/// manual review; `expedite` ends a wait at once.
pub const PATCH_HUMAN_IN_THE_LOOP: &str = "human-in-the-loop";

/// Patch: a confirmation counts only if it is for the charge made (its id,
/// and its amount and currency when it gives them); any other is ignored,
/// published in progress (`ignoredCallbacks`) and logged. Before it, the
/// first signed confirmation counted whatever charge it named.
pub const PATCH_MATCHING_CONFIRMATION: &str = "matching-confirmation";

/// Patch: half the Temporal work per payment. The short calls (the ledger's
/// validate, debit and recording the outcome, and the notifications) run as
/// local activities: one marker each instead of three events, an activity
/// task and a workflow task.
/// Progress is published once per workflow task that waits on something
/// outside rather than at every step. And this one marker stands for every
/// patch above (they are all in force): a new history records one marker,
/// not five. Histories recorded before it replay as they ran.
pub const PATCH_LOCAL_ACTIVITIES: &str = "local-activities";

/// Patch of [`FraudCheckWorkflow`]: the score is asked in a local activity,
/// so the child is one workflow task (a read-only call to the fraud
/// service, safe to repeat).
pub const PATCH_LOCAL_FRAUD_SCORE: &str = "local-fraud-score";

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

    /// A reviewer's answer to an open manual review.
    #[signal(name = paysaga_api::saga::SIGNAL_REVIEW)]
    pub fn review(&mut self, _ctx: &mut SyncWorkflowContext<Self>, d: ReviewDecision) {
        self.state.offer_review(d);
    }

    /// Stop waiting now: the confirmation wait asks the gateway at once; the
    /// wait before the last charge attempt retries at once.
    #[signal(name = paysaga_api::saga::SIGNAL_EXPEDITE)]
    pub fn expedite(&mut self, _ctx: &mut SyncWorkflowContext<Self>, req: ExpediteRequest) {
        self.state.expedite(req);
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
        human_in_the_loop: false,
        matching_confirmation: false,
        local: false,
    }
    .run()
    .await
}

/// How the forward path ended well.
struct Success {
    charge_id: String,
    reason: &'static str,
    message: String,
}

/// How a manual review ended, when it did not stop the payment.
enum Reviewed {
    /// The reviewer approved.
    Approved(ReviewAnswer),
    /// The gateway's confirmation arrived while the payment waited.
    Confirmed(GatewayCallback),
}

/// The saga's body, over the workflow's context.
struct Saga<'a> {
    ctx: &'a mut WorkflowContext<PaymentWorkflow>,
    input: &'a PaymentInput,
    /// Whether step changes are published in the memo ([`PATCH_PROGRESS_MEMO`]).
    publish_progress: bool,
    /// [`PATCH_HUMAN_IN_THE_LOOP`].
    human_in_the_loop: bool,
    /// [`PATCH_MATCHING_CONFIRMATION`].
    matching_confirmation: bool,
    /// [`PATCH_LOCAL_ACTIVITIES`].
    local: bool,
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
        // verdict arrives on its own, so it was published on its own.
        // Since local activities, the ledger steps run inside the task that
        // starts or awaits the fraud check, the verdict is followed in its
        // task by the charge or the compensation, and the notification ends
        // the task that ends the saga (whose result tells all): each of the
        // others is published when it starts.
        let publish = if self.local {
            (event == StepEvent::Started
                && !matches!(step, Step::ValidateAccount | Step::Debit | Step::Notify))
                || step == Step::ManualReview
        } else {
            event == StepEvent::Started || step == Step::FraudCheck || step == Step::ManualReview
        };
        if self.publish_progress && publish {
            self.publish();
        }
    }

    /// A short, idempotent call (the ledger, a notification): a local activity since
    /// [`PATCH_LOCAL_ACTIVITIES`], a regular one in histories from before.
    /// `detach`: it runs even while the workflow is being cancelled.
    async fn short<AD>(
        &self,
        activity: AD,
        input: AD::Input,
        detach: bool,
    ) -> Result<AD::Output, ActivityExecutionError>
    where
        AD: ActivityDefinition,
        AD::Output: TemporalDeserializable,
    {
        if self.local {
            self.ctx
                .execute_local_activity(activity, input, quick_local(detach))
                .await
        } else {
            let opts = if detach { detached(quick()) } else { quick() };
            self.ctx.execute_activity(activity, input, opts).await
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
            request_id: self.input.request_id.clone(),
        }
    }

    fn charge_op(&self) -> ChargeOp {
        ChargeOp {
            payment_id: self.input.payment_id.clone(),
            amount: self.input.amount,
            currency: self.input.currency.clone(),
            method: self.input.method,
            request_id: self.input.request_id.clone(),
        }
    }

    async fn run(mut self) -> WorkflowResult<PaymentOutcome> {
        self.ctx
            .state_mut(|w| w.state.phase = Some(Phase::Processing));
        // The newest patch first: where it is in force it implies the others,
        // which are then not asked (nor recorded) at all.
        self.local = self.ctx.patched(PATCH_LOCAL_ACTIVITIES);
        let in_force = |patch| self.local || self.ctx.patched(patch);
        let record_accepted = in_force(PATCH_RECORD_ACCEPTED);
        self.publish_progress = in_force(PATCH_PROGRESS_MEMO);
        self.human_in_the_loop = in_force(PATCH_HUMAN_IN_THE_LOOP);
        self.matching_confirmation = in_force(PATCH_MATCHING_CONFIRMATION);
        if record_accepted {
            self.record_outcome(Phase::Processing, "Accepted").await;
        }
        let mut compensations = Vec::new();
        let forward = self.forward(&mut compensations).await;
        let outcome = match forward {
            Ok(Success {
                charge_id,
                reason,
                message,
            }) => {
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
                    reason: reason.to_string(),
                    message,
                    charge_id: Some(charge_id),
                    history: Vec::new(),
                    review: None,
                    ignored_callbacks: Vec::new(),
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
                    review: None,
                    ignored_callbacks: Vec::new(),
                }
            }
        };
        self.finish(&outcome).await;
        let (history, review, ignored_callbacks) = self.ctx.state(|w| {
            (
                w.state.history.clone(),
                w.state.review.clone(),
                w.state.ignored_callbacks(),
            )
        });
        Ok(PaymentOutcome {
            history,
            review,
            ignored_callbacks,
            ..outcome
        })
    }

    /// Validate → fraud check (child, in parallel) → debit → charge → wait for
    /// the confirmation. Before [`PATCH_HUMAN_IN_THE_LOOP`] the fraud verdict
    /// joined the confirmation wait (a fraudulent payment was charged, then
    /// refunded); since, it gates the charge.
    async fn forward(&self, compensations: &mut Vec<Compensation>) -> Result<Success, Stop> {
        let ctx = &*self.ctx;
        let input = self.input;

        // 1. Validate the account.
        self.record(Step::ValidateAccount, StepEvent::Started, None);
        if let Err(e) = self
            .short(SagaActivities::validate_account, self.account_op(), false)
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
        // Who asked (as the API authenticated them) is in the step history,
        // and so in the Payment's Validated condition.
        let requested_by = input
            .requested_by
            .as_ref()
            .map(|who| format!("requested by {who}"));
        self.record(Step::ValidateAccount, StepEvent::Completed, requested_by);
        self.check_cancel()?;

        // 2. The fraud check runs as a child on its own queue, in parallel.
        self.record(Step::FraudCheck, StepEvent::Started, None);
        let fraud_input = FraudCheckInput {
            request: paysaga_api::external::FraudScoreRequest {
                payment_id: input.payment_id.clone(),
                user_id: input.user_id.clone(),
                amount: input.amount,
                currency: input.currency.clone(),
                method: input.method,
            },
            request_id: input.request_id.clone(),
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
        if let Err(e) = self
            .short(SagaActivities::debit, self.account_op(), false)
            .await
        {
            let (reason, message) = failure(&e, reasons::ACCOUNT_INVALID);
            self.record(Step::Debit, StepEvent::Failed, Some(message.clone()));
            return Err(Stop::Failed { reason, message });
        }
        self.record(Step::Debit, StepEvent::Completed, None);
        self.check_cancel()?;

        // 3½. No money leaves before the fraud verdict: it ran alongside the
        // validation and the debit, and is awaited here.
        let mut fraud_passed = false;
        if self.human_in_the_loop {
            let stop = select! {
                _ = ctx.wait_condition(|w| w.state.cancel.is_some()) => Some(self.cancelled_stop()),
                _ = ctx.cancelled() => {
                    Some(Stop::Cancelled { message: "the workflow was cancelled".into() })
                }
                v = verdict => self.take_verdict(v.map_err(|e| e.to_string())),
            };
            if let Some(stop) = stop {
                return Err(stop);
            }
            fraud_passed = true;
        }

        // 4. Charge through the gateway; the refund is registered first.
        self.record(Step::Charge, StepEvent::Started, None);
        compensations.push(Compensation::Refund);
        let receipt = if self.human_in_the_loop {
            self.charge_or_review().await?
        } else {
            match ctx
                .execute_activity(
                    SagaActivities::charge,
                    self.charge_op(),
                    charge_options(input.escalation.charge_max_attempts),
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let (reason, message) = failure(&e, reasons::GATEWAY_FAILED);
                    self.record(Step::Charge, StepEvent::Failed, Some(message.clone()));
                    return Err(Stop::Failed { reason, message });
                }
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
        if self.matching_confirmation {
            let charge = ChargeMade {
                id: receipt.charge_id.clone(),
                amount: input.amount,
                currency: input.currency.clone(),
            };
            ctx.state_mut(|w| w.state.charge = Some(charge));
        }
        self.check_cancel()?;

        // 5. Wait for the gateway's confirmation under a durable timer; a
        // cancel may arrive at any time (and, before the patch, the fraud
        // verdict joins here). When the timer fires, or the wait is
        // expedited, the gateway is asked what became of the charge.
        self.record(Step::AwaitConfirmation, StepEvent::Started, None);
        let mut timer = ctx.timer(Duration::from_secs(input.confirmation_timeout_secs));
        let expedited_before = ctx.state(|w| w.state.expedites);
        let human = self.human_in_the_loop;
        let mut confirmed = false;
        // Confirmations for another charge told so far.
        let mut told = 0;
        enum Waited {
            Done,
            Stopped(Stop),
            /// The timer fired or the wait was expedited: ask the gateway.
            Ask(&'static str),
        }
        let waited = loop {
            if fraud_passed && confirmed {
                break Waited::Done;
            }
            select! {
                _ = ctx.wait_condition(|w| w.state.cancel.is_some()) => {
                    break Waited::Stopped(self.cancelled_stop());
                }
                _ = ctx.cancelled() => {
                    break Waited::Stopped(Stop::Cancelled { message: "the workflow was cancelled".into() });
                }
                v = verdict => match self.take_verdict(v.map_err(|e| e.to_string())) {
                    Some(stop) => break Waited::Stopped(stop),
                    None => fraud_passed = true,
                },
                _ = ctx.wait_condition(move |w| !confirmed && w.state.confirmation().is_some()) => {
                    let cb = ctx.state(|w| w.state.confirmation().cloned()).expect("checked by the condition");
                    match cb.outcome {
                        CallbackOutcome::Succeeded => confirmed = true,
                        CallbackOutcome::Failed => break Waited::Stopped(callback_failed(cb)),
                    }
                }
                _ = ctx.wait_condition(move |w| human && w.state.expedites > expedited_before) => {
                    break Waited::Ask("the wait was expedited");
                }
                _ = ctx.wait_condition(move |w| w.state.ignored_count() > told) => {
                    told = self.tell_ignored();
                }
                _ = timer => {
                    if human {
                        break Waited::Ask("the confirmation timer fired");
                    }
                    break Waited::Stopped(Stop::Failed {
                        reason: reasons::CONFIRMATION_TIMEOUT,
                        message: format!("no confirmation from the gateway within {} s", input.confirmation_timeout_secs),
                    });
                }
            }
        };
        // The timer lives on the server until cancelled.
        timer.cancel();
        let success = match waited {
            Waited::Done => Success {
                charge_id: receipt.charge_id,
                reason: reasons::CONFIRMED,
                message: "the gateway confirmed the charge".into(),
            },
            Waited::Stopped(stop) => {
                self.record(
                    Step::AwaitConfirmation,
                    StepEvent::Failed,
                    Some(stop_detail(&stop)),
                );
                return Err(stop);
            }
            Waited::Ask(why) => match self.recover_confirmation(&receipt.charge_id, why).await {
                Ok(success) => success,
                Err(stop) => {
                    let step = if ctx.state(|w| w.state.review.is_some()) {
                        Step::ManualReview
                    } else {
                        Step::AwaitConfirmation
                    };
                    self.record(step, StepEvent::Failed, Some(stop_detail(&stop)));
                    return Err(stop);
                }
            },
        };
        self.record(
            Step::AwaitConfirmation,
            StepEvent::Completed,
            Some(success.message.clone()),
        );
        Ok(success)
    }

    /// Tells the confirmations for another charge: logged, and published
    /// in progress at once (the controller turns them into a Warning).
    /// Returns how many there are now.
    fn tell_ignored(&self) -> usize {
        let ignored = self.ctx.state(|w| w.state.ignored_callbacks());
        if let Some(last) = ignored.last() {
            tracing::warn!(payment_id = %self.input.payment_id, ignored = ignored.len(), "{last}");
        }
        if self.publish_progress {
            self.publish();
        }
        ignored.len()
    }

    fn cancelled_stop(&self) -> Stop {
        Stop::Cancelled {
            message: format!("cancelled: {}", self.cancel_requested().unwrap_or_default()),
        }
    }

    /// Records the fraud verdict; a rejection (or no verdict) stops the payment.
    fn take_verdict(&self, v: Result<FraudVerdict, String>) -> Option<Stop> {
        match v {
            Ok(FraudVerdict {
                pass: true, score, ..
            }) => {
                self.record(
                    Step::FraudCheck,
                    StepEvent::Completed,
                    Some(format!("score {score}")),
                );
                None
            }
            Ok(FraudVerdict { reason, .. }) => {
                self.record(Step::FraudCheck, StepEvent::Failed, Some(reason.clone()));
                Some(Stop::Failed {
                    reason: reasons::FRAUD_REJECTED,
                    message: reason,
                })
            }
            Err(e) => {
                let message = format!("the fraud check failed: {e}");
                self.record(Step::FraudCheck, StepEvent::Failed, Some(message.clone()));
                Some(Stop::Failed {
                    reason: reasons::FRAUD_CHECK_FAILED,
                    message,
                })
            }
        }
    }

    /// The charge with a person in the loop: its retries; if it still fails
    /// transiently, a wait (`chargeRetryWaitSecs`, cut short by expedite) and
    /// one more attempt; then a manual review, whose approval retries it.
    /// A permanent refusal (a decline) fails at once.
    async fn charge_or_review(&self) -> Result<ChargeReceipt, Stop> {
        let input = self.input;
        let attempts = input.escalation.charge_max_attempts;
        let first = match self.charge(attempts).await? {
            Ok(receipt) => return Ok(receipt),
            Err(why) => why,
        };
        let wait = input.escalation.charge_retry_wait_secs;
        self.record(
            Step::Charge,
            StepEvent::Failed,
            Some(format!(
                "still unavailable after {attempts} attempt(s) ({first}); one more attempt in {wait} s"
            )),
        );
        // A long wait begins: show it (step records other than a start are
        // not published on their own).
        if self.publish_progress {
            self.publish();
        }
        let expedited = self.wait(Duration::from_secs(wait)).await?;
        self.record(
            Step::Charge,
            StepEvent::Started,
            Some(if expedited {
                "one more attempt (expedited)".into()
            } else {
                "one more attempt".into()
            }),
        );
        let last = match self.charge(1).await? {
            Ok(receipt) => return Ok(receipt),
            Err(why) => why,
        };
        self.record(Step::Charge, StepEvent::Failed, Some(last.clone()));
        let message = format!(
            "the gateway did not take the charge after {attempts} attempt(s), a {wait} s wait and one more attempt: {last}"
        );
        match self.review(ReviewCause::ChargeUnavailable, message).await? {
            Reviewed::Approved(answer) => {
                self.record(
                    Step::Charge,
                    StepEvent::Started,
                    Some(format!("retried: approved by {}", answer.by)),
                );
                match self.charge(attempts).await? {
                    Ok(receipt) => Ok(receipt),
                    Err(why) => Err(Stop::Failed {
                        reason: reasons::GATEWAY_FAILED,
                        message: format!(
                            "the charge failed again after {} approved a retry: {why}",
                            answer.by
                        ),
                    }),
                }
            }
            // No charge was made, so no confirmation can come.
            Reviewed::Confirmed(cb) => Err(Stop::Failed {
                reason: reasons::CHARGE_FAILED,
                message: format!(
                    "an unexpected confirmation for charge {} came while no charge was made",
                    cb.charge_id
                ),
            }),
        }
    }

    /// One charge call with `attempts` tries: the receipt, a transient
    /// failure past the tries (`Ok(Err(why))`), or a permanent refusal.
    async fn charge(&self, attempts: u32) -> Result<Result<ChargeReceipt, String>, Stop> {
        match self
            .ctx
            .execute_activity(
                SagaActivities::charge,
                self.charge_op(),
                charge_options(attempts),
            )
            .await
        {
            Ok(receipt) => Ok(Ok(receipt)),
            Err(e) if is_permanent(&e) => {
                let (reason, message) = failure(&e, reasons::GATEWAY_FAILED);
                self.record(Step::Charge, StepEvent::Failed, Some(message.clone()));
                Err(Stop::Failed { reason, message })
            }
            Err(e) => Ok(Err(failure(&e, reasons::GATEWAY_FAILED).1)),
        }
    }

    /// Waits `d`; `Ok(true)` when cut short by expedite, a stop on cancel.
    async fn wait(&self, d: Duration) -> Result<bool, Stop> {
        let ctx = &*self.ctx;
        let before = ctx.state(|w| w.state.expedites);
        let mut timer = ctx.timer(d);
        let result = select! {
            _ = ctx.wait_condition(|w| w.state.cancel.is_some()) => Err(self.cancelled_stop()),
            _ = ctx.cancelled() => Err(Stop::Cancelled { message: "the workflow was cancelled".into() }),
            _ = ctx.wait_condition(move |w| w.state.expedites > before) => Ok(true),
            _ = timer => Ok(false),
        };
        timer.cancel();
        result
    }

    /// No confirmation came (`why`): ask the gateway. Captured → success
    /// (`ConfirmationRecovered`); failed → stop; pending, unknown or no
    /// answer → manual review.
    async fn recover_confirmation(&self, charge_id: &str, why: &str) -> Result<Success, Stop> {
        let op = ChargeStatusOp {
            payment_id: self.input.payment_id.clone(),
            charge_id: charge_id.to_string(),
        };
        let state = self
            .ctx
            .execute_activity(SagaActivities::charge_status, op, status_options())
            .await;
        let told = match &state {
            Ok(s) => format!("{s:?}").to_lowercase(),
            Err(e) => format!("no answer ({e})"),
        };
        self.record(
            Step::AwaitConfirmation,
            StepEvent::Completed,
            Some(format!(
                "{why}; the gateway says charge {charge_id}: {told}"
            )),
        );
        match state {
            Ok(ChargeState::Captured) => Ok(Success {
                charge_id: charge_id.to_string(),
                reason: reasons::CONFIRMATION_RECOVERED,
                message: format!(
                    "no confirmation came ({why}); the gateway says charge {charge_id} was captured"
                ),
            }),
            Ok(ChargeState::Failed) | Ok(ChargeState::Refunded) => Err(Stop::Failed {
                reason: reasons::CHARGE_FAILED,
                message: format!(
                    "no confirmation came ({why}); the gateway says charge {charge_id}: {told}"
                ),
            }),
            Ok(ChargeState::Pending) | Ok(ChargeState::Unknown) | Err(_) => {
                let message = format!(
                    "no confirmation came ({why}) and the gateway cannot tell what became of charge {charge_id}: {told}"
                );
                match self.review(ReviewCause::OutcomeUnknown, message).await? {
                    Reviewed::Approved(answer) => Ok(Success {
                        charge_id: charge_id.to_string(),
                        reason: reasons::REVIEW_APPROVED,
                        message: format!(
                            "charge {charge_id} accepted by {}{}",
                            answer.by,
                            answer.reason.map(|r| format!(": {r}")).unwrap_or_default()
                        ),
                    }),
                    Reviewed::Confirmed(cb) => match cb.outcome {
                        CallbackOutcome::Succeeded => Ok(Success {
                            charge_id: charge_id.to_string(),
                            reason: reasons::CONFIRMED,
                            message: "the gateway confirmed the charge (late, during the review)"
                                .into(),
                        }),
                        CallbackOutcome::Failed => Err(callback_failed(cb)),
                    },
                }
            }
        }
    }

    /// A person decides: the payment stays `Processing` in step
    /// `ManualReview` until a reviewer approves (`Ok`) or rejects (a stop),
    /// the deadline passes (a stop), it is cancelled, or — for an unknown
    /// outcome — the gateway's confirmation arrives after all.
    async fn review(&self, cause: ReviewCause, message: String) -> Result<Reviewed, Stop> {
        let ctx = &*self.ctx;
        let since_ms = self.now_ms();
        let deadline = self.input.escalation.review_deadline_secs;
        ctx.state_mut(|w| {
            w.state.review = Some(ReviewState {
                cause,
                message: message.clone(),
                since_ms,
                deadline_ms: since_ms + (deadline as i64) * 1000,
                decision: None,
            });
            w.state.review_decision = None;
        });
        let told = self.notify_reviewer(cause, &message).await;
        self.record(
            Step::ManualReview,
            StepEvent::Started,
            Some(format!("{cause:?}: {message}; {told}")),
        );
        let mut timer = ctx.timer(Duration::from_secs(deadline));
        let wait_callback = cause == ReviewCause::OutcomeUnknown;
        enum Ended {
            Decided(ReviewDecision),
            Confirmed(GatewayCallback),
        }
        let ended = select! {
            _ = ctx.wait_condition(|w| w.state.cancel.is_some()) => Err(self.cancelled_stop()),
            _ = ctx.cancelled() => Err(Stop::Cancelled { message: "the workflow was cancelled".into() }),
            _ = ctx.wait_condition(|w| w.state.review_decision.is_some()) => {
                Ok(Ended::Decided(ctx.state(|w| w.state.review_decision.clone()).expect("checked by the condition")))
            }
            _ = ctx.wait_condition(move |w| wait_callback && w.state.confirmation().is_some()) => {
                Ok(Ended::Confirmed(ctx.state(|w| w.state.confirmation().cloned()).expect("checked by the condition")))
            }
            _ = timer => Err(Stop::Failed {
                reason: reasons::REVIEW_TIMEOUT,
                message: format!("no reviewer decided within {deadline} s ({message})"),
            }),
        };
        timer.cancel();
        let d = match ended? {
            Ended::Decided(d) => d,
            Ended::Confirmed(cb) => {
                self.record(
                    Step::ManualReview,
                    StepEvent::Completed,
                    Some(format!(
                        "the gateway's confirmation arrived: {:?}",
                        cb.outcome
                    )),
                );
                return Ok(Reviewed::Confirmed(cb));
            }
        };
        let answer = ReviewAnswer {
            decision: d.decision,
            by: d.by.clone(),
            reason: d.reason.clone(),
            at_ms: self.now_ms(),
        };
        ctx.state_mut(|w| {
            if let Some(r) = w.state.review.as_mut() {
                r.decision = Some(answer.clone());
            }
        });
        let because = d.reason.map(|r| format!(": {r}")).unwrap_or_default();
        match d.decision {
            Decision::Approve => {
                self.record(
                    Step::ManualReview,
                    StepEvent::Completed,
                    Some(format!("approved by {}{because}", d.by)),
                );
                Ok(Reviewed::Approved(answer))
            }
            Decision::Reject => Err(Stop::Failed {
                reason: reasons::REVIEW_REJECTED,
                message: format!("rejected by {}{because}", d.by),
            }),
        }
    }

    /// Tells the reviewer (email/SMS) that a payment waits; what was done, in
    /// words for the history.
    async fn notify_reviewer(&self, cause: ReviewCause, message: &str) -> String {
        if self.input.escalation.reviewer.is_none() {
            return "no reviewer contact configured".into();
        }
        let op = NotifyOp {
            payment_id: self.input.payment_id.clone(),
            notify: self.input.escalation.reviewer.clone(),
            subject: format!("Payment {} needs a review", self.input.payment_id),
            body: format!(
                "{cause:?}: {message}. Approve or reject it: kubectl annotate payment <name> \
                 paysaga.dev/review=approve|reject, or POST /v1/payments/<id>/review."
            ),
            purpose: Some("review".into()),
            request_id: self.input.request_id.clone(),
        };
        match self.short(SagaActivities::notify, op, false).await {
            Ok(n) => format!("reviewer told by {n} message(s)"),
            Err(e) => format!("telling the reviewer failed: {e}"),
        }
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
                    if !(self.local || self.ctx.patched(PATCH_COMPENSATE_ALL)) {
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
            purpose: None,
            request_id: self.input.request_id.clone(),
        };
        match self.short(SagaActivities::notify, op, true).await {
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
            object: self.input.object.clone(),
            request_id: self.input.request_id.clone(),
        };
        if let Err(e) = self.short(SagaActivities::record_outcome, op, true).await {
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
    let (kind, message) = match application_failure(e) {
        Some((kind, message)) => (kind, message),
        None => (None, e.to_string()),
    };
    let reason = match kind {
        Some(failure_types::INSUFFICIENT_FUNDS) => reasons::INSUFFICIENT_FUNDS,
        Some(failure_types::ACCOUNT_INVALID) => reasons::ACCOUNT_INVALID,
        Some(failure_types::DECLINED) => reasons::DECLINED,
        Some(failure_types::ALREADY_COMPENSATED) => reasons::CANCELLED,
        _ => fallback,
    };
    (reason, message)
}

/// The type and message of the activity's own error: the cause of a
/// regular activity's failure (the server wraps it), or a local activity's
/// failure itself (the worker does not).
pub(crate) fn application_failure(e: &ActivityExecutionError) -> Option<(Option<&str>, String)> {
    if let Some(IncomingError::Application(af)) = e.cause() {
        return Some((af.type_name(), af.source_error().to_string()));
    }
    let top = e.failure()?;
    let info = top.maybe_application_failure()?;
    let kind = Some(info.r#type.as_str()).filter(|t| !t.is_empty());
    Some((kind, top.message.clone()))
}

/// A refusal the retry policy does not retry (a decline, a malformed
/// request): trying again later would not help.
fn is_permanent(e: &ActivityExecutionError) -> bool {
    matches!(
        application_failure(e),
        Some((
            Some(failure_types::DECLINED | failure_types::BAD_REQUEST),
            _
        ))
    )
}

fn callback_failed(cb: GatewayCallback) -> Stop {
    Stop::Failed {
        reason: reasons::CHARGE_FAILED,
        message: format!(
            "the gateway reported the charge failed: {}",
            cb.reason.unwrap_or_else(|| "no reason given".into())
        ),
    }
}

fn stop_detail(stop: &Stop) -> String {
    match stop {
        Stop::Failed { message, .. } | Stop::Cancelled { message } => message.clone(),
    }
}

/// `1250 EUR` → `12.50 EUR` for messages (two-decimal display; the amount
/// itself stays in minor units everywhere).
pub(crate) fn format_amount(minor: i64, currency: &str) -> String {
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
        let scored = if ctx.patched(PATCH_LOCAL_FRAUD_SCORE) {
            ctx.execute_local_activity(FraudActivities::score, input, quick_local(false))
                .await?
        } else {
            ctx.execute_activity(FraudActivities::score, input, quick())
                .await?
        };
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
    fn a_review_answer_counts_only_while_a_review_waits_for_one() {
        let answer = |decision| ReviewDecision {
            decision,
            by: "ops".into(),
            reason: None,
        };
        let mut s = SagaState::default();
        s.offer_review(answer(Decision::Approve));
        assert!(s.review_decision.is_none(), "taken with no review open");
        s.review = Some(ReviewState {
            cause: ReviewCause::OutcomeUnknown,
            message: "?".into(),
            since_ms: 0,
            deadline_ms: 1,
            decision: None,
        });
        s.offer_review(answer(Decision::Reject));
        s.offer_review(answer(Decision::Approve));
        assert_eq!(
            s.review_decision.unwrap().decision,
            Decision::Reject,
            "the first counts"
        );
        assert_eq!(s.ignored_reviews, 2);
    }

    #[test]
    fn the_first_callback_counts_and_duplicates_are_ignored() {
        let cb = |outcome| GatewayCallback {
            payment_id: "p".into(),
            charge_id: "c".into(),
            outcome,
            reason: None,
            amount: None,
            currency: None,
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
            s.confirmation().is_none(),
            "a callback for another payment was taken"
        );
        s.accept_callback("p", cb(CallbackOutcome::Succeeded));
        s.accept_callback("p", cb(CallbackOutcome::Succeeded));
        s.accept_callback("p", cb(CallbackOutcome::Failed));
        assert_eq!(
            s.confirmation().unwrap().outcome,
            CallbackOutcome::Succeeded
        );
        assert_eq!((s.callbacks.len(), s.dropped_callbacks), (2, 1));
    }

    #[test]
    fn only_a_confirmation_of_the_charge_made_counts() {
        let cb = |charge: &str, amount: Option<i64>, currency: Option<&str>| GatewayCallback {
            payment_id: "p".into(),
            charge_id: charge.into(),
            outcome: CallbackOutcome::Succeeded,
            reason: None,
            amount,
            currency: currency.map(Into::into),
        };
        let mut s = SagaState::default();
        // Before the patch (no charge known): the first counts, whatever it names.
        s.accept_callback("p", cb("ch_forged", None, None));
        assert_eq!(s.confirmation().unwrap().charge_id, "ch_forged");
        assert!(s.ignored_callbacks().is_empty());
        // With it: a wrong id, amount or currency is ignored and described;
        // the one for the charge made counts, wherever it stands.
        s.charge = Some(ChargeMade {
            id: "ch_1".into(),
            amount: 500,
            currency: "EUR".into(),
        });
        assert_eq!(s.confirmation(), None);
        s.accept_callback("p", cb("ch_1", Some(499), Some("EUR")));
        s.accept_callback("p", cb("ch_1", Some(500), Some("USD")));
        s.accept_callback("p", cb("ch_1", Some(500), Some("EUR")));
        s.accept_callback("p", cb("ch_1", None, None));
        assert_eq!(s.confirmation().unwrap().amount, Some(500));
        let ignored = s.ignored_callbacks();
        assert_eq!(ignored.len(), 3, "{ignored:?}");
        assert_eq!(s.ignored_count(), 3);
        assert_eq!(
            ignored[0],
            "a Succeeded confirmation for charge ch_forged was ignored: the charge made is ch_1 of 5.00 EUR"
        );
        assert!(ignored[1].contains("of 4.99 EUR"), "{ignored:?}");
        assert!(ignored[2].contains("of 5.00 USD"), "{ignored:?}");
    }
}

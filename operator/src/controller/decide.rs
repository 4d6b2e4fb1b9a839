//! The reconciler's pure middle (no client required): from what was
//! observed — the Payment object and its workflow in Temporal — decide what
//! to start, what to signal, and the status the object should have.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use paysaga_api::names::{CANCEL_ANNOTATION, workflow_id};
use paysaga_api::saga::{PaymentInput, PaymentProgress, StepEvent, StepRecord};
use paysaga_api::{Payment, PaymentStatus, Phase, Step};

use crate::temporal::Observation;

/// Condition types, one per saga step, plus the controller's own.
pub mod conditions {
    pub const VALIDATED: &str = "Validated";
    pub const FRAUD_CHECKED: &str = "FraudChecked";
    pub const DEBITED: &str = "Debited";
    pub const CHARGED: &str = "Charged";
    pub const CONFIRMED: &str = "Confirmed";
    pub const NOTIFIED: &str = "Notified";
    pub const COMPENSATED: &str = "Compensated";
    /// The cancel annotation was seen and the workflow signalled once.
    pub const CANCEL_REQUESTED: &str = "CancelRequested";
    /// Present (False) only while Temporal cannot be reached for this payment.
    pub const TEMPORAL_REACHABLE: &str = "TemporalReachable";
}

/// Reasons of Events and conditions set by the controller.
pub mod reasons {
    pub const CANCEL_REQUESTED: &str = "CancelRequested";
    pub const TOO_LATE_TO_CANCEL: &str = "TooLateToCancel";
    pub const WORKFLOW_ENDED_ABNORMALLY: &str = "WorkflowEndedAbnormally";
    pub const TEMPORAL_UNAVAILABLE: &str = "TemporalUnavailable";
    /// The object does not deserialize (e.g. stored under an older schema).
    pub const INVALID_OBJECT: &str = "InvalidObject";
}

/// Settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub payments_task_queue: String,
    pub fraud_task_queue: String,
    pub confirmation_timeout_secs: u64,
    /// Finished Payments are deleted this long after they completed (their
    /// history stays in Temporal); `None` keeps them.
    pub finished_ttl: Option<std::time::Duration>,
    /// A payment's status is written at most this often for step progress
    /// alone; everything else (start, phase, outcome, cancel) at once.
    pub status_step_interval: std::time::Duration,
}

/// What was observed.
pub struct Facts<'a> {
    pub payment: &'a Payment,
    pub workflow: &'a Observation,
    pub now: Timestamp,
}

/// What to do, in order: start, signal, then write `status` if it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Start the workflow with this input.
    pub start: Option<PaymentInput>,
    /// Signal `cancel` with this reason.
    pub cancel: Option<String>,
    /// The status the object should have.
    pub status: PaymentStatus,
    /// The workflow is finished: no more wake-ups are needed.
    pub finished: bool,
    /// A finished Payment's TTL: `Some(ZERO)` = delete it now; `Some(d)` =
    /// look again in `d`.
    pub expires_in: Option<std::time::Duration>,
}

/// A `metav1.Time` as it is stored: whole seconds (that is how it is
/// written). Every time the controller decides is cut to the second, or a
/// status read back would never equal the one decided, and each reconcile
/// would write it again.
pub fn to_time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn ms_to_time(ms: i64) -> Time {
    to_time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn system_to_time(t: std::time::SystemTime) -> Option<Time> {
    Timestamp::try_from(t).ok().map(to_time)
}

/// The workflow input for a Payment object.
pub fn workflow_input(p: &Payment, settings: &Settings) -> PaymentInput {
    PaymentInput {
        payment_id: payment_workflow_id(p),
        user_id: p.spec.user_id.clone(),
        amount: p.spec.amount,
        currency: p.spec.currency.clone(),
        method: p.spec.method,
        description: p.spec.description.clone(),
        notify: p.spec.notify.clone(),
        confirmation_timeout_secs: settings.confirmation_timeout_secs,
        fraud_task_queue: settings.fraud_task_queue.clone(),
        compensation_max_attempts: paysaga_api::saga::DEFAULT_COMPENSATION_ATTEMPTS,
        escalation: Default::default(),
    }
}

/// The workflow ID of a Payment object (deterministic: namespace, name, UID).
pub fn payment_workflow_id(p: &Payment) -> String {
    workflow_id(
        &p.namespace().unwrap_or_default(),
        &p.name_any(),
        p.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// Conditions from the step history. A condition keeps its previous
/// transition time while its status does not change.
pub fn conditions_from(
    history: &[StepRecord],
    previous: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    use conditions::*;
    let mut out: Vec<Condition> = Vec::new();
    for r in history {
        let type_ = match r.step {
            Step::ValidateAccount => VALIDATED,
            Step::FraudCheck => FRAUD_CHECKED,
            Step::Debit => DEBITED,
            Step::Charge => CHARGED,
            Step::AwaitConfirmation => CONFIRMED,
            Step::Notify => NOTIFIED,
            Step::Compensate => COMPENSATED,
            // Told by the review itself, not by its history lines.
            Step::ManualReview | Step::Done => continue,
        };
        let (status, reason) = match r.event {
            StepEvent::Started => continue,
            StepEvent::Completed => ("True", "Succeeded"),
            StepEvent::Failed => ("False", "Failed"),
            StepEvent::Skipped => ("False", "Skipped"),
        };
        // A later record of the same step decides (e.g. a failed compensation
        // after a completed one).
        if r.step == Step::Compensate
            && out
                .iter()
                .any(|c| c.type_ == COMPENSATED && c.status == "False")
        {
            continue;
        }
        out.retain(|c| c.type_ != type_);
        out.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: r.detail.clone().unwrap_or_default(),
            last_transition_time: ms_to_time(r.at_ms),
            observed_generation: generation,
        });
    }
    // Conditions the history does not speak of (the controller's own) stay.
    for p in previous {
        if !out.iter().any(|c| c.type_ == p.type_) && p.type_ == conditions::CANCEL_REQUESTED {
            out.push(p.clone());
        }
    }
    for c in out.iter_mut() {
        if let Some(p) = previous.iter().find(|p| p.type_ == c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    out
}

/// An Event to publish: `warning` for failures, with a reason constant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEventNote {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// One Warning Event (with a reason constant per failure) for each step
/// condition that turned failed between two statuses. Steps that succeed
/// are told once, in the Event of the payment's end ([`outcome_note`]):
/// an Event per step would cost the API server more writes than the
/// payment itself.
pub fn step_events(before: &[Condition], after: &[Condition]) -> Vec<StepEventNote> {
    use conditions::*;
    let mut out = Vec::new();
    for c in after {
        if before
            .iter()
            .any(|b| b.type_ == c.type_ && b.status == c.status)
        {
            continue;
        }
        let (ok_reason, failed_reason) = match c.type_.as_str() {
            VALIDATED => ("Validated", "ValidationFailed"),
            FRAUD_CHECKED => ("FraudChecked", "FraudRejected"),
            DEBITED => ("Debited", "DebitFailed"),
            CHARGED => ("Charged", "ChargeFailed"),
            CONFIRMED => ("Confirmed", "ConfirmationFailed"),
            NOTIFIED => ("Notified", "NotificationFailed"),
            COMPENSATED => ("Compensated", "CompensationFailed"),
            _ => continue,
        };
        let failed = c.status != "True";
        // A skipped notification (no contact given) is not a failure.
        if !failed || c.reason == "Skipped" {
            continue;
        }
        out.push(StepEventNote {
            warning: failed,
            reason: if failed { failed_reason } else { ok_reason },
            note: if c.message.is_empty() {
                c.type_.clone()
            } else {
                c.message.clone()
            },
        });
    }
    out
}

fn set_condition(conds: &mut Vec<Condition>, c: Condition) {
    if let Some(existing) = conds.iter_mut().find(|e| e.type_ == c.type_) {
        if existing.status == c.status && existing.reason == c.reason {
            return;
        }
        *existing = c;
    } else {
        conds.push(c);
    }
}

/// The status to show while Temporal cannot be reached: what was known, plus
/// a `TemporalReachable=False` condition saying why. It goes away with the
/// next successful observation.
pub fn unreachable_status(p: &Payment, error: &str, now: Timestamp) -> PaymentStatus {
    let mut status = p.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        Condition {
            type_: conditions::TEMPORAL_REACHABLE.to_string(),
            status: "False".to_string(),
            reason: reasons::TEMPORAL_UNAVAILABLE.to_string(),
            message: error.chars().take(512).collect(),
            last_transition_time: to_time(now),
            observed_generation: p.metadata.generation,
        },
    );
    status
}

/// Whether the Payment's status already records how its workflow ended: a
/// terminal phase with its completion time. Then there is nothing left to
/// ask Temporal (see [`Observation::Recorded`]).
pub fn records_the_end(p: &Payment) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase.is_some_and(Phase::is_terminal) && s.completed_at.is_some())
}

/// How long a payment that ended at `ended` has left before its TTL runs
/// out (zero: it has); `None` when finished payments are kept.
pub fn ttl_left(
    ended: Timestamp,
    settings: &Settings,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let ttl = settings.finished_ttl?;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let left_ms = ended.as_millisecond().saturating_add(ttl_ms) - now.as_millisecond();
    Some(std::time::Duration::from_millis(left_ms.max(0) as u64))
}

/// The status once the workflow has started: it runs from now on.
pub fn started(mut status: PaymentStatus, run_id: String, now: Timestamp) -> PaymentStatus {
    status.run_id = Some(run_id);
    status.phase = Some(Phase::Processing);
    status.started_at = Some(to_time(now));
    status
}

/// What a status write would show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Only which step runs, and the steps' conditions.
    Step,
    /// Anything else: the start, the phase, the outcome, a cancel, Temporal
    /// being unreachable.
    Phase,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Step => "step",
            Change::Phase => "phase",
        }
    }
}

/// When to write the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Unchanged,
    Now(Change),
    /// Step progress only, and the last write was recent: write (whatever is
    /// current then) once this has passed.
    After(std::time::Duration),
}

fn step_condition(c: &Condition) -> bool {
    use conditions::*;
    matches!(
        c.type_.as_str(),
        VALIDATED | FRAUD_CHECKED | DEBITED | CHARGED | CONFIRMED | NOTIFIED | COMPENSATED
    )
}

fn without_steps(s: &PaymentStatus) -> PaymentStatus {
    PaymentStatus {
        step: None,
        conditions: s
            .conditions
            .iter()
            .filter(|c| !step_condition(c))
            .cloned()
            .collect(),
        ..s.clone()
    }
}

/// The wait before the next step-only write (or progress poll) after `n`
/// of them: `interval`, then doubling, at most 32 × `interval`. A slow saga
/// costs a few writes more, not one per interval: when everything is slow
/// (an overloaded Temporal, say), per-payment work must not grow with the
/// delay, or the overload feeds itself.
pub fn step_gap(interval: std::time::Duration, n: u32) -> std::time::Duration {
    interval * (1u32 << n.min(5))
}

/// Paces status writes: what changes the phase or outcome is written at
/// once; step progress no sooner than [`step_gap`] after the last write
/// (`since_write`: the time since this payment's last write, `None` if
/// never; `step_writes`: step-only writes since its last other one). A saga
/// that finishes within the interval is written twice: when it starts and
/// when it ends. Pure.
pub fn pace(
    current: &PaymentStatus,
    desired: &PaymentStatus,
    since_write: Option<std::time::Duration>,
    step_writes: u32,
    interval: std::time::Duration,
) -> Write {
    if current == desired {
        return Write::Unchanged;
    }
    if without_steps(current) != without_steps(desired) {
        return Write::Now(Change::Phase);
    }
    let gap = step_gap(interval, step_writes);
    match since_write {
        Some(since) if since < gap => Write::After(gap - since),
        _ => Write::Now(Change::Step),
    }
}

/// The note of the Event that says how a payment ended: its phase, reason
/// and message, then each step as its condition tells it.
pub fn outcome_note(status: &PaymentStatus) -> String {
    let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    let mut note = match (&status.reason, &status.message) {
        (Some(r), Some(m)) => format!("{phase}: {r}: {m}"),
        (Some(r), None) => format!("{phase}: {r}"),
        _ => phase,
    };
    let steps: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| step_condition(c))
        .map(|c| match (c.status.as_str(), c.reason.as_str()) {
            ("True", _) => c.type_.clone(),
            (_, "Skipped") => format!("{} skipped", c.type_),
            _ => format!("{} failed", c.type_),
        })
        .collect();
    if !steps.is_empty() {
        note.push_str(&format!(" (steps: {})", steps.join(", ")));
    }
    note
}

/// Decides. Pure: the same facts give the same plan.
pub fn decide(facts: &Facts<'_>, settings: &Settings) -> Plan {
    let p = facts.payment;
    let current = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    let id = payment_workflow_id(p);
    let mut status = PaymentStatus {
        workflow_id: Some(id.clone()),
        observed_generation: generation,
        ..current.clone()
    };
    let mut plan = Plan {
        start: None,
        cancel: None,
        status: PaymentStatus::default(),
        finished: false,
        expires_in: None,
    };

    let progress_into = |status: &mut PaymentStatus, progress: &PaymentProgress| {
        status.step = Some(progress.step);
        status.conditions = conditions_from(&progress.history, &current.conditions, generation);
    };

    match facts.workflow {
        Observation::Absent => {
            plan.start = Some(workflow_input(p, settings));
            status.phase = Some(Phase::Pending);
        }
        Observation::Recorded => plan.finished = true,
        Observation::Running {
            run_id,
            started_at,
            progress,
        } => {
            status.run_id = Some(run_id.clone());
            status.started_at = started_at.and_then(system_to_time).or(status.started_at);
            // A terminal phase comes only with the closed run's outcome (and
            // its completion time), never from a query of a run still closing.
            status.phase = Some(Phase::Processing);
            if let Some(pr) = progress {
                progress_into(&mut status, pr);
            }
        }
        Observation::Closed {
            run_id,
            started_at,
            closed_at,
            status: wf_status,
            outcome,
        } => {
            plan.finished = true;
            status.run_id = Some(run_id.clone());
            status.started_at = started_at.and_then(system_to_time).or(status.started_at);
            status.completed_at = closed_at.and_then(system_to_time).or(status.completed_at);
            match outcome {
                Some(o) => {
                    status.phase = Some(o.phase);
                    status.step = Some(Step::Done);
                    status.reason = Some(o.reason.clone());
                    status.message = Some(o.message.clone());
                    status.conditions =
                        conditions_from(&o.history, &current.conditions, generation);
                }
                None => {
                    status.phase = Some(Phase::Failed);
                    status.reason = Some(reasons::WORKFLOW_ENDED_ABNORMALLY.to_string());
                    status.message = Some(format!(
                        "the workflow ended {wf_status:?} without an outcome; check the ledger audit"
                    ));
                }
            }
        }
    }

    // Cancel: one signal per request; after the end, say it is too late.
    let already = current
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::CANCEL_REQUESTED);
    if let Some(asked) = p.annotations().get(CANCEL_ANNOTATION)
        && !already
    {
        let reason = if asked.trim().is_empty() {
            "no reason given".to_string()
        } else {
            asked.clone()
        };
        let condition = match facts.workflow {
            // Not started yet: signalled by the reconcile that sees it run.
            Observation::Absent => None,
            Observation::Running { .. } => {
                plan.cancel = Some(reason.clone());
                Some(("True", reasons::CANCEL_REQUESTED, reason))
            }
            Observation::Closed { .. } | Observation::Recorded => Some((
                "False",
                reasons::TOO_LATE_TO_CANCEL,
                format!(
                    "the payment had already finished ({:?}); nothing was changed",
                    status.phase.unwrap_or(Phase::Failed)
                ),
            )),
        };
        if let Some((cond_status, cond_reason, message)) = condition {
            set_condition(
                &mut status.conditions,
                Condition {
                    type_: conditions::CANCEL_REQUESTED.to_string(),
                    status: cond_status.to_string(),
                    reason: cond_reason.to_string(),
                    message,
                    last_transition_time: to_time(facts.now),
                    observed_generation: generation,
                },
            );
        }
    }

    if plan.finished
        && let Some(done) = status.completed_at.as_ref()
    {
        plan.expires_in = ttl_left(done.0, settings, facts.now);
    }
    plan.status = status;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use paysaga_api::saga::PaymentOutcome;
    use paysaga_api::{PaymentMethod, PaymentSpec};
    use std::collections::BTreeMap;
    use temporalio_client::WorkflowExecutionStatus;

    fn settings() -> Settings {
        Settings {
            payments_task_queue: "payments".into(),
            fraud_task_queue: "fraud".into(),
            confirmation_timeout_secs: 300,
            finished_ttl: None,
            status_step_interval: std::time::Duration::from_secs(1),
        }
    }

    fn payment(annotation: Option<&str>, status: Option<PaymentStatus>) -> Payment {
        let mut p = Payment::new(
            "order-1",
            PaymentSpec {
                user_id: "alice".into(),
                amount: 1250,
                currency: "EUR".into(),
                method: PaymentMethod::Card,
                description: None,
                notify: None,
            },
        );
        p.metadata = ObjectMeta {
            name: Some("order-1".into()),
            namespace: Some("shop".into()),
            uid: Some("u1".into()),
            generation: Some(1),
            annotations: annotation
                .map(|r| BTreeMap::from([(CANCEL_ANNOTATION.to_string(), r.to_string())])),
            ..ObjectMeta::default()
        };
        p.status = status;
        p
    }

    fn rec(step: Step, event: StepEvent, at_ms: i64) -> StepRecord {
        StepRecord {
            step,
            event,
            at_ms,
            detail: None,
        }
    }

    fn running(history: Vec<StepRecord>, step: Step) -> Observation {
        Observation::Running {
            run_id: "r1".into(),
            started_at: None,
            progress: Some(PaymentProgress {
                phase: Phase::Processing,
                step,
                reason: None,
                message: None,
                history,
                review: None,
            }),
        }
    }

    fn closed(phase: Phase, reason: &str, history: Vec<StepRecord>) -> Observation {
        Observation::Closed {
            run_id: "r1".into(),
            started_at: None,
            closed_at: None,
            status: WorkflowExecutionStatus::Completed,
            outcome: Some(PaymentOutcome {
                phase,
                reason: reason.into(),
                message: "m".into(),
                charge_id: None,
                history,
            }),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn plan(p: &Payment, wf: &Observation) -> Plan {
        decide(
            &Facts {
                payment: p,
                workflow: wf,
                now: now(),
            },
            &settings(),
        )
    }

    #[test]
    fn a_new_payment_starts_its_workflow_and_is_pending() {
        let p = payment(None, None);
        let plan = plan(&p, &Observation::Absent);
        let input = plan.start.expect("a start");
        assert_eq!(input.payment_id, "payment-shop-order-1-u1");
        assert_eq!((input.amount, input.currency.as_str()), (1250, "EUR"));
        assert_eq!(plan.status.phase, Some(Phase::Pending));
        assert_eq!(
            plan.status.workflow_id.as_deref(),
            Some("payment-shop-order-1-u1")
        );
        assert_eq!(plan.status.observed_generation, Some(1));
        assert!(plan.cancel.is_none() && !plan.finished);
    }

    #[test]
    fn phase_step_and_conditions_follow_the_workflow() {
        type Case = (
            Observation,
            Phase,
            Option<Step>,
            &'static [(&'static str, &'static str)],
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                running(vec![], Step::ValidateAccount),
                Phase::Processing,
                Some(Step::ValidateAccount),
                &[],
                false,
            ),
            (
                running(
                    vec![
                        rec(Step::ValidateAccount, StepEvent::Started, 1),
                        rec(Step::ValidateAccount, StepEvent::Completed, 2),
                        rec(Step::Debit, StepEvent::Started, 3),
                        rec(Step::Debit, StepEvent::Completed, 4),
                        rec(Step::Charge, StepEvent::Started, 5),
                    ],
                    Step::Charge,
                ),
                Phase::Processing,
                Some(Step::Charge),
                &[("Validated", "True"), ("Debited", "True")],
                false,
            ),
            (
                closed(
                    Phase::Failed,
                    "Declined",
                    vec![
                        rec(Step::ValidateAccount, StepEvent::Completed, 2),
                        rec(Step::Charge, StepEvent::Failed, 6),
                        rec(Step::Compensate, StepEvent::Completed, 7),
                        rec(Step::Notify, StepEvent::Skipped, 8),
                    ],
                ),
                Phase::Failed,
                Some(Step::Done),
                &[
                    ("Validated", "True"),
                    ("Charged", "False"),
                    ("Compensated", "True"),
                    ("Notified", "False"),
                ],
                true,
            ),
        ];
        for (wf, phase, step, conds, finished) in cases {
            let p = payment(None, None);
            let plan = plan(&p, &wf);
            assert!(plan.start.is_none());
            assert_eq!(plan.status.phase, Some(phase), "{wf:?}");
            assert_eq!(plan.status.step, step, "{wf:?}");
            let got: Vec<(&str, &str)> = plan
                .status
                .conditions
                .iter()
                .map(|c| (c.type_.as_str(), c.status.as_str()))
                .collect();
            assert_eq!(got, conds, "{wf:?}");
            assert_eq!(plan.finished, finished);
        }
    }

    #[test]
    fn a_run_still_closing_is_processing_until_its_outcome_is_read() {
        let p = payment(None, None);
        let wf = Observation::Running {
            run_id: "r1".into(),
            started_at: None,
            progress: Some(PaymentProgress {
                phase: Phase::Succeeded,
                step: Step::Done,
                reason: None,
                message: None,
                history: vec![],
                review: None,
            }),
        };
        let plan = plan(&p, &wf);
        assert_eq!(plan.status.phase, Some(Phase::Processing));
        assert!(plan.status.completed_at.is_none() && !plan.finished);
    }

    #[test]
    fn temporal_unreachable_is_said_once_and_forgotten_on_recovery() {
        let p = payment(None, None);
        let down = unreachable_status(&p, "connection refused", now());
        let c = down
            .conditions
            .iter()
            .find(|c| c.type_ == "TemporalReachable")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "TemporalUnavailable")
        );
        // Still down later: the same condition, the same transition time.
        let p = payment(None, Some(down.clone()));
        let later = unreachable_status(
            &p,
            "connection refused",
            Timestamp::from_second(1_900_000_000).unwrap(),
        );
        assert_eq!(later, down);
        // Back: the next plan no longer carries it.
        let plan = plan(&p, &running(vec![], Step::Charge));
        assert!(
            !plan
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == "TemporalReachable")
        );
    }

    #[test]
    fn finished_payments_expire_after_the_ttl() {
        let p = payment(None, None);
        let closed_at = |secs_ago: u64| Observation::Closed {
            run_id: "r".into(),
            started_at: None,
            closed_at: Some(
                std::time::SystemTime::from(now()) - std::time::Duration::from_secs(secs_ago),
            ),
            status: WorkflowExecutionStatus::Completed,
            outcome: None,
        };
        let with_ttl = Settings {
            finished_ttl: Some(std::time::Duration::from_secs(60)),
            ..settings()
        };
        let at = |wf: &Observation, s: &Settings| {
            decide(
                &Facts {
                    payment: &p,
                    workflow: wf,
                    now: now(),
                },
                s,
            )
            .expires_in
        };
        assert_eq!(
            at(&closed_at(10), &with_ttl),
            Some(std::time::Duration::from_secs(50))
        );
        assert_eq!(
            at(&closed_at(61), &with_ttl),
            Some(std::time::Duration::ZERO)
        );
        assert_eq!(at(&closed_at(61), &settings()), None, "no TTL: kept");
        assert_eq!(
            at(&running(vec![], Step::Charge), &with_ttl),
            None,
            "in flight: kept"
        );
    }

    #[test]
    fn condition_times_come_from_the_workflow_and_are_kept_while_unchanged() {
        let history = vec![rec(Step::ValidateAccount, StepEvent::Completed, 5_000)];
        let first = conditions_from(&history, &[], Some(1));
        assert_eq!(first[0].last_transition_time, ms_to_time(5_000));
        // Seen again later: the transition time does not move.
        let mut previous = first.clone();
        previous[0].last_transition_time = ms_to_time(4_000);
        let again = conditions_from(&history, &previous, Some(1));
        assert_eq!(again[0].last_transition_time, ms_to_time(4_000));
    }

    #[test]
    fn a_warning_per_step_that_failed_and_nothing_for_steps_that_succeeded() {
        let before = conditions_from(
            &[rec(Step::ValidateAccount, StepEvent::Completed, 1)],
            &[],
            None,
        );
        let after = conditions_from(
            &[
                rec(Step::ValidateAccount, StepEvent::Completed, 1),
                rec(Step::Debit, StepEvent::Completed, 2),
                StepRecord {
                    step: Step::Charge,
                    event: StepEvent::Failed,
                    at_ms: 3,
                    detail: Some("declined".into()),
                },
                rec(Step::Notify, StepEvent::Skipped, 4),
            ],
            &before,
            None,
        );
        let events = step_events(&before, &after);
        assert_eq!(
            events,
            [StepEventNote {
                warning: true,
                reason: "ChargeFailed",
                note: "declined".into()
            }]
        );
        assert!(
            step_events(&after, &after).is_empty(),
            "nothing changed, nothing said"
        );
    }

    #[test]
    fn a_failed_compensation_is_not_hidden_by_an_earlier_success() {
        let history = vec![
            rec(Step::Compensate, StepEvent::Failed, 1),
            rec(Step::Compensate, StepEvent::Completed, 2),
        ];
        let c = conditions_from(&history, &[], None);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            ("Compensated", "False")
        );
    }

    #[test]
    fn cancel_is_signalled_once_then_remembered() {
        let p = payment(Some("changed my mind"), None);
        let wf = running(vec![], Step::Charge);
        let first = plan(&p, &wf);
        assert_eq!(first.cancel.as_deref(), Some("changed my mind"));
        let cond = first
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "CancelRequested")
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", reasons::CANCEL_REQUESTED)
        );

        let p = payment(Some("changed my mind"), Some(first.status.clone()));
        let second = plan(&p, &wf);
        assert!(second.cancel.is_none(), "signalled twice");
        assert!(
            second
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == "CancelRequested")
        );
    }

    #[test]
    fn cancelling_a_finished_payment_is_too_late_and_changes_nothing_else() {
        let p = payment(Some("too late"), None);
        let wf = closed(Phase::Succeeded, "Confirmed", vec![]);
        let plan = plan(&p, &wf);
        assert!(plan.cancel.is_none());
        assert_eq!(plan.status.phase, Some(Phase::Succeeded));
        let cond = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "CancelRequested")
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", reasons::TOO_LATE_TO_CANCEL)
        );
    }

    #[test]
    fn a_cancel_before_the_start_waits_for_the_workflow() {
        let p = payment(Some("early"), None);
        let plan = plan(&p, &Observation::Absent);
        assert!(plan.start.is_some());
        assert!(plan.cancel.is_none(), "nothing to signal yet");
        assert!(plan.status.conditions.is_empty());
    }

    #[test]
    fn an_abnormal_end_is_a_failure_with_a_reason() {
        let p = payment(None, None);
        let wf = Observation::Closed {
            run_id: "r".into(),
            started_at: None,
            closed_at: None,
            status: WorkflowExecutionStatus::Terminated,
            outcome: None,
        };
        let plan = plan(&p, &wf);
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        assert_eq!(
            plan.status.reason.as_deref(),
            Some(reasons::WORKFLOW_ENDED_ABNORMALLY)
        );
        assert!(plan.finished);
    }

    #[test]
    fn a_recorded_end_is_kept_as_it_is_and_only_expires() {
        let done = PaymentStatus {
            phase: Some(Phase::Succeeded),
            reason: Some("Confirmed".into()),
            completed_at: Some(Time(now())),
            observed_generation: Some(1),
            workflow_id: Some("payment-shop-order-1-u1".into()),
            ..Default::default()
        };
        let p = payment(None, Some(done.clone()));
        assert!(records_the_end(&p));
        assert!(!records_the_end(&payment(None, None)));
        let plan = plan(&p, &Observation::Recorded);
        assert_eq!(plan.status, done);
        assert!(plan.finished && plan.start.is_none() && plan.cancel.is_none());

        // A cancel asked of it now is too late.
        let p = payment(Some("oops"), Some(done));
        let plan = self::plan(&p, &Observation::Recorded);
        assert!(plan.cancel.is_none());
        assert!(
            plan.status
                .conditions
                .iter()
                .any(|c| c.reason == reasons::TOO_LATE_TO_CANCEL)
        );
    }

    #[test]
    fn status_writes_are_paced_for_steps_and_immediate_for_the_rest() {
        use std::time::Duration;
        let second = Duration::from_secs(1);
        let at = |step: Step, history: Vec<StepRecord>| {
            let p = payment(None, None);
            plan(&p, &running(history, step)).status
        };
        let validating = at(Step::ValidateAccount, vec![]);
        let debiting = at(
            Step::Debit,
            vec![
                rec(Step::ValidateAccount, StepEvent::Completed, 1),
                rec(Step::Debit, StepEvent::Started, 2),
            ],
        );
        let p = payment(None, None);
        let done = plan(&p, &closed(Phase::Succeeded, "Confirmed", vec![])).status;
        let cancel = {
            let p = payment(Some("stop"), Some(debiting.clone()));
            plan(&p, &running(vec![], Step::Debit)).status
        };
        let ms = Duration::from_millis;
        let cases = [
            (&debiting, &debiting, None, 0, Write::Unchanged),
            (
                &PaymentStatus::default(),
                &validating,
                Some(Duration::ZERO),
                0,
                Write::Now(Change::Phase),
            ),
            (
                &validating,
                &debiting,
                Some(ms(300)),
                0,
                Write::After(ms(700)),
            ),
            (
                &validating,
                &debiting,
                Some(second),
                0,
                Write::Now(Change::Step),
            ),
            (&validating, &debiting, None, 0, Write::Now(Change::Step)),
            // After two step-only writes, the next waits four intervals.
            (
                &validating,
                &debiting,
                Some(second),
                2,
                Write::After(ms(3000)),
            ),
            (
                &validating,
                &debiting,
                Some(ms(4000)),
                2,
                Write::Now(Change::Step),
            ),
            (
                &debiting,
                &done,
                Some(Duration::ZERO),
                9,
                Write::Now(Change::Phase),
            ),
            (
                &debiting,
                &cancel,
                Some(Duration::ZERO),
                9,
                Write::Now(Change::Phase),
            ),
        ];
        for (i, (current, desired, since, n, want)) in cases.into_iter().enumerate() {
            assert_eq!(pace(current, desired, since, n, second), want, "case {i}");
        }
        assert_eq!(step_gap(second, 0), second);
        assert_eq!(step_gap(second, 3), 8 * second);
        assert_eq!(step_gap(second, 40), 32 * second, "capped");
    }

    #[test]
    fn a_started_workflow_is_processing_from_now() {
        let s = started(PaymentStatus::default(), "r9".into(), now());
        assert_eq!(s.phase, Some(Phase::Processing));
        assert_eq!(s.run_id.as_deref(), Some("r9"));
        assert_eq!(s.started_at, Some(to_time(now())));
    }

    #[test]
    fn the_end_event_tells_each_step() {
        let p = payment(None, None);
        let history = vec![
            rec(Step::ValidateAccount, StepEvent::Completed, 1),
            rec(Step::Debit, StepEvent::Completed, 2),
            rec(Step::Charge, StepEvent::Failed, 3),
            rec(Step::Compensate, StepEvent::Completed, 4),
            rec(Step::Notify, StepEvent::Skipped, 5),
        ];
        let status = plan(&p, &closed(Phase::Failed, "Declined", history)).status;
        assert_eq!(
            outcome_note(&status),
            "Failed: Declined: m (steps: Validated, Debited, Charged failed, Compensated, Notified skipped)"
        );
    }

    #[test]
    fn times_are_decided_to_the_second_so_a_status_read_back_is_unchanged() {
        let p = payment(None, None);
        let wf = Observation::Running {
            run_id: "r1".into(),
            started_at: Some(
                std::time::SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_millis(1_800_000_000_123),
            ),
            progress: Some(PaymentProgress {
                phase: Phase::Processing,
                step: Step::Debit,
                reason: None,
                message: None,
                history: vec![rec(
                    Step::ValidateAccount,
                    StepEvent::Completed,
                    1_800_000_000_456,
                )],
                review: None,
            }),
        };
        let decided = plan(&p, &wf).status;
        // What the API server gives back after a write: the JSON, read again.
        let json = serde_json::to_string(&decided).unwrap();
        let stored: PaymentStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(stored, decided);
        let again = plan(&payment(None, Some(stored.clone())), &wf).status;
        assert_eq!(
            pace(&stored, &again, None, 0, std::time::Duration::ZERO),
            Write::Unchanged
        );
    }
}

//! The plan of every branch of a reconcile, one named row each; then what
//! the status says as the workflow moves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use paysaga_api::names::{
    CANCEL_ANNOTATION, EXPEDITE_ANNOTATION, REVIEW_ANNOTATION, REVIEW_REASON_ANNOTATION,
};
use paysaga_api::saga::{
    Decision, ExpediteRequest, PaymentOutcome, PaymentProgress, ReviewCause, ReviewDecision,
    ReviewState, StepEvent, StepRecord,
};
use paysaga_api::{PaymentMethod, PaymentSpec, Phase, Step};
use temporalio_client::WorkflowExecutionStatus;

use super::*;
use crate::controller::reconcile::Error;
use crate::temporal::TemporalError;

fn settings() -> Settings {
    Settings {
        payments_task_queue: "payments".into(),
        fraud_task_queue: "fraud".into(),
        confirmation_timeout_secs: 300,
        finished_ttl: None,
        status_step_interval: Duration::from_secs(1),
        escalation: Default::default(),
        idempotency_retention: Duration::from_secs(30 * 24 * 3600),
        idempotency_sweep: Duration::from_secs(3600),
        recurring_namespaces: Vec::new(),
    }
}

fn with_ttl(secs: u64) -> Settings {
    Settings {
        finished_ttl: Some(Duration::from_secs(secs)),
        ..settings()
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn secs_ago(secs: u64) -> SystemTime {
    SystemTime::from(now()) - Duration::from_secs(secs)
}

/// `order-1` in `shop`, held by the controller's finalizer.
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
        finalizers: Some(vec![FINALIZER.to_string()]),
        annotations: annotation
            .map(|r| BTreeMap::from([(CANCEL_ANNOTATION.to_string(), r.to_string())])),
        ..ObjectMeta::default()
    };
    p.status = status;
    p
}

/// `p` with annotation `key` = `value`, set by `manager` (its managed-fields
/// entry, as the cache keeps it).
fn annotated(mut p: Payment, key: &str, value: &str, manager: &str) -> Payment {
    p.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_string(), value.to_string());
    let mut fields = serde_json::json!({"f:metadata": {"f:annotations": {}}});
    fields["f:metadata"]["f:annotations"][format!("f:{key}")] = serde_json::json!({});
    p.metadata
        .managed_fields
        .get_or_insert_with(Vec::new)
        .push(ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            time: Some(Time(now())),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        });
    p
}

/// The record of `order-1`'s Idempotency-Key, deleted at [`now`].
fn kept(phase: Phase, reason: &str, message: Option<&str>) -> IdempotencyKeySpec {
    let p = payment(None, None);
    IdempotencyKeySpec {
        user_id: "alice".into(),
        key_sha256: "ab".repeat(32),
        request_sha256: paysaga_api::idempotency::request_sha256(&p.spec),
        payment: DeletedPayment {
            uid: "u1".into(),
            phase,
            reason: Some(reason.into()),
            message: message.map(Into::into),
            created_at: None,
            completed_at: (phase == Phase::Succeeded).then(|| Time(now())),
        },
        deleted_at: Time(now()),
        expires_at: Time(
            now()
                .checked_add(Duration::from_secs(30 * 24 * 3600))
                .unwrap(),
        ),
    }
}

/// `p` made through the API with an Idempotency-Key.
fn keyed(mut p: Payment) -> Payment {
    p.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(IDEMPOTENCY_ANNOTATION.to_string(), "ab".repeat(32));
    p
}

/// A review the workflow opened `secs` seconds before [`now`].
fn review_opened(secs: u64) -> ReviewState {
    let since_ms = now().as_millisecond() - (secs as i64) * 1000;
    ReviewState {
        cause: ReviewCause::OutcomeUnknown,
        message: "the gateway cannot tell".into(),
        since_ms,
        deadline_ms: since_ms + 86_400_000,
        decision: None,
    }
}

/// Running, in manual review (opened `secs` seconds before now).
fn in_review(secs: u64) -> Observation {
    let Observation::Running {
        run_id,
        started_at,
        progress: Some(mut progress),
    } = running(vec![], Step::ManualReview)
    else {
        unreachable!()
    };
    progress.review = Some(review_opened(secs));
    Observation::Running {
        run_id,
        started_at,
        progress: Some(progress),
    }
}

/// Running, waiting for the confirmation, `n` confirmations for another
/// charge ignored.
fn ignoring(n: usize) -> Observation {
    let Observation::Running {
        run_id,
        started_at,
        progress: Some(mut progress),
    } = running(vec![], Step::AwaitConfirmation)
    else {
        unreachable!()
    };
    progress.ignored_callbacks = (0..n)
        .map(|i| format!("a Succeeded confirmation for charge ch_{i} was ignored"))
        .collect();
    Observation::Running {
        run_id,
        started_at,
        progress: Some(progress),
    }
}

fn deleted(mut p: Payment) -> Payment {
    p.metadata.deletion_timestamp = Some(Time(now()));
    p
}

fn finalizers(mut p: Payment, f: &[&str]) -> Payment {
    p.metadata.finalizers = Some(f.iter().map(|f| f.to_string()).collect());
    p
}

/// A step record without detail (shared by the plan's other tests).
pub(super) fn rec(step: Step, event: StepEvent, at_ms: i64) -> StepRecord {
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
            ignored_callbacks: Vec::new(),
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
            review: None,
            ignored_callbacks: Vec::new(),
        }),
    }
}

fn closed_at(secs_ago: u64) -> Observation {
    Observation::Closed {
        run_id: "r".into(),
        started_at: None,
        closed_at: Some(self::secs_ago(secs_ago)),
        status: WorkflowExecutionStatus::Completed,
        outcome: None,
    }
}

/// What Temporal answers when it cannot be reached, as the reconcile sees it.
fn unreachable() -> Error {
    let source = serde_json::from_str::<u8>("connection refused").unwrap_err();
    Error::Observe(TemporalError::Decode {
        id: "payment-shop-order-1-u1".into(),
        source,
    })
}

fn observed(object: Object) -> Observed {
    Observed {
        id: "payment-shop-order-1-u1".into(),
        key: ObjectRef::new("order-1").within("shop"),
        reference: ObjectReference::default(),
        now: now(),
        began: Instant::now(),
        object,
    }
}

fn seen(p: Payment, workflow: Result<Observation, Error>, pacing: Pacing) -> Observed {
    observed(Object::Payment(Box::new(Facts {
        payment: p,
        workflow,
        pacing,
        pending: Pending::default(),
    })))
}

/// Observed with its workflow, never written by this process.
fn with(p: Payment, wf: Observation) -> Observed {
    seen(p, Ok(wf), Pacing::default())
}

fn written_ago(ms: u64) -> Pacing {
    Pacing {
        since_write: Some(Duration::from_millis(ms)),
        step_writes: 0,
    }
}

/// The status a plan writes, or leaves as it is.
fn status_after(p: &Payment, wf: &Observation) -> PaymentStatus {
    match plan(&with(p.clone(), wf.clone()), &settings()).status {
        Some(StatusWrite::Now { status, .. }) => *status,
        _ => p.status.clone().unwrap_or_default(),
    }
}

/// The status planned for a payment in flight at `step`.
fn in_flight_at(step: Step, history: Vec<StepRecord>) -> PaymentStatus {
    status_after(&payment(None, None), &running(history, step))
}

/// A status write, as the table tells it.
#[derive(Debug, PartialEq)]
enum Written {
    Nothing,
    Unchanged,
    Paced(Duration),
    Now(Change, Option<Phase>),
}

fn written(w: &Option<StatusWrite>) -> Written {
    match w {
        None => Written::Nothing,
        Some(StatusWrite::Unchanged) => Written::Unchanged,
        Some(StatusWrite::Paced(d)) => Written::Paced(*d),
        Some(StatusWrite::Now { status, change, .. }) => Written::Now(*change, status.phase),
    }
}

fn start() -> Action {
    Action::Start(Box::new(input::workflow_input(
        &payment(None, None),
        &settings(),
    )))
}

fn cancel(reason: &str) -> Action {
    Action::SignalCancel {
        reason: reason.into(),
    }
}

struct Case {
    name: &'static str,
    given: Observed,
    settings: Settings,
    actions: Vec<Action>,
    status: Written,
    /// Reasons of the Events, in order.
    events: Vec<&'static str>,
    requeue: Requeue,
}

/// A row's defaults: no action, nothing written or told, wait for a change.
fn row() -> Case {
    Case {
        name: "",
        given: observed(Object::Gone),
        settings: settings(),
        actions: vec![],
        status: Written::Nothing,
        events: vec![],
        requeue: Requeue::AwaitChange,
    }
}

#[test]
fn every_branch_of_a_reconcile() {
    use Written::*;
    let done = PaymentStatus {
        phase: Some(Phase::Succeeded),
        reason: Some("Confirmed".into()),
        completed_at: Some(Time(now())),
        observed_generation: Some(1),
        workflow_id: Some("payment-shop-order-1-u1".into()),
        ..Default::default()
    };
    let validating = in_flight_at(Step::ValidateAccount, vec![]);
    let debiting = vec![
        rec(Step::ValidateAccount, StepEvent::Completed, 1),
        rec(Step::Debit, StepEvent::Started, 2),
    ];
    let asked_to_cancel = {
        let p = payment(Some("changed my mind"), Some(validating.clone()));
        status_after(&p, &running(vec![], Step::ValidateAccount))
    };
    // The debit seen, this long after the status showed the validation.
    let debit_seen = |ms| {
        let p = payment(None, Some(validating.clone()));
        seen(
            p,
            Ok(running(debiting.clone(), Step::Debit)),
            written_ago(ms),
        )
    };
    let down = desired::unreachable(&payment(None, None), &unreachable().to_string(), now());
    // In review for a minute, as written.
    let reviewing = status_after(&payment(None, None), &in_review(60));
    let approved = || {
        let p = annotated(
            payment(None, Some(reviewing.clone())),
            REVIEW_ANNOTATION,
            "approve",
            "kubectl-annotate",
        );
        annotated(
            p,
            REVIEW_REASON_ANNOTATION,
            "bank says yes",
            "kubectl-annotate",
        )
    };
    let approve = Action::SignalReview(ReviewDecision {
        decision: Decision::Approve,
        by: "kubectl-annotate".into(),
        reason: Some("bank says yes".into()),
    });
    let consumed_review = |decision: &str| {
        Action::ConsumeAnnotations(vec![
            (REVIEW_ANNOTATION.into(), decision.into()),
            (REVIEW_REASON_ANNOTATION.into(), "bank says yes".into()),
        ])
    };
    let expedited = |status| {
        annotated(
            payment(None, status),
            EXPEDITE_ANNOTATION,
            "customer waiting",
            "kubectl-annotate",
        )
    };
    let expedite = Action::SignalExpedite(ExpediteRequest {
        by: "kubectl-annotate".into(),
        reason: Some("customer waiting".into()),
    });
    let consumed_expedite = || {
        Action::ConsumeAnnotations(vec![(
            EXPEDITE_ANNOTATION.into(),
            "customer waiting".into(),
        )])
    };
    let cases = vec![
        Case {
            name: "a Payment without the finalizer gets it first, and nothing else",
            actions: vec![Action::AddFinalizer { existing: vec![] }],
            given: with(finalizers(payment(None, None), &[]), Observation::Absent),
            ..row()
        },
        Case {
            name: "the finalizer goes after those already there",
            actions: vec![Action::AddFinalizer {
                existing: vec!["other".into()],
            }],
            given: with(
                finalizers(payment(None, None), &["other"]),
                Observation::Absent,
            ),
            ..row()
        },
        Case {
            name: "deleted without the finalizer: nothing to hold",
            given: with(
                deleted(finalizers(payment(None, None), &[])),
                Observation::Absent,
            ),
            ..row()
        },
        Case {
            name: "a new payment: start it, write it at once, follow it",
            actions: vec![start(), Action::Follow],
            status: Now(Change::Phase, Some(Phase::Pending)),
            requeue: Requeue::After(SAFETY_NET),
            given: with(payment(None, None), Observation::Absent),
            ..row()
        },
        Case {
            name: "a cancel asked before the start waits for the workflow",
            actions: vec![start(), Action::Follow],
            status: Now(Change::Phase, Some(Phase::Pending)),
            requeue: Requeue::After(SAFETY_NET),
            given: with(payment(Some("early"), None), Observation::Absent),
            ..row()
        },
        Case {
            name: "running: what it shows is written, and it is followed",
            actions: vec![Action::Follow],
            status: Now(Change::Phase, Some(Phase::Processing)),
            requeue: Requeue::After(SAFETY_NET),
            given: with(payment(None, None), running(debiting.clone(), Step::Debit)),
            ..row()
        },
        Case {
            name: "a step soon after the last write is paced: come back then",
            actions: vec![Action::Follow],
            status: Paced(Duration::from_millis(700)),
            requeue: Requeue::After(Duration::from_millis(700)),
            given: debit_seen(300),
            ..row()
        },
        Case {
            name: "a step once the interval has passed is written",
            actions: vec![Action::Follow],
            status: Now(Change::Step, Some(Phase::Processing)),
            requeue: Requeue::After(SAFETY_NET),
            given: debit_seen(1000),
            ..row()
        },
        Case {
            name: "nothing new: nothing written",
            actions: vec![Action::Follow],
            status: Unchanged,
            requeue: Requeue::After(SAFETY_NET),
            given: with(
                payment(None, Some(validating.clone())),
                running(vec![], Step::ValidateAccount),
            ),
            ..row()
        },
        Case {
            name: "a cancel in flight is signalled, said, and written at once",
            actions: vec![cancel("changed my mind"), Action::Follow],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::CANCEL_REQUESTED],
            requeue: Requeue::After(SAFETY_NET),
            given: seen(
                payment(Some("changed my mind"), Some(validating.clone())),
                Ok(running(vec![], Step::ValidateAccount)),
                written_ago(0),
            ),
            ..row()
        },
        Case {
            name: "a cancel reason changed after it was signalled: said, and the annotation set back",
            actions: vec![
                Action::RestoreAnnotation {
                    key: CANCEL_ANNOTATION.into(),
                    from: "found it cheaper".into(),
                    to: "changed my mind".into(),
                },
                Action::Follow,
            ],
            status: Unchanged,
            events: vec![reasons::CANCEL_ALREADY_REQUESTED],
            requeue: Requeue::After(SAFETY_NET),
            given: with(
                payment(Some("found it cheaper"), Some(asked_to_cancel.clone())),
                running(vec![], Step::ValidateAccount),
            ),
            ..row()
        },
        Case {
            name: "a cancel already signalled is not signalled again",
            actions: vec![Action::Follow],
            status: Unchanged,
            requeue: Requeue::After(SAFETY_NET),
            given: with(
                payment(Some("changed my mind"), Some(asked_to_cancel.clone())),
                running(vec![], Step::ValidateAccount),
            ),
            ..row()
        },
        Case {
            name: "a cancel after the end is too late: said, and the end told",
            actions: vec![Action::Forget],
            status: Now(Change::Phase, Some(Phase::Succeeded)),
            events: vec![reasons::TOO_LATE_TO_CANCEL, reasons::SUCCEEDED],
            given: with(
                payment(Some("too late"), None),
                closed(Phase::Succeeded, "Confirmed", vec![]),
            ),
            ..row()
        },
        Case {
            name: "a cancel of a recorded end is too late",
            actions: vec![Action::Forget],
            status: Now(Change::Phase, Some(Phase::Succeeded)),
            events: vec![reasons::TOO_LATE_TO_CANCEL],
            given: with(
                payment(Some("oops"), Some(done.clone())),
                Observation::Recorded,
            ),
            ..row()
        },
        Case {
            name: "a payment starts waiting for a person: NeedsReview, a Warning, written at once",
            actions: vec![Action::Follow],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::NEEDS_REVIEW],
            requeue: Requeue::After(SAFETY_NET),
            given: seen(
                payment(None, Some(validating.clone())),
                Ok(in_review(60)),
                written_ago(0),
            ),
            ..row()
        },
        Case {
            name: "a confirmation for another charge: ConfirmationsIgnored, a Warning, written at once",
            actions: vec![Action::Follow],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::CHARGE_MISMATCH],
            requeue: Requeue::After(SAFETY_NET),
            given: seen(
                payment(None, Some(validating.clone())),
                Ok(ignoring(1)),
                written_ago(0),
            ),
            ..row()
        },
        Case {
            name: "a review decision is passed on, said, and its annotations consumed",
            actions: vec![approve.clone(), consumed_review("approve"), Action::Follow],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::REVIEW_SUBMITTED],
            requeue: Requeue::After(SAFETY_NET),
            given: with(approved(), in_review(60)),
            ..row()
        },
        Case {
            name: "a review decision with no review open is refused, said, and consumed",
            actions: vec![
                Action::ConsumeAnnotations(vec![(REVIEW_ANNOTATION.into(), "approve".into())]),
                Action::Follow,
            ],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::NO_REVIEW_OPEN],
            requeue: Requeue::After(SAFETY_NET),
            given: with(
                annotated(
                    payment(None, Some(validating.clone())),
                    REVIEW_ANNOTATION,
                    "approve",
                    "kubectl-annotate",
                ),
                running(vec![], Step::ValidateAccount),
            ),
            ..row()
        },
        Case {
            name: "a review decision that is neither approve nor reject is refused, said, and consumed",
            actions: vec![
                Action::ConsumeAnnotations(vec![(REVIEW_ANNOTATION.into(), "aprove".into())]),
                Action::Follow,
            ],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::INVALID_REVIEW_DECISION],
            requeue: Requeue::After(SAFETY_NET),
            given: with(
                annotated(
                    payment(None, Some(reviewing.clone())),
                    REVIEW_ANNOTATION,
                    "aprove",
                    "kubectl-annotate",
                ),
                in_review(60),
            ),
            ..row()
        },
        Case {
            name: "an expedite in flight is passed on, said, and consumed",
            actions: vec![expedite.clone(), consumed_expedite(), Action::Follow],
            status: Now(Change::Phase, Some(Phase::Processing)),
            events: vec![reasons::EXPEDITE_REQUESTED],
            requeue: Requeue::After(SAFETY_NET),
            given: with(
                expedited(Some(validating.clone())),
                running(vec![], Step::ValidateAccount),
            ),
            ..row()
        },
        Case {
            name: "an expedite after the end is too late: said and consumed, nothing passed on",
            actions: vec![consumed_expedite(), Action::Forget],
            status: Now(Change::Phase, Some(Phase::Succeeded)),
            events: vec![reasons::TOO_LATE_TO_EXPEDITE, reasons::SUCCEEDED],
            given: with(
                expedited(None),
                closed(Phase::Succeeded, "Confirmed", vec![]),
            ),
            ..row()
        },
        Case {
            name: "a failure ends with a Warning per failed step and one for the end",
            actions: vec![Action::Forget],
            status: Now(Change::Phase, Some(Phase::Failed)),
            events: vec![reasons::CHARGE_FAILED, reasons::FAILED],
            given: with(
                payment(None, Some(validating.clone())),
                closed(
                    Phase::Failed,
                    "Declined",
                    vec![
                        rec(Step::ValidateAccount, StepEvent::Completed, 1),
                        rec(Step::Charge, StepEvent::Failed, 2),
                        rec(Step::Compensate, StepEvent::Completed, 3),
                    ],
                ),
            ),
            ..row()
        },
        Case {
            name: "an abnormal end is a failure with a reason",
            actions: vec![Action::Forget],
            status: Now(Change::Phase, Some(Phase::Failed)),
            events: vec![reasons::FAILED],
            given: with(payment(None, Some(validating.clone())), closed_at(10)),
            ..row()
        },
        Case {
            name: "finished with a TTL: kept until it runs out",
            settings: with_ttl(60),
            actions: vec![Action::Forget],
            status: Now(Change::Phase, Some(Phase::Failed)),
            events: vec![reasons::FAILED],
            requeue: Requeue::After(Duration::from_secs(50)),
            given: with(payment(None, None), closed_at(10)),
        },
        Case {
            name: "finished past its TTL: written, then deleted",
            settings: with_ttl(60),
            actions: vec![Action::Forget, Action::DeleteExpired],
            status: Now(Change::Phase, Some(Phase::Failed)),
            events: vec![reasons::FAILED],
            given: with(payment(None, None), closed_at(61)),
            ..row()
        },
        Case {
            name: "a recorded end is kept as it is",
            actions: vec![Action::Forget],
            status: Unchanged,
            given: with(payment(None, Some(done.clone())), Observation::Recorded),
            ..row()
        },
        Case {
            name: "Temporal unreachable: said on the Payment, then back off",
            status: Now(Change::Phase, Some(Phase::Processing)),
            requeue: Requeue::Backoff,
            given: seen(
                payment(None, Some(validating.clone())),
                Err(unreachable()),
                Pacing::default(),
            ),
            ..row()
        },
        Case {
            name: "Temporal still unreachable: said once",
            status: Unchanged,
            requeue: Requeue::Backoff,
            given: seen(
                payment(None, Some(down)),
                Err(unreachable()),
                Pacing::default(),
            ),
            ..row()
        },
        Case {
            name: "deleted in flight: cancelled, and held while it compensates",
            actions: vec![cancel("the Payment object was deleted"), Action::Follow],
            events: vec![reasons::CANCEL_REQUESTED],
            requeue: Requeue::After(COMPENSATING),
            given: with(
                deleted(payment(None, Some(validating.clone()))),
                running(vec![], Step::ValidateAccount),
            ),
            ..row()
        },
        Case {
            name: "deleted in flight after a cancel: only held",
            actions: vec![Action::Follow],
            requeue: Requeue::After(COMPENSATING),
            given: with(
                deleted(payment(None, Some(asked_to_cancel))),
                running(vec![], Step::Compensate),
            ),
            ..row()
        },
        Case {
            name: "deleted once finished: let go",
            actions: vec![Action::Forget, Action::ReleaseFinalizer { index: 1 }],
            given: with(
                deleted(finalizers(
                    payment(None, Some(done.clone())),
                    &["other", FINALIZER],
                )),
                Observation::Recorded,
            ),
            ..row()
        },
        Case {
            name: "deleted once finished, made with an Idempotency-Key: the key kept, then let go",
            actions: vec![
                Action::Forget,
                Action::KeepIdempotencyKey(Box::new(kept(Phase::Succeeded, "Confirmed", None))),
                Action::ReleaseFinalizer { index: 0 },
            ],
            given: with(
                deleted(keyed(payment(None, Some(done.clone())))),
                Observation::Recorded,
            ),
            ..row()
        },
        Case {
            name: "deleted in flight with a key, compensated: the key kept with the workflow's outcome",
            actions: vec![
                Action::Forget,
                Action::KeepIdempotencyKey(Box::new(kept(
                    Phase::Cancelled,
                    "Cancelled",
                    Some("m"),
                ))),
                Action::ReleaseFinalizer { index: 0 },
            ],
            given: with(
                deleted(keyed(payment(None, Some(validating.clone())))),
                closed(Phase::Cancelled, "Cancelled", vec![]),
            ),
            ..row()
        },
        Case {
            name: "deleted before its workflow ever ran: let go",
            actions: vec![Action::Forget, Action::ReleaseFinalizer { index: 0 }],
            given: with(deleted(payment(None, None)), Observation::Absent),
            ..row()
        },
        Case {
            name: "deleted while Temporal is unreachable: back off, status untouched",
            requeue: Requeue::Backoff,
            given: seen(
                deleted(payment(None, Some(validating))),
                Err(unreachable()),
                Pacing::default(),
            ),
            ..row()
        },
        Case {
            name: "finished in the cache, its TTL running: looked at when it runs out",
            settings: with_ttl(60),
            actions: vec![Action::Forget],
            requeue: Requeue::After(Duration::from_secs(50)),
            given: observed(Object::Ended(Timestamp::try_from(secs_ago(10)).unwrap())),
            ..row()
        },
        Case {
            name: "finished in the cache, kept for ever: left alone",
            actions: vec![Action::Forget],
            given: observed(Object::Ended(now())),
            ..row()
        },
        Case {
            name: "gone since the cache showed it: forgotten",
            actions: vec![Action::Forget],
            given: observed(Object::Gone),
            ..row()
        },
        Case {
            name: "not a Payment: a Warning, then wait for a change",
            events: vec![reasons::INVALID_OBJECT],
            given: observed(Object::Invalid("unknown variant `cash`".into())),
            ..row()
        },
    ];
    for case in cases {
        let plan = plan(&case.given, &case.settings);
        let name = case.name;
        assert_eq!(plan.actions, case.actions, "{name}: actions");
        assert_eq!(written(&plan.status), case.status, "{name}: status");
        let reasons: Vec<&str> = plan.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, case.events, "{name}: events");
        assert_eq!(plan.requeue, case.requeue, "{name}: requeue");
    }
}

#[test]
fn a_new_payment_starts_its_workflow_and_is_pending() {
    let plan = plan(&with(payment(None, None), Observation::Absent), &settings());
    let Some(Action::Start(input)) = plan.actions.first() else {
        panic!("no start: {plan:?}")
    };
    assert_eq!(input.payment_id, "payment-shop-order-1-u1");
    assert_eq!((input.amount, input.currency.as_str()), (1250, "EUR"));
    let status = status_after(&payment(None, None), &Observation::Absent);
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(
        status.workflow_id.as_deref(),
        Some("payment-shop-order-1-u1")
    );
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn phase_step_and_conditions_follow_the_workflow() {
    struct Case {
        workflow: Observation,
        phase: Phase,
        step: Option<Step>,
        conditions: &'static [(&'static str, &'static str)],
    }
    let cases = [
        Case {
            workflow: running(vec![], Step::ValidateAccount),
            phase: Phase::Processing,
            step: Some(Step::ValidateAccount),
            conditions: &[],
        },
        Case {
            workflow: running(
                vec![
                    rec(Step::ValidateAccount, StepEvent::Started, 1),
                    rec(Step::ValidateAccount, StepEvent::Completed, 2),
                    rec(Step::Debit, StepEvent::Started, 3),
                    rec(Step::Debit, StepEvent::Completed, 4),
                    rec(Step::Charge, StepEvent::Started, 5),
                ],
                Step::Charge,
            ),
            phase: Phase::Processing,
            step: Some(Step::Charge),
            conditions: &[("Validated", "True"), ("Debited", "True")],
        },
        Case {
            workflow: closed(
                Phase::Failed,
                "Declined",
                vec![
                    rec(Step::ValidateAccount, StepEvent::Completed, 2),
                    rec(Step::Charge, StepEvent::Failed, 6),
                    rec(Step::Compensate, StepEvent::Completed, 7),
                    rec(Step::Notify, StepEvent::Skipped, 8),
                ],
            ),
            phase: Phase::Failed,
            step: Some(Step::Done),
            conditions: &[
                ("Validated", "True"),
                ("Charged", "False"),
                ("Compensated", "True"),
                ("Notified", "False"),
            ],
        },
    ];
    for case in cases {
        let wf = &case.workflow;
        let status = status_after(&payment(None, None), wf);
        assert_eq!(status.phase, Some(case.phase), "{wf:?}");
        assert_eq!(status.step, case.step, "{wf:?}");
        let got: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(got, case.conditions, "{wf:?}");
    }
}

#[test]
fn a_run_still_closing_is_processing_until_its_outcome_is_read() {
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
            ignored_callbacks: Vec::new(),
        }),
    };
    let plan = plan(&with(payment(None, None), wf.clone()), &settings());
    assert_eq!(plan.actions, [Action::Follow], "not finished");
    let status = status_after(&payment(None, None), &wf);
    assert_eq!(status.phase, Some(Phase::Processing));
    assert!(status.completed_at.is_none());
}

#[test]
fn temporal_unreachable_is_said_once_and_forgotten_on_recovery() {
    let p = payment(None, None);
    let down = desired::unreachable(&p, "connection refused", now());
    let c = down
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::TEMPORAL_REACHABLE)
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (conditions::FALSE, reasons::TEMPORAL_UNAVAILABLE)
    );
    // Still down later: the same condition, the same transition time.
    let p = payment(None, Some(down.clone()));
    let later = desired::unreachable(
        &p,
        "connection refused",
        Timestamp::from_second(1_900_000_000).unwrap(),
    );
    assert_eq!(later, down);
    // Back: the next plan no longer carries it.
    let status = status_after(&p, &running(vec![], Step::Charge));
    assert!(!conditions::has(
        &status.conditions,
        conditions::TEMPORAL_REACHABLE,
        None
    ));
}

#[test]
fn cancel_is_signalled_once_then_remembered() {
    let wf = running(vec![], Step::Charge);
    let first = status_after(&payment(Some("changed my mind"), None), &wf);
    let cond = first
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::CANCEL_REQUESTED)
        .unwrap();
    assert_eq!(
        (
            cond.status.as_str(),
            cond.reason.as_str(),
            cond.message.as_str()
        ),
        (
            conditions::TRUE,
            reasons::CANCEL_REQUESTED,
            "changed my mind"
        )
    );
    let p = payment(Some("changed my mind"), Some(first));
    assert!(desired::cancel_asked(&p).is_none(), "signalled twice");
    assert!(conditions::has(
        &status_after(&p, &wf).conditions,
        conditions::CANCEL_REQUESTED,
        None
    ));
}

#[test]
fn cancelling_a_finished_payment_is_too_late_and_changes_nothing_else() {
    let wf = closed(Phase::Succeeded, "Confirmed", vec![]);
    let status = status_after(&payment(Some("too late"), None), &wf);
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::CANCEL_REQUESTED)
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        (conditions::FALSE, reasons::TOO_LATE_TO_CANCEL)
    );
    assert_eq!(
        cond.message,
        "the payment had already finished (Succeeded); nothing was changed"
    );
}

#[test]
fn an_abnormal_end_says_so() {
    let status = status_after(&payment(None, None), &closed_at(0));
    assert_eq!(
        status.reason.as_deref(),
        Some(reasons::WORKFLOW_ENDED_ABNORMALLY)
    );
    assert_eq!(
        status.message.as_deref(),
        Some("the workflow ended Completed without an outcome; check the ledger audit")
    );
}

#[test]
fn status_writes_are_paced_for_steps_and_immediate_for_the_rest() {
    struct Case {
        name: &'static str,
        current: PaymentStatus,
        desired: PaymentStatus,
        since_write_ms: Option<u64>,
        step_writes: u32,
        want: Write,
    }
    let ms = Duration::from_millis;
    let validating = in_flight_at(Step::ValidateAccount, vec![]);
    let debiting = in_flight_at(
        Step::Debit,
        vec![
            rec(Step::ValidateAccount, StepEvent::Completed, 1),
            rec(Step::Debit, StepEvent::Started, 2),
        ],
    );
    let done = status_after(
        &payment(None, None),
        &closed(Phase::Succeeded, "Confirmed", vec![]),
    );
    let cancel = status_after(
        &payment(Some("stop"), Some(debiting.clone())),
        &running(vec![], Step::Debit),
    );
    let cases = [
        Case {
            name: "the same status",
            current: debiting.clone(),
            desired: debiting.clone(),
            since_write_ms: None,
            step_writes: 0,
            want: Write::Unchanged,
        },
        Case {
            name: "the first write",
            current: PaymentStatus::default(),
            desired: validating.clone(),
            since_write_ms: Some(0),
            step_writes: 0,
            want: Write::Now(Change::Phase),
        },
        Case {
            name: "a step within the interval waits for the rest of it",
            current: validating.clone(),
            desired: debiting.clone(),
            since_write_ms: Some(300),
            step_writes: 0,
            want: Write::After(ms(700)),
        },
        Case {
            name: "a step after the interval",
            current: validating.clone(),
            desired: debiting.clone(),
            since_write_ms: Some(1000),
            step_writes: 0,
            want: Write::Now(Change::Step),
        },
        Case {
            name: "a step, never written by this process",
            current: validating.clone(),
            desired: debiting.clone(),
            since_write_ms: None,
            step_writes: 0,
            want: Write::Now(Change::Step),
        },
        Case {
            name: "after two step-only writes, the next waits four intervals",
            current: validating.clone(),
            desired: debiting.clone(),
            since_write_ms: Some(1000),
            step_writes: 2,
            want: Write::After(ms(3000)),
        },
        Case {
            name: "after two step-only writes and four intervals",
            current: validating.clone(),
            desired: debiting.clone(),
            since_write_ms: Some(4000),
            step_writes: 2,
            want: Write::Now(Change::Step),
        },
        Case {
            name: "the end, at once",
            current: debiting.clone(),
            desired: done,
            since_write_ms: Some(0),
            step_writes: 9,
            want: Write::Now(Change::Phase),
        },
        Case {
            name: "a cancel, at once",
            current: debiting,
            desired: cancel,
            since_write_ms: Some(0),
            step_writes: 9,
            want: Write::Now(Change::Phase),
        },
    ];
    let second = Duration::from_secs(1);
    for case in cases {
        let pacing = Pacing {
            since_write: case.since_write_ms.map(ms),
            step_writes: case.step_writes,
        };
        let got = pace(&case.current, &case.desired, pacing, second);
        assert_eq!(got, case.want, "{}", case.name);
    }
    assert_eq!(pace::step_gap(second, 0), second);
    assert_eq!(pace::step_gap(second, 3), 8 * second);
    assert_eq!(pace::step_gap(second, 40), 32 * second, "capped");
}

#[test]
fn a_started_workflow_is_processing_from_now() {
    let s = desired::started(PaymentStatus::default(), "r9".into(), now());
    assert_eq!(s.phase, Some(Phase::Processing));
    assert_eq!(s.run_id.as_deref(), Some("r9"));
    assert_eq!(s.started_at, Some(time::to_time(now())));
}

#[test]
fn the_end_event_tells_each_step() {
    let history = vec![
        rec(Step::ValidateAccount, StepEvent::Completed, 1),
        rec(Step::Debit, StepEvent::Completed, 2),
        rec(Step::Charge, StepEvent::Failed, 3),
        rec(Step::Compensate, StepEvent::Completed, 4),
        rec(Step::Notify, StepEvent::Skipped, 5),
    ];
    let wf = closed(Phase::Failed, "Declined", history);
    let plan = plan(&with(payment(None, None), wf), &settings());
    let end = plan.events.last().unwrap();
    assert_eq!(end.reason, reasons::FAILED);
    assert_eq!(
        end.note,
        "Failed: Declined: m (steps: Validated, Debited, Charged failed, Compensated, Notified skipped)"
    );
}

#[test]
fn times_are_decided_to_the_second_so_a_status_read_back_is_unchanged() {
    let wf = Observation::Running {
        run_id: "r1".into(),
        started_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123)),
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
            ignored_callbacks: Vec::new(),
        }),
    };
    let decided = status_after(&payment(None, None), &wf);
    // What the API server gives back after a write: the JSON, read again.
    let json = serde_json::to_string(&decided).unwrap();
    let stored: PaymentStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(stored, decided);
    let again = plan(&with(payment(None, Some(stored)), wf), &settings());
    assert_eq!(again.status, Some(StatusWrite::Unchanged));
}

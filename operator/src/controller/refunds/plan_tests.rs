//! The refund plan, case by case: what was seen → the steps, the phase and
//! reason written, the Events.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use paysaga_api::names::{FINALIZER, PAYMENT_LABEL, REFUND_FINALIZER};
use paysaga_api::refund::payment_hold_finalizer;
use paysaga_api::saga::{RefundOutcome, refund_reasons};
use paysaga_api::{
    Payment, PaymentMethod, PaymentSpec, PaymentStatus, Phase, Refund, RefundPhase, RefundReason,
    RefundSpec, RefundStatus,
};
use temporalio_client::WorkflowExecutionStatus;

use super::{Plan, Seen, Step, plan};
use crate::temporal::RefundRun;

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn payment(phase: Phase) -> Payment {
    let mut p = Payment::new(
        "pay-1",
        PaymentSpec {
            user_id: "alice".into(),
            amount: 1000,
            currency: "EUR".into(),
            method: PaymentMethod::Card,
            description: None,
            notify: None,
        },
    );
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some("p-uid".into());
    p.metadata.finalizers = Some(vec![FINALIZER.into()]);
    p.status = Some(PaymentStatus {
        phase: Some(phase),
        charge_id: (phase == Phase::Succeeded).then(|| "ch_1".into()),
        ..PaymentStatus::default()
    });
    p
}

fn held(mut p: Payment) -> Payment {
    p.metadata
        .finalizers
        .get_or_insert_default()
        .push(payment_hold_finalizer("r-uid"));
    p
}

fn refund() -> Refund {
    let mut r = Refund::new(
        "rf-1",
        RefundSpec {
            payment_name: "pay-1".into(),
            amount: 300,
            reason: RefundReason::RequestedByCustomer,
            description: None,
        },
    );
    r.metadata.namespace = Some("shop".into());
    r.metadata.uid = Some("r-uid".into());
    r
}

/// A refund the controller has taken: finalizer, owner, label.
fn taken() -> Refund {
    let mut r = refund();
    r.metadata = ObjectMeta {
        finalizers: Some(vec![REFUND_FINALIZER.into()]),
        owner_references: Some(vec![OwnerReference {
            uid: "p-uid".into(),
            ..OwnerReference::default()
        }]),
        labels: Some([(PAYMENT_LABEL.to_string(), "pay-1".to_string())].into()),
        ..r.metadata
    };
    r
}

fn with_status(mut r: Refund, phase: RefundPhase, completed: Option<i64>) -> Refund {
    r.status = Some(RefundStatus {
        phase: Some(phase),
        reason: Some("R".into()),
        completed_at: completed.map(at),
        payment_refunded_amount: (phase == RefundPhase::Succeeded).then_some(300),
        currency: Some("EUR".into()),
        ..RefundStatus::default()
    });
    r
}

fn deleting(mut r: Refund) -> Refund {
    r.metadata.deletion_timestamp = Some(at(NOW - 1));
    r
}

fn closed(outcome: Option<RefundOutcome>) -> RefundRun {
    RefundRun::Closed {
        started_at: Some(SystemTime::UNIX_EPOCH),
        closed_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64 - 5)),
        status: if outcome.is_some() {
            WorkflowExecutionStatus::Completed
        } else {
            WorkflowExecutionStatus::Terminated
        },
        outcome,
    }
}

fn refunded(total: i64) -> RefundOutcome {
    RefundOutcome {
        phase: RefundPhase::Succeeded,
        reason: refund_reasons::REFUNDED.into(),
        message: "3.00 EUR refunded and credited".into(),
        gateway_refund_id: Some("re_1".into()),
        payment_refunded_amount: Some(total),
    }
}

const TTL: Option<Duration> = Some(Duration::from_secs(3600));

struct Case {
    name: &'static str,
    refund: Refund,
    payment: Option<Payment>,
    run: Option<RefundRun>,
    /// The steps, by name (a start's input is checked apart).
    steps: &'static [&'static str],
    /// Phase and reason written, if a status is written.
    writes: Option<(RefundPhase, Option<&'static str>)>,
    /// Reasons of the Events told.
    events: &'static [&'static str],
}

fn step_name(s: &Step) -> &'static str {
    match s {
        Step::AddFinalizer => "AddFinalizer",
        Step::Adopt => "Adopt",
        Step::Hold => "Hold",
        Step::Start(_) => "Start",
        Step::Await => "Await",
        Step::Release => "Release",
        Step::RaiseRefunded(_) => "RaiseRefunded",
        Step::RemoveFinalizer => "RemoveFinalizer",
        Step::Expire => "Expire",
    }
}

fn run_case(c: &Case) -> Plan {
    plan(&Seen {
        refund: &c.refund,
        payment: c.payment.as_ref(),
        run: c.run.as_ref(),
        now: now(),
        ttl: TTL,
    })
}

#[test]
fn each_case_plans_what_it_should() {
    let cases = vec![
        Case {
            name: "a new refund of a succeeded payment starts, holding the payment",
            refund: refund(),
            payment: Some(payment(Phase::Succeeded)),
            run: Some(RefundRun::Absent),
            steps: &["AddFinalizer", "Adopt", "Hold", "Start", "Await"],
            writes: Some((RefundPhase::Processing, None)),
            events: &["Started"],
        },
        Case {
            name: "a refund of a missing payment fails at once, nothing started",
            refund: refund(),
            payment: None,
            run: Some(RefundRun::Absent),
            steps: &["AddFinalizer"],
            writes: Some((RefundPhase::Failed, Some(refund_reasons::PAYMENT_NOT_FOUND))),
            events: &[refund_reasons::PAYMENT_NOT_FOUND],
        },
        Case {
            name: "a refund of a payment in flight fails at once",
            refund: refund(),
            payment: Some(payment(Phase::Processing)),
            run: Some(RefundRun::Absent),
            steps: &["AddFinalizer"],
            writes: Some((
                RefundPhase::Failed,
                Some(refund_reasons::PAYMENT_NOT_SUCCEEDED),
            )),
            events: &[refund_reasons::PAYMENT_NOT_SUCCEEDED],
        },
        Case {
            name: "a refund of a failed payment fails at once",
            refund: taken(),
            payment: Some(payment(Phase::Failed)),
            run: Some(RefundRun::Absent),
            steps: &[],
            writes: Some((
                RefundPhase::Failed,
                Some(refund_reasons::PAYMENT_NOT_SUCCEEDED),
            )),
            events: &[refund_reasons::PAYMENT_NOT_SUCCEEDED],
        },
        Case {
            name: "a refund of a payment being deleted fails at once",
            refund: taken(),
            payment: Some({
                let mut p = payment(Phase::Succeeded);
                p.metadata.deletion_timestamp = Some(at(NOW - 10));
                p
            }),
            run: Some(RefundRun::Absent),
            steps: &[],
            writes: Some((RefundPhase::Failed, Some(refund_reasons::PAYMENT_DELETED))),
            events: &[refund_reasons::PAYMENT_DELETED],
        },
        Case {
            name: "a taken refund whose start was lost starts again (Temporal dedups)",
            refund: taken(),
            payment: Some(held(payment(Phase::Succeeded))),
            run: Some(RefundRun::Absent),
            steps: &["Start", "Await"],
            writes: Some((RefundPhase::Processing, None)),
            events: &["Started"],
        },
        Case {
            name: "a running refund is awaited",
            refund: with_status(taken(), RefundPhase::Processing, None),
            payment: Some(held(payment(Phase::Succeeded))),
            run: Some(RefundRun::Running { started_at: None }),
            steps: &["Await"],
            writes: Some((RefundPhase::Processing, Some("R"))),
            events: &[],
        },
        Case {
            name: "a refund that succeeded lets the payment go and raises its refunded amount",
            refund: with_status(taken(), RefundPhase::Processing, None),
            payment: Some(held(payment(Phase::Succeeded))),
            run: Some(closed(Some(refunded(800)))),
            steps: &["RaiseRefunded", "Release"],
            writes: Some((RefundPhase::Succeeded, Some(refund_reasons::REFUNDED))),
            events: &[refund_reasons::REFUNDED],
        },
        Case {
            name: "a refund that succeeded never lowers a larger refunded amount",
            refund: with_status(taken(), RefundPhase::Processing, None),
            payment: Some({
                let mut p = held(payment(Phase::Succeeded));
                p.status.as_mut().unwrap().refunded_amount = Some(900);
                p
            }),
            run: Some(closed(Some(refunded(800)))),
            steps: &["Release"],
            writes: Some((RefundPhase::Succeeded, Some(refund_reasons::REFUNDED))),
            events: &[refund_reasons::REFUNDED],
        },
        Case {
            name: "a workflow that ended without an outcome fails the refund",
            refund: with_status(taken(), RefundPhase::Processing, None),
            payment: Some(held(payment(Phase::Succeeded))),
            run: Some(closed(None)),
            steps: &["Release"],
            writes: Some((RefundPhase::Failed, Some(refund_reasons::WORKFLOW_ENDED))),
            events: &[refund_reasons::WORKFLOW_ENDED],
        },
        Case {
            name: "a refund deleted while it runs waits for it",
            refund: deleting(with_status(taken(), RefundPhase::Processing, None)),
            payment: Some(held(payment(Phase::Succeeded))),
            run: Some(RefundRun::Running { started_at: None }),
            steps: &["Await"],
            writes: Some((RefundPhase::Processing, Some("R"))),
            events: &[],
        },
        Case {
            name: "a refund deleted before it started goes at once",
            refund: deleting(taken()),
            payment: Some(held(payment(Phase::Succeeded))),
            run: Some(RefundRun::Absent),
            steps: &["Release", "RemoveFinalizer"],
            writes: None,
            events: &[],
        },
        Case {
            name: "a finished refund deleted lets both go",
            refund: deleting(with_status(taken(), RefundPhase::Succeeded, Some(NOW - 10))),
            payment: Some(held(payment(Phase::Succeeded))),
            run: None,
            steps: &["RaiseRefunded", "Release", "RemoveFinalizer"],
            writes: None,
            events: &[],
        },
        Case {
            name: "a finished refund past its TTL is deleted",
            refund: with_status(taken(), RefundPhase::Failed, Some(NOW - 3601)),
            payment: Some(payment(Phase::Succeeded)),
            run: None,
            steps: &["Expire"],
            writes: None,
            events: &[],
        },
        Case {
            name: "a finished refund within its TTL is left alone",
            refund: with_status(taken(), RefundPhase::Failed, Some(NOW - 10)),
            payment: Some(payment(Phase::Succeeded)),
            run: None,
            steps: &[],
            writes: None,
            events: &[],
        },
    ];
    for c in &cases {
        let plan = run_case(c);
        let steps: Vec<&str> = plan.steps.iter().map(step_name).collect();
        assert_eq!(steps, c.steps, "{}: steps", c.name);
        let written = plan
            .status
            .as_ref()
            .map(|s| (s.phase.unwrap(), s.reason.as_deref()));
        assert_eq!(written, c.writes, "{}: status", c.name);
        let events: Vec<&str> = plan.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(events, c.events, "{}: events", c.name);
    }
}

#[test]
fn the_start_carries_the_payment_s_payer_currency_and_charge() {
    let p = payment(Phase::Succeeded);
    let plan = plan(&Seen {
        refund: &refund(),
        payment: Some(&p),
        run: Some(&RefundRun::Absent),
        now: now(),
        ttl: TTL,
    });
    let input = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Start(input) => Some(input),
            _ => None,
        })
        .expect("a start");
    assert_eq!(input.refund_id, "refund-shop-rf-1-r-uid");
    assert_eq!(input.payment_id, "payment-shop-pay-1-p-uid");
    assert_eq!(
        (
            input.user_id.as_str(),
            input.currency.as_str(),
            input.charge_id.as_str()
        ),
        ("alice", "EUR", "ch_1")
    );
    assert_eq!(input.amount, 300);
    let status = plan.status.expect("a status");
    assert_eq!(status.currency.as_deref(), Some("EUR"));
    assert_eq!(
        status.workflow_id.as_deref(),
        Some("refund-shop-rf-1-r-uid")
    );
}

#[test]
fn a_status_written_from_a_stale_read_keeps_the_currency() {
    // The reconcile after the start can see the refund as it was before its
    // first status write landed; the status it applies must still carry the
    // currency, or applying it takes the currency away.
    let p = held(payment(Phase::Succeeded));
    for run in [
        RefundRun::Running { started_at: None },
        closed(Some(refunded(300))),
    ] {
        let plan = plan(&Seen {
            refund: &taken(),
            payment: Some(&p),
            run: Some(&run),
            now: now(),
            ttl: TTL,
        });
        let status = plan.status.expect("a status");
        assert_eq!(status.currency.as_deref(), Some("EUR"), "{run:?}");
    }
}

#[test]
fn a_finished_refund_without_its_currency_gets_it_back() {
    let mut r = with_status(taken(), RefundPhase::Succeeded, Some(NOW - 10));
    r.status.as_mut().unwrap().currency = None;
    let p = payment(Phase::Succeeded);
    let written = |r: &Refund| {
        plan(&Seen {
            refund: r,
            payment: Some(&p),
            run: None,
            now: now(),
            ttl: TTL,
        })
        .status
    };
    let mended = written(&r).expect("a status");
    assert_eq!(mended.currency.as_deref(), Some("EUR"));
    assert_eq!(mended.phase, Some(RefundPhase::Succeeded));
    assert_eq!(mended.completed_at, Some(at(NOW - 10)));
    // Not when it is going anyway.
    assert_eq!(written(&deleting(r.clone())), None);
    r.status.as_mut().unwrap().completed_at = Some(at(NOW - 3601));
    assert_eq!(written(&r), None);
}

#[test]
fn a_plan_carried_out_asks_for_nothing_more() {
    // What a running refund's status becomes is what the next look sees:
    // no second write, no second Event.
    let first = plan(&Seen {
        refund: &with_status(taken(), RefundPhase::Processing, None),
        payment: Some(&held(payment(Phase::Succeeded))),
        run: Some(&RefundRun::Running { started_at: None }),
        now: now(),
        ttl: TTL,
    });
    let mut r = taken();
    r.status = first.status;
    let later = Timestamp::from_second(NOW + 30).unwrap();
    let second = plan(&Seen {
        refund: &r,
        payment: Some(&held(payment(Phase::Succeeded))),
        run: Some(&RefundRun::Running { started_at: None }),
        now: later,
        ttl: TTL,
    });
    assert_eq!(second.status, None);
    assert!(second.events.is_empty());
}

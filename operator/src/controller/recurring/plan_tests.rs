//! The recurring plan, case by case: what was seen → the steps, the phase
//! written, the Events.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use paysaga_api::names::RECURRING_FINALIZER;
use paysaga_api::recurring::{OverlapPolicy, RecurringPaymentSpec, RecurringSchedule};
use paysaga_api::{
    Payment, PaymentMethod, PaymentSpec, PaymentStatus, Phase, RecurringPayment,
    RecurringPaymentStatus, RecurringPhase,
};

use super::{Seen, Step, plan};
use crate::schedules::Described;

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn template() -> PaymentSpec {
    PaymentSpec {
        user_id: "alice".into(),
        amount: 990,
        currency: "EUR".into(),
        method: PaymentMethod::Card,
        description: None,
        notify: None,
    }
}

fn object() -> RecurringPayment {
    let mut r = RecurringPayment::new(
        "rent",
        RecurringPaymentSpec {
            template: template(),
            schedule: RecurringSchedule {
                cron: None,
                every: Some("30s".into()),
                time_zone: None,
            },
            start_at: None,
            end_at: None,
            max_payments: Some(3),
            suspend: false,
            overlap_policy: OverlapPolicy::Skip,
            catchup_window: None,
        },
    );
    r.metadata.namespace = Some("shop".into());
    r.metadata.uid = Some("r-uid".into());
    r.metadata.generation = Some(1);
    r
}

/// Taken by the controller, its Schedule made for generation 1.
fn taken() -> RecurringPayment {
    let mut r = object();
    r.metadata.finalizers = Some(vec![RECURRING_FINALIZER.into()]);
    r.status = Some(RecurringPaymentStatus {
        phase: Some(RecurringPhase::Active),
        schedule_id: Some("recurring-shop-rent-r-uid".into()),
        observed_generation: Some(1),
        ..RecurringPaymentStatus::default()
    });
    r
}

fn schedule(actions: i64, remaining: Option<i64>) -> Described {
    Described {
        paused: false,
        remaining,
        future: (1..=5)
            .map(|i| SystemTime::UNIX_EPOCH + Duration::from_secs((NOW + 30 * i) as u64))
            .collect(),
        actions,
        overlap_skipped: 2,
    }
}

fn made(name: &str, phase: Option<Phase>, owner: &str) -> Payment {
    let mut p = Payment::new(name, template());
    p.metadata.owner_references = Some(vec![OwnerReference {
        uid: owner.into(),
        ..OwnerReference::default()
    }]);
    p.status = phase.map(|phase| PaymentStatus {
        phase: Some(phase),
        ..PaymentStatus::default()
    });
    p
}

fn steps(s: &[Step]) -> Vec<&'static str> {
    s.iter()
        .map(|s| match s {
            Step::AddFinalizer => "AddFinalizer",
            Step::Create(_) => "Create",
            Step::Update(_) => "Update",
            Step::Delete => "Delete",
            Step::Orphan(_) => "Orphan",
            Step::RemoveFinalizer => "RemoveFinalizer",
        })
        .collect()
}

fn run(
    object: &RecurringPayment,
    schedule: Option<&Described>,
    payments: &[Payment],
) -> super::Plan {
    plan(&Seen {
        object,
        schedule,
        payments,
        now: now(),
        task_queue: "payments",
        namespaces: &[],
    })
}

#[test]
fn a_new_object_gets_its_schedule_with_the_spec_s_limits() {
    let p = run(&object(), None, &[]);
    assert_eq!(steps(&p.steps), ["AddFinalizer", "Create"]);
    let Step::Create(d) = &p.steps[1] else {
        unreachable!()
    };
    assert_eq!(d.every, Some(Duration::from_secs(30)));
    assert_eq!(d.remaining, Some(3));
    assert!(!d.paused);
    assert_eq!(d.catchup, super::CATCHUP);
    assert_eq!(
        (
            d.fire.namespace.as_str(),
            d.fire.name.as_str(),
            d.fire.uid.as_str()
        ),
        ("shop", "rent", "r-uid")
    );
    assert_eq!(d.fire.template, template());
    let status = p.status.unwrap();
    assert_eq!(status.phase, Some(RecurringPhase::Active));
    assert_eq!(
        status.schedule_id.as_deref(),
        Some("recurring-shop-rent-r-uid")
    );
    assert_eq!(status.schedule.as_deref(), Some("every 30s"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(p.events[0].reason, "ScheduleCreated");
}

#[test]
fn a_schedule_gone_out_of_band_is_made_again_and_the_limit_goes_on() {
    let mut r = taken();
    r.status.as_mut().unwrap().payments_made = 2;
    let p = run(&r, None, &[]);
    assert_eq!(steps(&p.steps), ["Create"]);
    let Step::Create(d) = &p.steps[0] else {
        unreachable!()
    };
    assert_eq!(d.remaining, Some(1), "3 at most, 2 made");
    assert!(p.events[0].warning && p.events[0].reason == "ScheduleRecreated");
    let status = p.status.unwrap();
    assert_eq!(status.payments_made_before, 2);
}

#[test]
fn a_changed_spec_updates_the_schedule_once() {
    let mut r = taken();
    r.metadata.generation = Some(2);
    r.spec.suspend = true;
    r.status.as_mut().unwrap().payments_made = 1;
    let s = schedule(1, Some(2));
    let p = run(&r, Some(&s), &[]);
    assert_eq!(steps(&p.steps), ["Update"]);
    let Step::Update(d) = &p.steps[0] else {
        unreachable!()
    };
    assert!(d.paused);
    assert_eq!(d.remaining, Some(2));
    let status = p.status.unwrap();
    assert_eq!(status.phase, Some(RecurringPhase::Suspended));
    assert!(
        status.next_runs.is_empty(),
        "a suspended one shows no next run"
    );
    assert_eq!(status.observed_generation, Some(2));
    // Written back (and the Schedule paused), the next look asks for
    // nothing more.
    r.status = Some(status);
    let paused = Described { paused: true, ..s };
    let again = run(&r, Some(&paused), &[]);
    assert!(again.steps.is_empty() && again.status.is_none() && again.events.is_empty());
}

#[test]
fn status_tells_the_schedule_and_the_payments_made() {
    let r = taken();
    let s = schedule(3, Some(1));
    let payments = [
        made("rent-20261202t100000z", Some(Phase::Succeeded), "r-uid"),
        made("rent-20261202t100030z", Some(Phase::Failed), "r-uid"),
        made("rent-20261202t100100z", None, "r-uid"),
    ];
    let p = run(&r, Some(&s), &payments);
    assert!(p.steps.is_empty());
    let status = p.status.unwrap();
    assert_eq!(status.payments_made, 3);
    assert_eq!((status.payments_succeeded, status.payments_failed), (1, 1));
    assert_eq!(status.skipped, 2);
    assert_eq!(
        status.last_payment.as_deref(),
        Some("rent-20261202t100100z")
    );
    assert_eq!(status.next_runs.len(), 3);
    assert_eq!(
        status.next_runs[0],
        Time(Timestamp::from_second(NOW + 30).unwrap())
    );
    assert_eq!(status.phase, Some(RecurringPhase::Active));
    // Back just after the next firing.
    assert_eq!(p.requeue, Some(Duration::from_secs(32)));
}

#[test]
fn all_payments_made_and_ended_completes_it() {
    let r = taken();
    let mut payments = vec![
        made("rent-20261202t100000z", Some(Phase::Succeeded), "r-uid"),
        made("rent-20261202t100030z", Some(Phase::Cancelled), "r-uid"),
        made("rent-20261202t100100z", Some(Phase::Processing), "r-uid"),
    ];
    let still_running = run(&r, Some(&schedule(3, Some(0))), &payments);
    assert_eq!(
        still_running.status.unwrap().phase,
        Some(RecurringPhase::Active)
    );
    payments[2] = made("rent-20261202t100100z", Some(Phase::Succeeded), "r-uid");
    let done = run(&r, Some(&schedule(3, Some(0))), &payments);
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RecurringPhase::Completed));
    assert_eq!(status.message.as_deref(), Some("made all 3 payments"));
}

#[test]
fn past_end_at_completes_it() {
    let mut r = taken();
    r.spec.max_payments = None;
    r.spec.end_at = Some(Time(Timestamp::from_second(NOW - 1).unwrap()));
    let mut s = schedule(4, None);
    s.future.clear();
    let p = run(&r, Some(&s), &[]);
    let status = p.status.unwrap();
    assert_eq!(status.phase, Some(RecurringPhase::Completed));
    assert_eq!(status.message.as_deref(), Some("past endAt"));
}

#[test]
fn a_schedule_temporal_refused_is_not_tried_again_until_the_spec_changes() {
    let mut r = taken();
    let st = r.status.as_mut().unwrap();
    st.phase = Some(RecurringPhase::Failed);
    st.reason = Some("InvalidSchedule".into());
    let p = run(&r, None, &[]);
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    r.metadata.generation = Some(2);
    let p = run(&r, None, &[]);
    assert_eq!(steps(&p.steps), ["Create"]);
}

#[test]
fn deleting_it_deletes_the_schedule_and_keeps_its_payments() {
    let mut r = taken();
    r.metadata.deletion_timestamp = Some(Time(now()));
    let payments = [
        made("rent-20261202t100000z", Some(Phase::Succeeded), "r-uid"),
        made("rent-by-hand", Some(Phase::Succeeded), "someone-else"),
    ];
    let p = run(&r, Some(&schedule(1, None)), &payments);
    assert_eq!(steps(&p.steps), ["Delete", "Orphan", "RemoveFinalizer"]);
    assert_eq!(
        p.steps[1],
        Step::Orphan(vec!["rent-20261202t100000z".into()])
    );
    assert!(p.status.is_none());
    // Its Schedule gone already: only the rest.
    let p = run(&r, None, &[]);
    assert_eq!(steps(&p.steps), ["RemoveFinalizer"]);
}

#[test]
fn a_schedule_left_paused_by_an_interrupted_configuration_is_updated() {
    let r = taken();
    let mut s = schedule(0, Some(3));
    s.paused = true;
    let p = run(&r, Some(&s), &[]);
    assert_eq!(steps(&p.steps), ["Update"]);
    let Step::Update(d) = &p.steps[0] else {
        unreachable!()
    };
    assert!(!d.paused);
}

#[test]
fn an_update_counts_the_payments_made_from_the_schedule_as_it_is_now() {
    let mut r = taken();
    r.metadata.generation = Some(2);
    // The last status said 1 made; the Schedule has fired twice since.
    r.status.as_mut().unwrap().payments_made = 1;
    let p = run(&r, Some(&schedule(3, Some(0))), &[]);
    let Step::Update(d) = &p.steps[0] else {
        unreachable!()
    };
    assert_eq!(d.remaining, Some(0), "3 at most, 3 made");
}

#[test]
fn a_namespace_not_served_or_a_name_too_long_fails_and_schedules_nothing() {
    let served = ["payments-ns".to_string()];
    let p = plan(&Seen {
        object: &object(),
        schedule: None,
        payments: &[],
        now: now(),
        task_queue: "payments",
        namespaces: &served,
    });
    assert_eq!(steps(&p.steps), ["AddFinalizer"]);
    let status = p.status.unwrap();
    assert_eq!(status.phase, Some(RecurringPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("NamespaceNotServed"));
    // Its Schedule from before goes.
    let p = plan(&Seen {
        object: &taken(),
        schedule: Some(&schedule(1, None)),
        payments: &[],
        now: now(),
        task_queue: "payments",
        namespaces: &served,
    });
    assert_eq!(steps(&p.steps), ["Delete"]);
    let mut long = object();
    long.metadata.name = Some("r".repeat(64));
    let p = run(&long, None, &[]);
    assert_eq!(p.status.unwrap().reason.as_deref(), Some("NameTooLong"));
}

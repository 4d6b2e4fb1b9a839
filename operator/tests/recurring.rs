//! Recurring payments on Temporal Schedules, on the real parts: the API
//! server, the Temporal dev server, the controller with the chart's
//! controller ServiceAccount and the worker with the chart's worker
//! ServiceAccount, each a process; users apply RecurringPayment objects with
//! kubectl.

mod common;

use common::*;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use paysaga_api::external::{CallbackOutcome, Scenario};
use paysaga_api::names::RECURRING_LABEL;
use paysaga_api::recurring::{RecurringFire, schedule_id};
use paysaga_api::{Payment, Phase, RecurringPayment, RecurringPhase};
use paysaga_operator::schedules::Schedules;
use paysaga_testenv::{Service, block_on, eventually};
use temporalio_client::{UntypedWorkflow, WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_common::data_converters::{PayloadConverter, RawValue};

/// The namespace RecurringPayments fire in: the chart's release namespace,
/// where the worker's Role lets it create Payments.
struct Stack {
    namespace: String,
    worker: Mutex<Service>,
    controller: Mutex<Service>,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        let namespace = kube.namespace("recurring").unwrap().name.clone();
        let kubeconfig = worker_service_account(&namespace, &[]);
        let db = paysaga_testenv::postgres().database("recurring").unwrap();
        let worker = Service::payment_worker_kube(
            &paysaga_testenv::run_dir().join("recurring-worker"),
            &paysaga_testenv::temporal().address,
            &db,
            "alice:EUR:100000000",
            &paysaga_testenv::sim().url,
            Some(&kubeconfig),
            &[],
        )
        .unwrap();
        let controller = start_controller("recurring-controller", &[]);
        // Every payment of this namespace is confirmed at once unless a test
        // steers its own.
        block_on(scenario(
            &format!("payment-{namespace}-"),
            Scenario {
                callback: Some(CallbackOutcome::Succeeded),
                callback_delay_ms: Some(50),
                ..Scenario::default()
            },
        ));
        Stack {
            namespace,
            worker: Mutex::new(worker),
            controller: Mutex::new(controller),
        }
    })
}

async fn objects() -> Api<RecurringPayment> {
    Api::namespaced(
        paysaga_testenv::kube().client().await.unwrap(),
        &stack().namespace,
    )
}

fn manifest(name: &str, schedule: serde_json::Value, extra: serde_json::Value) -> String {
    let mut spec = serde_json::json!({
        "template": {"userId": "alice", "amount": 990, "currency": "EUR", "method": "card"},
        "schedule": schedule,
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "RecurringPayment",
        "metadata": {"name": name}, "spec": spec,
    })
    .to_string()
}

fn apply(name: &str, schedule: serde_json::Value, extra: serde_json::Value) {
    kubectl_apply(&stack().namespace, &manifest(name, schedule, extra));
}

/// The Payments `name` made, by name.
fn made(name: &str) -> Vec<Payment> {
    let api = block_on(payments(&stack().namespace));
    let mut items =
        block_on(api.list(&ListParams::default().labels(&format!("{RECURRING_LABEL}={name}"))))
            .unwrap()
            .items;
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    items
}

fn wait_object(
    name: &str,
    what: &str,
    secs: u64,
    pred: impl Fn(&RecurringPayment) -> bool,
) -> RecurringPayment {
    let api = block_on(objects());
    eventually(
        Duration::from_secs(secs),
        &format!("{name}: {what}"),
        || {
            let r = block_on(api.get(name)).map_err(|e| e.to_string())?;
            if pred(&r) {
                Ok(r)
            } else {
                Err(format!("status {:?}", r.status))
            }
        },
    )
}

fn phase_of(r: &RecurringPayment) -> Option<RecurringPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

async fn schedules() -> Schedules {
    let t = paysaga_testenv::temporal();
    let opts = paysaga_common::temporal::TemporalOpts {
        temporal_address: t.address.clone(),
        temporal_namespace: t.namespace.clone(),
        codec_keys_file: Some(paysaga_testenv::codec_keys_file().to_path_buf()),
    };
    Schedules::new(
        paysaga_common::temporal::connect(&opts, "recurring-test")
            .await
            .unwrap(),
    )
}

fn patch_spec(name: &str, spec: serde_json::Value) {
    let api = block_on(objects());
    block_on(api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "spec": spec })),
    ))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_account_can_create_and_read_payments_serve_webhooks_and_nothing_else() {
    let ns = &stack().namespace;
    let kubeconfig = paysaga_testenv::kube()
        .service_account_kubeconfig(ns, "paysaga-worker")
        .unwrap();
    // `resource/subresource` is asked with --subresource.
    let can = |verb: &str, resource: &str, namespace: &str| {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let mut kubectl = std::process::Command::new(paysaga_testenv::tool("kubectl"));
        kubectl
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["auth", "can-i", verb, resource, "-n", namespace]);
        if let Some(sub) = sub {
            kubectl.arg(format!("--subresource={sub}"));
        }
        let out = kubectl.output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (verb, resource) in [
        ("create", "payments.paysaga.dev"),
        ("get", "payments.paysaga.dev"),
        ("get", "recurringpayments.paysaga.dev"),
        // Webhooks: the endpoints, their status, their signing Secrets.
        ("get", "webhookendpoints.paysaga.dev"),
        ("list", "webhookendpoints.paysaga.dev"),
        ("watch", "webhookendpoints.paysaga.dev"),
        ("patch", "webhookendpoints.paysaga.dev/status"),
        ("get", "secrets"),
    ] {
        assert_eq!(can(verb, resource, ns), "yes", "{verb} {resource}");
    }
    for (verb, resource) in [
        ("list", "payments.paysaga.dev"),
        ("watch", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev"),
        ("delete", "payments.paysaga.dev"),
        ("list", "recurringpayments.paysaga.dev"),
        ("patch", "recurringpayments.paysaga.dev"),
        ("patch", "webhookendpoints.paysaga.dev"),
        ("delete", "webhookendpoints.paysaga.dev"),
        ("list", "secrets"),
        ("watch", "secrets"),
    ] {
        assert_eq!(can(verb, resource, ns), "no", "{verb} {resource}");
    }
    assert_eq!(
        can("create", "payments.paysaga.dev", "default"),
        "no",
        "another namespace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_few_seconds_makes_payments_that_succeed_each_exactly_once() {
    stack();
    apply(
        "every2s",
        serde_json::json!({"every": "2s"}),
        serde_json::json!({"maxPayments": 3}),
    );
    let r = wait_object("every2s", "Completed", 90, |r| {
        phase_of(r) == Some(RecurringPhase::Completed)
    });
    let status = r.status.clone().unwrap();
    assert_eq!(status.payments_made, 3, "{status:?}");
    assert_eq!(status.message.as_deref(), Some("made all 3 payments"));
    assert!(status.next_runs.is_empty() || status.payments_made == 3);
    let fired = made("every2s");
    assert_eq!(fired.len(), 3, "one Payment per firing");
    let uid = r.metadata.uid.clone().unwrap();
    for p in &fired {
        let name = p.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("every2s-2") && name.ends_with('z'),
            "{name}"
        );
        assert!(
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid),
            "{name} is owned by its RecurringPayment"
        );
    }
    // Each payment succeeds (waited for: the last may still be finishing).
    let api = block_on(payments(&stack().namespace));
    for p in &fired {
        wait_for(
            &api,
            p.metadata.name.as_deref().unwrap(),
            "Succeeded",
            |p| phase(p) == Some(Phase::Succeeded),
        );
    }
    // Counted against the Schedule: as many firings as Payments.
    let described = block_on(async {
        schedules()
            .await
            .describe(&schedule_id(&r.metadata))
            .await
            .unwrap()
            .expect("the schedule exists")
    });
    assert_eq!(described.actions, 3);
    assert_eq!(described.remaining, Some(0));
    let done = wait_object("every2s", "counts", 30, |r| {
        r.status.as_ref().is_some_and(|s| s.payments_succeeded == 3)
    });
    assert_eq!(
        done.status.unwrap().last_payment,
        fired.last().unwrap().metadata.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_the_firings_and_resume_starts_them_again() {
    stack();
    apply(
        "pausable",
        serde_json::json!({"every": "1s"}),
        serde_json::json!({}),
    );
    eventually(Duration::from_secs(60), "a first payment", || {
        if made("pausable").is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(())
        }
    });
    patch_spec("pausable", serde_json::json!({"suspend": true}));
    let r = wait_object("pausable", "Suspended", 60, |r| {
        phase_of(r) == Some(RecurringPhase::Suspended)
    });
    assert!(r.status.unwrap().next_runs.is_empty());
    let id = schedule_id(&r.metadata);
    let paused = block_on(async { schedules().await.describe(&id).await.unwrap().unwrap() });
    assert!(paused.paused);
    // A firing already started may still finish its payment: count after.
    std::thread::sleep(Duration::from_secs(2));
    let before = made("pausable").len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(made("pausable").len(), before, "no firing while suspended");

    patch_spec("pausable", serde_json::json!({"suspend": false}));
    wait_object("pausable", "Active", 60, |r| {
        phase_of(r) == Some(RecurringPhase::Active)
    });
    eventually(Duration::from_secs(60), "firing again", || {
        let now = made("pausable").len();
        if now > before {
            Ok(())
        } else {
            Err(format!("{now} payments"))
        }
    });
    patch_spec("pausable", serde_json::json!({"suspend": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_at_completes_it() {
    stack();
    let end = k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(6);
    apply(
        "ending",
        serde_json::json!({"every": "2s"}),
        serde_json::json!({"endAt": format!("{:.0}", end)}),
    );
    let r = wait_object("ending", "Completed", 90, |r| {
        phase_of(r) == Some(RecurringPhase::Completed)
    });
    let status = r.status.unwrap();
    assert_eq!(status.message.as_deref(), Some("past endAt"));
    let n = made("ending").len();
    assert!((1..=4).contains(&n), "{n} payments in 6 s at one every 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_slow_gateway_firings_while_the_payment_runs_are_skipped_and_counted() {
    let ns = &stack().namespace;
    block_on(scenario(
        &format!("payment-{ns}-slow-"),
        Scenario {
            callback: Some(CallbackOutcome::Succeeded),
            callback_delay_ms: Some(5_000),
            ..Scenario::default()
        },
    ));
    apply(
        "slow",
        serde_json::json!({"every": "1s"}),
        serde_json::json!({"maxPayments": 2}),
    );
    let r = wait_object("slow", "Completed", 120, |r| {
        phase_of(r) == Some(RecurringPhase::Completed)
    });
    let status = r.status.unwrap();
    assert_eq!(status.payments_made, 2);
    assert!(
        status.skipped >= 3,
        "each payment takes 5 s at one firing a second: {status:?}"
    );
    assert_eq!(made("slow").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_schedule_takes_effect() {
    stack();
    apply(
        "retimed",
        serde_json::json!({"every": "1h"}),
        serde_json::json!({}),
    );
    let r = wait_object("retimed", "Active", 60, |r| {
        phase_of(r) == Some(RecurringPhase::Active)
    });
    assert_eq!(r.status.unwrap().schedule.as_deref(), Some("every 1h"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(made("retimed").is_empty(), "nothing due within the hour");
    patch_spec("retimed", serde_json::json!({"schedule": {"every": "1s"}}));
    let r = wait_object("retimed", "every 1s", 60, |r| {
        r.status.as_ref().and_then(|s| s.schedule.as_deref()) == Some("every 1s")
    });
    assert_eq!(r.status.unwrap().observed_generation, r.metadata.generation);
    eventually(Duration::from_secs(60), "a payment at the new pace", || {
        if made("retimed").is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(())
        }
    });
    patch_spec("retimed", serde_json::json!({"suspend": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_it_deletes_its_schedule_and_keeps_the_payments_it_made() {
    stack();
    apply(
        "gone",
        serde_json::json!({"every": "1s"}),
        serde_json::json!({"maxPayments": 2}),
    );
    let r = wait_object("gone", "Completed", 90, |r| {
        phase_of(r) == Some(RecurringPhase::Completed)
    });
    let id = schedule_id(&r.metadata);
    let api = block_on(objects());
    block_on(api.delete("gone", &DeleteParams::default())).unwrap();
    eventually(
        Duration::from_secs(60),
        "the object gone",
        || match block_on(api.get_opt("gone")).map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(r) => Err(format!("still there: {:?}", r.metadata.finalizers)),
        },
    );
    let described = block_on(async { schedules().await.describe(&id).await.unwrap() });
    assert_eq!(described, None, "the Schedule is deleted");
    let listed = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("temporal")).args([
            "schedule",
            "list",
            "--address",
            &paysaga_testenv::temporal().host_port,
        ]),
    )
    .unwrap();
    assert!(!listed.contains(&id), "{listed}");
    let kept = made("gone");
    assert_eq!(kept.len(), 2, "the payments it made stay");
    for p in kept {
        assert!(
            p.metadata.owner_references.unwrap_or_default().is_empty(),
            "no owner left for a garbage collector to follow"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schedule_is_refused_with_a_readable_reason() {
    let ns = &stack().namespace;
    let out = paysaga_testenv::kube().kubectl_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &manifest(
            "badcron",
            serde_json::json!({"cron": "every tuesday"}),
            serde_json::json!({}),
        ),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.schedule.cron"), "{err}");
    let out = paysaga_testenv::kube().kubectl_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &manifest(
            "backwards",
            serde_json::json!({"every": "1h"}),
            serde_json::json!({"startAt": "2030-01-02T00:00:00Z", "endAt": "2030-01-01T00:00:00Z"}),
        ),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("endAt must be after startAt"));
    // Well formed, but no minute 99: Temporal refuses it, and the object says why.
    apply(
        "minute99",
        serde_json::json!({"cron": "99 * * * *"}),
        serde_json::json!({}),
    );
    let r = wait_object("minute99", "Failed", 60, |r| {
        phase_of(r) == Some(RecurringPhase::Failed)
    });
    let status = r.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InvalidSchedule"));
    assert!(
        status.message.unwrap().contains("Minute"),
        "Temporal's reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_run_again_or_retried_after_a_worker_crash_makes_no_second_payment() {
    let ns = stack().namespace.clone();
    // Suspended: only the firings this test starts happen.
    apply(
        "twice",
        serde_json::json!({"every": "1h"}),
        serde_json::json!({"suspend": true}),
    );
    let r = wait_object("twice", "Suspended", 60, |r| {
        phase_of(r) == Some(RecurringPhase::Suspended)
    });
    block_on(scenario(
        &format!("payment-{ns}-twice-"),
        Scenario {
            callback: Some(CallbackOutcome::Succeeded),
            callback_delay_ms: Some(4_000),
            ..Scenario::default()
        },
    ));
    let fire = RecurringFire {
        namespace: ns.clone(),
        name: "twice".into(),
        uid: r.metadata.uid.clone().unwrap(),
        template: r.spec.template.clone(),
    };
    let due = "2026-01-01T09:00:00Z";
    let t = paysaga_testenv::temporal();
    let client = block_on(paysaga_common::temporal::connect(
        &paysaga_common::temporal::TemporalOpts {
            temporal_address: t.address.clone(),
            temporal_namespace: t.namespace.clone(),
            codec_keys_file: Some(paysaga_testenv::codec_keys_file().to_path_buf()),
        },
        "recurring-test",
    ))
    .unwrap();
    let start = |id: String| {
        let input = RawValue::from_value(&fire, &PayloadConverter::default());
        block_on(client.start_workflow(
            UntypedWorkflow::new(paysaga_api::recurring::RECURRING_FIRE_WORKFLOW),
            input,
            WorkflowStartOptions::new("payments".to_string(), id).build(),
        ))
        .unwrap()
    };
    let unique = paysaga_testenv::unique_name("fire");
    let first = start(format!("{unique}-a-{due}"));
    // The payment is made, its firing waits for it: the worker dies.
    let api = block_on(payments(&ns));
    wait_for(&api, "twice-20260101t090000z", "made", |_| true);
    stack().worker.lock().unwrap().kill();
    stack().worker.lock().unwrap().restart().unwrap();
    let outcome = block_on(first.get_result(WorkflowGetResultOptions::default())).unwrap();
    let outcome: paysaga_api::recurring::FireOutcome =
        serde_json::from_slice(&outcome.payloads[0].data).unwrap();
    assert_eq!(outcome.payment, "twice-20260101t090000z");
    assert_eq!(outcome.phase, "Succeeded");
    // The same firing again (as a retried firing would run it).
    let second = start(format!("{unique}-b-{due}"));
    let again = block_on(second.get_result(WorkflowGetResultOptions::default())).unwrap();
    let again: paysaga_api::recurring::FireOutcome =
        serde_json::from_slice(&again.payloads[0].data).unwrap();
    assert_eq!(again, outcome);
    assert_eq!(made("twice").len(), 1, "one Payment for one due time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_restarted_mid_way_converges() {
    stack();
    apply(
        "restart",
        serde_json::json!({"every": "1h"}),
        serde_json::json!({}),
    );
    let r = wait_object("restart", "Active", 60, |r| {
        phase_of(r) == Some(RecurringPhase::Active)
    });
    let id = schedule_id(&r.metadata);
    stack().controller.lock().unwrap().kill();
    // Changed while no controller runs.
    patch_spec(
        "restart",
        serde_json::json!({"suspend": true, "schedule": {"every": "2h"}}),
    );
    stack().controller.lock().unwrap().restart().unwrap();
    let r = wait_object("restart", "Suspended", 90, |r| {
        phase_of(r) == Some(RecurringPhase::Suspended)
            && r.status.as_ref().and_then(|s| s.schedule.as_deref()) == Some("every 2h")
    });
    assert_eq!(r.status.unwrap().observed_generation, r.metadata.generation);
    let described = block_on(async { schedules().await.describe(&id).await.unwrap().unwrap() });
    assert!(described.paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_deleted_out_of_band_comes_back_and_one_without_its_object_goes() {
    stack();
    apply(
        "comeback",
        serde_json::json!({"every": "2s"}),
        serde_json::json!({"maxPayments": 100}),
    );
    let r = wait_object("comeback", "a payment made", 60, |r| {
        r.status.as_ref().is_some_and(|s| s.payments_made >= 1)
    });
    let id = schedule_id(&r.metadata);
    let schedules = schedules().await;
    schedules.delete(&id).await.unwrap();
    // Seen at the next look (just after the next firing was due).
    eventually(
        Duration::from_secs(60),
        "the Schedule made again",
        || match block_on(schedules.describe(&id)).map_err(|e| e.to_string())? {
            Some(_) => Ok(()),
            None => Err("not yet".to_string()),
        },
    );
    let events = paysaga_testenv::kube()
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            &stack().namespace,
            "--field-selector",
            "regarding.name=comeback",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .unwrap();
    assert!(events.contains("ScheduleRecreated"), "{events}");
    patch_spec("comeback", serde_json::json!({"suspend": true}));

    // A Schedule under paysaga's prefix whose object does not exist.
    let stray = format!(
        "recurring-{}-stray-00000000-0000-0000-0000-000000000000",
        stack().namespace
    );
    let desired = paysaga_operator::schedules::Desired {
        cron: None,
        every: Some(Duration::from_secs(3600)),
        time_zone: None,
        start: None,
        end: None,
        remaining: None,
        paused: true,
        overlap: paysaga_api::recurring::OverlapPolicy::Skip,
        catchup: Duration::from_secs(60),
        fire: RecurringFire {
            namespace: stack().namespace.clone(),
            name: "stray".into(),
            uid: "00000000-0000-0000-0000-000000000000".into(),
            template: r.spec.template.clone(),
        },
        task_queue: "payments".into(),
    };
    assert!(schedules.create(&stray, &desired).await.unwrap());
    // The sweep runs every minute.
    eventually(
        Duration::from_secs(150),
        "the stray Schedule deleted",
        || match block_on(schedules.describe(&stray)).map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        },
    );
}

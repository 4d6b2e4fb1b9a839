//! Webhooks to merchants, on the real parts: the API server, the Temporal
//! dev server, the controller with the chart's controller ServiceAccount,
//! the worker with the chart's worker ServiceAccount (its webhook Role in
//! this namespace), each a process, and the simulators' merchant receivers.
//! Users apply Payments, WebhookEndpoints and Secrets with kubectl.

mod common;

use common::*;

use std::sync::OnceLock;
use std::time::Duration;

use kube::api::Api;
use paysaga_api::external::{CallbackOutcome, MerchantConfig, MerchantRecord, Scenario, paths};
use paysaga_api::names::workflow_id;
use paysaga_api::webhook::{EventType, event_id};
use paysaga_api::{Payment, Phase, WebhookEndpoint};
use paysaga_testenv::{Service, block_on, eventually};

/// Retries in this stack: 1 s, doubling, at most 4 s apart, for 20 s.
const GIVE_UP_AFTER_SECS: u64 = 20;

/// The tests' namespaces: each its own, so that one test's endpoints never
/// see another's payments.
#[derive(Clone, Copy)]
enum Room {
    Once = 0,
    Flaky = 1,
    Down = 2,
    Refunds = 3,
}

struct Stack {
    namespaces: Vec<String>,
    /// The worker's admin port (its metrics).
    admin: String,
    _worker: Service,
    _controller: Service,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        let namespaces: Vec<String> = ["wh-once", "wh-flaky", "wh-down", "wh-refunds"]
            .iter()
            .map(|p| kube.namespace(p).unwrap().name.clone())
            .collect();
        let kubeconfig = worker_service_account(&namespaces[0], &namespaces[1..]);
        let db = paysaga_testenv::postgres().database("webhooks").unwrap();
        let port = paysaga_testenv::free_port().unwrap();
        let worker = Service::payment_worker_kube(
            &paysaga_testenv::run_dir().join("webhooks-worker"),
            &paysaga_testenv::temporal().address,
            &db,
            "alice:EUR:100000000",
            &paysaga_testenv::sim().url,
            Some(&kubeconfig),
            &[
                format!("--webhook-namespaces={}", namespaces.join(",")),
                "--webhook-initial-retry-secs=1".into(),
                "--webhook-max-retry-interval-secs=4".into(),
                format!("--webhook-give-up-after-secs={GIVE_UP_AFTER_SECS}"),
                format!("--admin-listen=127.0.0.1:{port}"),
            ],
        )
        .unwrap();
        let controller = start_controller("webhooks-controller", &[]);
        // Every payment of these namespaces is confirmed at once unless a
        // test steers its own.
        for ns in &namespaces {
            block_on(scenario(
                &format!("payment-{ns}-"),
                Scenario {
                    callback: Some(CallbackOutcome::Succeeded),
                    callback_delay_ms: Some(50),
                    ..Scenario::default()
                },
            ));
        }
        Stack {
            namespaces,
            admin: format!("http://127.0.0.1:{port}"),
            _worker: worker,
            _controller: controller,
        }
    })
}

fn ns(room: Room) -> &'static str {
    &stack().namespaces[room as usize]
}

/// A receiver in the simulators, a Secret with its signing key and a
/// WebhookEndpoint for `events` pointing at it.
fn merchant(room: Room, name: &str, events: &[&str], config: MerchantConfig) {
    let sim = &paysaga_testenv::sim().url;
    let resp = block_on(
        reqwest::Client::new()
            .put(format!("{sim}{}/{name}", paths::ADMIN_MERCHANTS))
            .json(&config)
            .send(),
    )
    .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    endpoint(
        room,
        name,
        &format!("{sim}{}", paths::merchant_events(name)),
        events,
        &config.secret,
    );
}

fn endpoint(room: Room, name: &str, url: &str, events: &[&str], secret: &str) {
    let ns = ns(room);
    kubectl_apply(
        ns,
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-signing")},
            "stringData": {"secret": secret},
        })
        .to_string(),
    );
    kubectl_apply(
        ns,
        &serde_json::json!({
            "apiVersion": "paysaga.dev/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": name},
            "spec": {"url": url, "events": events, "secretRef": {"name": format!("{name}-signing")}},
        })
        .to_string(),
    );
    // The worker's watch has it before a payment ends.
    std::thread::sleep(Duration::from_secs(1));
}

fn received(name: &str) -> MerchantRecord {
    let sim = &paysaga_testenv::sim().url;
    block_on(async {
        reqwest::Client::new()
            .get(format!("{sim}{}/{name}", paths::ADMIN_MERCHANTS))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// What receiver `name` has, once it has accepted an event.
fn some_event(name: &str, within: Duration) -> MerchantRecord {
    eventually(within, &format!("{name} gets an event"), || {
        let r = received(name);
        if r.events.is_empty() {
            Err(format!("{r:?}"))
        } else {
            Ok(r)
        }
    })
}

fn endpoint_status(room: Room, name: &str) -> paysaga_api::WebhookEndpointStatus {
    block_on(async {
        let api: Api<WebhookEndpoint> =
            Api::namespaced(paysaga_testenv::kube().client().await.unwrap(), ns(room));
        api.get(name).await.unwrap().status.unwrap_or_default()
    })
}

/// Pays `name` and waits until it has ended as `want`.
fn pay(room: Room, name: &str, amount: i64, want: Phase) -> Payment {
    let ns = ns(room);
    kubectl_apply(ns, &manifest(name, amount));
    let api = block_on(payments(ns));
    wait_for(&api, name, "it ends", |p| phase(p) == Some(want))
}

/// Waits until endpoint `name` has given `event` up.
fn given_up(room: Room, name: &str, event: &str) -> paysaga_api::WebhookEndpointStatus {
    eventually(
        Duration::from_secs(GIVE_UP_AFTER_SECS + 30),
        &format!("{name} gives {event} up"),
        || {
            let s = endpoint_status(room, name);
            match &s.last_given_up {
                Some(g) if g.event_id == event => Ok(s),
                _ => Err(format!("{s:?}")),
            }
        },
    )
}

fn delivered_condition(s: &paysaga_api::WebhookEndpointStatus) -> Option<(String, String)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == "Delivering")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_signed_to_the_endpoints_that_want_it() {
    let ns = ns(Room::Once);
    let shop = paysaga_testenv::unique_name("shop");
    let refunds_desk = paysaga_testenv::unique_name("refunds-desk");
    let secret = paysaga_testenv::random_hex(16);
    merchant(
        Room::Once,
        &shop,
        &["payment.succeeded", "payment.failed", "payment.cancelled"],
        MerchantConfig {
            secret: secret.clone(),
            ..MerchantConfig::default()
        },
    );
    // Another endpoint wants failures only: it gets no success.
    merchant(
        Room::Once,
        &refunds_desk,
        &["payment.failed"],
        MerchantConfig {
            secret: paysaga_testenv::random_hex(16),
            ..MerchantConfig::default()
        },
    );
    block_on(scenario(
        &format!("payment-{ns}-declined-"),
        Scenario {
            decline: true,
            ..Scenario::default()
        },
    ));
    let paid = pay(Room::Once, "paid", 1_500, Phase::Succeeded);
    let declined = pay(Room::Once, "declined", 700, Phase::Failed);
    // One cancelled while it waits for the gateway's confirmation.
    let api = payments(ns).await;
    in_flight_payment(&api, ns, "changed-mind", 300).await;
    let out = paysaga_testenv::kube().kubectl_with_input(
        &[
            "annotate",
            "-n",
            ns,
            "payment",
            "changed-mind",
            "paysaga.dev/cancel=changed my mind",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cancelled = wait_for(&api, "changed-mind", "it is cancelled", |p| {
        phase(p) == Some(Phase::Cancelled)
    });

    let record = eventually(
        Duration::from_secs(30),
        "shop gets the three events",
        || {
            let r = received(&shop);
            if r.events.len() == 3 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    let by_type = |t: &str| {
        record
            .events
            .iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("no {t}: {record:?}"))
            .clone()
    };
    let succeeded = by_type("payment.succeeded");
    assert_eq!(
        succeeded["id"],
        event_id(&workflow_id(&paid.metadata), EventType::PaymentSucceeded)
    );
    assert_eq!(succeeded["data"]["namespace"], ns);
    assert_eq!(succeeded["data"]["name"], "paid");
    assert_eq!(succeeded["data"]["amount"], 1_500);
    assert_eq!(succeeded["data"]["currency"], "EUR");
    assert_eq!(succeeded["data"]["phase"], "Succeeded");
    let failed = by_type("payment.failed");
    assert_eq!(
        failed["id"],
        event_id(&workflow_id(&declined.metadata), EventType::PaymentFailed)
    );
    assert_eq!(failed["data"]["reason"], "Declined");
    let gone = by_type("payment.cancelled");
    assert_eq!(
        gone["id"],
        event_id(
            &workflow_id(&cancelled.metadata),
            EventType::PaymentCancelled
        )
    );
    assert_eq!(gone["data"]["name"], "changed-mind");
    // Signed with the endpoint's secret, verified by the receiver; once each.
    assert!(
        record
            .receipts
            .iter()
            .all(|r| r.signature_valid && r.status == 200),
        "{record:?}"
    );
    assert_eq!(record.receipts.len(), 3, "{record:?}");
    assert_eq!(record.duplicates, 0);

    let desk = eventually(Duration::from_secs(30), "the desk gets the failure", || {
        let r = received(&refunds_desk);
        if r.events.is_empty() {
            Err(format!("{r:?}"))
        } else {
            Ok(r)
        }
    });
    assert_eq!(desk.events.len(), 1, "{desk:?}");
    assert_eq!(desk.events[0]["type"], "payment.failed");

    // The endpoint's status tells what was delivered.
    let status = eventually(Duration::from_secs(10), "shop's status", || {
        let s = endpoint_status(Room::Once, &shop);
        if s.delivered == Some(3) {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert_eq!(
        delivered_condition(&status),
        Some(("True".into(), "Delivered".into()))
    );
    let last = status.last_delivered.expect("lastDelivered");
    assert_eq!(last.result, "delivered");
    assert_eq!(last.status_code, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refunds_end_is_an_event_of_its_own_delivered_once_signed() {
    let ns = ns(Room::Refunds);
    let desk = paysaga_testenv::unique_name("refund-desk");
    let payments_only = paysaga_testenv::unique_name("payments-only");
    merchant(
        Room::Refunds,
        &desk,
        &["refund.succeeded", "refund.failed"],
        MerchantConfig {
            secret: paysaga_testenv::random_hex(16),
            ..MerchantConfig::default()
        },
    );
    merchant(
        Room::Refunds,
        &payments_only,
        &["payment.succeeded"],
        MerchantConfig {
            secret: paysaga_testenv::random_hex(16),
            ..MerchantConfig::default()
        },
    );
    let paid = pay(Room::Refunds, "to-refund", 1_200, Phase::Succeeded);
    kubectl_apply(
        ns,
        &serde_json::json!({
            "apiVersion": "paysaga.dev/v1alpha1", "kind": "Refund",
            "metadata": {"name": "one-bag"},
            "spec": {"paymentName": "to-refund", "amount": 500, "reason": "requestedByCustomer"},
        })
        .to_string(),
    );
    some_event(&desk, Duration::from_secs(60));
    // Nothing more comes (a retried completion starts no second delivery).
    std::thread::sleep(Duration::from_secs(2));
    let record = received(&desk);
    assert_eq!(record.events.len(), 1, "{record:?}");
    assert_eq!(record.duplicates, 0);
    let event = &record.events[0];
    assert_eq!(event["type"], "refund.succeeded");
    let refunds: Api<paysaga_api::Refund> =
        Api::namespaced(paysaga_testenv::kube().client().await.unwrap(), ns);
    let refund = refunds.get("one-bag").await.unwrap();
    let refund_id = paysaga_api::refund::refund_workflow_id(&refund.metadata);
    assert_eq!(
        event["id"],
        event_id(&refund_id, EventType::RefundSucceeded)
    );
    assert_eq!(event["data"]["refundId"], refund_id.as_str());
    assert_eq!(event["data"]["paymentId"], workflow_id(&paid.metadata));
    assert_eq!(event["data"]["namespace"], ns);
    assert_eq!(event["data"]["name"], "one-bag");
    assert_eq!(event["data"]["amount"], 500);
    assert_eq!(event["data"]["currency"], "EUR");
    assert_eq!(event["data"]["phase"], "Succeeded");
    assert_eq!(event["data"]["reason"], "Refunded");
    assert!(
        record
            .receipts
            .iter()
            .all(|r| r.signature_valid && r.status == 200),
        "{record:?}"
    );
    // The endpoint that wants payments' events got the payment's, not the refund's.
    let other = some_event(&payments_only, Duration::from_secs(30));
    assert_eq!(
        other
            .events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["payment.succeeded"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_for_a_while_gets_the_event_later_exactly_once() {
    let flaky = paysaga_testenv::unique_name("flaky");
    merchant(
        Room::Flaky,
        &flaky,
        &["payment.succeeded"],
        MerchantConfig {
            secret: paysaga_testenv::random_hex(16),
            fail_first: 3,
            always: None,
        },
    );
    let paid = pay(Room::Flaky, "paid-flaky", 900, Phase::Succeeded);
    let record = eventually(Duration::from_secs(40), "flaky gets the event", || {
        let r = received(&flaky);
        if r.events.is_empty() {
            Err(format!("{r:?}"))
        } else {
            Ok(r)
        }
    });
    let statuses: Vec<u16> = record.receipts.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 503, 200], "{record:?}");
    assert_eq!(record.events.len(), 1);
    assert_eq!(
        record.events[0]["id"],
        event_id(&workflow_id(&paid.metadata), EventType::PaymentSucceeded)
    );
    // Backoff: each wait at least the one before (1 s, 2 s, 4 s).
    let at: Vec<i64> = record.receipts.iter().map(|r| r.at_ms).collect();
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= 900, "{gaps:?}");
    assert!(gaps.windows(2).all(|g| g[1] >= g[0] - 200), "{gaps:?}");
    // The payment had ended before the event was delivered: it did not wait.
    let completed = paid.status.as_ref().and_then(|s| s.completed_at.clone());
    let completed_ms = completed.expect("completedAt").0.as_millisecond();
    assert!(
        completed_ms < *at.last().unwrap(),
        "{completed_ms} vs {at:?}"
    );
    // Later deliveries of the same event would be duplicates: none came.
    std::thread::sleep(Duration::from_secs(2));
    let again = received(&flaky);
    assert_eq!((again.events.len(), again.duplicates), (1, 0), "{again:?}");
    let status = endpoint_status(Room::Flaky, &flaky);
    let last = status.last_attempt.expect("lastAttempt");
    assert_eq!((last.attempt, last.result.as_str()), (4, "delivered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_good_is_retried_with_backoff_then_given_up_and_the_payment_is_unaffected()
 {
    let broken = paysaga_testenv::unique_name("broken");
    let gone_dark = paysaga_testenv::unique_name("gone-dark");
    merchant(
        Room::Down,
        &broken,
        &["payment.succeeded"],
        MerchantConfig {
            secret: paysaga_testenv::random_hex(16),
            fail_first: 0,
            always: Some(500),
        },
    );
    // And one whose URL answers nothing at all.
    let closed = paysaga_testenv::free_port().unwrap();
    endpoint(
        Room::Down,
        &gone_dark,
        &format!("http://127.0.0.1:{closed}/events"),
        &["payment.succeeded"],
        "s3cret",
    );
    let paid = pay(Room::Down, "paid-broken", 400, Phase::Succeeded);
    let event = event_id(&workflow_id(&paid.metadata), EventType::PaymentSucceeded);

    // While it retries, the endpoint says it is failing.
    let failing = eventually(Duration::from_secs(15), "broken is failing", || {
        let s = endpoint_status(Room::Down, &broken);
        match delivered_condition(&s) {
            Some((status, reason)) if status == "False" && reason == "Failing" => Ok(s),
            _ => Err(format!("{s:?}")),
        }
    });
    let last = failing.last_attempt.expect("lastAttempt");
    assert_eq!(last.status_code, Some(500));
    assert_eq!(last.event_id, event);

    // Then it gives up, and says so.
    let broken_status = given_up(Room::Down, &broken, &event);
    assert_eq!(
        delivered_condition(&broken_status),
        Some(("False".into(), "GaveUp".into()))
    );
    let record = received(&broken);
    assert!(record.events.is_empty(), "{record:?}");
    // 0, 1, 3, 7, 11, 15, 19 s: about seven attempts in the 20 s, the waits
    // growing to 4 s and no shorter after.
    let at: Vec<i64> = record.receipts.iter().map(|r| r.at_ms).collect();
    assert!((5..=8).contains(&at.len()), "{at:?}");
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= 900 && gaps[2] >= 3_500, "{gaps:?}");
    assert!(gaps.iter().all(|g| *g <= 5_500), "{gaps:?}");

    // The endpoint that never answers is given up the same way, its
    // attempts' errors named.
    let dark = given_up(Room::Down, &gone_dark, &event);
    let message = dark.last_given_up.unwrap().message.unwrap_or_default();
    assert!(message.contains("POST http://127.0.0.1"), "{message}");

    // The payment's outcome is what it was.
    let api = block_on(payments(ns(Room::Down)));
    let p = block_on(api.get("paid-broken")).unwrap();
    assert_eq!(phase(&p), Some(Phase::Succeeded));

    // And the worker's metrics count the attempts.
    let metrics = block_on(async {
        reqwest::get(format!("{}/metrics", stack().admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let count = |result: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("paysaga_webhook_attempts_total{")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert!(count("gaveUp") >= 2.0, "{metrics}");
    assert!(count("failed") >= 10.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_is_validated_by_the_api_server() {
    let ns = ns(Room::Once);
    let out = paysaga_testenv::kube().kubectl_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &serde_json::json!({
            "apiVersion": "paysaga.dev/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": "bad"},
            "spec": {"url": "ftp://x", "events": ["payment.refunded", "payment.failed", "payment.failed"],
                     "secretRef": {"name": "s"}},
        })
        .to_string(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.url"), "{err}");
    assert!(err.contains("payment.refunded"), "{err}");
    assert!(err.contains("Duplicate value"), "{err}");
}

//! The HTTP API (`paysaga-operator api`) as a process, against the real API
//! server with the controller, the worker and the simulators running.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use kube::ResourceExt;
use paysaga_api::external::Scenario;
use paysaga_api::http::{PaymentPage, PaymentView, RefundPage, RefundView};
use paysaga_api::names::PAYMENT_LABEL;
use paysaga_api::refund::refund_name;
use paysaga_api::saga::refund_reasons;
use paysaga_api::{Phase, Refund, RefundPhase, RefundReason};
use paysaga_testenv::{Service, block_on, eventually};
use serde_json::json;

/// The namespace, the worker (with its ledger, for the audit), the
/// controller and two APIs: one as deployed, and one that takes a single
/// request at a time (for overload).
struct Stack {
    namespace: String,
    /// An API key bound to paysaga-client.
    key: String,
    database_url: String,
    api: Service,
    tiny: Service,
    worker: Service,
    controller: Service,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        let namespace = kube.namespace("http").unwrap().name.clone();
        let temporal = &paysaga_testenv::temporal().address;
        let dir = paysaga_testenv::run_dir();
        let _callbacks = paysaga_testenv::api();
        let database_url = paysaga_testenv::postgres().database("http").unwrap();
        let worker = Service::payment_worker(
            &dir.join("http-worker"),
            temporal,
            &database_url,
            "alice:EUR:100000000",
            &paysaga_testenv::sim().url,
        )
        .unwrap();
        let api = |name: &str, extra: &[String]| {
            Service::full_api(
                &dir.join(name),
                temporal,
                None,
                &kube.admin_kubeconfig,
                &namespace,
                extra,
            )
            .unwrap()
        };
        let key = kube
            .api_key(&namespace, "tests", &["paysaga-client"])
            .unwrap();
        Stack {
            key,
            api: api("api", &[]),
            tiny: api("tiny-api", &["--max-in-flight=1".into()]),
            worker,
            // Deleted payments' keys are kept 20 s here (30 days by default),
            // so that a test sees one swept.
            controller: start_controller(
                "controller",
                &[
                    "--idempotency-retention-secs=20".into(),
                    "--idempotency-sweep-secs=1".into(),
                ],
            ),
            namespace,
            database_url,
        }
    })
}

fn url(path: &str) -> String {
    format!("{}{path}", stack().api.url)
}

fn http() -> reqwest::Client {
    authed_http(&stack().key)
}

fn body(user: &str, amount: i64) -> serde_json::Value {
    json!({"userId": user, "amount": amount, "currency": "EUR", "method": "card",
           "notify": {"email": "alice@example.com"}})
}

async fn create(body: &serde_json::Value, key: Option<&str>) -> reqwest::Response {
    let mut req = http().post(url("/v1/payments")).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn view(resp: reqwest::Response) -> PaymentView {
    resp.json().await.unwrap()
}

/// Follows a payment through the API until `pred` holds.
fn follow(status_url: &str, what: &str, pred: impl Fn(&PaymentView) -> bool) -> PaymentView {
    eventually(
        Duration::from_secs(60),
        &format!("{status_url}: {what}"),
        || {
            let resp = block_on(http().get(url(status_url)).send()).map_err(|e| e.to_string())?;
            if resp.status() != 200 {
                return Err(resp.status().to_string());
            }
            let v: PaymentView = block_on(resp.json()).map_err(|e| e.to_string())?;
            if pred(&v) {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
}

/// Asserts an RFC 9457 problem with `status` whose detail contains `words`.
async fn problem(resp: reqwest::Response, status: u16, words: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ctype, "application/problem+json");
    let p: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(p["status"], status);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(words), "expected {words:?} in {detail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_follow_the_status_url_to_succeeded() {
    let resp = create(&body("alice", 1250), None).await;
    assert_eq!(resp.status(), 202);
    let created = view(resp).await;
    assert!(created.id.starts_with("pay-"));
    assert_eq!(created.status_url, format!("/v1/payments/{}", created.id));
    assert_eq!(created.spec.amount, 1250);
    let done = follow(&created.status_url, "Succeeded", |v| {
        v.phase == Phase::Succeeded
    });
    assert_eq!(done.reason.as_deref(), Some("Confirmed"));
    assert!(done.started_at.is_some() && done.completed_at.is_some() && done.created_at.is_some());
    assert!(
        done.conditions
            .iter()
            .any(|c| c.type_ == "Charged" && c.status == "True")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_the_same_payment_and_refuse_a_different_one() {
    let key = paysaga_testenv::unique_name("order");
    let first = create(&body("alice", 300), Some(&key)).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("Idempotent-Replayed").is_none());
    let first = view(first).await;

    let again = create(&body("alice", 300), Some(&key)).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    assert_eq!(view(again).await.id, first.id);

    let other = create(&body("alice", 301), Some(&key)).await;
    problem(other, 409, "already used for a different payment").await;

    // Without a key, the same body is a new payment each time.
    let a = view(create(&body("alice", 5), None).await).await;
    let b = view(create(&body("alice", 5), None).await).await;
    assert_ne!(a.id, b.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outlives_its_deleted_payment_and_pays_nothing_twice() {
    let ns = &stack().namespace;
    let key = paysaga_testenv::unique_name("order");
    let first = view(create(&body("alice", 310), Some(&key)).await).await;
    follow(&first.status_url, "Succeeded", |v| {
        v.phase == Phase::Succeeded
    });
    // Deleted, as the finished-payment TTL or a user would.
    paysaga_testenv::kube()
        .kubectl_ok(&["delete", "payment", &first.id, "-n", ns, "--wait=true"])
        .unwrap();
    let payments = payments(ns).await;
    wait_gone(&payments, &first.id, "deleted");

    // The retry is answered from the kept key: the same payment, as it
    // ended, and nothing is created.
    let again = create(&body("alice", 310), Some(&key)).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    let again = view(again).await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.phase, Phase::Succeeded);
    assert_eq!(again.reason.as_deref(), Some("Confirmed"));
    let message = again.message.unwrap_or_default();
    assert!(message.contains("was deleted at"), "{message}");
    assert!(
        block_on(payments.get_opt(&first.id)).unwrap().is_none(),
        "a retry after the deletion made the payment again"
    );
    // Another body under the same key is still refused.
    problem(
        create(&body("alice", 311), Some(&key)).await,
        409,
        "already used for a different payment",
    )
    .await;
    let record = paysaga_testenv::kube()
        .kubectl_ok(&["get", "idempotencykey", &first.id, "-n", ns, "-o", "json"])
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["spec"]["userId"], "alice");
    assert_eq!(record["spec"]["payment"]["phase"], "Succeeded");
    assert!(
        !record.to_string().contains(&key),
        "the key itself is stored: {record}"
    );

    // Past its retention (20 s in this stack) the record is swept.
    eventually(Duration::from_secs(60), "the kept key swept", || {
        let out = paysaga_testenv::kube()
            .kubectl()
            .args(["get", "idempotencykey", &first.id, "-n", ns])
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if err.contains("NotFound") {
            Ok(())
        } else {
            Err(format!(
                "still there: {}",
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_to_the_payer_and_leak_nothing_across_payers() {
    let key = paysaga_testenv::unique_name("shared");
    let alice = create(&body("alice", 320), Some(&key)).await;
    assert_eq!(alice.status(), 202);
    let alice = view(alice).await;
    // Another payer's client picks the same key: a payment of its own, not
    // a 409 that would tell it the key is in use.
    let bob = create(&body("bob", 320), Some(&key)).await;
    assert_eq!(bob.status(), 202);
    assert!(bob.headers().get("Idempotent-Replayed").is_none());
    let bob = view(bob).await;
    assert_ne!(bob.id, alice.id);
    assert_eq!(bob.spec.user_id, "bob");
    let bob_other = create(&body("bob", 999), Some(&key)).await;
    problem(bob_other, 409, "already used for a different payment").await;
    // Each payer's retry still finds its own payment.
    let again = view(create(&body("alice", 320), Some(&key)).await).await;
    assert_eq!(again.id, alice.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_are_422_with_a_reason() {
    let mut cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"userId": "alice", "amount": 0, "currency": "EUR", "method": "card"}),
            "spec.amount in body should be greater than or equal to 1",
        ),
        (
            json!({"userId": "alice", "amount": 1_000_000_001i64, "currency": "EUR", "method": "card"}),
            "spec.amount in body should be less than or equal to",
        ),
        (
            json!({"userId": "alice", "amount": 1, "currency": "eur", "method": "card"}),
            "spec.currency in body should match",
        ),
        (
            json!({"userId": "alice", "amount": 1, "currency": "EUR", "method": "cash"}),
            "unknown variant `cash`",
        ),
        (
            json!({"amount": 1, "currency": "EUR", "method": "card"}),
            "missing field `userId`",
        ),
        (
            json!({"userId": "alice", "amount": 1.5, "currency": "EUR", "method": "card"}),
            "invalid type: floating point",
        ),
        (
            json!({"userId": "alice", "amount": 1, "currency": "EUR", "method": "card", "notify": {"email": "nope"}}),
            "spec.notify.email in body should match",
        ),
    ];
    // A typo is not dropped (the payer would never be told): it is named.
    cases.push((
        json!({"userId": "alice", "amount": 1, "currency": "EUR", "method": "card", "notfiy": {"email": "a@b.c"}}),
        "unknown field \"notfiy\"",
    ));
    // userId: a safe set only; kubectl get would print the others raw.
    for user in [
        "alice\u{202E}lana",
        "ali\u{200B}ce",
        " ",
        "alice smith",
        "-alice",
    ] {
        cases.push((
            json!({"userId": user, "amount": 1, "currency": "EUR", "method": "card"}),
            "spec.userId in body should match",
        ));
    }
    cases.push((json!("not an object"), "invalid payment"));
    for (b, words) in cases {
        problem(create(&b, None).await, 422, words).await;
    }
    let raw = http()
        .post(url("/v1/payments"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    problem(raw, 422, "invalid payment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404() {
    problem(
        http()
            .get(url("/v1/payments/no-such-payment"))
            .send()
            .await
            .unwrap(),
        404,
        "not found",
    )
    .await;
    let cancel = http()
        .post(url("/v1/payments/no-such-payment/cancel"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(cancel, 404, "not found").await;
    problem(
        http().get(url("/v2/whatever")).send().await.unwrap(),
        404,
        "no such route",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_flight_and_after_completion() {
    let stack = stack();
    let api = payments(&stack.namespace).await;
    let name = paysaga_testenv::unique_name("pay-cancel");
    // In flight through the object's own path (no confirmation will come).
    let p = in_flight_payment(&api, &stack.namespace, &name, 200).await;
    let id = p.metadata.name.unwrap();
    let resp = http()
        .post(url(&format!("/v1/payments/{id}/cancel")))
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(view(resp).await.cancel_requested);
    let done = follow(&format!("/v1/payments/{id}"), "Cancelled", |v| {
        v.phase == Phase::Cancelled
    });
    assert!(done.message.unwrap().contains("changed my mind"));

    let finished = view(create(&body("alice", 10), None).await).await;
    follow(&finished.status_url, "Succeeded", |v| {
        v.phase == Phase::Succeeded
    });
    let late = http()
        .post(url(&format!("{}/cancel", finished.status_url)))
        .send()
        .await
        .unwrap();
    problem(late, 409, "already finished (Succeeded)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_user_and_phase_and_pages() {
    // An unknown user's payments fail at validation, quickly.
    let user = paysaga_testenv::unique_name("lister");
    for _ in 0..3 {
        assert_eq!(create(&body(&user, 7), None).await.status(), 202);
    }
    let failed = eventually(
        Duration::from_secs(60),
        "the three payments to fail",
        || {
            let listed = url(&format!("/v1/payments?userId={user}&phase=Failed"));
            let page: PaymentPage =
                block_on(async { http().get(listed).send().await?.json().await })
                    .map_err(|e| e.to_string())?;
            if page.items.len() == 3 {
                Ok(page)
            } else {
                Err(format!("{page:?}"))
            }
        },
    );
    assert!(
        failed
            .items
            .iter()
            .all(|v| v.spec.user_id == user && v.phase == Phase::Failed)
    );

    let first: PaymentPage = http()
        .get(url(&format!("/v1/payments?userId={user}&limit=2")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.continue_token.expect("a continue token");
    let second: PaymentPage = http()
        .get(url("/v1/payments"))
        .query(&[
            ("userId", user.as_str()),
            ("limit", "2"),
            ("continue", token.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert!(second.continue_token.is_none());

    let none: PaymentPage = http()
        .get(url(&format!("/v1/payments?userId={user}&phase=Succeeded")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none.items.is_empty());
    problem(
        http()
            .get(url("/v1/payments?phase=Sideways"))
            .send()
            .await
            .unwrap(),
        400,
        "unknown variant `Sideways`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_bound_the_api_sheds_load_with_retry_after() {
    let tiny = &stack().tiny;
    let client = http();
    let requests = (0..40).map(|_| {
        client
            .get(format!("{}/v1/payments?limit=100", tiny.url))
            .send()
    });
    let answers = futures::future::join_all(requests).await;
    let mut ok = 0;
    let mut shed = 0;
    for a in answers {
        let a = a.expect("no request hangs or times out");
        match a.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(a.headers()["retry-after"], "1");
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok={ok} shed={shed}");
    // Health and metrics are never shed.
    assert_eq!(
        client
            .get(format!("{}/healthz", tiny.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_limit_of_payments_in_flight_the_api_refuses_new_ones_and_creates_nothing() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("http-admit").unwrap();
    let admit = Service::full_api(
        &paysaga_testenv::run_dir().join("admit-api"),
        &paysaga_testenv::temporal().address,
        None,
        &kube.admin_kubeconfig,
        &ns.name,
        &["--max-payments-in-flight=2".into()],
    )
    .unwrap();
    let key = kube
        .api_key(&ns.name, "admit", &["paysaga-client"])
        .unwrap();
    let http = || authed_http(&key);
    let post = || {
        http()
            .post(format!("{}/v1/payments", admit.url))
            .json(&body("alice", 100))
            .send()
    };
    // Payments that stay in flight: no confirmation comes for this namespace.
    scenario(&format!("payment-{}-", ns.name), Scenario::default()).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = post().await.unwrap();
        assert_eq!(resp.status(), 202);
        ids.push(view(resp).await.id);
    }
    let refused = post().await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "2");
    problem(refused, 429, "2 payments are in flight").await;
    let api = payments(&ns.name).await;
    let objects = api.list(&Default::default()).await.unwrap().items;
    assert_eq!(objects.len(), 2, "a refused payment was created");
    // Made by the API: the controller's finalizer and the acceptance time are set.
    for p in &objects {
        assert_eq!(
            p.metadata.finalizers.as_deref(),
            Some(&["paysaga.dev/workflow".to_string()][..])
        );
        let stamp = &p.metadata.annotations.as_ref().unwrap()["paysaga.dev/accepted-at"];
        assert!(
            stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "{stamp}"
        );
    }

    // Once they finish, there is room again.
    for id in &ids {
        let resp = http()
            .post(format!("{}/v1/payments/{id}/cancel", admit.url))
            .json(&json!({"reason": "making room"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        // Asked again, finished or not: the same reason changes nothing, a
        // new one is refused and the first named (the saga keeps it).
        let again = |reason: &'static str| {
            http()
                .post(format!("{}/v1/payments/{id}/cancel", admit.url))
                .json(&json!({ "reason": reason }))
                .send()
        };
        assert_eq!(again("making room").await.unwrap().status(), 202);
        problem(
            again("another reason").await.unwrap(),
            409,
            "already asked for payment",
        )
        .await;
    }
    eventually(Duration::from_secs(60), "admitted again", || {
        let resp = block_on(post()).map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            202 => Ok(()),
            429 => Err(block_on(resp.text()).unwrap_or_default()),
            other => panic!("{other}: {}", block_on(resp.text()).unwrap_or_default()),
        }
    });

    // Reads of a payment the watch has shown are answered from it, and say
    // what the object says. Only this test reads through this API.
    let reads = |source: &'static str| {
        let admit = admit.url.clone();
        async move {
            let metrics = http()
                .get(format!("{admit}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            paysaga_testenv::prom::sum(&metrics, "paysaga_api_payment_reads_total", |s| {
                s.label("source") == source
            })
        }
    };
    for id in &ids {
        // Once the watch has shown the end (it may lag the object a little)...
        eventually(Duration::from_secs(60), &format!("{id}: Cancelled"), || {
            let read = http().get(format!("{}/v1/payments/{id}", admit.url));
            let v: PaymentView =
                block_on(async { read.send().await?.json().await }).map_err(|e| e.to_string())?;
            if v.phase == Phase::Cancelled {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        });
        let object = api.get(id).await.unwrap();
        let before = (reads("watch").await, reads("apiserver").await);
        let served: PaymentView = http()
            .get(format!("{}/v1/payments/{id}", admit.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(served, PaymentView::of(&object, ""), "{id}");
        let after = (reads("watch").await, reads("apiserver").await);
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1.0, 0.0),
            "{id}: the read did not come from the watch"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let api = &stack().api;
    assert_eq!(
        http()
            .get(format!("{}/healthz", api.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http()
            .get(format!("{}/readyz", api.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    http()
        .get(url("/v1/payments/no-such"))
        .send()
        .await
        .unwrap();
    let metrics = http()
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"paysaga_api_request_duration_seconds_count{method="GET",route="/v1/payments/{id}",status="404"}"#),
        "{metrics}"
    );
}

/// A fuzz run generated from the OpenAPI document (schemathesis): no input
/// makes the API answer 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuzz_run_from_the_openapi_document_finds_no_server_error() {
    let api = &stack().api;
    let served: serde_json::Value = http()
        .get(format!("{}/openapi.json", api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, paysaga_operator::http::openapi::document());
    // Its cache goes in the run's directory, not the source tree.
    let out = tokio::process::Command::new(paysaga_testenv::tool("schemathesis"))
        .current_dir(paysaga_testenv::run_dir())
        .args([
            "run",
            &format!("{}/openapi.json", api.url),
            "--checks",
            "not_a_server_error",
            "--header",
            &format!("Authorization: Bearer {}", stack().key),
        ])
        .args([
            "--max-examples",
            "50",
            "--generation-deterministic",
            "--no-color",
        ])
        .output()
        .await
        .unwrap();
    // What it made fires on a schedule (the controller runs them): stopped
    // here, before anything is asserted, so that the other tests' payments
    // run beside none of it.
    let made: kube::Api<paysaga_api::RecurringPayment> = kube::Api::namespaced(
        paysaga_testenv::kube().client().await.unwrap(),
        &stack().namespace,
    );
    made.delete_collection(&Default::default(), &Default::default())
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let cases = report
        .lines()
        .find(|l| l.contains(" generated,"))
        .unwrap_or("no case count")
        .trim()
        .to_string();
    println!("schemathesis: {cases}");
    assert!(
        out.status.success(),
        "schemathesis found server errors:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cases.contains("passed"), "{report}");
    // Every operation of the document was run, the refunds' and the
    // recurring payments' among them.
    let operations: usize = served["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|methods| methods.as_object().unwrap().len())
        .sum();
    let ids = served.to_string();
    for id in [
        "createRefund",
        "listRefunds",
        "getRefund",
        "createRecurringPayment",
        "listRecurringPayments",
        "getRecurringPayment",
        "deleteRecurringPayment",
        "suspendRecurringPayment",
        "resumeRecurringPayment",
        "listRecurringPaymentPayments",
    ] {
        assert!(ids.contains(&format!("\"operationId\":\"{id}\"")), "{id}");
    }
    let selected = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Operations:"))
        .map(str::trim);
    assert_eq!(
        selected,
        Some(format!("{operations} selected / {operations} total").as_str()),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_problem_json() {
    // A JSON body sent as text: 415, nothing created.
    let as_text = http()
        .post(url("/v1/payments"))
        .header("content-type", "text/plain")
        .body(body("alice", 7).to_string())
        .send()
        .await
        .unwrap();
    problem(as_text, 415, "must be sent as application/json").await;
    let untyped = http()
        .post(url("/v1/payments"))
        .body(body("alice", 7).to_string())
        .send()
        .await
        .unwrap();
    problem(untyped, 415, "no Content-Type").await;
    // A body over the limit: 413.
    let huge = format!(
        r#"{{"userId":"alice","amount":1,"currency":"EUR","method":"card","description":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let too_large = http()
        .post(url("/v1/payments"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    problem(too_large, 413, "over this API's limit").await;
    // A method a route does not take: 405, with Allow.
    let wrong = http().put(url("/v1/payments")).send().await.unwrap();
    assert!(wrong.headers().contains_key("allow"), "{wrong:?}");
    problem(wrong, 405, "does not take that method").await;
    // A very long path: 414.
    let long = http()
        .get(url(&format!("/v1/payments/{}", "a".repeat(10 * 1024))))
        .send()
        .await
        .unwrap();
    problem(long, 414, "at most 8192 are read").await;
    // An unknown field in another body: 422 naming it.
    let typo = http()
        .post(url("/v1/payments/whoever/cancel"))
        .json(&json!({"reasn": "typo"}))
        .send()
        .await
        .unwrap();
    problem(typo, 422, "unknown field \"reasn\"").await;
}

// ---- refunds -------------------------------------------------------------------------

async fn refund(payment: &str, body: &serde_json::Value, key: Option<&str>) -> reqwest::Response {
    let mut req = http()
        .post(url(&format!("/v1/payments/{payment}/refunds")))
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn refund_view(resp: reqwest::Response) -> RefundView {
    resp.json().await.unwrap()
}

async fn refunds_listed(payment: &str) -> RefundPage {
    let resp = http()
        .get(url(&format!("/v1/payments/{payment}/refunds")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The Refund objects naming `payment`, as the API server has them.
async fn refund_objects(payment: &str) -> Vec<Refund> {
    let api: kube::Api<Refund> = kube::Api::namespaced(
        paysaga_testenv::kube().client().await.unwrap(),
        &stack().namespace,
    );
    let params = kube::api::ListParams::default().fields(&format!("spec.paymentName={payment}"));
    api.list(&params).await.unwrap().items
}

/// A payment made through the API, once it has succeeded.
async fn succeeded_payment(amount: i64) -> PaymentView {
    let resp = create(&body("alice", amount), None).await;
    assert_eq!(resp.status(), 202);
    let created = view(resp).await;
    follow(&created.status_url, "Succeeded", |v| {
        v.phase == Phase::Succeeded
    })
}

fn ids(page: &RefundPage) -> BTreeSet<String> {
    page.items.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_of_an_unknown_payment_or_id_are_404() {
    let asked = json!({"amount": 100, "reason": "requestedByCustomer"});
    problem(
        refund("no-such-payment", &asked, None).await,
        404,
        "payment no-such-payment: not found",
    )
    .await;
    problem(
        refund("no-such-payment", &asked, Some("a-key")).await,
        404,
        "payment no-such-payment: not found",
    )
    .await;
    for path in [
        "/v1/payments/no-such-payment/refunds",
        "/v1/refunds/no-such-refund",
        "/v1/refunds/Not_A_Name",
    ] {
        let resp = http().get(url(path)).send().await.unwrap();
        problem(resp, 404, "not found").await;
    }
    assert!(refund_objects("no-such-payment").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_succeeded_payment_not_being_deleted_can_be_refunded() {
    let stack = stack();
    let asked = json!({"amount": 100, "reason": "requestedByCustomer"});
    // In flight: the gateway never confirms its charge.
    let api = payments(&stack.namespace).await;
    let name = paysaga_testenv::unique_name("pay-unrefundable");
    in_flight_payment(&api, &stack.namespace, &name, 500).await;
    problem(
        refund(&name, &asked, None).await,
        409,
        &format!(
            "payment {name} has not succeeded (Processing); only a succeeded payment can be refunded"
        ),
    )
    .await;
    // Failed: an unknown payer's payment fails at validation.
    let failed =
        view(create(&body(&paysaga_testenv::unique_name("nobody"), 500), None).await).await;
    follow(&failed.status_url, "Failed", |v| v.phase == Phase::Failed);
    problem(
        refund(&failed.id, &asked, None).await,
        409,
        "has not succeeded (Failed)",
    )
    .await;

    // Being deleted (held here by a finalizer of the test's): refused too.
    let paid = succeeded_payment(500).await;
    const HOLD: &str = "test.paysaga.dev/hold";
    let kube = paysaga_testenv::kube();
    let ns = stack.namespace.as_str();
    let hold = json!([{"op": "add", "path": "/metadata/finalizers/-", "value": HOLD}]).to_string();
    kube.kubectl_ok(&[
        "patch",
        "payment",
        &paid.id,
        "-n",
        ns,
        "--type=json",
        "-p",
        &hold,
    ])
    .unwrap();
    kube.kubectl_ok(&["delete", "payment", &paid.id, "-n", ns, "--wait=false"])
        .unwrap();
    problem(
        refund(&paid.id, &asked, None).await,
        409,
        &format!("payment {} is being deleted", paid.id),
    )
    .await;
    for id in [&name, &failed.id, &paid.id] {
        assert!(
            refund_objects(id).await.is_empty(),
            "{id}: a refund was made"
        );
    }
    // Let it go: remove the test's finalizer, and only it.
    eventually(
        Duration::from_secs(30),
        "the test's finalizer removed",
        || {
            let p = block_on(api.get(&paid.id)).map_err(|e| e.to_string())?;
            let finalizers = p.metadata.finalizers.unwrap_or_default();
            let Some(i) = finalizers.iter().position(|f| f == HOLD) else {
                return Ok(());
            };
            let remove = json!([
                {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": HOLD},
                {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
            ])
            .to_string();
            kube.kubectl_ok(&[
                "patch",
                "payment",
                &paid.id,
                "-n",
                ns,
                "--type=json",
                "-p",
                &remove,
            ])
            .map(|_| ())
            .map_err(|e| e.to_string())
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_requests_are_checked_before_anything_is_made() {
    let paid = succeeded_payment(1000).await;
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"amount": 100, "reason": "boredom"}),
            "unknown variant `boredom`",
        ),
        (
            json!({"amount": 100, "reason": "duplicate", "notes": "typo of description"}),
            "unknown field \"notes\"",
        ),
        (json!({"reason": "duplicate"}), "missing field `amount`"),
        (
            json!({"amount": 1.5, "reason": "duplicate"}),
            "invalid type: floating point",
        ),
        // The API server's own validation (the CRD's), as for payments.
        (
            json!({"amount": 0, "reason": "duplicate"}),
            "spec.amount in body should be greater than or equal to 1",
        ),
        (
            json!({"amount": -5, "reason": "duplicate"}),
            "spec.amount in body should be greater than or equal to 1",
        ),
        (
            json!({"amount": 10, "reason": "other", "description": "x".repeat(257)}),
            "spec.description",
        ),
        // More than the payment has: an early answer (the ledger decides).
        (
            json!({"amount": 1001, "reason": "duplicate"}),
            "at most 1000 can still be refunded",
        ),
    ];
    for (asked, words) in cases {
        problem(refund(&paid.id, &asked, None).await, 422, words).await;
    }
    let good = json!({"amount": 100, "reason": "duplicate"});
    let refunds = url(&format!("/v1/payments/{}/refunds", paid.id));
    let as_text = http()
        .post(&refunds)
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    problem(as_text, 415, "must be sent as application/json").await;
    let untyped = http()
        .post(&refunds)
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    problem(untyped, 415, "no Content-Type").await;
    for bad_key in [" ".to_string(), "k".repeat(256)] {
        problem(
            refund(&paid.id, &good, Some(&bad_key)).await,
            400,
            "Idempotency-Key must be 1 to 255 visible characters",
        )
        .await;
    }
    assert!(refund_objects(&paid.id).await.is_empty());
    assert!(refunds_listed(&paid.id).await.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_idempotency_key_replays_the_same_refund_and_refuses_a_different_one() {
    let paid = succeeded_payment(1000).await;
    let key = paysaga_testenv::unique_name("refund");
    let asked = json!({"amount": 100, "reason": "requestedByCustomer", "description": "scratched"});
    let first = refund(&paid.id, &asked, Some(&key)).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("Idempotent-Replayed").is_none());
    let first = refund_view(first).await;
    assert_eq!(first.id, refund_name(&paid.id, &key));
    assert_eq!(first.status_url, format!("/v1/refunds/{}", first.id));
    assert_eq!(
        (first.payment_id.as_str(), first.amount, first.reason),
        (paid.id.as_str(), 100, RefundReason::RequestedByCustomer)
    );
    assert_eq!(first.description.as_deref(), Some("scratched"));
    assert_eq!(first.phase, RefundPhase::Pending);
    assert!(first.created_at.is_some());

    let again = refund(&paid.id, &asked, Some(&key)).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    assert_eq!(refund_view(again).await.id, first.id);

    let other = json!({"amount": 101, "reason": "requestedByCustomer", "description": "scratched"});
    problem(
        refund(&paid.id, &other, Some(&key)).await,
        409,
        "this Idempotency-Key was already used for a different refund",
    )
    .await;

    // One object, owned by the payment (deleted with it) and labelled with it.
    let objects = refund_objects(&paid.id).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    let object = &objects[0];
    assert_eq!(object.metadata.name.as_deref(), Some(first.id.as_str()));
    assert_eq!(object.labels()[PAYMENT_LABEL], paid.id);
    let payment = payments(&stack().namespace)
        .await
        .get(&paid.id)
        .await
        .unwrap();
    let owners = object.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (
            owners[0].api_version.as_str(),
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            Some(owners[0].uid.clone()),
            owners[0].controller,
            owners[0].block_owner_deletion
        ),
        (
            "paysaga.dev/v1alpha1",
            "Payment",
            paid.id.as_str(),
            payment.metadata.uid,
            Some(false),
            None
        )
    );

    // Without a key, the same body is a new refund each time.
    let a = refund_view(refund(&paid.id, &asked, None).await).await;
    let b = refund_view(refund(&paid.id, &asked, None).await).await;
    assert!(a.id.starts_with("rf-") && b.id.starts_with("rf-"));
    assert_ne!(a.id, b.id);
    // The key is scoped to the payment: another payment's refund of its own.
    let other_paid = succeeded_payment(1000).await;
    let elsewhere = refund(&other_paid.id, &asked, Some(&key)).await;
    assert_eq!(elsewhere.status(), 202);
    assert!(elsewhere.headers().get("Idempotent-Replayed").is_none());
    assert_ne!(refund_view(elsewhere).await.id, first.id);
    assert_eq!(
        ids(&refunds_listed(&paid.id).await),
        BTreeSet::from([first.id, a.id, b.id])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_read_one_by_one_and_listed_by_payment() {
    let ns = &stack().namespace;
    let paid = succeeded_payment(1000).await;
    let made = refund(
        &paid.id,
        &json!({"amount": 250, "reason": "fraudulent"}),
        None,
    )
    .await;
    assert_eq!(made.status(), 202);
    let made = refund_view(made).await;
    // One made with kubectl (no label, no owner), and one of another payment.
    let by_kubectl = paysaga_testenv::unique_name("rf-kubectl");
    let elsewhere = paysaga_testenv::unique_name("rf-elsewhere");
    for (name, payment) in [
        (&by_kubectl, paid.id.as_str()),
        (&elsewhere, "another-payment"),
    ] {
        let manifest = json!({
            "apiVersion": "paysaga.dev/v1alpha1", "kind": "Refund",
            "metadata": {"name": name},
            "spec": {"paymentName": payment, "amount": 50, "reason": "other"},
        });
        kubectl_apply(ns, &manifest.to_string());
    }

    let read: RefundView = http()
        .get(url(&made.status_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            read.id.as_str(),
            read.payment_id.as_str(),
            read.amount,
            read.reason
        ),
        (
            made.id.as_str(),
            paid.id.as_str(),
            250,
            RefundReason::Fraudulent
        )
    );
    let kubectl_made: RefundView = http()
        .get(url(&format!("/v1/refunds/{by_kubectl}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (kubectl_made.payment_id.as_str(), kubectl_made.amount),
        (paid.id.as_str(), 50)
    );

    let page = refunds_listed(&paid.id).await;
    assert_eq!(ids(&page), BTreeSet::from([made.id.clone(), by_kubectl]));
    assert!(page.items.iter().all(|r| r.payment_id == paid.id));
    // Answered the same by the object: the view is of the Refund.
    for object in refund_objects(&paid.id).await {
        let listed = page
            .items
            .iter()
            .find(|r| Some(&r.id) == object.metadata.name.as_ref());
        assert_eq!(
            listed.map(|r| (r.amount, r.reason)),
            Some((object.spec.amount, object.spec.reason))
        );
    }
}

/// The API's Role (`charts/paysaga/templates/api.yaml`) grants what its
/// routes need, refunds and recurring payments included, and nothing more:
/// asked with `kubectl auth can-i`, then proven by an API running with only
/// that account (the recurring payments' routes are proven so in
/// `http_recurring.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_account_can_do_what_its_routes_need_and_no_more() {
    stack();
    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("http-rbac").unwrap();
    let chart = paysaga_testenv::workspace_root().join("charts/paysaga");
    let rendered = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("helm"))
            .args(["template", "paysaga"])
            .arg(&chart)
            .args(["--namespace", &ns.name, "--show-only", "templates/api.yaml"]),
    )
    .unwrap();
    let rbac: Vec<&str> = rendered
        .split("\n---")
        .filter(|doc| {
            doc.lines().any(|l| {
                matches!(
                    l,
                    "kind: ServiceAccount"
                        | "kind: Role"
                        | "kind: RoleBinding"
                        | "kind: ClusterRole"
                        | "kind: ClusterRoleBinding"
                )
            })
        })
        .collect();
    assert_eq!(rbac.len(), 5, "{rendered}");
    kubectl_apply(&ns.name, &rbac.join("\n---\n"));
    let kubeconfig = kube
        .service_account_kubeconfig(&ns.name, "paysaga-api")
        .unwrap();
    // `kind/status` is the status subresource (kubectl would read it as
    // an object named `status`).
    let can = |verb: &str, resource: &str, namespace: &str| {
        let mut cmd = std::process::Command::new(paysaga_testenv::tool("kubectl"));
        cmd.arg("--kubeconfig").arg(&kubeconfig);
        match resource.split_once('/') {
            Some((kind, sub)) => cmd.args(["auth", "can-i", verb, kind, "--subresource", sub]),
            None => cmd.args(["auth", "can-i", verb, resource]),
        };
        let out = cmd.args(["-n", namespace]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (verb, resource) in [
        ("create", "payments.paysaga.dev"),
        ("get", "payments.paysaga.dev"),
        ("list", "payments.paysaga.dev"),
        ("watch", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev"),
        ("get", "idempotencykeys.paysaga.dev"),
        ("create", "refunds.paysaga.dev"),
        ("get", "refunds.paysaga.dev"),
        ("list", "refunds.paysaga.dev"),
        ("create", "recurringpayments.paysaga.dev"),
        ("get", "recurringpayments.paysaga.dev"),
        ("list", "recurringpayments.paysaga.dev"),
        ("patch", "recurringpayments.paysaga.dev"),
        ("delete", "recurringpayments.paysaga.dev"),
        // API keys: the labelled Secrets, watched.
        ("list", "secrets"),
        ("watch", "secrets"),
        // Callers: who they are, and what RBAC lets them do.
        ("create", "tokenreviews.authentication.k8s.io"),
        ("create", "subjectaccessreviews.authorization.k8s.io"),
    ] {
        assert_eq!(can(verb, resource, &ns.name), "yes", "{verb} {resource}");
    }
    for (verb, resource) in [
        ("watch", "refunds.paysaga.dev"),
        ("patch", "refunds.paysaga.dev"),
        ("update", "refunds.paysaga.dev"),
        ("delete", "refunds.paysaga.dev"),
        ("patch", "refunds.paysaga.dev/status"),
        ("update", "payments.paysaga.dev"),
        ("delete", "payments.paysaga.dev"),
        ("patch", "payments.paysaga.dev/status"),
        ("list", "idempotencykeys.paysaga.dev"),
        ("create", "idempotencykeys.paysaga.dev"),
        ("watch", "recurringpayments.paysaga.dev"),
        ("update", "recurringpayments.paysaga.dev"),
        ("deletecollection", "recurringpayments.paysaga.dev"),
        ("patch", "recurringpayments.paysaga.dev/status"),
        ("update", "recurringpayments.paysaga.dev/status"),
        ("get", "secrets"),
        ("create", "secrets"),
        ("delete", "secrets"),
        ("list", "secrets.default"),
        ("create", "localsubjectaccessreviews.authorization.k8s.io"),
        ("create", "serviceaccounts/token"),
    ] {
        let (resource, namespace) = match resource.strip_suffix(".default") {
            Some(r) => (r, "default"),
            None => (resource, ns.name.as_str()),
        };
        assert_eq!(
            can(verb, resource, namespace),
            "no",
            "{verb} {resource} in {namespace}"
        );
    }
    assert_eq!(can("create", "refunds.paysaga.dev", "default"), "no");
    assert_eq!(
        can("create", "recurringpayments.paysaga.dev", "default"),
        "no"
    );

    // An API with only that account serves the refund routes.
    let api = Service::full_api(
        &paysaga_testenv::run_dir().join("rbac-api"),
        &paysaga_testenv::temporal().address,
        None,
        &kubeconfig,
        &ns.name,
        &[],
    )
    .unwrap();
    let at = |path: &str| format!("{}{path}", api.url);
    let key = kube
        .api_key(&ns.name, "rbac-client", &["paysaga-client"])
        .unwrap();
    let http = || authed_http(&key);
    let created = http()
        .post(at("/v1/payments"))
        .json(&body("alice", 700))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let created = view(created).await;
    eventually(Duration::from_secs(60), "the payment Succeeded", || {
        let read = http().get(at(&created.status_url));
        let v: PaymentView =
            block_on(async { read.send().await?.json().await }).map_err(|e| e.to_string())?;
        if v.phase == Phase::Succeeded {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    });
    let asked = json!({"amount": 70, "reason": "duplicate"});
    let made = http()
        .post(at(&format!("/v1/payments/{}/refunds", created.id)))
        .header("Idempotency-Key", "rbac")
        .json(&asked)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 202);
    let made = refund_view(made).await;
    let replayed = http()
        .post(at(&format!("/v1/payments/{}/refunds", created.id)))
        .header("Idempotency-Key", "rbac")
        .json(&asked)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 202);
    let read = http().get(at(&made.status_url)).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let listed: RefundPage = http()
        .get(at(&format!("/v1/payments/{}/refunds", created.id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&listed), BTreeSet::from([made.id]));
}

/// The whole way: a payment made and succeeded, then partly refunded through
/// the API; the controller runs the Refund, the worker's RefundWorkflow the
/// ledger and the gateway, and the payment shows what was given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_through_the_http_api_reaches_succeeded() {
    let paid = succeeded_payment(1000).await;
    let key = paysaga_testenv::unique_name("refund");
    let asked = json!({"amount": 400, "reason": "requestedByCustomer", "description": "one cup arrived broken"});
    let resp = refund(&paid.id, &asked, Some(&key)).await;
    assert_eq!(resp.status(), 202);
    let made = refund_view(resp).await;
    let ended = eventually(
        Duration::from_secs(60),
        &format!("{}: ended", made.status_url),
        || {
            let resp =
                block_on(http().get(url(&made.status_url)).send()).map_err(|e| e.to_string())?;
            if resp.status() != 200 {
                return Err(resp.status().to_string());
            }
            let r: RefundView = block_on(resp.json()).map_err(|e| e.to_string())?;
            if r.phase.is_terminal() {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    assert_eq!(ended.phase, RefundPhase::Succeeded, "{ended:?}");
    assert_eq!(
        ended.outcome_reason.as_deref(),
        Some(refund_reasons::REFUNDED)
    );
    assert_eq!(ended.currency.as_deref(), Some("EUR"));
    assert!(ended.gateway_refund_id.is_some(), "{ended:?}");
    assert!(ended.completed_at.is_some(), "{ended:?}");

    // The payment shows what was given back, and still Succeeded.
    let payment = follow(&paid.status_url, "refundedAmount 400", |v| {
        v.refunded_amount == Some(400)
    });
    assert_eq!(payment.phase, Phase::Succeeded);
    // What is left can be asked for, no more.
    problem(
        refund(&paid.id, &json!({"amount": 601, "reason": "other"}), None).await,
        422,
        "at most 600 can still be refunded",
    )
    .await;
    // The retry is the same refund, as it ended.
    let again = refund(&paid.id, &asked, Some(&key)).await;
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    assert_eq!(refund_view(again).await, ended);
    let page = refunds_listed(&paid.id).await;
    assert_eq!(page.items, vec![ended]);

    let (report, ok) = paysaga_testenv::dev::audit(&stack().database_url).unwrap();
    assert!(ok, "{report}");
}

/// Who asked is recorded: on the Payment (`paysaga.dev/requested-by`), in
/// the saga's step history and so in its `Validated` condition, and beside
/// a cancel (`paysaga.dev/cancel-by`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_recorded_on_the_payment_and_in_its_step_history() {
    let s = stack();
    let who = format!("paysaga:apikey:{}:tests", s.namespace);
    let created = view(create(&body("alice", 321), None).await).await;
    let api = payments(&s.namespace).await;
    let p = wait_for(&api, &created.id, "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });
    assert_eq!(
        p.annotations()[paysaga_api::names::REQUESTED_BY_ANNOTATION],
        who
    );
    let validated = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Validated")
        .unwrap()
        .message
        .clone();
    assert_eq!(validated, format!("requested by {who}"));
    // A cancel names its caller too (the payment finished: 409, nothing set).
    let cancel = http()
        .post(url(&format!("/v1/payments/{}/cancel", created.id)))
        .json(&json!({"reason": "too late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 409);
    let in_flight = in_flight_payment(&api, &s.namespace, "cancelled-by-caller", 50).await;
    let cancel = http()
        .post(url(&format!(
            "/v1/payments/{}/cancel",
            in_flight.name_any()
        )))
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let p = api.get(&in_flight.name_any()).await.unwrap();
    assert_eq!(
        p.annotations()[paysaga_api::names::CANCEL_BY_ANNOTATION],
        who
    );
}

/// A payment's history as Temporal keeps it holds no payer data in the
/// clear; `temporal workflow show` decodes it through the API's codec
/// endpoint for a caller allowed to (`paysaga-payload-reader`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_shows_a_payments_history_decoded_only_through_the_codec_endpoint() {
    let s = stack();
    let kube = paysaga_testenv::kube();
    let mut asked = body("alice", 4321);
    asked["description"] = json!("order 7f3a-private");
    let created = view(create(&asked, None).await).await;
    let api = payments(&s.namespace).await;
    let p = wait_for(&api, &created.id, "Succeeded", |p| {
        phase(p) == Some(Phase::Succeeded)
    });
    let workflow_id = p.status.unwrap().workflow_id.unwrap();
    let reader = kube
        .api_key(&s.namespace, "history-reader", &["paysaga-payload-reader"])
        .unwrap();
    let show = |codec: Option<&str>| {
        let mut cmd = std::process::Command::new(paysaga_testenv::tool("temporal"));
        cmd.args(["workflow", "show", "-o", "json", "-w", &workflow_id])
            .args(["--address", &paysaga_testenv::temporal().host_port]);
        if let Some(credential) = codec {
            cmd.args(["--codec-endpoint", &format!("{}/codec", s.api.url)])
                .args(["--codec-auth", &format!("Bearer {credential}")]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Payload data is base64 in the JSON: every field named "data" is
    // decoded and searched, beside the text itself.
    fn readable(history: &str) -> String {
        use base64::Engine;
        fn walk(v: &serde_json::Value, out: &mut String) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        if let (true, Some(text)) = (k == "data", v.as_str())
                            && let Ok(bytes) =
                                base64::engine::general_purpose::STANDARD.decode(text)
                        {
                            out.push_str(&String::from_utf8_lossy(&bytes));
                            out.push('\n');
                        }
                        walk(v, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = history.to_string();
        walk(&serde_json::from_str(history).unwrap(), &mut out);
        out
    }
    let raw = readable(&show(None));
    let secrets = ["alice@example.com", "order 7f3a-private", "\"alice\""];
    for secret in secrets {
        assert!(!raw.contains(secret), "{secret} in the clear:\n{raw}");
    }
    let decoded = readable(&show(Some(&reader)));
    for secret in secrets {
        assert!(decoded.contains(secret), "{secret} not decoded:\n{decoded}");
    }
    // Without the right to decode, the CLI is refused (403, retried until it
    // gives up) and shows nothing.
    let out = std::process::Command::new(paysaga_testenv::tool("temporal"))
        .args(["workflow", "show", "-o", "json", "-w", &workflow_id])
        .args(["--address", &paysaga_testenv::temporal().host_port])
        .args(["--codec-endpoint", &format!("{}/codec", s.api.url)])
        .args(["--codec-auth", &format!("Bearer {}", s.key)])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("alice@example.com"));
}

/// One request id, given by the client, from the API's answer to the
/// Payment (where kubectl selects by it), the controller's and the worker's
/// log lines, the gateway's charge request and its confirmation back to
/// paysaga; one is made when none is given, and a malformed one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_travels_from_the_client_to_the_gateway_and_back() {
    let s = stack();
    let rid = format!("req-trace-{}", paysaga_testenv::random_hex(6));
    let resp = http()
        .post(url("/v1/payments"))
        .header("X-Request-Id", &rid)
        .json(&body("alice", 444))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], rid.as_str());
    let created = view(resp).await;
    let selected = paysaga_testenv::kube()
        .kubectl_ok(&[
            "get",
            "payments",
            "-n",
            &s.namespace,
            "-l",
            &format!("paysaga.dev/request-id={rid}"),
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .unwrap();
    assert_eq!(selected.trim(), created.id);
    follow(&created.status_url, "Succeeded", |v| {
        v.phase == Phase::Succeeded
    });

    // The gateway got it with the charge.
    let api = payments(&s.namespace).await;
    let p = api.get(&created.id).await.unwrap();
    let payment_id = paysaga_api::names::workflow_id(&p.metadata);
    let ledger: Vec<paysaga_api::external::GatewayLedgerEntry> = reqwest::get(format!(
        "{}{}",
        paysaga_testenv::sim().url,
        paysaga_api::external::paths::ADMIN_GATEWAY_LEDGER
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let charge = ledger
        .iter()
        .find(|e| e.payment_id == payment_id)
        .expect("the gateway holds the charge");
    assert_eq!(charge.request_id.as_deref(), Some(rid.as_str()));

    // Each component's log lines for it carry it (JSON, field request_id).
    let lines = |log: &std::path::Path, words: &str| -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"request_id\":\"{rid}\"")) && l.contains(words))
            .map(str::to_string)
            .collect()
    };
    eventually(Duration::from_secs(10), "every component logged it", || {
        let found = [
            ("the API", lines(s.api.log(), "payment accepted")),
            ("the controller", lines(s.controller.log(), &created.id)),
            (
                "the worker",
                lines(s.worker.log(), "charging at the gateway"),
            ),
            (
                "the simulators",
                lines(paysaga_testenv::sim().log(), "charge accepted"),
            ),
            // The fraud check (a child workflow) sent it with its request.
            (
                "the fraud scorer",
                lines(paysaga_testenv::sim().log(), "fraud score"),
            ),
            (
                "the notifier",
                lines(paysaga_testenv::sim().log(), "message accepted"),
            ),
            // The confirmation came back with it, to the callback receiver.
            (
                "the callback receiver",
                lines(paysaga_testenv::api().log(), "gateway callback delivered"),
            ),
        ];
        match found.iter().find(|(_, l)| l.is_empty()) {
            None => Ok(()),
            Some((who, _)) => Err(format!("no line of {who} carries {rid}")),
        }
    });
    // The worker's line is the charge activity's, in its span.
    assert!(
        lines(s.worker.log(), "charging at the gateway")
            .iter()
            .any(|l| l.contains("\"activity\":\"charge\"")),
        "the charge activity's span"
    );

    // The workflow's memo holds it (decoded with the codec's keys).
    let described = paysaga_testenv::process::run(
        std::process::Command::new(paysaga_testenv::tool("temporal"))
            .args(["workflow", "describe", "--output", "json", "--address"])
            .arg(&paysaga_testenv::temporal().host_port)
            .args(["-w", &payment_id]),
    )
    .unwrap();
    let memo: serde_json::Value = serde_json::from_str(&described).unwrap();
    let field =
        &memo["workflowExecutionInfo"]["memo"]["fields"][paysaga_api::names::REQUEST_ID_MEMO];
    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default()
    };
    let payload = temporalio_common::protos::temporal::api::common::v1::Payload {
        metadata: field["metadata"]
            .as_object()
            .unwrap_or_else(|| panic!("no requestId in the memo: {described}"))
            .iter()
            .map(|(k, v)| (k.clone(), b64(v)))
            .collect(),
        data: b64(&field["data"]),
        ..Default::default()
    };
    let codec =
        paysaga_common::codec::EncryptionCodec::from_file(paysaga_testenv::codec_keys_file())
            .unwrap();
    let clear = codec.decrypt(payload).unwrap();
    assert_eq!(
        serde_json::from_slice::<String>(&clear.data).unwrap(),
        rid,
        "the memo's requestId"
    );

    // None given: one is made, returned and put on the Payment.
    let resp = create(&body("alice", 10), None).await;
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(made.starts_with("req-") && made.len() == 28, "{made}");
    let created = view(resp).await;
    let p = api.get(&created.id).await.unwrap();
    assert_eq!(p.labels()[paysaga_api::names::REQUEST_ID_LABEL], made);

    // One that cannot be a label value is refused, under a new id.
    let resp = http()
        .post(url("/v1/payments"))
        .header("X-Request-Id", "not a label/value")
        .json(&body("alice", 10))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
    problem(resp, 400, "X-Request-Id must be 1 to 63").await;
}

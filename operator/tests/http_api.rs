//! The HTTP API (`paysaga-operator api`) as a process, against the real API
//! server with the controller, the worker and the simulators running.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use paysaga_api::Phase;
use paysaga_api::external::Scenario;
use paysaga_api::http::{PaymentPage, PaymentView};
use paysaga_testenv::{Service, block_on, eventually};
use serde_json::json;

/// The namespace, the worker, the controller and two APIs: one as deployed,
/// and one that takes a single request at a time (for overload).
struct Stack {
    namespace: String,
    api: Service,
    tiny: Service,
    _worker: Service,
    _controller: Service,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        let namespace = kube.namespace("http").unwrap().name.clone();
        let temporal = &paysaga_testenv::temporal().address;
        let dir = paysaga_testenv::run_dir();
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
        Stack {
            api: api("api", &[]),
            tiny: api("tiny-api", &["--max-in-flight=1".into()]),
            _worker: start_worker(),
            // Deleted payments' keys are kept 20 s here (30 days by default),
            // so that a test sees one swept.
            _controller: start_controller(
                "controller",
                &[
                    "--idempotency-retention-secs=20".into(),
                    "--idempotency-sweep-secs=1".into(),
                ],
            ),
            namespace,
        }
    })
}

fn url(path: &str) -> String {
    format!("{}{path}", stack().api.url)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
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

//! A person in the loop, through Kubernetes and the HTTP API, on the real
//! parts: the controller (with the chart's ServiceAccount), the worker, the
//! simulators, Temporal and the API server. Timers are long here (an hour),
//! so every wait ends by what a person does: `kubectl annotate` with
//! `paysaga.dev/expedite` and `paysaga.dev/review`, or the API's
//! `/expedite` and `/review`.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use kube::api::{Api, ListParams};
use paysaga_api::external::{CallbackOutcome, Scenario, paths};
use paysaga_api::http::{PaymentPage, PaymentView};
use paysaga_api::{Payment, Phase, Step};
use paysaga_testenv::{Service, block_on, eventually};
use serde_json::json;

const REVIEWER: &str = "reviewer@example.com";

/// The worker (with its ledger, for the audit), a controller whose waits are
/// an hour long, and the HTTP API of one namespace.
struct Stack {
    namespace: String,
    database_url: String,
    api: Service,
    /// An API key bound to paysaga-client.
    key: String,
    _worker: Service,
    _controller: Service,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        let namespace = kube.namespace("review").unwrap().name.clone();
        let temporal = &paysaga_testenv::temporal().address;
        let dir = paysaga_testenv::run_dir();
        let sim = paysaga_testenv::sim();
        let _callbacks = paysaga_testenv::api();
        let database_url = paysaga_testenv::postgres().database("review").unwrap();
        let worker = Service::payment_worker(
            &dir.join("review-worker"),
            temporal,
            &database_url,
            "alice:EUR:100000000",
            &sim.url,
        )
        .unwrap();
        let controller = start_controller(
            "review-controller",
            &[
                "--confirmation-timeout-secs=3600".into(),
                "--charge-max-attempts=2".into(),
                "--charge-retry-wait-secs=3600".into(),
                "--review-deadline-secs=3600".into(),
                format!("--reviewer-email={REVIEWER}"),
            ],
        );
        let api = Service::full_api(
            &dir.join("review-api"),
            temporal,
            None,
            &kube.admin_kubeconfig,
            &namespace,
            &[],
        )
        .unwrap();
        let key = kube
            .api_key(&namespace, "reviewer", &["paysaga-client"])
            .unwrap();
        Stack {
            namespace,
            database_url,
            api,
            key,
            _worker: worker,
            _controller: controller,
        }
    })
}

fn annotate(name: &str, annotations: &[&str]) {
    let mut args = vec![
        "annotate",
        "-n",
        &stack().namespace,
        "payment",
        name,
        "--overwrite",
    ];
    args.extend_from_slice(annotations);
    paysaga_testenv::kube().kubectl_ok(&args).unwrap();
}

async fn pay(name: &str, scenario_: Scenario) -> Api<Payment> {
    let ns = &stack().namespace;
    scenario(&format!("payment-{ns}-{name}-"), scenario_).await;
    kubectl_apply(ns, &manifest(name, 500));
    payments(ns).await
}

fn step_is(api: &Api<Payment>, name: &str, step: Step) -> Payment {
    wait_for(api, name, &format!("step {step:?}"), |p| {
        p.status.as_ref().and_then(|s| s.step) == Some(step)
    })
}

fn ended(api: &Api<Payment>, name: &str) -> Payment {
    wait_for(api, name, "its end", |p| {
        p.status.as_ref().and_then(|s| s.finished()).is_some()
    })
}

fn reason(p: &Payment) -> (Option<Phase>, String) {
    let s = p.status.clone().unwrap_or_default();
    (s.phase, s.reason.unwrap_or_default())
}

fn http() -> reqwest::Client {
    authed_http(&stack().key)
}

async fn post(path: &str, body: serde_json::Value) -> reqwest::Response {
    http()
        .post(format!("{}{path}", stack().api.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn problem(resp: reqwest::Response, status: u16, words: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let p: serde_json::Value = resp.json().await.unwrap();
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(words), "expected {words:?} in {detail:?}");
}

fn audit_is_clean() {
    let (report, ok) = paysaga_testenv::dev::audit(&stack().database_url).unwrap();
    assert!(ok, "{report}");
}

fn messages_to(reviewer: &str) -> Vec<serde_json::Value> {
    let url = format!("{}{}", paysaga_testenv::sim().url, paths::MESSAGES);
    let all: Vec<serde_json::Value> =
        block_on(async { http().get(url).send().await?.json().await }).unwrap();
    all.into_iter().filter(|m| m["to"] == reviewer).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_payment_is_reviewed_with_kubectl() {
    // The gateway never confirms, and says the charge is still pending.
    let api = pay("pending-approve", Scenario::default()).await;
    step_is(&api, "pending-approve", Step::AwaitConfirmation);
    // Expedite: the confirmation wait (an hour) asks the gateway now; it
    // cannot tell, so a person must decide.
    annotate(
        "pending-approve",
        &["paysaga.dev/expedite=customer on the phone"],
    );
    let p = step_is(&api, "pending-approve", Step::ManualReview);
    assert_eq!(
        condition(&p, "ExpediteRequested"),
        Some(("True".into(), "ExpediteRequested".into()))
    );
    assert_eq!(
        condition(&p, "NeedsReview"),
        Some(("True".into(), "OutcomeUnknown".into()))
    );
    let review = p.status.as_ref().unwrap().review.clone().unwrap();
    assert!(review.message.contains("pending"), "{review:?}");
    assert!(review.deadline.is_some() && review.decision.is_none());
    // The queue: a field selector on the step.
    let queue = api
        .list(&ListParams::default().fields("status.step=ManualReview"))
        .await
        .unwrap();
    assert!(
        queue
            .items
            .iter()
            .any(|q| q.metadata.name.as_deref() == Some("pending-approve")),
        "not in the review queue"
    );
    let ns = &stack().namespace;
    eventually(Duration::from_secs(30), "a NeedsReview Warning", || {
        let reasons = event_reasons(ns);
        if reasons.contains("NeedsReview") {
            Ok(())
        } else {
            Err(reasons)
        }
    });
    assert!(
        messages_to(REVIEWER).iter().any(|m| m["subject"]
            .as_str()
            .unwrap_or_default()
            .contains("needs a review")),
        "the reviewer was not told"
    );

    annotate(
        "pending-approve",
        &[
            "paysaga.dev/review=approve",
            "paysaga.dev/review-reason=the bank statement shows it",
        ],
    );
    let p = ended(&api, "pending-approve");
    assert_eq!(
        reason(&p),
        (Some(Phase::Succeeded), "ReviewApproved".into())
    );
    let review = p.status.as_ref().unwrap().review.clone().unwrap();
    assert_eq!(review.decision.as_deref(), Some("Approve"));
    assert_eq!(review.decided_by.as_deref(), Some("kubectl-annotate"));
    assert_eq!(
        review.reason.as_deref(),
        Some("the bank statement shows it")
    );
    assert!(review.decided_at.is_some());
    assert_eq!(
        condition(&p, "NeedsReview"),
        Some(("False".into(), "Approved".into()))
    );
    // A decision is asked once: its annotations are consumed once answered.
    let left: Vec<&String> = p
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    assert!(
        !left
            .iter()
            .any(|k| k.starts_with("paysaga.dev/review") || *k == "paysaga.dev/expedite"),
        "{left:?}"
    );

    // Rejected: compensated, nothing kept.
    let api = pay("pending-reject", Scenario::default()).await;
    step_is(&api, "pending-reject", Step::AwaitConfirmation);
    annotate("pending-reject", &["paysaga.dev/expedite=now"]);
    step_is(&api, "pending-reject", Step::ManualReview);
    // A typo is refused, and said; nothing moves.
    annotate("pending-reject", &["paysaga.dev/review=aprove"]);
    let p = wait_for(&api, "pending-reject", "the typo refused", |p| {
        condition(p, "ReviewRequested") == Some(("False".into(), "InvalidReviewDecision".into()))
    });
    assert_eq!(p.status.as_ref().unwrap().step, Some(Step::ManualReview));
    annotate("pending-reject", &["paysaga.dev/review=reject"]);
    let p = ended(&api, "pending-reject");
    assert_eq!(reason(&p), (Some(Phase::Failed), "ReviewRejected".into()));
    assert_eq!(
        condition(&p, "Compensated").map(|c| c.0),
        Some("True".into())
    );

    // Expedite or review a finished payment: a clear no-op.
    annotate("pending-reject", &["paysaga.dev/expedite=again"]);
    wait_for(&api, "pending-reject", "too late to expedite", |p| {
        condition(p, "ExpediteRequested") == Some(("False".into(), "TooLateToExpedite".into()))
    });
    audit_is_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_lists_the_queue_expedites_and_reviews() {
    // The charge never goes through: two attempts, then the wait before the
    // last one (an hour), cut short by expedite; then a person decides.
    let api = pay(
        "unavailable",
        Scenario {
            transient_failures: 100,
            callback: Some(CallbackOutcome::Succeeded),
            ..Scenario::default()
        },
    )
    .await;
    wait_for(&api, "unavailable", "the first round failed", |p| {
        condition(p, "Charged").is_some_and(|c| c.0 == "False")
    });
    let resp = post(
        "/v1/payments/unavailable/expedite",
        json!({"reason": "gateway is back"}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let p = step_is(&api, "unavailable", Step::ManualReview);
    assert_eq!(
        condition(&p, "NeedsReview"),
        Some(("True".into(), "ChargeUnavailable".into()))
    );

    // The queue, through the API.
    let page: PaymentPage = http()
        .get(format!("{}/v1/payments?step=ManualReview", stack().api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queued: Vec<&str> = page.items.iter().map(|v| v.id.as_str()).collect();
    assert!(queued.contains(&"unavailable"), "{queued:?}");
    assert!(
        page.items
            .iter()
            .all(|v| v.step == Some(Step::ManualReview))
    );
    let view: &PaymentView = page.items.iter().find(|v| v.id == "unavailable").unwrap();
    assert_eq!(
        view.review.as_ref().map(|r| r.cause.as_str()),
        Some("ChargeUnavailable")
    );

    // A bad decision is a 422; a good one is taken.
    let bad = post(
        "/v1/payments/unavailable/review",
        json!({"decision": "maybe"}),
    )
    .await;
    problem(bad, 422, "decision").await;
    let resp = post(
        "/v1/payments/unavailable/review",
        json!({"decision": "reject", "reason": "outage, ask the customer to retry"}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let p = ended(&api, "unavailable");
    assert_eq!(reason(&p), (Some(Phase::Failed), "ReviewRejected".into()));
    let review = p.status.as_ref().unwrap().review.clone().unwrap();
    assert_eq!(
        (review.decision.as_deref(), review.decided_by.as_deref()),
        (
            Some("Reject"),
            Some(format!("paysaga:apikey:{}:reviewer", stack().namespace).as_str())
        )
    );

    // Once finished: 409 for both, and for a review of a payment not in review.
    problem(
        post(
            "/v1/payments/unavailable/review",
            json!({"decision": "approve"}),
        )
        .await,
        409,
        "already finished",
    )
    .await;
    problem(
        post("/v1/payments/unavailable/expedite", json!({})).await,
        409,
        "nothing to expedite",
    )
    .await;
    let _ = pay("confirming", Scenario::default()).await;
    step_is(&api, "confirming", Step::AwaitConfirmation);
    problem(
        post(
            "/v1/payments/confirming/review",
            json!({"decision": "approve"}),
        )
        .await,
        409,
        "not waiting for a review",
    )
    .await;
    problem(
        post("/v1/payments/nobody/review", json!({"decision": "approve"})).await,
        404,
        "not found",
    )
    .await;
    // Leave nothing in flight: the last one is cancelled.
    annotate("confirming", &["paysaga.dev/cancel=test over"]);
    let p = ended(&api, "confirming");
    assert_eq!(p.status.unwrap().phase, Some(Phase::Cancelled));
    audit_is_clean();
}

//! The gateway-callback receiver (`paysaga-operator api`) as a real process
//! against the real Temporal server: what it accepts, what it refuses, and
//! that an accepted callback reaches the workflow as a signal.

use std::time::{SystemTime, UNIX_EPOCH};

use paysaga_api::external::{CallbackOutcome, GatewayCallback, paths};
use paysaga_api::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use paysaga_testenv::{CALLBACK_SECRET, process::run, tool};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn callback(payment_id: &str) -> Vec<u8> {
    serde_json::to_vec(&GatewayCallback {
        payment_id: payment_id.into(),
        charge_id: "ch_1".into(),
        outcome: CallbackOutcome::Succeeded,
        reason: None,
        amount: None,
        currency: None,
    })
    .unwrap()
}

/// POSTs `body` with the given headers; returns (status, body).
async fn post(body: &[u8], ts: Option<i64>, sig: Option<String>) -> (u16, String, String) {
    let url = format!("{}{}", paysaga_testenv::api().url, paths::GATEWAY_CALLBACKS);
    let mut req = reqwest::Client::new().post(url).body(body.to_vec());
    if let Some(ts) = ts {
        req = req.header(TIMESTAMP_HEADER, ts.to_string());
    }
    if let Some(sig) = sig {
        req = req.header(SIGNATURE_HEADER, sig);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

async fn signed(body: &[u8]) -> (u16, String, String) {
    let ts = now();
    post(
        body,
        Some(ts),
        Some(sign(CALLBACK_SECRET.as_bytes(), ts, body)),
    )
    .await
}

/// Starts a PaymentWorkflow that no worker runs: it exists and is open, which
/// is all a signal needs.
fn open_workflow(id: &str) {
    let t = paysaga_testenv::temporal();
    let queue = paysaga_testenv::task_queue("callbacks");
    run(std::process::Command::new(tool("temporal"))
        .args([
            "workflow",
            "start",
            "--address",
            &t.host_port,
            "--type",
            "PaymentWorkflow",
        ])
        .args([
            "--task-queue",
            &queue.name,
            "--workflow-id",
            id,
            "--input",
            "{}",
        ]))
    .unwrap();
}

fn history(id: &str) -> String {
    let t = paysaga_testenv::temporal();
    run(std::process::Command::new(tool("temporal")).args([
        "workflow",
        "show",
        "--address",
        &t.host_port,
        "--workflow-id",
        id,
        "-o",
        "json",
    ]))
    .unwrap()
}

#[tokio::test]
async fn a_signed_callback_signals_the_workflow_once() {
    let _logs = paysaga_testenv::logs_on_failure();
    let id = paysaga_testenv::unique_name("cb-ok");
    open_workflow(&id);
    let body = callback(&id);
    let ts = now();
    let sig = sign(CALLBACK_SECRET.as_bytes(), ts, &body);

    let (status, _, text) = post(&body, Some(ts), Some(sig.clone())).await;
    assert_eq!(status, 200, "{text}");
    let h = history(&id);
    assert!(
        h.contains("gatewayCallback"),
        "no signal in the history: {h}"
    );

    // The same delivery again is a replay.
    let (status, ctype, text) = post(&body, Some(ts), Some(sig)).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(ctype, "application/problem+json");
    assert!(text.contains("replay"), "{text}");
    assert_eq!(
        history(&id).matches("gatewayCallback").count(),
        h.matches("gatewayCallback").count()
    );
}

#[tokio::test]
async fn forged_stale_malformed_and_unknown_callbacks_are_refused() {
    let _logs = paysaga_testenv::logs_on_failure();
    let id = paysaga_testenv::unique_name("cb-bad");
    open_workflow(&id);
    let body = callback(&id);
    let ts = now();

    let forged = sign(b"not-the-secret", ts, &body);
    let (status, _, text) = post(&body, Some(ts), Some(forged)).await;
    assert_eq!(status, 401, "forged: {text}");
    assert!(text.contains("signature does not match"), "{text}");

    let old = ts - 3600;
    let stale = sign(CALLBACK_SECRET.as_bytes(), old, &body);
    let (status, _, text) = post(&body, Some(old), Some(stale)).await;
    assert_eq!(status, 401, "stale: {text}");
    assert!(text.contains("outside the 300 s tolerance"), "{text}");

    let (status, _, text) = post(&body, None, None).await;
    assert_eq!(status, 400, "unsigned: {text}");
    assert!(
        text.contains("missing X-Paysaga-Timestamp header"),
        "{text}"
    );

    let (status, _, text) = signed(b"{not json").await;
    assert_eq!(status, 400, "garbage: {text}");
    assert!(text.contains("invalid callback body"), "{text}");

    let (status, _, text) = signed(&callback("no-such-payment")).await;
    assert_eq!(status, 404, "unknown: {text}");
    assert!(
        text.contains("no payment in progress with id no-such-payment"),
        "{text}"
    );

    // None of them reached the workflow.
    assert!(!history(&id).contains("gatewayCallback"));
}

#[tokio::test]
async fn a_delivery_that_got_a_503_is_taken_when_resent_identically() {
    let _logs = paysaga_testenv::logs_on_failure();
    let id = paysaga_testenv::unique_name("cb-503");
    open_workflow(&id);
    // An API of its own, reaching Temporal through a relay the test cuts.
    let temporal: std::net::SocketAddr = paysaga_testenv::temporal().host_port.parse().unwrap();
    let relay = paysaga_testenv::relay::Relay::start(temporal).unwrap();
    let api = paysaga_testenv::services::Service::api(
        &paysaga_testenv::run_dir().join("api-503"),
        &format!("http://{}", relay.addr),
        None,
    )
    .unwrap();
    let url = format!("{}{}", api.url, paths::GATEWAY_CALLBACKS);
    let body = callback(&id);
    let ts = now();
    let sig = sign(CALLBACK_SECRET.as_bytes(), ts, &body);
    let send = || {
        reqwest::Client::new()
            .post(&url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, &sig)
            .body(body.clone())
            .send()
    };

    relay.cut();
    let resp = send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 503, "{}", resp.text().await.unwrap());
    assert!(!history(&id).contains("gatewayCallback"));

    // The gateway resends the very same bytes once Temporal is back.
    relay.restore();
    let resp = send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    assert_eq!(history(&id).matches("\"gatewayCallback\"").count(), 1);

    // Acted on: now it is a replay.
    let resp = send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn during_a_rotation_the_previous_secret_is_accepted_and_an_unknown_one_refused() {
    let _logs = paysaga_testenv::logs_on_failure();
    const PREVIOUS: &str = "paysaga-test-previous-callback-secret";
    let id = paysaga_testenv::unique_name("cb-rotate");
    open_workflow(&id);
    // An API in the middle of a rotation: CALLBACK_SECRET is the current
    // secret, PREVIOUS the one being replaced.
    let api = paysaga_testenv::services::Service::api_with_env(
        &paysaga_testenv::run_dir().join("api-rotation"),
        &format!("http://{}", paysaga_testenv::temporal().host_port),
        None,
        &[("PAYSAGA_CALLBACK_SECRET_PREVIOUS", PREVIOUS.as_ref())],
    )
    .unwrap();
    let url = format!("{}{}", api.url, paths::GATEWAY_CALLBACKS);
    let send = |body: Vec<u8>, secret: &str| {
        let ts = now();
        reqwest::Client::new()
            .post(&url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(secret.as_bytes(), ts, &body))
            .body(body)
            .send()
    };

    // Unknown: refused as before, and nothing reaches the workflow.
    let resp = send(callback(&id), "a-secret-nobody-configured")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let text = resp.text().await.unwrap();
    assert!(text.contains("signature does not match"), "{text}");
    assert!(!history(&id).contains("gatewayCallback"));

    // Signed with the previous secret (the gateway not switched yet): taken.
    let resp = send(callback(&id), PREVIOUS).await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    assert_eq!(history(&id).matches("\"gatewayCallback\"").count(), 1);

    // And with the current one, as ever.
    let other = paysaga_testenv::unique_name("cb-rotate-new");
    open_workflow(&other);
    let resp = send(callback(&other), CALLBACK_SECRET).await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());

    // The operator sees which secret verified them, to know when the
    // previous one has stopped being used.
    let metrics = reqwest::get(format!("{}/metrics", api.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in ["previous", "current"] {
        let line = format!("paysaga_api_gateway_callbacks_verified_total{{secret=\"{secret}\"}} 1");
        assert!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
    }
    let log = std::fs::read_to_string(api.log()).unwrap();
    assert!(
        log.contains("callbacks signed with the previous key are accepted too"),
        "{log}"
    );
    assert!(log.contains(r#""secret":"previous""#), "{log}");
}

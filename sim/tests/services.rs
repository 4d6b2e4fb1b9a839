//! Fraud scoring, the email/SMS provider, the admin API and bad input, over
//! real HTTP.

mod common;

use common::{TestSim, charge};
use paysaga_api::external::{FraudScoreResponse, Message, SimConfig, error_codes, paths};
use serde_json::{Value, json};

fn score_request(payment_id: &str, user_id: &str, amount: i64, method: &str) -> Value {
    json!({"paymentId": payment_id, "userId": user_id, "amount": amount, "currency": "EUR", "method": method})
}

#[tokio::test]
async fn fraud_scores_follow_the_rules_scenarios_and_reject_rate() {
    let sim = TestSim::start(SimConfig::default()).await;
    let score = async |body: Value| -> FraudScoreResponse {
        let (status, answer) = sim.post(paths::FRAUD_SCORE, &body).await;
        assert_eq!(status, 200, "{answer}");
        serde_json::from_value(answer).expect("FraudScoreResponse")
    };

    let plain = score(score_request("p1", "alice", 1_250, "card")).await;
    assert_eq!((plain.score, plain.reasons.len()), (5, 0));
    let wallet = score(score_request("p2", "alice", 1_250, "wallet")).await;
    assert_eq!(wallet.score, 25);
    let worst = score(score_request("p3", "fraudster", 500_000, "wallet")).await;
    assert_eq!((worst.score, worst.reasons.len()), (100, 3));

    sim.set_scenario("p4", json!({"fraudScore": 42})).await;
    assert_eq!(
        score(score_request("p4", "alice", 1_250, "card"))
            .await
            .score,
        42
    );

    sim.put(paths::ADMIN_CONFIG, &json!({"fraudRejectRate": 1.0}))
        .await;
    let rejected = score(score_request("p5", "alice", 1_250, "card")).await;
    assert_eq!(rejected.score, 100);
    assert_eq!(rejected.reasons, ["random reject (fraudRejectRate)"]);
}

fn message(key: &str, payment_id: &str, channel: &str, to: &str) -> Value {
    json!({
        "idempotencyKey": key,
        "paymentId": payment_id,
        "channel": channel,
        "to": to,
        "subject": "Payment succeeded",
        "body": "Your payment of 12.50 EUR went through.",
    })
}

#[tokio::test]
async fn notifications_are_idempotent_and_listed() {
    let sim = TestSim::start(SimConfig::default()).await;

    let (status, first) = sim
        .post(
            paths::MESSAGES,
            &message("n1", "pay-1", "email", "alice@example.com"),
        )
        .await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = sim
        .post(
            paths::MESSAGES,
            &message("n1", "pay-1", "email", "alice@example.com"),
        )
        .await;
    assert_eq!((status, &again), (202, &first));
    assert!(first["messageId"].is_string());

    sim.post(
        paths::MESSAGES,
        &message("n2", "pay-1", "sms", "+4915112345678"),
    )
    .await;
    sim.post(
        paths::MESSAGES,
        &message("n3", "pay-2", "email", "alice@example.com"),
    )
    .await;

    let list = async |query: &str| -> Vec<Message> {
        let (status, body) = sim.get(&format!("{}{query}", paths::MESSAGES)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("messages")
    };
    let all = list("").await;
    let keys: Vec<&str> = all
        .iter()
        .map(|m| m.request.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["n1", "n2", "n3"], "the repeat recorded nothing");
    assert_eq!(all[0].message_id, first["messageId"]);
    assert_eq!(list("?paymentId=pay-1").await.len(), 2);
    assert_eq!(list("?to=alice%40example.com").await.len(), 2);
    assert_eq!(list("?paymentId=pay-1&to=%2B4915112345678").await.len(), 1);
    assert_eq!(list("?paymentId=nobody").await.len(), 0);

    let (status, error) = sim
        .post(
            paths::MESSAGES,
            &message("n4", "pay-1", "sms", "alice@example.com"),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some(error_codes::BAD_REQUEST)),
        "{error}"
    );
}

#[tokio::test]
async fn admin_config_merges_and_refuses_bad_rates() {
    let sim = TestSim::start(SimConfig {
        latency_ms: 1,
        ..SimConfig::default()
    })
    .await;

    let (status, merged) = sim
        .put(
            paths::ADMIN_CONFIG,
            &json!({"declineRate": 0.25, "callbackUrl": "http://127.0.0.1:9/cb"}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    let merged: SimConfig = serde_json::from_value(merged).expect("SimConfig");
    assert_eq!(
        merged,
        SimConfig {
            latency_ms: 1,
            decline_rate: 0.25,
            callback_url: Some("http://127.0.0.1:9/cb".into()),
            ..SimConfig::default()
        }
    );
    let (_, current) = sim.get(paths::ADMIN_CONFIG).await;
    assert_eq!(
        serde_json::from_value::<SimConfig>(current).expect("SimConfig"),
        merged
    );

    for bad in [
        json!({"declineRate": 2}),
        json!({"callbackDropRate": -1}),
        json!({"nope": 1}),
        json!("x"),
    ] {
        let (status, error) = sim.put(paths::ADMIN_CONFIG, &bad).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some(error_codes::BAD_REQUEST)),
            "{bad}: {error}"
        );
    }
    let (_, unchanged) = sim.get(paths::ADMIN_CONFIG).await;
    assert_eq!(
        serde_json::from_value::<SimConfig>(unchanged).expect("SimConfig"),
        merged
    );
}

#[tokio::test]
async fn scenarios_are_stored_and_checked() {
    let sim = TestSim::start(SimConfig::default()).await;
    let path = format!("{}/pay-1", paths::ADMIN_SCENARIOS);

    let (status, _) = sim.get(&path).await;
    assert_eq!(status, 404);
    let (status, stored) = sim.put(&path, &json!({"decline": true})).await;
    assert_eq!(status, 200);
    assert_eq!(stored["decline"], true);
    let (_, got) = sim.get(&path).await;
    assert_eq!(got, stored);
    let (status, _) = sim.put(&path, &json!({"fraudScore": 101})).await;
    assert_eq!(status, 400);
    let response = sim
        .http
        .delete(sim.url(&path))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status().as_u16(), 204);
    let (status, _) = sim.get(&path).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_input_is_400_and_unknown_routes_404() {
    let sim = TestSim::start(SimConfig::default()).await;

    let (status, body) = sim.get("/healthz").await;
    assert_eq!((status, body), (200, Value::String("ok".into())));

    let mut zero = charge("pay-1", "k", None);
    zero["amount"] = json!(0);
    let mut float = charge("pay-1", "k", None);
    float["amount"] = json!(12.5);
    let mut currency = charge("pay-1", "k", None);
    currency["currency"] = json!("euro");
    let mut url = charge("pay-1", "k", None);
    url["callbackUrl"] = json!("not a url");
    let cases = [
        (paths::CHARGES, zero, "amount"),
        (paths::CHARGES, float, "amount"),
        (paths::CHARGES, currency, "currency"),
        (paths::CHARGES, url, "callbackUrl"),
        (paths::CHARGES, json!({"paymentId": "p"}), "idempotencyKey"),
        (
            paths::REFUNDS,
            json!({"paymentId": "p", "idempotencyKey": "k", "amount": -1, "currency": "EUR"}),
            "amount",
        ),
        (
            paths::FRAUD_SCORE,
            json!({"paymentId": "p", "userId": "", "amount": 1, "currency": "EUR", "method": "card"}),
            "userId",
        ),
        (
            paths::FRAUD_SCORE,
            json!({"paymentId": "p", "userId": "u", "amount": 1, "currency": "EUR", "method": "cash"}),
            "method",
        ),
    ];
    for (path, body, mentions) in cases {
        let (status, error) = sim.post(path, &body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some(error_codes::BAD_REQUEST)),
            "{body}: {error}"
        );
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(mentions),
            "{body}: {message:?} should mention {mentions}"
        );
    }

    let response = sim
        .http
        .post(sim.url(paths::CHARGES))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.expect("ErrorBody");
    assert_eq!(error["code"], error_codes::BAD_REQUEST);

    let (status, error) = sim.get("/no/such/route").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some(error_codes::NOT_FOUND)),
        "{error}"
    );
}

#[tokio::test]
async fn latency_is_added_to_answers() {
    let sim = TestSim::start(SimConfig {
        latency_ms: 150,
        ..SimConfig::default()
    })
    .await;
    let started = std::time::Instant::now();
    let (status, _) = sim
        .post(paths::FRAUD_SCORE, &score_request("p", "alice", 1, "card"))
        .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
}

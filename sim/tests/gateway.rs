//! The gateway over real HTTP: charges, signed confirmations to a real
//! receiver, refunds (the saga's compensation, and partial or full refunds
//! of a captured charge), and the ledger.

mod common;

use common::{Receiver, SECRET, TestSim, charge, eventually};
use paysaga_api::{
    external::{
        CallbackOutcome, ChargeRefundResponse, ChargeStatus, SimConfig, error_codes, paths,
    },
    signature::SignatureError,
};
use serde_json::{Value, json};

fn config_to(receiver: &Receiver, callback_delay_ms: u64) -> SimConfig {
    SimConfig {
        callback_url: Some(receiver.url.clone()),
        callback_delay_ms,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn a_repeated_charge_gets_the_first_answer_and_one_confirmation() {
    let receiver = Receiver::start(&[]).await;
    let sim = TestSim::start(config_to(&receiver, 100)).await;

    let (first_status, first) = sim
        .post(paths::CHARGES, &charge("pay-1", "pay-1-charge", None))
        .await;
    let (again_status, again) = sim
        .post(paths::CHARGES, &charge("pay-1", "pay-1-charge", None))
        .await;
    assert_eq!(
        (first_status, again_status),
        (201, 200),
        "{first} / {again}"
    );
    assert_eq!(first["status"], "pending");
    assert_eq!(first, again);

    receiver.wait_for("pay-1", 1).await;
    // A later charge with the same delay: once its confirmation is in, a
    // second one of pay-1 (scheduled earlier) would have arrived too.
    let (status, _) = sim
        .post(paths::CHARGES, &charge("pay-2", "pay-2-charge", None))
        .await;
    assert_eq!(status, 201);
    receiver.wait_for("pay-2", 1).await;
    assert_eq!(receiver.received_for("pay-1").len(), 1);

    let entry = sim.ledger_entry("pay-1").await.expect("ledger entry");
    assert_eq!(entry.charge_id, first["chargeId"]);
    assert_eq!(
        (entry.attempts, entry.amount, entry.status),
        (2, 1250, ChargeStatus::Succeeded)
    );
}

#[tokio::test]
async fn the_confirmation_is_signed_and_goes_to_the_charge_callback_url() {
    let receiver = Receiver::start(&[]).await;
    // No global URL: the one in the request is used.
    let sim = TestSim::start(SimConfig::default()).await;

    let (status, answer) = sim
        .post(
            paths::CHARGES,
            &charge("pay-sig", "pay-sig-charge", Some(&receiver.url)),
        )
        .await;
    assert_eq!(status, 201, "{answer}");

    let got = receiver.wait_for("pay-sig", 1).await;
    let delivery = &got[0];
    assert_eq!(delivery.verify(SECRET), Ok(()));
    assert_eq!(
        delivery.verify(b"another secret"),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
    let callback = delivery.callback();
    assert_eq!(callback.charge_id, answer["chargeId"]);
    assert_eq!(callback.outcome, CallbackOutcome::Succeeded);
    assert_eq!(callback.reason, None);
}

#[tokio::test]
async fn transient_failures_are_counted_then_the_same_key_succeeds() {
    let sim = TestSim::start(SimConfig::default()).await;

    // From the payment's scenario.
    sim.set_scenario("pay-flaky", json!({"transientFailures": 2}))
        .await;
    let body = charge("pay-flaky", "pay-flaky-charge", None);
    for _ in 0..2 {
        let (status, error) = sim.post(paths::CHARGES, &body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (503, Some(error_codes::UNAVAILABLE)),
            "{error}"
        );
    }
    assert_eq!(
        sim.ledger_entry("pay-flaky").await,
        None,
        "a 503 records no charge"
    );
    let (status, _) = sim.post(paths::CHARGES, &body).await;
    assert_eq!(status, 201);
    let entry = sim.ledger_entry("pay-flaky").await.expect("charged");
    assert_eq!((entry.attempts, entry.status), (3, ChargeStatus::Pending));

    // From the global rate.
    let (status, _) = sim
        .put(paths::ADMIN_CONFIG, &json!({"transientFailureRate": 1.0}))
        .await;
    assert_eq!(status, 200);
    let body = charge("pay-rate", "pay-rate-charge", None);
    let (status, _) = sim.post(paths::CHARGES, &body).await;
    assert_eq!(status, 503);
    sim.put(paths::ADMIN_CONFIG, &json!({"transientFailureRate": 0.0}))
        .await;
    let (status, _) = sim.post(paths::CHARGES, &body).await;
    assert_eq!(status, 201);
    assert_eq!(
        sim.ledger_entry("pay-rate")
            .await
            .expect("charged")
            .attempts,
        2
    );
}

#[tokio::test]
async fn a_decline_is_402_and_sticks_to_its_key() {
    let receiver = Receiver::start(&[]).await;
    let sim = TestSim::start(config_to(&receiver, 0)).await;

    sim.set_scenario("pay-decl", json!({"decline": true})).await;
    let body = charge("pay-decl", "pay-decl-charge", None);
    for _ in 0..2 {
        let (status, error) = sim.post(paths::CHARGES, &body).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (402, Some(error_codes::DECLINED)),
            "{error}"
        );
    }
    // Even once the scenario no longer declines, the key's answer stands.
    sim.set_scenario("pay-decl", json!({"callback": "succeeded"}))
        .await;
    let (status, _) = sim.post(paths::CHARGES, &body).await;
    assert_eq!(status, 402);
    assert_eq!(
        sim.ledger_entry("pay-decl").await,
        None,
        "a declined charge holds nothing"
    );

    sim.put(paths::ADMIN_CONFIG, &json!({"declineRate": 1.0}))
        .await;
    let (status, _) = sim
        .post(paths::CHARGES, &charge("pay-rate", "pay-rate-charge", None))
        .await;
    assert_eq!(status, 402);
    assert!(receiver.received_for("pay-decl").is_empty());
}

#[tokio::test]
async fn a_failing_receiver_gets_the_confirmation_again() {
    let receiver = Receiver::start(&[503, 503]).await;
    let sim = TestSim::start(config_to(&receiver, 0)).await;

    let (status, _) = sim
        .post(
            paths::CHARGES,
            &charge("pay-retry", "pay-retry-charge", None),
        )
        .await;
    assert_eq!(status, 201);
    let got = receiver.wait_for("pay-retry", 3).await;
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [503, 503, 200]);
    for delivery in &got {
        assert_eq!(delivery.verify(SECRET), Ok(()), "each attempt is signed");
        assert_eq!(delivery.body, got[0].body, "same body each time");
    }
}

#[tokio::test]
async fn callback_copies_send_duplicates() {
    let receiver = Receiver::start(&[]).await;
    let sim = TestSim::start(config_to(&receiver, 0)).await;

    sim.set_scenario(
        "pay-dup",
        json!({"callback": "succeeded", "callbackCopies": 2}),
    )
    .await;
    let (status, _) = sim
        .post(paths::CHARGES, &charge("pay-dup", "pay-dup-charge", None))
        .await;
    assert_eq!(status, 201);
    let got = receiver.wait_for("pay-dup", 2).await;
    assert_eq!(got[0].body, got[1].body);
    assert!(got.iter().all(|r| r.verify(SECRET).is_ok()));
}

#[tokio::test]
async fn a_failed_confirmation_fails_the_charge_and_leaves_nothing_to_refund() {
    let receiver = Receiver::start(&[]).await;
    let sim = TestSim::start(config_to(&receiver, 0)).await;

    sim.set_scenario("pay-fail", json!({"callback": "failed"}))
        .await;
    sim.post(paths::CHARGES, &charge("pay-fail", "pay-fail-charge", None))
        .await;
    let callback = receiver.wait_for("pay-fail", 1).await[0].callback();
    assert_eq!(callback.outcome, CallbackOutcome::Failed);
    assert!(callback.reason.is_some());
    let entry = sim.ledger_entry("pay-fail").await.expect("charged");
    assert_eq!(entry.status, ChargeStatus::Failed);

    let (status, refund) = sim
        .post(paths::REFUNDS, &refund("pay-fail", "pay-fail-refund"))
        .await;
    assert_eq!((status, refund), (200, json!({"refundedAmount": 0})));
}

fn refund(payment_id: &str, key: &str) -> serde_json::Value {
    json!({"paymentId": payment_id, "idempotencyKey": key, "amount": 1250, "currency": "EUR"})
}

#[tokio::test]
async fn a_refund_takes_back_a_held_charge_once() {
    let sim = TestSim::start(SimConfig::default()).await;

    // Never confirmed: the charge stays pending (the saga's timeout path).
    sim.set_scenario("pay-held", json!({})).await;
    let (status, _) = sim
        .post(paths::CHARGES, &charge("pay-held", "pay-held-charge", None))
        .await;
    assert_eq!(status, 201);

    let (status, first) = sim
        .post(paths::REFUNDS, &refund("pay-held", "pay-held-refund"))
        .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["refundId"].is_string(), "{first}");
    assert_eq!(first["refundedAmount"], 1250);
    let (_, again) = sim
        .post(paths::REFUNDS, &refund("pay-held", "pay-held-refund"))
        .await;
    assert_eq!(again, first, "same key, same answer");
    let (_, other_key) = sim
        .post(paths::REFUNDS, &refund("pay-held", "pay-held-refund-2"))
        .await;
    assert_eq!(
        other_key,
        json!({"refundedAmount": 0}),
        "nothing left to refund"
    );

    let entry = sim.ledger_entry("pay-held").await.expect("charged");
    assert_eq!(
        (entry.status, entry.refunded_amount),
        (ChargeStatus::Refunded, 1250)
    );
}

#[tokio::test]
async fn a_refund_cancels_a_confirmation_not_yet_sent() {
    let receiver = Receiver::start(&[]).await;
    let sim = TestSim::start(config_to(&receiver, 0)).await;
    let later = json!({"callback": "succeeded", "callbackDelayMs": 300});

    sim.set_scenario("pay-cancel", later.clone()).await;
    sim.post(
        paths::CHARGES,
        &charge("pay-cancel", "pay-cancel-charge", None),
    )
    .await;
    let (_, refund) = sim
        .post(paths::REFUNDS, &refund("pay-cancel", "pay-cancel-refund"))
        .await;
    assert_eq!(refund["refundedAmount"], 1250);

    // A charge made after the refund, confirmed with the same delay: once
    // it is in, pay-cancel's confirmation would have been sent too.
    sim.set_scenario("pay-later", later).await;
    sim.post(
        paths::CHARGES,
        &charge("pay-later", "pay-later-charge", None),
    )
    .await;
    receiver.wait_for("pay-later", 1).await;
    assert!(receiver.received_for("pay-cancel").is_empty());
    let entry = sim.ledger_entry("pay-cancel").await.expect("charged");
    assert_eq!(entry.status, ChargeStatus::Refunded);
}

#[tokio::test]
async fn refunding_nothing_is_a_success() {
    let sim = TestSim::start(SimConfig::default()).await;
    let (status, answer) = sim
        .post(paths::REFUNDS, &refund("pay-none", "pay-none-refund"))
        .await;
    assert_eq!((status, answer), (200, json!({"refundedAmount": 0})));
}

#[tokio::test]
async fn without_a_callback_url_the_charge_still_settles() {
    let sim = TestSim::start(SimConfig::default()).await;
    sim.post(
        paths::CHARGES,
        &charge("pay-nourl", "pay-nourl-charge", None),
    )
    .await;
    eventually("the charge to settle", async || {
        let entry = sim.ledger_entry("pay-nourl").await?;
        (entry.status == ChargeStatus::Succeeded).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_key_reused_for_another_charge_is_refused() {
    let sim = TestSim::start(SimConfig::default()).await;
    sim.set_scenario("pay-a", json!({})).await;
    let (status, _) = sim
        .post(paths::CHARGES, &charge("pay-a", "shared-key", None))
        .await;
    assert_eq!(status, 201);
    let (status, error) = sim
        .post(paths::CHARGES, &charge("pay-b", "shared-key", None))
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some(error_codes::BAD_REQUEST)),
        "{error}"
    );
}

#[tokio::test]
async fn the_ledger_is_sorted_by_payment() {
    let sim = TestSim::start(SimConfig::default()).await;
    for payment in ["pay-c", "pay-a", "pay-b"] {
        sim.set_scenario(payment, json!({})).await;
        sim.post(
            paths::CHARGES,
            &charge(payment, &format!("{payment}-charge"), None),
        )
        .await;
    }
    let order: Vec<String> = sim
        .ledger()
        .await
        .into_iter()
        .map(|e| e.payment_id)
        .collect();
    assert_eq!(order, ["pay-a", "pay-b", "pay-c"]);
}

#[tokio::test]
async fn the_same_seed_makes_the_same_decisions() {
    let config = SimConfig {
        decline_rate: 0.5,
        transient_failure_rate: 0.3,
        callback_drop_rate: 1.0,
        ..SimConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = TestSim::start_seeded(config.clone(), 42).await;
        let mut statuses = Vec::new();
        for i in 0..20 {
            let (status, _) = sim
                .post(
                    paths::CHARGES,
                    &charge(&format!("p{i}"), &format!("k{i}"), None),
                )
                .await;
            statuses.push(status);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    for status in [201, 402, 503] {
        assert!(runs[0].contains(&status), "{status} in {:?}", runs[0]);
    }
}

#[tokio::test]
async fn the_status_endpoint_tells_what_became_of_a_charge() {
    let receiver = Receiver::start(&[]).await;
    let sim = TestSim::start(config_to(&receiver, 50)).await;
    let (status, _) = sim.get(&paths::charge("ch-nobody-knows")).await;
    assert_eq!(status, 404, "an unknown charge");

    // A lost confirmation: the charge settles, nothing is delivered, the
    // status endpoint says captured.
    sim.set_scenario(
        "pay-lost",
        json!({"callback": "succeeded", "callbackDelayMs": 50, "loseCallback": true}),
    )
    .await;
    let (_, lost) = sim
        .post(paths::CHARGES, &charge("pay-lost", "pay-lost-charge", None))
        .await;
    let id = lost["chargeId"].as_str().unwrap().to_string();
    let (_, pending) = sim.get(&paths::charge(&id)).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    let captured = eventually("the charge to settle", async || {
        let (_, c) = sim.get(&paths::charge(&id)).await;
        (c["status"] == "captured").then_some(c)
    })
    .await;
    assert_eq!(
        (captured["paymentId"].as_str(), captured["amount"].as_i64()),
        (Some("pay-lost"), Some(1250))
    );
    // A confirmation of another charge, scheduled later with the same delay,
    // arrives: the lost one would have by now.
    sim.post(paths::CHARGES, &charge("pay-sent", "pay-sent-charge", None))
        .await;
    receiver.wait_for("pay-sent", 1).await;
    assert!(
        receiver.received_for("pay-lost").is_empty(),
        "a lost confirmation was sent"
    );

    // The endpoint can be down for one payment.
    sim.set_scenario(
        "pay-down",
        json!({"callback": "succeeded", "statusUnavailable": true}),
    )
    .await;
    let (_, down) = sim
        .post(paths::CHARGES, &charge("pay-down", "pay-down-charge", None))
        .await;
    let (status, body) = sim
        .get(&paths::charge(down["chargeId"].as_str().unwrap()))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some(error_codes::UNAVAILABLE))
    );
}

// ---- refunds of a captured charge ----------------------------------------------

/// A charge (1250 EUR) of `payment` under `scenario`, once the status
/// endpoint says `status`; its ID.
async fn charge_in(sim: &TestSim, payment: &str, scenario: Value, status: &str) -> String {
    sim.set_scenario(payment, scenario).await;
    let (code, answer) = sim
        .post(
            paths::CHARGES,
            &charge(payment, &format!("{payment}-charge"), None),
        )
        .await;
    assert_eq!(code, 201, "{answer}");
    let id = answer["chargeId"].as_str().expect("chargeId").to_owned();
    eventually(&format!("{payment}'s charge {status}"), async || {
        let (_, c) = sim.get(&paths::charge(&id)).await;
        (c["status"] == status).then_some(())
    })
    .await;
    id
}

/// A charge of `payment` the gateway captured.
async fn captured(sim: &TestSim, payment: &str) -> String {
    charge_in(sim, payment, json!({"callback": "succeeded"}), "captured").await
}

fn charge_refund(payment_id: &str, key: &str, amount: i64) -> Value {
    json!({"paymentId": payment_id, "idempotencyKey": key, "amount": amount, "currency": "EUR"})
}

/// POSTs a refund of `charge_id`.
async fn refund_charge(sim: &TestSim, charge_id: &str, body: &Value) -> (u16, Value) {
    sim.post(&paths::charge_refunds(charge_id), body).await
}

fn error_of(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["code"].as_str())
}

#[tokio::test]
async fn partial_refunds_add_up_to_the_captured_amount_and_no_further() {
    let sim = TestSim::start(SimConfig::default()).await;
    let id = captured(&sim, "pay-part").await;

    let (status, first) = refund_charge(&sim, &id, &charge_refund("pay-part", "r1", 500)).await;
    assert_eq!(status, 201, "{first}");
    let refund: ChargeRefundResponse = serde_json::from_value(first).expect("a refund");
    assert_eq!(
        (
            refund.charge_id.as_str(),
            refund.amount,
            refund.currency.as_str()
        ),
        (id.as_str(), 500, "EUR")
    );
    assert_eq!(refund.charge_refunded_amount, 500);
    let entry = sim.ledger_entry("pay-part").await.expect("charged");
    assert_eq!(
        (entry.status, entry.refunded_amount),
        (ChargeStatus::Succeeded, 500),
        "partly refunded: still captured"
    );
    assert_eq!(sim.get(&paths::charge(&id)).await.1["status"], "captured");

    // More than is left: refused, naming what is left, and so again.
    let too_much = charge_refund("pay-part", "r2", 800);
    for _ in 0..2 {
        let answer = refund_charge(&sim, &id, &too_much).await;
        assert_eq!(error_of(&answer), (409, Some(error_codes::OVER_REFUND)));
        let message = answer.1["message"].as_str().unwrap_or_default();
        assert!(message.contains("750 EUR"), "{message}");
    }

    // The rest: fully refunded.
    let (status, rest) = refund_charge(&sim, &id, &charge_refund("pay-part", "r3", 750)).await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(rest["chargeRefundedAmount"], 1250);
    assert_ne!(rest["refundId"], json!(refund.refund_id));
    assert_eq!(sim.get(&paths::charge(&id)).await.1["status"], "refunded");
    let entry = sim.ledger_entry("pay-part").await.expect("charged");
    assert_eq!(
        (entry.status, entry.refunded_amount),
        (ChargeStatus::Refunded, 1250)
    );

    // Nothing left, not even a cent.
    let answer = refund_charge(&sim, &id, &charge_refund("pay-part", "r4", 1)).await;
    assert_eq!(error_of(&answer), (409, Some(error_codes::OVER_REFUND)));
}

#[tokio::test]
async fn a_repeated_charge_refund_gets_the_first_answer_and_refunds_once() {
    let sim = TestSim::start(SimConfig::default()).await;
    let id = captured(&sim, "pay-rep").await;
    let body = charge_refund("pay-rep", "pay-rep-refund", 300);

    let (status, first) = refund_charge(&sim, &id, &body).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = refund_charge(&sim, &id, &body).await;
    assert_eq!((status, &again), (200, &first), "same key, same answer");
    assert_eq!(
        sim.ledger_entry("pay-rep")
            .await
            .expect("charged")
            .refunded_amount,
        300,
        "refunded once"
    );

    // The same key for anything else is a mistake.
    let other_charge = captured(&sim, "pay-rep-2").await;
    for (charge_id, body) in [
        (&id, charge_refund("pay-rep", "pay-rep-refund", 400)),
        (
            &other_charge,
            charge_refund("pay-rep-2", "pay-rep-refund", 300),
        ),
        (
            &id,
            json!({"paymentId": "pay-rep", "idempotencyKey": "pay-rep-refund", "amount": 300, "currency": "USD"}),
        ),
    ] {
        let answer = refund_charge(&sim, charge_id, &body).await;
        assert_eq!(
            error_of(&answer),
            (400, Some(error_codes::BAD_REQUEST)),
            "{body}"
        );
    }
    assert_eq!(
        sim.ledger_entry("pay-rep")
            .await
            .expect("charged")
            .refunded_amount,
        300
    );
}

#[tokio::test]
async fn only_a_captured_charge_of_the_payment_can_be_refunded() {
    let sim = TestSim::start(SimConfig::default()).await;
    let pending = charge_in(&sim, "pay-pend", json!({}), "pending").await;
    let failed = charge_in(&sim, "pay-fld", json!({"callback": "failed"}), "failed").await;
    let good = captured(&sim, "pay-good").await;

    for (id, payment) in [(&pending, "pay-pend"), (&failed, "pay-fld")] {
        let answer = refund_charge(&sim, id, &charge_refund(payment, "k", 100)).await;
        assert_eq!(
            error_of(&answer),
            (409, Some(error_codes::NOT_CAPTURED)),
            "{payment}"
        );
    }
    let answer = refund_charge(&sim, "ch-nobody-knows", &charge_refund("pay-x", "k", 100)).await;
    assert_eq!(error_of(&answer), (404, Some(error_codes::NOT_FOUND)));

    for body in [
        charge_refund("pay-other", "k1", 100),
        json!({"paymentId": "pay-good", "idempotencyKey": "k2", "amount": 100, "currency": "USD"}),
        charge_refund("pay-good", "k3", 0),
        charge_refund("pay-good", "", 100),
        json!({"paymentId": "pay-good", "idempotencyKey": "k4", "amount": 100, "currency": "eur"}),
    ] {
        let answer = refund_charge(&sim, &good, &body).await;
        assert_eq!(
            error_of(&answer),
            (400, Some(error_codes::BAD_REQUEST)),
            "{body}"
        );
    }
    for payment in ["pay-pend", "pay-fld", "pay-good"] {
        let entry = sim.ledger_entry(payment).await.expect("charged");
        assert_eq!(entry.refunded_amount, 0, "{payment}");
    }
    // A 409 notCaptured is not recorded: once captured, the same key refunds.
    sim.set_scenario(
        "pay-late",
        json!({"callback": "succeeded", "callbackDelayMs": 200}),
    )
    .await;
    let (_, late) = sim
        .post(paths::CHARGES, &charge("pay-late", "pay-late-charge", None))
        .await;
    let late = late["chargeId"].as_str().expect("chargeId").to_owned();
    let body = charge_refund("pay-late", "pay-late-refund", 100);
    let answer = refund_charge(&sim, &late, &body).await;
    assert_eq!(error_of(&answer), (409, Some(error_codes::NOT_CAPTURED)));
    let (status, answer) = eventually("the late charge refunded", async || {
        let answer = refund_charge(&sim, &late, &body).await;
        (answer.0 != 409).then_some(answer)
    })
    .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn refund_transient_failures_answer_503_then_the_same_key_refunds() {
    let sim = TestSim::start(SimConfig::default()).await;
    let id = charge_in(
        &sim,
        "pay-rflaky",
        json!({"callback": "succeeded", "refundTransientFailures": 2}),
        "captured",
    )
    .await;
    let body = charge_refund("pay-rflaky", "pay-rflaky-refund", 1250);
    for _ in 0..2 {
        let answer = refund_charge(&sim, &id, &body).await;
        assert_eq!(error_of(&answer), (503, Some(error_codes::UNAVAILABLE)));
        assert_eq!(
            sim.ledger_entry("pay-rflaky")
                .await
                .expect("charged")
                .refunded_amount,
            0,
            "a 503 refunds nothing"
        );
    }
    let (status, answer) = refund_charge(&sim, &id, &body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        sim.ledger_entry("pay-rflaky")
            .await
            .expect("charged")
            .status,
        ChargeStatus::Refunded
    );
}

#[tokio::test]
async fn a_refused_refund_is_402_and_sticks_to_its_key() {
    let sim = TestSim::start(SimConfig::default()).await;
    let id = charge_in(
        &sim,
        "pay-refuse",
        json!({"callback": "succeeded", "refuseRefunds": true}),
        "captured",
    )
    .await;
    let body = charge_refund("pay-refuse", "pay-refuse-refund", 100);
    for _ in 0..2 {
        let answer = refund_charge(&sim, &id, &body).await;
        assert_eq!(error_of(&answer), (402, Some(error_codes::REFUND_REFUSED)));
    }
    // Even once the scenario no longer refuses, the key's answer stands; a
    // new key is decided anew.
    sim.set_scenario("pay-refuse", json!({})).await;
    let answer = refund_charge(&sim, &id, &body).await;
    assert_eq!(error_of(&answer), (402, Some(error_codes::REFUND_REFUSED)));
    let (status, answer) =
        refund_charge(&sim, &id, &charge_refund("pay-refuse", "pay-refuse-2", 100)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        sim.ledger_entry("pay-refuse")
            .await
            .expect("charged")
            .refunded_amount,
        100
    );
}

#[tokio::test]
async fn of_two_refunds_racing_for_the_last_cent_exactly_one_wins() {
    // Some latency, so that both requests are in flight at once.
    let sim = TestSim::start(SimConfig {
        latency_ms: 50,
        ..SimConfig::default()
    })
    .await;
    let id = captured(&sim, "pay-race").await;
    let (status, _) = refund_charge(&sim, &id, &charge_refund("pay-race", "r0", 1249)).await;
    assert_eq!(status, 201);

    let (ra, rb) = (
        charge_refund("pay-race", "ra", 1),
        charge_refund("pay-race", "rb", 1),
    );
    let (a, b) = tokio::join!(refund_charge(&sim, &id, &ra), refund_charge(&sim, &id, &rb));
    let mut outcomes = [error_of(&a), error_of(&b)];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [(201, None), (409, Some(error_codes::OVER_REFUND))],
        "{a:?} / {b:?}"
    );
    let entry = sim.ledger_entry("pay-race").await.expect("charged");
    assert_eq!(
        (entry.status, entry.refunded_amount),
        (ChargeStatus::Refunded, 1250)
    );
}

#[tokio::test]
async fn the_compensation_refunds_what_partial_refunds_left() {
    let sim = TestSim::start(SimConfig::default()).await;
    let id = captured(&sim, "pay-comp").await;
    let (status, _) = refund_charge(&sim, &id, &charge_refund("pay-comp", "r1", 500)).await;
    assert_eq!(status, 201);

    let (status, answer) = sim
        .post(paths::REFUNDS, &refund("pay-comp", "pay-comp-refund"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["refundedAmount"], 750);
    let entry = sim.ledger_entry("pay-comp").await.expect("charged");
    assert_eq!(
        (entry.status, entry.refunded_amount),
        (ChargeStatus::Refunded, 1250)
    );
    let answer = refund_charge(&sim, &id, &charge_refund("pay-comp", "r2", 1)).await;
    assert_eq!(error_of(&answer), (409, Some(error_codes::OVER_REFUND)));
}

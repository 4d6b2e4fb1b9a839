//! `--state-file`: the gateway remembers across a crash. A charge accepted
//! before a `kill -9` is known after the restart (its status, its key's
//! answer), its confirmation still arrives, and IDs are not handed out
//! twice; a refund of a charge likewise survives.

mod common;

use common::{Receiver, charge, eventually};
use paysaga_api::external::paths;

/// The binary with `args`, and its base URL.
async fn start(args: &[&str]) -> (tokio::process::Child, String) {
    let (child, addr) = common::spawn_binary(args).await;
    (child, format!("http://{addr}"))
}

async fn post(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn with_a_state_file_a_killed_gateway_forgets_no_charge() {
    let receiver = Receiver::start(&[]).await;
    let dir = std::env::temp_dir().join(format!("paysaga-sim-durable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.json");
    let state = format!("--state-file={}", file.display());
    let args = [
        state.as_str(),
        "--callback-delay-ms=3000",
        "--callback-url",
        receiver.url.as_str(),
    ];

    let (mut first, url) = start(&args).await;
    let (status, accepted) = post(
        &format!("{url}{}", paths::CHARGES),
        &charge("pay-d", "pay-d-charge", None),
    )
    .await;
    assert_eq!(status, 201, "{accepted}");
    let charge_id = accepted["chargeId"].as_str().unwrap().to_string();
    first.start_kill().unwrap(); // SIGKILL, before the confirmation is due
    first.wait().await.unwrap();

    let (_second, url) = start(&args).await;
    // The charge is known, and its key's answer stands.
    let status = reqwest::get(format!("{url}{}/{charge_id}", paths::CHARGES))
        .await
        .unwrap();
    assert_eq!(status.status().as_u16(), 200);
    let (again, replayed) = post(
        &format!("{url}{}", paths::CHARGES),
        &charge("pay-d", "pay-d-charge", None),
    )
    .await;
    assert_eq!(
        (again, replayed["chargeId"].as_str()),
        (200, Some(charge_id.as_str()))
    );
    // Its confirmation, due after the crash, is sent by the new process.
    let got = receiver.wait_for("pay-d", 1).await;
    assert_eq!(got[0].callback().charge_id, charge_id);
    // A new charge gets a new ID, not the first one again.
    let (_, other) = post(
        &format!("{url}{}", paths::CHARGES),
        &charge("pay-e", "pay-e-charge", None),
    )
    .await;
    assert_ne!(other["chargeId"].as_str(), Some(charge_id.as_str()));
    eventually("the first charge settled", async || {
        let v: serde_json::Value = reqwest::get(format!("{url}{}/{charge_id}", paths::CHARGES))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == "captured").then_some(())
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn with_a_state_file_a_refund_survives_a_kill() {
    let dir =
        std::env::temp_dir().join(format!("paysaga-sim-durable-refund-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.json");
    let state = format!("--state-file={}", file.display());
    let args = [state.as_str(), "--callback-delay-ms=0"];
    let refund = |key: &str, amount: i64| serde_json::json!({"paymentId": "pay-r", "idempotencyKey": key, "amount": amount, "currency": "EUR"});

    let (mut first, url) = start(&args).await;
    let (status, accepted) = post(
        &format!("{url}{}", paths::CHARGES),
        &charge("pay-r", "pay-r-charge", None),
    )
    .await;
    assert_eq!(status, 201, "{accepted}");
    let charge_id = accepted["chargeId"].as_str().unwrap().to_string();
    let refunds = format!("{url}{}", paths::charge_refunds(&charge_id));
    eventually("the charge captured", async || {
        let v: serde_json::Value = reqwest::get(format!("{url}{}", paths::charge(&charge_id)))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == "captured").then_some(())
    })
    .await;
    let (status, partial) = post(&refunds, &refund("pay-r-1", 500)).await;
    assert_eq!(status, 201, "{partial}");
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let (_second, url) = start(&args).await;
    let refunds = format!("{url}{}", paths::charge_refunds(&charge_id));
    // The refund and its key's answer stand; what is left is what was left.
    let (status, again) = post(&refunds, &refund("pay-r-1", 500)).await;
    assert_eq!((status, &again), (200, &partial));
    let (status, over) = post(&refunds, &refund("pay-r-2", 800)).await;
    assert_eq!((status, over["code"].as_str()), (409, Some("overRefund")));
    let (status, rest) = post(&refunds, &refund("pay-r-3", 750)).await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(rest["chargeRefundedAmount"], 1250);
    assert_ne!(
        rest["refundId"], partial["refundId"],
        "IDs not handed out twice"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

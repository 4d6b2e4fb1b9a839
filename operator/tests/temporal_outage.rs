//! Temporal goes away mid-saga and comes back: the controller keeps running,
//! says so on the Payment, and catches up. This binary runs a Temporal server
//! of its own (state in a file, so a restart keeps the workflows).

mod common;

use std::time::Duration;

use common::*;
use paysaga_api::Phase;
use paysaga_testenv::{TemporalEnv, TemporalOptions, block_on, eventually, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_says_temporal_is_gone_and_catches_up_when_it_returns() {
    let _logs = paysaga_testenv::logs_on_failure();
    let dir = paysaga_testenv::run_dir().join("outage-temporal");
    let opts = TemporalOptions {
        port: Some(free_port().unwrap()),
        ui_port: None,
        db_file: Some(dir.join("temporal.db")),
        ..Default::default()
    };
    std::fs::create_dir_all(&dir).unwrap();
    let temporal = TemporalEnv::start(&dir, opts.clone()).unwrap();
    let address = temporal.address.clone();
    let _worker = start_worker_on(&address);
    let controller = start_controller_on("controller", &address, &[]);

    let kube = paysaga_testenv::kube();
    let ns = kube.namespace("outage").unwrap();
    let api = payments(&ns.name).await;
    in_flight_payment(&api, &ns.name, "pay-outage", 400).await;
    drop(temporal);
    kube.kubectl_ok(&[
        "annotate",
        "payment",
        "pay-outage",
        "-n",
        &ns.name,
        "paysaga.dev/cancel=during outage",
    ])
    .unwrap();
    let p = wait_for(
        &api,
        "pay-outage",
        "a TemporalReachable=False condition",
        |p| {
            condition(p, "TemporalReachable")
                == Some(("False".into(), "TemporalUnavailable".into()))
        },
    );
    assert_eq!(phase(&p), Some(Phase::Processing), "nothing else changed");
    let ready = reqwest::get(format!("{}/readyz", controller.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    // Temporal returns (same port, same state): the cancel goes through.
    let _temporal = TemporalEnv::start(&dir, opts).unwrap();
    let p = wait_for(&api, "pay-outage", "Cancelled", |p| {
        phase(p) == Some(Phase::Cancelled)
    });
    assert!(
        condition(&p, "TemporalReachable").is_none(),
        "the outage condition stayed"
    );
    assert!(p.status.unwrap().message.unwrap().contains("during outage"));
    eventually(Duration::from_secs(30), "ready again", || {
        let ready = block_on(reqwest::get(format!("{}/readyz", controller.url)))
            .map_err(|e| e.to_string())?;
        if ready.status() == 200 {
            Ok(())
        } else {
            Err(ready.status().to_string())
        }
    });
}

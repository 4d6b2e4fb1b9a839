//! The `paysaga-sim` binary: starts on a free port, logs the real address,
//! serves, and stops cleanly on SIGTERM.

mod common;

use std::time::Duration;

use tokio::process::Command;

#[tokio::test]
async fn the_binary_logs_its_address_serves_and_stops_on_sigterm() {
    let (mut child, addr) = common::spawn_binary(&["--seed", "3"]).await;
    assert!(!addr.ends_with(":0"), "the real port is logged: {addr}");

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("GET /healthz");
    assert_eq!(health.status().as_u16(), 200);

    let pid = child.id().expect("pid");
    let kill = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("paysaga-sim to stop")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_without_a_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_paysaga-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("PAYSAGA_CALLBACK_SECRET")
        .output()
        .await
        .expect("run paysaga-sim");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PAYSAGA_CALLBACK_SECRET is not set"),
        "{stderr}"
    );
}

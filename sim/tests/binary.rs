//! The `paysaga-sim` binary: starts on a free port, logs the real address,
//! serves, and stops cleanly on SIGTERM.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

#[tokio::test]
async fn the_binary_logs_its_address_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paysaga-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--seed",
            "3",
        ])
        .env("PAYSAGA_CALLBACK_SECRET", "s3cret")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start paysaga-sim");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();

    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "paysaga-sim listening" {
                return entry["fields"]["addr"].as_str().expect("addr").to_owned();
            }
        }
        panic!("paysaga-sim exited before listening");
    })
    .await
    .expect("paysaga-sim to log its address");
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

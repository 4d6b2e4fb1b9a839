//! Helpers of the integration tests: a simulator on a loopback port, a small
//! receiver of the gateway's confirmations on another, and polling with a
//! deadline.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use paysaga_api::{
    external::{GatewayCallback, GatewayLedgerEntry, SimConfig, paths},
    signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER},
};
use paysaga_sim::{RetryPolicy, Sim, SimSettings};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot};

pub const SECRET: &[u8] = b"test-callback-secret";

/// The `paysaga-sim` binary on a free port with `args` (JSON logs, the
/// callback key [`SECRET`] in its environment), and its address once it
/// logs that it listens; the rest of its log is drained in the background.
pub async fn spawn_binary(args: &[&str]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paysaga-sim"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .env(
            "PAYSAGA_CALLBACK_SECRET",
            std::str::from_utf8(SECRET).expect("ASCII"),
        )
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start paysaga-sim");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
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
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Waits until `check` gives a value, for at most 10 s.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulator served in-process on `127.0.0.1:0`; stopped when dropped.
pub struct TestSim {
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl TestSim {
    pub async fn start(config: SimConfig) -> Self {
        Self::start_seeded(config, 1).await
    }

    pub async fn start_seeded(config: SimConfig, seed: u64) -> Self {
        let mut settings = SimSettings::new(SECRET);
        settings.config = config;
        settings.seed = seed;
        settings.retry = RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            max_attempts: 8,
        };
        let sim = Sim::new(settings).expect("valid settings");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            paysaga_sim::serve(listener, sim, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Self {
            base,
            http: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; answers the status and the JSON body (`Null` when empty).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        status_and_json(response).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT");
        status_and_json(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        status_and_json(response).await
    }

    pub async fn set_scenario(&self, payment_id: &str, scenario: Value) {
        let (status, body) = self
            .put(
                &format!("{}/{payment_id}", paths::ADMIN_SCENARIOS),
                &scenario,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn ledger(&self) -> Vec<GatewayLedgerEntry> {
        let (status, body) = self.get(paths::ADMIN_GATEWAY_LEDGER).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("ledger")
    }

    pub async fn ledger_entry(&self, payment_id: &str) -> Option<GatewayLedgerEntry> {
        self.ledger()
            .await
            .into_iter()
            .find(|e| e.payment_id == payment_id)
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// A charge request body.
pub fn charge(payment_id: &str, key: &str, callback_url: Option<&str>) -> Value {
    let mut body = serde_json::json!({
        "paymentId": payment_id,
        "idempotencyKey": key,
        "amount": 1250,
        "currency": "EUR",
        "method": "card",
    });
    if let Some(url) = callback_url {
        body["callbackUrl"] = Value::String(url.to_owned());
    }
    body
}

/// One confirmation as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn callback(&self) -> GatewayCallback {
        serde_json::from_slice(&self.body).expect("a GatewayCallback body")
    }

    pub fn verify(&self, secret: &[u8]) -> Result<(), signature::SignatureError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        signature::verify(
            secret,
            self.timestamp.as_deref(),
            self.signature.as_deref(),
            &self.body,
            now,
            signature::DEFAULT_TOLERANCE_SECS,
        )
        .map(|_| ())
    }
}

#[derive(Default)]
struct ReceiverState {
    /// Statuses to answer, in order; 200 once empty.
    script: Mutex<VecDeque<u16>>,
    received: Mutex<Vec<Received>>,
}

/// A small HTTP server standing in for `POST /v1/gateway/callbacks`.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            received: Mutex::default(),
        });
        let app = Router::new()
            .route(paths::GATEWAY_CALLBACKS, post(receive))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}{}",
            listener.local_addr().expect("address"),
            paths::GATEWAY_CALLBACKS
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("receiver");
        });
        Self {
            url,
            state,
            _stop: stop,
        }
    }

    /// Every confirmation received for the payment, in order.
    pub fn received_for(&self, payment_id: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.callback().payment_id == payment_id)
            .cloned()
            .collect()
    }

    /// Waits until `count` confirmations for the payment have arrived.
    pub async fn wait_for(&self, payment_id: &str, count: usize) -> Vec<Received> {
        eventually(
            &format!("{count} confirmation(s) of {payment_id}"),
            async || {
                let got = self.received_for(payment_id);
                (got.len() >= count).then_some(got)
            },
        )
        .await
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    state.received.lock().expect("lock").push(Received {
        timestamp: header(TIMESTAMP_HEADER),
        signature: header(SIGNATURE_HEADER),
        content_type: header("content-type"),
        body,
        answered,
    });
    StatusCode::from_u16(answered).expect("status")
}

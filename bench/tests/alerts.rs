//! The chart's alerts and dashboard against a real Prometheus scraping a
//! make-dev stack: every target up, each alert fires when its condition is
//! caused for real and clears after, and every dashboard query is valid and
//! (but the webhooks', with no endpoint here) has data.
//!
//! The rules are the chart's, rendered by helm with short windows (20 s
//! rates, no `for`) and low thresholds, so the test takes minutes, not hours.

use std::time::Duration;

use paysaga_api::http::{CancelBody, PaymentView};
use paysaga_api::{Phase, Step};
use paysaga_testenv::prometheus::PrometheusEnv;
use paysaga_testenv::{DevOptions, DevStack, block_on, eventually};
use serde_json::json;

use paysaga_testenv::prometheus::CHART_ALERTS as ALERTS;

/// The controller's arguments, kept across its restart: Temporal probed
/// every second; an unconfirmed charge asked about after 20 s.
fn controller_args() -> Vec<String> {
    vec![
        "--temporal-probe-secs=1".into(),
        "--confirmation-timeout-secs=20".into(),
    ]
}

struct Test {
    stack: DevStack,
    http: reqwest::Client,
}

impl Test {
    fn prometheus(&self) -> &PrometheusEnv {
        self.stack
            .prometheus
            .as_ref()
            .expect("started with Prometheus")
    }

    fn state(&self, alert: &str) -> String {
        self.prometheus().alert_state(alert).unwrap()
    }

    /// Waits until `alert` is in `state` (evaluated every second).
    fn until(&self, alert: &str, state: &str, within: Duration) {
        eventually(within, &format!("{alert} {state}"), || {
            let now = self.state(alert);
            if now == state {
                Ok(())
            } else {
                Err(format!("{alert} is {now}"))
            }
        });
    }

    fn sim_config(&self, config: serde_json::Value) {
        let resp = block_on(
            self.http
                .put(format!("{}/admin/config", self.stack.sim.url))
                .json(&config)
                .send(),
        )
        .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
    }

    fn pay(&self, user: &str, amount: i64) -> PaymentView {
        let resp = block_on(
            self.http
                .post(format!("{}/v1/payments", self.stack.api.url))
                .json(
                    &json!({"userId": user, "amount": amount, "currency": "EUR", "method": "card"}),
                )
                .send(),
        )
        .unwrap();
        assert_eq!(resp.status(), 202, "{resp:?}");
        block_on(resp.json()).unwrap()
    }

    fn payment(&self, id: &str) -> PaymentView {
        let resp = block_on(
            self.http
                .get(format!("{}/v1/payments/{id}", self.stack.api.url))
                .send(),
        )
        .unwrap();
        assert_eq!(resp.status(), 200, "{resp:?}");
        block_on(resp.json()).unwrap()
    }

    fn until_payment(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&PaymentView) -> bool,
    ) -> PaymentView {
        eventually(Duration::from_secs(90), &format!("{id}: {what}"), || {
            let p = self.payment(id);
            if pred(&p) {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_alert_fires_when_its_condition_is_caused_and_clears_after() {
    let _logs = paysaga_testenv::logs_on_failure();
    let dir = paysaga_testenv::run_dir().join("alerts");
    let sets = [
        "metrics.alerts.rateWindow=20s",
        "metrics.alerts.paymentStuck.olderThanSeconds=8",
        "metrics.alerts.controllerLag.p95Seconds=2",
        "metrics.alerts.paymentStuck.for=0s",
        "metrics.alerts.compensationFailing.for=0s",
        "metrics.alerts.gatewayErrors.for=0s",
        "metrics.alerts.apiErrors.for=0s",
        "metrics.alerts.controllerLag.for=0s",
        "metrics.alerts.temporalUnreachable.for=0s",
    ];
    let stack = DevStack::start(
        &dir,
        &DevOptions {
            prometheus: true,
            alert_sets: sets.iter().map(|s| s.to_string()).collect(),
            prometheus_interval: Some(Duration::from_secs(1)),
            controller_args: controller_args(),
            ..Default::default()
        }
        .temporal_as_make_dev(),
    )
    .unwrap();
    let http = paysaga_bench::api_client(&stack.api_key, Duration::from_secs(10)).unwrap();
    let mut t = Test { stack, http };

    // Every component and Temporal scraped and up; every rule loaded, quiet.
    let targets = eventually(Duration::from_secs(30), "every target up", || {
        let targets = t.prometheus().targets().map_err(|e| e.to_string())?;
        if targets.len() == 4 && targets.iter().all(|t| t.health == "up") {
            Ok(targets)
        } else {
            Err(format!("{targets:?}"))
        }
    });
    let mut jobs: Vec<_> = targets.iter().map(|t| t.job.as_str()).collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [
            "paysaga-api",
            "paysaga-controller",
            "paysaga-worker",
            "temporal"
        ]
    );
    let mut loaded: Vec<_> = t
        .prometheus()
        .alert_rules()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    loaded.sort();
    let mut shipped = ALERTS.to_vec();
    shipped.sort();
    assert_eq!(loaded, shipped);
    for a in ALERTS {
        t.until(a, "inactive", Duration::from_secs(20));
    }

    // The gateway fails every request: the charge retries (gateway errors),
    // the payment stays open (stuck); cancelled, its refund fails too
    // (compensation failing). The gateway back, it ends and all clears.
    t.sim_config(json!({"transientFailureRate": 1.0}));
    let p1 = t.pay("alice", 1200);
    t.until("PaysagaGatewayErrors", "firing", Duration::from_secs(30));
    t.until("PaysagaPaymentStuck", "firing", Duration::from_secs(30));
    let resp = block_on(
        t.http
            .post(format!("{}/v1/payments/{}/cancel", t.stack.api.url, p1.id))
            .json(&CancelBody {
                reason: "the gateway is down".into(),
            })
            .send(),
    )
    .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    t.until(
        "PaysagaCompensationFailing",
        "firing",
        Duration::from_secs(60),
    );
    t.sim_config(json!({"transientFailureRate": 0.0}));
    t.until_payment(&p1.id, "cancelled", |p| p.phase == Phase::Cancelled);
    for a in [
        "PaysagaPaymentStuck",
        "PaysagaGatewayErrors",
        "PaysagaCompensationFailing",
    ] {
        t.until(a, "inactive", Duration::from_secs(60));
    }

    // Temporal down while a payment waits for its confirmation: the
    // controller's probe fails and the gateway's callbacks get 503s. A
    // payment accepted meanwhile starts only once Temporal is back: the
    // controller lags. (A lag across a controller restart would not show:
    // its new histogram's first scrape already holds the late start, and a
    // rate needs the sample before.)
    t.sim_config(json!({"callbackDelayMs": 3000}));
    let p3 = t.pay("alice", 450);
    t.until_payment(&p3.id, "awaiting its confirmation", |p| {
        p.step == Some(Step::AwaitConfirmation)
    });
    t.stack.temporal.kill();
    t.until(
        "PaysagaTemporalUnreachable",
        "firing",
        Duration::from_secs(30),
    );
    let p4 = t.pay("alice", 300);
    t.until("PaysagaApiErrors", "firing", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    t.stack.temporal.restart().unwrap();
    t.sim_config(json!({"callbackDelayMs": 200}));
    t.until("PaysagaControllerLag", "firing", Duration::from_secs(60));
    t.until(
        "PaysagaTemporalUnreachable",
        "inactive",
        Duration::from_secs(30),
    );
    t.until("PaysagaApiErrors", "inactive", Duration::from_secs(60));
    t.until("PaysagaControllerLag", "inactive", Duration::from_secs(60));
    t.until_payment(&p4.id, "succeeded", |p| p.phase == Phase::Succeeded);
    // The lost confirmation is asked for when its timer fires.
    t.until_payment(&p3.id, "succeeded", |p| p.phase == Phase::Succeeded);

    dashboard_queries_have_data(t.prometheus());
    let (report, ok) = t.stack.audit().unwrap();
    assert!(ok, "{report}");
}

/// Every query of the dashboard is valid PromQL and has data after the run
/// above, but the webhooks' (no WebhookEndpoint here).
fn dashboard_queries_have_data(prometheus: &PrometheusEnv) {
    let path = paysaga_testenv::workspace_root().join("charts/paysaga/files/dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut checked = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            // Grafana's rate interval; wide enough to hold the whole run.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10m");
            let result = prometheus
                .query(&expr)
                .unwrap_or_else(|e| panic!("{title}: {expr}: {e}"));
            if !title.starts_with("Webhook") {
                assert!(!result.is_empty(), "{title}: no data for {expr}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} queries");
}

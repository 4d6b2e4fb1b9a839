//! The worker binary's admin port: probes and Prometheus metrics, the SDK's
//! and paysaga's, moving as payments run (real Temporal, PostgreSQL and
//! simulators).

mod common;

use common::{Harness, confirm, unique};
use paysaga_api::Phase;
use paysaga_api::external::Scenario;
use paysaga_api::saga::reasons;

/// One sample of Prometheus text: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses Prometheus text format 0.0.4 (what the worker serves); panics on
/// a line it cannot read, so a malformed exposition fails the test.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample line without a value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("{line}: the value is no number: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("a label without a value: {line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The sum of `name`'s samples that carry every label in `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = http.get(url).send().await.expect("the admin port answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_probes_and_metrics_that_move_with_payments() {
    let h = Harness::prepare("metrics").await;
    let port = paysaga_testenv::free_port().unwrap();
    let dir = paysaga_testenv::run_dir().join(unique("metrics-worker"));
    let _worker = paysaga_testenv::Service::payment_worker_with(
        &dir,
        &h.opts.temporal_address,
        &h.database_url,
        "",
        &h.sim,
        &[
            format!("--admin-listen=127.0.0.1:{port}"),
            format!("--payments-task-queue={}", h.payments_queue),
            format!("--fraud-task-queue={}", h.fraud_queue),
        ],
    )
    .expect("starting the worker binary");
    let admin = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    assert_eq!(get(&http, &format!("{admin}/healthz")).await.0, 200);
    // It logged "worker started": both queues are polled.
    assert_eq!(get(&http, &format!("{admin}/readyz")).await.0, 200);

    let metrics = || async {
        let resp = http.get(format!("{admin}/metrics")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        parse(&resp.text().await.unwrap())
    };
    let before = metrics().await;
    // The SDK's own metrics are there before any work: its pollers.
    assert!(
        before.iter().any(|s| s.name.starts_with("temporal_")),
        "no SDK metrics: {before:?}"
    );

    // One payment through two 503s to success, one declined (its debit
    // compensated).
    let paid = unique("pay-metrics-ok");
    h.scenario(
        &paid,
        Scenario {
            transient_failures: 2,
            ..confirm()
        },
    )
    .await;
    let declined = unique("pay-metrics-declined");
    h.scenario(
        &declined,
        Scenario {
            decline: true,
            ..Scenario::default()
        },
    )
    .await;
    let (ok, _) = h.pay(h.input(&paid, 700)).await;
    assert_eq!(ok.phase, Phase::Succeeded, "{ok:?}");
    let (failed, _) = h.pay(h.input(&declined, 300)).await;
    assert_eq!(failed.phase, Phase::Failed, "{failed:?}");
    assert_eq!(failed.reason, reasons::DECLINED, "{failed:?}");

    let after = metrics().await;
    let finished = |phase, reason| {
        sum(
            &after,
            "paysaga_payments_finished_total",
            &[("phase", phase), ("reason", reason)],
        )
    };
    assert_eq!(finished("Succeeded", reasons::CONFIRMED), 1.0);
    assert_eq!(finished("Failed", reasons::DECLINED), 1.0);
    assert_eq!(
        sum(&after, "paysaga_payments_finished_total", &[]),
        2.0,
        "each payment counted once"
    );
    let gateway = |operation, outcome| {
        sum(
            &after,
            "paysaga_gateway_requests_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(gateway("charge", "unavailable"), 2.0);
    assert_eq!(gateway("charge", "ok"), 1.0);
    assert_eq!(gateway("charge", "declined"), 1.0);
    assert_eq!(
        sum(
            &after,
            "paysaga_compensation_attempts_total",
            &[("step", "debit"), ("result", "done")]
        ),
        1.0,
        "the declined payment's debit was credited back once"
    );
    let debits = sum(
        &after,
        "paysaga_ledger_operation_duration_seconds_count",
        &[("operation", "debit"), ("result", "ok")],
    );
    assert_eq!(debits, 2.0, "two debits timed");
    // The ledger's buckets are milliseconds apart, not the SDK's default.
    assert!(
        after.iter().any(
            |s| s.name == "paysaga_ledger_operation_duration_seconds_bucket"
                && s.labels.iter().any(|(k, v)| k == "le" && v == "0.0025")
        ),
        "the ledger's own buckets"
    );

    // The SDK's counters moved with the work.
    let moved = |name: &str| sum(&after, name, &[]) - sum(&before, name, &[]);
    assert!(
        moved("temporal_workflow_completed_total") >= 2.0,
        "workflows completed: {}",
        moved("temporal_workflow_completed_total")
    );
    assert!(
        moved("temporal_workflow_task_execution_latency_seconds_count") >= 2.0,
        "workflow tasks timed"
    );
    assert!(
        after.iter().any(|s| s.name == "temporal_sticky_cache_size"),
        "the sticky cache is reported"
    );
}

//! One payment, one trace: a make-dev stack exporting its spans over OTLP to
//! a real Jaeger; the trace fetched from Jaeger's API holds spans from the
//! API, the controller, the worker and the simulators, each under the one
//! that caused it, the client's `traceparent` at its root. The same spans
//! reach the trace UI, a real Zipkin, whose page for the trace is served.

use std::collections::HashMap;
use std::time::Duration;

use paysaga_api::Phase;
use paysaga_api::http::PaymentView;
use paysaga_testenv::jaeger::{JaegerEnv, Span};
use paysaga_testenv::{DevOptions, DevStack, block_on, eventually, process::run, tool};
use serde_json::json;

/// The spans of `trace_id` once they hold every span named in `wanted`
/// (Jaeger has them a moment after each process' batch is sent).
fn trace_with(jaeger: &JaegerEnv, trace_id: &str, wanted: &[(&str, &str)]) -> Vec<Span> {
    eventually(Duration::from_secs(30), "the whole trace in Jaeger", || {
        let spans = jaeger.trace(trace_id).map_err(|e| e.to_string())?;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(service, name)| {
                !spans
                    .iter()
                    .any(|s| s.service == *service && s.name == *name)
            })
            .collect();
        if missing.is_empty() {
            Ok(spans)
        } else {
            Err(format!("missing {missing:?} among {} spans", spans.len()))
        }
    })
}

/// The one span of `service` named `name`.
fn one<'a>(spans: &'a [Span], service: &str, name: &str) -> &'a Span {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{service} {name}: {found:#?}");
    found[0]
}

/// `span`'s ancestors, nearest first, as `service: name`.
fn ancestry(spans: &[Span], span: &Span) -> Vec<String> {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut out = Vec::new();
    let mut at = span;
    while let Some(parent) = at.parent.as_deref().and_then(|p| by_id.get(p)) {
        out.push(format!("{}: {}", parent.service, parent.name));
        at = parent;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn one_payment_is_one_trace_across_four_components() {
    let _logs = paysaga_testenv::logs_on_failure();
    let dir = paysaga_testenv::run_dir().join("traces");
    let stack = DevStack::start(
        &dir,
        &DevOptions {
            tracing: true,
            ..Default::default()
        },
    )
    .unwrap();
    let jaeger = stack.jaeger.as_ref().expect("started with Jaeger");
    let http = paysaga_bench::api_client(&stack.api_key, Duration::from_secs(10)).unwrap();

    // The client's own trace: the API continues it.
    let trace_id = paysaga_testenv::random_hex(16);
    let client_span = paysaga_testenv::random_hex(8);
    let request_id = paysaga_testenv::unique_name("trace");
    let resp = block_on(
        http.post(format!("{}/v1/payments", stack.api.url))
            .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
            .header("X-Request-Id", &request_id)
            .json(&json!({"userId": "alice", "amount": 1250, "currency": "EUR", "method": "card"}))
            .send(),
    )
    .unwrap();
    assert_eq!(resp.status(), 202);
    let payment: PaymentView = block_on(resp.json()).unwrap();
    eventually(Duration::from_secs(60), "the payment succeeded", || {
        let resp = block_on(
            http.get(format!("{}/v1/payments/{}", stack.api.url, payment.id))
                .send(),
        )
        .map_err(|e| e.to_string())?;
        let p: PaymentView = block_on(resp.json()).map_err(|e| e.to_string())?;
        if p.phase == Phase::Succeeded {
            Ok(())
        } else {
            Err(format!("{:?}", p.phase))
        }
    });

    // The Payment names its trace.
    let kubectl = |args: &[&str]| {
        run(std::process::Command::new(tool("kubectl"))
            .env("KUBECONFIG", &stack.kubeconfig)
            .args(args))
        .unwrap()
    };
    let annotated = kubectl(&[
        "get",
        "payment",
        &payment.id,
        "-o",
        "jsonpath={.metadata.annotations.paysaga\\.dev/traceparent}",
    ]);
    assert!(
        annotated.starts_with(&format!("00-{trace_id}-")),
        "{annotated}"
    );

    let spans = trace_with(
        jaeger,
        &trace_id,
        &[
            ("paysaga-api", "POST /v1/payments"),
            ("paysaga-controller", "StartWorkflow:PaymentWorkflow"),
            ("paysaga-worker", "RunActivity:charge"),
            ("paysaga-sim", "POST /gateway/v1/charges"),
            ("paysaga-api", "POST /v1/gateway/callbacks"),
            ("paysaga-worker", "HandleSignal:gatewayCallback"),
            ("paysaga-worker", "RunActivity:recordOutcome"),
        ],
    );
    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [
            "paysaga-api",
            "paysaga-controller",
            "paysaga-sim",
            "paysaga-worker"
        ]
    );

    // The API's span is the client's child and carries the request id.
    let created = one(&spans, "paysaga-api", "POST /v1/payments");
    assert_eq!(created.parent.as_deref(), Some(client_span.as_str()));
    assert_eq!(created.tags.get("request_id"), Some(&request_id));

    // The charge at the gateway, under everything that led to it.
    let charge = one(&spans, "paysaga-sim", "POST /gateway/v1/charges");
    assert_eq!(charge.tags.get("request_id"), Some(&request_id));
    let chain = ancestry(&spans, charge);
    let expected = [
        "paysaga-worker: charge",
        "paysaga-worker: RunActivity:charge",
        "paysaga-worker: StartActivity:charge",
        "paysaga-worker: RunWorkflow:PaymentWorkflow",
        "paysaga-controller: StartWorkflow:PaymentWorkflow",
        "paysaga-controller: reconcile",
        "paysaga-api: POST /v1/payments",
    ];
    assert_eq!(chain, expected, "the charge's ancestry");
    // The worker's own span of the activity carries the request id too.
    let activity = spans
        .iter()
        .find(|s| Some(&s.id) == charge.parent.as_ref())
        .expect("the charge's parent");
    assert_eq!(activity.tags.get("request_id"), Some(&request_id));

    // The gateway's confirmation: the sim's delivery → the API's callback →
    // the signal → the workflow's handler.
    let handled = one(&spans, "paysaga-worker", "HandleSignal:gatewayCallback");
    let chain = ancestry(&spans, handled);
    assert_eq!(
        chain[..3],
        [
            "paysaga-api: SignalWorkflow:gatewayCallback",
            "paysaga-api: POST /v1/gateway/callbacks",
            "paysaga-sim: delivery",
        ],
        "the confirmation's ancestry: {chain:#?}"
    );
    assert!(
        chain.contains(&"paysaga-sim: POST /gateway/v1/charges".to_string())
            && chain.last().map(String::as_str) == Some("paysaga-api: POST /v1/payments"),
        "the confirmation descends from the charge and the request: {chain:#?}"
    );
    // A parent starts before its child.
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    for s in &spans {
        if let Some(p) = s.parent.as_deref().and_then(|p| by_id.get(p)) {
            assert!(
                p.start_us <= s.start_us + 1000,
                "{} starts before its parent {}",
                s.name,
                p.name
            );
        }
    }

    // The trace UI has the same trace: every span, under the same parent,
    // from the same service (Zipkin keeps names in lower case).
    let zipkin = stack.zipkin.as_ref().expect("started with Zipkin");
    let shown = eventually(Duration::from_secs(30), "the whole trace in Zipkin", || {
        let shown = zipkin.trace(&trace_id).map_err(|e| e.to_string())?;
        let missing: Vec<_> = spans
            .iter()
            .filter(|s| !shown.iter().any(|z| z.id == s.id))
            .map(|s| format!("{}: {}", s.service, s.name))
            .collect();
        if missing.is_empty() {
            Ok(shown)
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
    for s in &spans {
        let z = shown.iter().find(|z| z.id == s.id).expect("found above");
        assert_eq!(
            (z.service.as_str(), z.name.as_str(), z.parent.as_deref()),
            (
                s.service.as_str(),
                s.name.to_lowercase().as_str(),
                s.parent.as_deref()
            ),
            "{} in Zipkin",
            s.name
        );
    }
    // Its page for the trace, and the script that draws it, are served.
    let page = zipkin.get(&format!("/zipkin/traces/{trace_id}")).unwrap();
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .filter(|src| src.starts_with("/zipkin/static/js/"))
        .unwrap_or_else(|| panic!("no script on the trace's page: {page}"));
    let code = zipkin.get(script).unwrap();
    assert!(code.len() > 100_000, "{script}: {} bytes", code.len());

    // A Payment made with kubectl has no traceparent: its reconciles and its
    // workflow share a trace named by its uid.
    let example = paysaga_testenv::workspace_root().join("examples/payment.yaml");
    let out = kubectl(&["apply", "-f", &example.display().to_string()]);
    assert!(out.contains("created"), "{out}");
    let uid = kubectl(&[
        "get",
        "payment",
        "coffee-beans",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let uid_trace: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
    let spans = trace_with(
        jaeger,
        &uid_trace,
        &[
            ("paysaga-controller", "reconcile"),
            ("paysaga-controller", "StartWorkflow:PaymentWorkflow"),
            ("paysaga-worker", "RunActivity:recordOutcome"),
            ("paysaga-sim", "POST /gateway/v1/charges"),
        ],
    );
    let start = one(
        &spans,
        "paysaga-controller",
        "StartWorkflow:PaymentWorkflow",
    );
    assert_eq!(
        ancestry(&spans, start),
        ["paysaga-controller: reconcile"],
        "started from a reconcile of the payment's own trace"
    );
}

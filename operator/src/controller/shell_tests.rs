//! The reconcile shell against a mocked API server, in controller-rs's
//! style: for the paths that are slow to reach end to end, the exact
//! requests a reconcile makes, in order, and nothing more. Temporal is a
//! stub that answers nothing: these paths must not need it, or must say on
//! the Payment that it is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use futures::FutureExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use temporalio_client::callback_based::CallbackBasedGrpcService;
use temporalio_client::tonic::Status;
use temporalio_client::{ClientOptions, Connection, ConnectionOptions, Url};

use super::cache::Cached;
use super::reconcile::{Error, error_policy, reconcile};
use super::{Context, Readiness, Settings, metrics};

type ApiServer = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const PAYMENT: &str = "/apis/paysaga.dev/v1alpha1/namespaces/shop/payments/order-1";

/// A Temporal that refuses every call (and counts them).
async fn temporal_refusing(calls: Arc<AtomicUsize>) -> temporalio_client::Client {
    let service = CallbackBasedGrpcService {
        callback: Arc::new(move |req| {
            let calls = calls.clone();
            Box::pin(async move {
                if req.rpc == "GetSystemInfo" {
                    return Err(Status::unimplemented("unknown method"));
                }
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Status::permission_denied("no Temporal in this test"))
            })
        }),
    };
    let url = Url::parse("http://127.0.0.1:7233").unwrap();
    let options = ConnectionOptions::new(url)
        .service_override(service)
        .dns_load_balancing(None)
        .build();
    let connection = Connection::connect(options).await.unwrap();
    temporalio_client::Client::new(connection, ClientOptions::new("default").build()).unwrap()
}

struct Shell {
    ctx: Arc<Context>,
    server: ApiServer,
    temporal_calls: Arc<AtomicUsize>,
}

async fn shell(finished_ttl: Option<Duration>) -> Shell {
    let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let temporal_calls = Arc::new(AtomicUsize::new(0));
    let temporal = temporal_refusing(temporal_calls.clone()).await;
    let settings = Settings {
        payments_task_queue: "payments".into(),
        fraud_task_queue: "fraud".into(),
        confirmation_timeout_secs: 300,
        finished_ttl,
        status_step_interval: Duration::from_secs(1),
        escalation: Default::default(),
        idempotency_retention: Duration::from_secs(30 * 24 * 3600),
        idempotency_sweep: Duration::from_secs(3600),
        recurring_namespaces: Vec::new(),
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let (ctx, _wakes) = Context::new(client, temporal, settings, metrics, readiness);
    let ctx = Arc::new(ctx);
    Shell {
        ctx,
        server,
        temporal_calls,
    }
}

/// `order-1` in `shop` as the API server stores it.
fn payment(finalizers: &[&str], status: Value) -> Value {
    json!({
        "apiVersion": "paysaga.dev/v1alpha1", "kind": "Payment",
        "metadata": {"name": "order-1", "namespace": "shop", "uid": "u1",
                     "resourceVersion": "7", "generation": 1, "finalizers": finalizers},
        "spec": {"userId": "alice", "amount": 1250, "currency": "EUR", "method": "card"},
        "status": status,
    })
}

fn finished() -> Value {
    payment(
        &["paysaga.dev/workflow"],
        json!({"phase": "Succeeded", "step": "Done", "reason": "Confirmed",
               "workflowId": "payment-shop-order-1-u1", "runId": "r1", "observedGeneration": 1,
               "startedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:02Z"}),
    )
}

/// One request the reconcile must make next.
struct Expect {
    method: Method,
    path: &'static str,
    query: &'static str,
    content_type: Option<&'static str>,
    body: Option<Value>,
    answer: Value,
}

/// Answers the requests in order, asserting each.
fn serve(mut server: ApiServer, expected: Vec<Expect>) -> tokio::task::JoinHandle<ApiServer> {
    tokio::spawn(async move {
        for e in expected {
            let (request, send) = server.next_request().await.expect("no request made");
            let what = format!("{} {}", request.method(), request.uri());
            assert_eq!(request.method(), e.method, "{what}");
            assert_eq!(request.uri().path(), e.path, "{what}");
            assert_eq!(request.uri().query().unwrap_or_default(), e.query, "{what}");
            let content_type = request
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(content_type.as_deref(), e.content_type, "{what}");
            let bytes = request.into_body().collect_bytes().await.unwrap();
            if let Some(want) = e.body {
                let got: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(got, want, "{what}");
            }
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(serde_json::to_vec(&e.answer).unwrap()))
                    .unwrap(),
            );
        }
        server
    })
}

/// Reconciles `object` against a server expecting exactly `expected`.
async fn run(shell: Shell, object: Value, expected: Vec<Expect>) -> (Result<Action, Error>, Shell) {
    let Shell {
        ctx,
        server,
        temporal_calls,
    } = shell;
    let served = serve(server, expected);
    let result = reconcile(Arc::new(Cached::from_value(object)), ctx.clone()).await;
    let mut server = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("a request expected was not made")
        .unwrap();
    // Every request is made before the reconcile returns.
    assert!(
        server.next_request().now_or_never().is_none(),
        "a request more than expected"
    );
    (
        result,
        Shell {
            ctx,
            server,
            temporal_calls,
        },
    )
}

#[tokio::test]
async fn a_payment_without_the_finalizer_gets_it_by_a_guarded_patch_and_nothing_else() {
    let shell = shell(None).await;
    let (result, shell) = run(
        shell,
        payment(&[], Value::Null),
        vec![Expect {
            method: Method::PATCH,
            path: PAYMENT,
            query: "",
            content_type: Some("application/json-patch+json"),
            body: Some(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["paysaga.dev/workflow"]},
            ])),
            answer: payment(&["paysaga.dev/workflow"], Value::Null),
        }],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        shell.temporal_calls.load(Ordering::SeqCst),
        0,
        "no start yet"
    );
}

#[tokio::test]
async fn a_finished_payment_past_its_ttl_is_read_whole_then_deleted_without_asking_temporal() {
    let shell = shell(Some(Duration::from_secs(60))).await;
    let (result, shell) = run(
        shell,
        finished(),
        vec![
            Expect {
                method: Method::GET,
                path: PAYMENT,
                query: "",
                content_type: None,
                body: None,
                answer: finished(),
            },
            Expect {
                method: Method::DELETE,
                path: PAYMENT,
                query: "",
                content_type: Some("application/json"),
                body: None,
                answer: finished(),
            },
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(shell.temporal_calls.load(Ordering::SeqCst), 0);
    let metrics = shell.ctx.metrics.encode();
    assert!(
        metrics.contains("paysaga_controller_status_patches_total{outcome=\"unchanged\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn temporal_unreachable_is_written_whole_by_server_side_apply_then_backed_off() {
    let in_flight = payment(
        &["paysaga.dev/workflow"],
        json!({"phase": "Processing", "step": "Charge", "workflowId": "payment-shop-order-1-u1",
               "runId": "r1", "observedGeneration": 1, "startedAt": "2026-01-01T00:00:00Z"}),
    );
    let shell = shell(None).await;
    let (result, shell) = run(
        shell,
        in_flight.clone(),
        vec![Expect {
            method: Method::PATCH,
            path: "/apis/paysaga.dev/v1alpha1/namespaces/shop/payments/order-1/status",
            query: "&force=true&fieldManager=paysaga-controller",
            content_type: Some("application/apply-patch+yaml"),
            body: None,
            answer: in_flight,
        }],
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.category(), "temporal", "{error}");
    assert!(shell.temporal_calls.load(Ordering::SeqCst) > 0);
    // The payment backs off on its own: 1 s, then 2 s.
    let cached = Arc::new(Cached::from_value(payment(&[], Value::Null)));
    let first = error_policy(cached.clone(), &error, shell.ctx.clone());
    let second = error_policy(cached, &error, shell.ctx.clone());
    assert_eq!(
        (first, second),
        (
            Action::requeue(Duration::from_secs(1)),
            Action::requeue(Duration::from_secs(2))
        )
    );
}

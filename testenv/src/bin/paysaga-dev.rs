//! `make dev`: the whole of paysaga on this machine, no Docker.
//!
//! Starts a real control plane (etcd + kube-apiserver), Temporal with its web
//! UI, the simulators, the HTTP API, the worker (ledger on SQLite), the
//! controller and Prometheus with the chart's alerts ([`DevStack`]), writes `.dev/kubeconfig`, prints what to do
//! next, and stops everything cleanly on Ctrl-C. State is fresh on every start.

use std::path::PathBuf;

use anyhow::Result;
use paysaga_testenv::dev::{DEMO_ACCOUNTS, LOAD_USERS};
use paysaga_testenv::{DevOptions, DevStack, StopSignal, workspace_root};

fn main() -> Result<()> {
    let stop = StopSignal::install()?;
    let root = workspace_root();
    let dir = std::env::var_os("PAYSAGA_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".dev"));
    let stack = DevStack::start(
        &dir,
        &DevOptions {
            well_known_ports: true,
            ui: true,
            prometheus: true,
            tracing: true,
            ..Default::default()
        }
        .temporal_as_make_dev(),
    )?;
    // The API asks for a credential: shown once here, with the dev key.
    let port = stack.api.port;
    let bearer = format!("Bearer {}", stack.api_key);
    let without = paysaga_testenv::http_get_status("127.0.0.1", port, "/v1/payments", &[]);
    let with = paysaga_testenv::http_get_status(
        "127.0.0.1",
        port,
        "/v1/payments",
        &[("Authorization", &bearer)],
    );
    let said = |s: Option<u16>| s.map_or("no answer".to_string(), |s| s.to_string());
    let example = root.join("examples/payment.yaml");
    println!(
        r#"
paysaga dev is up.
  Kubernetes API : {server}
  Temporal       : {temporal} (namespace {ns})
  Temporal UI    : {ui}   (payloads are encrypted; the UI decodes them through {api}/codec)
  HTTP API       : {api}/v1/payments   (namespace default; gateway callbacks: {api}/v1/gateway/callbacks)
  API key        : {api_key_file}   (user paysaga:apikey:default:dev, bound to paysaga-client and paysaga-payload-reader)
                   GET /v1/payments: {without} without a credential, {with} with this key
  Simulators     : {sim}   (knobs: {sim}/admin/config)
  Controller     : {controller}/metrics, /healthz, /readyz
  Worker         : {worker_admin}/metrics, /healthz, /readyz
  Trace UI       : {zipkin}   (Zipkin; a payment's trace: {zipkin}traces/<trace id>,
                   the trace id of a payment made through the API is in its paysaga.dev/traceparent annotation)
  Traces API     : {jaeger}/api/traces/<trace id>   (Jaeger v2, over OTLP; its own UI is not in its Go module)
  Prometheus     : {prometheus}/api/v1/targets   (scrapes the API, controller, worker and Temporal; the chart's alerts: {prometheus}/api/v1/rules)
  Ledger         : {database_url} (accounts {DEMO_ACCOUNTS}, and load-0 … load-{last} for k6)
  Logs           : {logs}

In another terminal:
  export KUBECONFIG={kubeconfig}
  export PATH={tools}:{bin}:$PATH
  export PAYSAGA_API_KEY=$(cat {api_key_file})
  kubectl apply -f {example}
  kubectl get payments -w

  kubectl describe payment coffee-beans                 # conditions and events
  curl -si {api}/v1/payments -H "Authorization: Bearer $PAYSAGA_API_KEY" -H 'Idempotency-Key: order-1' \
    -H 'content-type: application/json' -d '{{"userId":"alice","amount":990,"currency":"EUR","method":"wallet"}}'
  curl -s '{api}/v1/payments?userId=alice' -H "Authorization: Bearer $PAYSAGA_API_KEY"
  # a token instead of a key: a ServiceAccount's, for the audience paysaga, bound to a role
  kubectl create serviceaccount shop && kubectl create rolebinding shop --clusterrole=paysaga-client --serviceaccount=default:shop
  curl -s '{api}/v1/payments?userId=alice' -H "Authorization: Bearer $(kubectl create token shop --audience=paysaga)"
  # a workflow's payloads, decrypted by the codec endpoint
  temporal workflow show --address {temporal} -w "$(kubectl get payment coffee-beans -o jsonpath='{{.status.workflowId}}')" \
    --codec-endpoint {api}/codec --codec-auth "Bearer $PAYSAGA_API_KEY"
  # cancel one in flight: hold the gateway's confirmation for a minute first
  curl -s -X PUT {sim}/admin/config -H 'content-type: application/json' -d '{{"callbackDelayMs":60000}}'
  kubectl apply -f {gift_card}
  kubectl annotate payment gift-card paysaga.dev/cancel="changed my mind"
  kubectl wait --for=jsonpath='{{.status.phase}}'=Cancelled payment/gift-card
  curl -s -X PUT {sim}/admin/config -H 'content-type: application/json' -d '{{"callbackDelayMs":200}}'
  curl -s '{sim}/notify/v1/messages'                    # what the payer was told
  paysaga-worker audit --database-url '{database_url}'
  k6 run -e BASE_URL={api} -e API_TOKEN=$PAYSAGA_API_KEY -e SIM_URL={sim} -e RATE=5 -e DURATION=1m k6/load.js

Press Ctrl-C to stop everything.
"#,
        server = stack.kube.server,
        temporal = stack.temporal.host_port,
        ns = stack.temporal.namespace,
        ui = stack.temporal.ui_url.as_deref().unwrap_or("-"),
        api = stack.api.url,
        sim = stack.sim.url,
        controller = stack.controller.url,
        worker_admin = stack.worker_admin,
        prometheus = stack.prometheus.as_ref().map_or("-", |p| p.url.as_str()),
        jaeger = stack.jaeger.as_ref().map_or("-", |j| j.url.as_str()),
        zipkin = stack.zipkin.as_ref().map_or("-", |z| z.ui_url.as_str()),
        database_url = stack.database_url,
        last = LOAD_USERS - 1,
        logs = stack.state.display(),
        kubeconfig = stack.kubeconfig.display(),
        tools = root.join(".tools/bin").display(),
        bin = root.join("target/debug").display(),
        example = example.display(),
        gift_card = root.join("examples/gift-card.yaml").display(),
        api_key_file = stack.api_key_file.display(),
        without = said(without),
        with = said(with),
    );

    stop.wait();
    eprintln!("paysaga dev: stopping…");
    drop(stack);
    eprintln!("paysaga dev: stopped.");
    Ok(())
}

//! Who may call the HTTP API, and what they may do: bearer credentials
//! (API keys in Secrets, Kubernetes tokens by TokenReview), RBAC by
//! SubjectAccessReview, payer scoping and per-caller rate limits, against
//! the real API server. (The routes' behaviour with a valid caller is
//! `http_api.rs`'s.)

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use paysaga_api::Payment;
use paysaga_api::names::REQUESTED_BY_ANNOTATION;
use paysaga_testenv::{Service, block_on, eventually};
use serde_json::json;

/// The Temporal UI's origin, as the API is told it.
const UI_ORIGIN: &str = "http://ui.example:8233";

/// A namespace with an API serving it (no controller or worker: nothing
/// here needs a payment to run, only to be made).
struct Stack {
    namespace: String,
    api: Service,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        kube.apply_client_roles().unwrap();
        let namespace = kube.namespace("auth").unwrap().name.clone();
        let api = start_api(
            "auth-api",
            &namespace,
            &[format!("--codec-cors-origins={UI_ORIGIN}")],
        );
        Stack { namespace, api }
    })
}

fn start_api(name: &str, namespace: &str, extra: &[String]) -> Service {
    let kube = paysaga_testenv::kube();
    let _ = paysaga_testenv::api();
    Service::full_api(
        &paysaga_testenv::run_dir().join(name),
        &paysaga_testenv::temporal().address,
        None,
        &kube.admin_kubeconfig,
        namespace,
        extra,
    )
    .unwrap()
}

fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn body(user: &str) -> serde_json::Value {
    json!({"userId": user, "amount": 500, "currency": "EUR", "method": "card"})
}

async fn problem(
    resp: reqwest::Response,
    status: u16,
    detail_has: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(resp.status(), status, "{resp:?}");
    let headers = resp.headers().clone();
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let p: serde_json::Value = resp.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains(detail_has),
        "{p} lacks {detail_has:?}"
    );
    headers
}

async fn list_status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(format!("{url}/v1/payments"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bad_unknown_wrong_or_revoked_credentials_are_401() {
    let s = stack();
    let kube = paysaga_testenv::kube();
    let url = &s.api.url;

    // None at all: 401, with the scheme to use.
    let resp = anonymous()
        .post(format!("{url}/v1/payments"))
        .json(&body("alice"))
        .send()
        .await
        .unwrap();
    let headers = problem(resp, 401, "Authorization: Bearer").await;
    assert_eq!(
        headers.get("www-authenticate").unwrap(),
        "Bearer realm=\"paysaga\""
    );
    // Not a bearer credential, an invented token, an unknown key, a known
    // key's name with the wrong secret: the same 401.
    let key = kube
        .api_key(&s.namespace, "revocable", &["paysaga-client"])
        .unwrap();
    let (prefix, _) = key.rsplit_once('_').unwrap();
    for bad in [
        "Basic YWxpY2U6c2VjcmV0".to_string(),
        "Bearer not-a-token".to_string(),
        "Bearer psk_nobody_00112233".to_string(),
        format!("Bearer {prefix}_{}", "0".repeat(64)),
        "Bearer ".to_string(),
    ] {
        let resp = anonymous()
            .get(format!("{url}/v1/payments"))
            .header("Authorization", &bad)
            .send()
            .await
            .unwrap();
        problem(resp, 401, "not accepted").await;
    }
    // Nothing was made by any of them.
    let made: kube::Api<Payment> =
        kube::Api::namespaced(kube.client().await.unwrap(), &s.namespace);
    assert!(
        made.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The key works; revoked as the README says, it stops within seconds.
    let client = authed_http(&key);
    assert_eq!(list_status(&client, url).await, 200);
    let out =
        std::process::Command::new(paysaga_testenv::services::binary("paysaga-operator").unwrap())
            .args(["api-key", "revoke", "revocable", "-n", &s.namespace])
            .env("KUBECONFIG", &kube.admin_kubeconfig)
            .output()
            .unwrap();
    assert!(out.status.success(), "{out:?}");
    let revoked_at = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "the revoked key refused",
        || match block_on(list_status(&client, url)) {
            401 => Ok(()),
            other => Err(other.to_string()),
        },
    );
    println!(
        "a revoked key was refused {:?} after its Secret was deleted",
        revoked_at.elapsed()
    );
    // Revoking something that is not a key is refused, and leaves it alone.
    kube.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "not-a-key",
        "-n",
        &s.namespace,
        "--from-literal=a=b",
    ])
    .unwrap();
    let out =
        std::process::Command::new(paysaga_testenv::services::binary("paysaga-operator").unwrap())
            .args(["api-key", "revoke", "not-a-key", "-n", &s.namespace])
            .env("KUBECONFIG", &kube.admin_kubeconfig)
            .output()
            .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an API key"));
    kube.kubectl_ok(&["get", "secret", "not-a-key", "-n", &s.namespace])
        .unwrap();
}

/// A ServiceAccount's token for the audience `paysaga`: refused (403) until
/// RBAC grants the route's verb, then served; a token for another audience
/// is not a credential here (401). The caller is recorded on the Payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_gets_what_rbac_grants_it_and_nothing_more() {
    let s = stack();
    let kube = paysaga_testenv::kube();
    let url = &s.api.url;
    let ns = &s.namespace;
    let token = kube
        .service_account_token(ns, "checkout", "paysaga")
        .unwrap();
    let client = authed_http(&token);

    let resp = client
        .post(format!("{url}/v1/payments"))
        .json(&body("alice"))
        .send()
        .await
        .unwrap();
    problem(
        resp,
        403,
        &format!("system:serviceaccount:{ns}:checkout may not create payments.paysaga.dev in namespace {ns}"),
    )
    .await;

    // Read-only: may list and get, not create or cancel.
    kube.kubectl_ok(&[
        "create",
        "rolebinding",
        "checkout-view",
        "-n",
        ns,
        "--clusterrole=paysaga-viewer",
        &format!("--serviceaccount={ns}:checkout"),
    ])
    .unwrap();
    eventually(Duration::from_secs(15), "list allowed", || {
        match block_on(list_status(&client, url)) {
            200 => Ok(()),
            other => Err(other.to_string()),
        }
    });
    let resp = client
        .post(format!("{url}/v1/payments"))
        .json(&body("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Granted: 202, and the Payment names who asked.
    kube.kubectl_ok(&[
        "create",
        "rolebinding",
        "checkout",
        "-n",
        ns,
        "--clusterrole=paysaga-client",
        &format!("--serviceaccount={ns}:checkout"),
    ])
    .unwrap();
    let made = eventually(Duration::from_secs(15), "create allowed", || {
        let resp = block_on(
            client
                .post(format!("{url}/v1/payments"))
                .json(&body("alice"))
                .send(),
        )
        .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            202 => Ok(block_on(resp.json::<serde_json::Value>()).unwrap()),
            other => Err(other.to_string()),
        }
    });
    let payments: kube::Api<Payment> = kube::Api::namespaced(kube.client().await.unwrap(), ns);
    let p = payments.get(made["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(
        p.metadata.annotations.unwrap()[REQUESTED_BY_ANNOTATION],
        format!("system:serviceaccount:{ns}:checkout")
    );

    // A token of the same account for the API server's own audience.
    let other = kube
        .kubectl_ok(&["create", "token", "checkout", "-n", ns, "--duration=10m"])
        .unwrap();
    let resp = authed_http(other.trim())
        .get(format!("{url}/v1/payments"))
        .send()
        .await
        .unwrap();
    problem(resp, 401, "not accepted").await;
}

/// With payer scoping, a caller acts only for the payers RBAC names for it
/// (`use` on payers.paysaga.dev, by resourceNames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_scoped_caller_acts_only_for_its_payers() {
    let kube = paysaga_testenv::kube();
    kube.apply_client_roles().unwrap();
    let ns = kube.namespace("auth-payers").unwrap().name.clone();
    let api = start_api("auth-payers-api", &ns, &["--payer-scoping=true".into()]);
    let url = &api.url;
    let shop = kube
        .api_key(&ns, "alice-shop", &["paysaga-client"])
        .unwrap();
    let office = kube
        .api_key(&ns, "back-office", &["paysaga-client", "paysaga-any-payer"])
        .unwrap();
    let alice_only = format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pay-as-alice, namespace: {ns}}}
rules:
  - apiGroups: ["paysaga.dev"]
    resources: ["payers"]
    resourceNames: ["alice"]
    verbs: ["use"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-shop-payers, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pay-as-alice}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: "paysaga:apikey:{ns}:alice-shop"}}
"#
    );
    kubectl_apply(&ns, &alice_only);
    let shop = authed_http(&shop);
    let office = authed_http(&office);

    let as_alice = shop
        .post(format!("{url}/v1/payments"))
        .json(&body("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_alice.status(), 202);
    let alices: serde_json::Value = as_alice.json().await.unwrap();
    let as_bob = shop
        .post(format!("{url}/v1/payments"))
        .json(&body("bob"))
        .send()
        .await
        .unwrap();
    problem(as_bob, 403, "may not use payers.paysaga.dev \"bob\"").await;
    let bobs: serde_json::Value = office
        .post(format!("{url}/v1/payments"))
        .json(&body("bob"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status = |client: &reqwest::Client, path: String| {
        let req = client.get(format!("{url}{path}"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // Its own payer's payment and list; not bob's, not everyone's.
    assert_eq!(
        status(
            &shop,
            format!("/v1/payments/{}", alices["id"].as_str().unwrap())
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &shop,
            format!("/v1/payments/{}", bobs["id"].as_str().unwrap())
        )
        .await,
        403
    );
    assert_eq!(status(&shop, "/v1/payments?userId=alice".into()).await, 200);
    assert_eq!(status(&shop, "/v1/payments?userId=bob".into()).await, 403);
    assert_eq!(status(&shop, "/v1/payments".into()).await, 403);
    let cancel = shop
        .post(format!(
            "{url}/v1/payments/{}/cancel",
            bobs["id"].as_str().unwrap()
        ))
        .json(&json!({"reason": "not mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 403);
    // The back office acts for anyone.
    assert_eq!(status(&office, "/v1/payments".into()).await, 200);
    assert_eq!(
        status(
            &office,
            format!("/v1/payments/{}", alices["id"].as_str().unwrap())
        )
        .await,
        200
    );
}

/// Over its rate a caller gets 429 with Retry-After; another caller is not
/// slowed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let kube = paysaga_testenv::kube();
    kube.apply_client_roles().unwrap();
    let ns = kube.namespace("auth-rate").unwrap().name.clone();
    let api = start_api("auth-rate-api", &ns, &["--rate-per-caller=1".into()]);
    let url = &api.url;
    let busy = authed_http(&kube.api_key(&ns, "busy", &["paysaga-viewer"]).unwrap());
    let calm = authed_http(&kube.api_key(&ns, "calm", &["paysaga-viewer"]).unwrap());
    // A burst of 2 is allowed, then one a second: 6 at once cannot all pass.
    let mut limited = None;
    for _ in 0..6 {
        let resp = busy.get(format!("{url}/v1/payments")).send().await.unwrap();
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    let limited = limited.expect("a 429 within 6 requests at 1/s");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    problem(limited, 429, "over its rate of 1 requests a second").await;
    assert_eq!(list_status(&calm, url).await, 200);
    // It recovers after waiting as told.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(list_status(&busy, url).await, 200);
}

/// The guarded routes are exactly the /v1 routes but the gateway's
/// callbacks; the probes, metrics and the OpenAPI document stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_the_document_stay_open_and_the_document_says_bearer() {
    let url = &stack().api.url;
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let resp = anonymous()
            .get(format!("{url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let doc: serde_json::Value = anonymous()
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/payments"]["post"]["security"],
        json!([{"bearer": []}])
    );
    assert!(doc["paths"]["/v1/payments"]["post"]["responses"]["401"].is_object());
    // A callback without a signature is refused for its signature, not for
    // a bearer credential.
    let resp = anonymous()
        .post(format!("{url}/v1/gateway/callbacks"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let refusal: serde_json::Value = resp.json().await.unwrap();
    assert!(
        status == 400 && !refusal["detail"].as_str().unwrap().contains("Bearer"),
        "callbacks are signed, not authenticated by bearer: {status} {refusal}"
    );
    let metrics = anonymous()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("paysaga_api_auth_refusals"), "{metrics}");
}

/// The codec endpoint (the Temporal codec-server protocol) is guarded like
/// the API: 401 without a credential, 403 without `decode` on
/// payloads.paysaga.dev; a payload reader gets payloads encrypted and
/// decrypted; browsers may call it from the Temporal UI's origin only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_endpoint_serves_payload_readers_from_the_ui_origin_only() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let s = stack();
    let kube = paysaga_testenv::kube();
    let url = &s.api.url;
    let plain = json!({"payloads": [{
        "metadata": {"encoding": b64.encode("json/plain")},
        "data": b64.encode(r#"{"email":"alice@example.com","amount":1250}"#),
    }]});

    let resp = anonymous()
        .post(format!("{url}/codec/decode"))
        .json(&plain)
        .send()
        .await
        .unwrap();
    problem(resp, 401, "Authorization: Bearer").await;
    let client = authed_http(
        &kube
            .api_key(&s.namespace, "codec-client", &["paysaga-client"])
            .unwrap(),
    );
    let resp = client
        .post(format!("{url}/codec/decode"))
        .json(&plain)
        .send()
        .await
        .unwrap();
    problem(resp, 403, "may not decode payloads.paysaga.dev").await;

    let reader = authed_http(
        &kube
            .api_key(&s.namespace, "codec-reader", &["paysaga-payload-reader"])
            .unwrap(),
    );
    let encoded: serde_json::Value = reader
        .post(format!("{url}/codec/encode"))
        .json(&plain)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payload = &encoded["payloads"][0];
    assert_eq!(
        b64.decode(payload["metadata"]["encoding"].as_str().unwrap())
            .unwrap(),
        b"binary/encrypted"
    );
    let data = b64.decode(payload["data"].as_str().unwrap()).unwrap();
    assert!(!String::from_utf8_lossy(&data).contains("alice@example.com"));
    let decoded: serde_json::Value = reader
        .post(format!("{url}/codec/decode"))
        .json(&encoded)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(decoded, plain);

    // From a browser: the UI's origin only (its preflight is answered
    // without credentials, as browsers send none).
    let preflight = anonymous()
        .request(reqwest::Method::OPTIONS, format!("{url}/codec/decode"))
        .header("Origin", UI_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,x-namespace",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        UI_ORIGIN
    );
    let from_ui = reader
        .post(format!("{url}/codec/decode"))
        .header("Origin", UI_ORIGIN)
        .json(&encoded)
        .send()
        .await
        .unwrap();
    assert_eq!(from_ui.status(), 200);
    assert_eq!(from_ui.headers()["access-control-allow-origin"], UI_ORIGIN);
    for (method, origin) in [
        (reqwest::Method::OPTIONS, "http://evil.example"),
        (reqwest::Method::POST, "http://evil.example"),
        (reqwest::Method::POST, "http://ui.example:9999"),
    ] {
        let resp = reader
            .request(method.clone(), format!("{url}/codec/decode"))
            .header("Origin", origin)
            .json(&encoded)
            .send()
            .await
            .unwrap();
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{method} from {origin}"
        );
        problem(
            resp,
            403,
            &format!("origin {origin} may not call the codec endpoint"),
        )
        .await;
    }
}

//! The HTTP API's recurring payments (`/v1/recurring-payments`) as a
//! process, against the real API server, with only the chart's API
//! ServiceAccount: every route works with what its Role grants. No
//! controller or worker runs: these tests are about what the API asks of
//! the API server (no Schedule is made, no status written but the tests').

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use common::*;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use paysaga_api::http::{PaymentPage, RecurringPaymentPage, RecurringPaymentView};
use paysaga_api::names::RECURRING_LABEL;
use paysaga_api::{Payment, PaymentMethod, PaymentSpec, RecurringPayment};
use paysaga_testenv::Service;
use serde_json::{Value, json};

/// A namespace with the chart's API account, and an API serving it with
/// only that account's credentials.
struct Stack {
    namespace: String,
    api: Service,
    /// An API key bound to paysaga-client.
    key: String,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let kube = paysaga_testenv::kube();
        let namespace = kube.namespace("http-recurring").unwrap().name.clone();
        let chart = paysaga_testenv::workspace_root().join("charts/paysaga");
        let rendered = paysaga_testenv::process::run(
            std::process::Command::new(paysaga_testenv::tool("helm"))
                .args(["template", "paysaga"])
                .arg(&chart)
                .args([
                    "--namespace",
                    &namespace,
                    "--show-only",
                    "templates/api.yaml",
                ]),
        )
        .unwrap();
        let rbac: Vec<&str> = rendered
            .split("\n---")
            .filter(|doc| {
                doc.lines().any(|l| {
                    matches!(
                        l,
                        "kind: ServiceAccount"
                            | "kind: Role"
                            | "kind: RoleBinding"
                            | "kind: ClusterRole"
                            | "kind: ClusterRoleBinding"
                    )
                })
            })
            .collect();
        assert_eq!(rbac.len(), 5, "{rendered}");
        kubectl_apply(&namespace, &rbac.join("\n---\n"));
        let kubeconfig = kube
            .service_account_kubeconfig(&namespace, "paysaga-api")
            .unwrap();
        let api = Service::full_api(
            &paysaga_testenv::run_dir().join("recurring-api"),
            &paysaga_testenv::temporal().address,
            None,
            &kubeconfig,
            &namespace,
            &[],
        )
        .unwrap();
        let key = kube
            .api_key(&namespace, "recurring-tests", &["paysaga-client"])
            .unwrap();
        Stack {
            namespace,
            api,
            key,
        }
    })
}

fn url(path: &str) -> String {
    format!("{}{path}", stack().api.url)
}

fn http() -> reqwest::Client {
    authed_http(&stack().key)
}

/// The administrator's view of the namespace's RecurringPayments.
async fn objects() -> Api<RecurringPayment> {
    Api::namespaced(
        paysaga_testenv::kube().client().await.unwrap(),
        &stack().namespace,
    )
}

/// 9.90 EUR from `user` at 09:00 on the 1st of each month, Berlin time.
fn body(user: &str) -> Value {
    json!({
        "template": {"userId": user, "amount": 990, "currency": "EUR", "method": "card",
                     "notify": {"email": "alice@example.com"}},
        "schedule": {"cron": "0 9 1 * *", "timeZone": "Europe/Berlin"},
        "maxPayments": 12,
    })
}

async fn create(body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut req = http().post(url("/v1/recurring-payments")).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn view(resp: reqwest::Response, status: u16) -> RecurringPaymentView {
    assert_eq!(resp.status().as_u16(), status, "{resp:?}");
    resp.json().await.unwrap()
}

/// A recurring payment made through the API, by a payer of its own.
async fn created(what: &str) -> RecurringPaymentView {
    let user = paysaga_testenv::unique_name(what);
    view(create(&body(&user), None).await, 202).await
}

async fn post(path: &str) -> reqwest::Response {
    http().post(url(path)).send().await.unwrap()
}

/// Asserts an RFC 9457 problem with `status` whose detail contains `words`.
async fn problem(resp: reqwest::Response, status: u16, words: &str) {
    assert_eq!(resp.status().as_u16(), status, "{resp:?}");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ctype, "application/problem+json");
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["status"], status);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(words), "expected {words:?} in {detail:?}");
}

/// The users whose recurring payments exist (each test pays as users of its own).
async fn users() -> BTreeSet<String> {
    objects()
        .await
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.spec.template.user_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answers_202_and_makes_the_object_with_the_spec() {
    let _logs = paysaga_testenv::logs_on_failure();
    let user = paysaga_testenv::unique_name("create");
    let resp = create(&body(&user), None).await;
    assert!(resp.headers().get("idempotent-replayed").is_none());
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v = view(resp, 202).await;
    assert!(v.id.starts_with("rpay-"), "{v:?}");
    assert_eq!(v.status_url, format!("/v1/recurring-payments/{}", v.id));
    assert_eq!(
        v.payments_url,
        format!("/v1/recurring-payments/{}/payments", v.id)
    );
    // Not taken up yet: no phase, nothing made.
    assert_eq!(v.phase, None);
    assert_eq!((v.payments_made, v.skipped), (0, 0));
    assert!(v.next_runs.is_empty() && v.schedule_id.is_none());
    assert!(v.created_at.is_some());

    let object = objects().await.get(&v.id).await.unwrap();
    assert_eq!(object.spec, v.spec);
    assert_eq!(object.spec.template.user_id, user);
    assert_eq!(object.spec.template.amount, 990);
    assert_eq!(object.spec.schedule.cron.as_deref(), Some("0 9 1 * *"));
    assert_eq!(
        object.spec.schedule.time_zone.as_deref(),
        Some("Europe/Berlin")
    );
    assert_eq!(object.spec.max_payments, Some(12));
    assert!(!object.spec.suspend);
    // The request that made it is on it, to select by.
    assert_eq!(
        object.labels()[paysaga_api::names::REQUEST_ID_LABEL],
        request_id
    );
    // The controller adds its own finalizer; the API adds none.
    assert!(
        object.metadata.finalizers.is_none(),
        "{:?}",
        object.metadata
    );

    // An interval, with the optional fields, is taken as well.
    let every = json!({
        "template": {"userId": user, "amount": 1, "currency": "EUR", "method": "wallet"},
        "schedule": {"every": "30s"},
        "startAt": "2030-01-01T00:00:00Z", "endAt": "2030-02-01T00:00:00Z",
        "suspend": true, "overlapPolicy": "BufferOne", "catchupWindow": "5m",
    });
    let v = view(create(&every, None).await, 202).await;
    let object = objects().await.get(&v.id).await.unwrap();
    let written = serde_json::to_value(&object.spec).unwrap();
    for field in [
        "schedule",
        "startAt",
        "endAt",
        "suspend",
        "overlapPolicy",
        "catchupWindow",
    ] {
        assert_eq!(written[field], every[field], "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_recurring_payments_are_refused_with_the_reason_and_nothing_is_made() {
    let _logs = paysaga_testenv::logs_on_failure();
    let user = paysaga_testenv::unique_name("invalid");
    let with = |patch: Value| {
        let mut b = body(&user);
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // The API server's own validation (schema and CEL rules), with its reason.
    for (b, words) in [
        (
            with(json!({"schedule": {"cron": "every tuesday"}})),
            "spec.schedule.cron",
        ),
        (
            with(json!({"schedule": {"cron": "0 9 * * *", "every": "1d"}})),
            "give exactly one of cron and every",
        ),
        (
            with(json!({"schedule": {"timeZone": "UTC"}})),
            "give exactly one of cron and every",
        ),
        (
            with(json!({"startAt": "2030-02-01T00:00:00Z", "endAt": "2030-01-01T00:00:00Z"})),
            "endAt must be after startAt",
        ),
        (
            with(
                json!({"template": {"userId": user, "amount": 0, "currency": "EUR", "method": "card"}}),
            ),
            "spec.template.amount",
        ),
        (with(json!({"maxPayments": 0})), "spec.maxPayments"),
        (with(json!({"catchupWindow": "soon"})), "spec.catchupWindow"),
    ] {
        problem(create(&b, None).await, 422, words).await;
    }
    // Before the API server: an unknown field is named, a wrong type said.
    problem(
        create(&with(json!({"schedule": {"evrey": "1d"}})), None).await,
        422,
        "unknown field \"schedule.evrey\"",
    )
    .await;
    problem(
        create(&with(json!({"suspended": true})), None).await,
        422,
        "unknown field \"suspended\"",
    )
    .await;
    problem(
        create(&with(json!({"overlapPolicy": "Sometimes"})), None).await,
        422,
        "invalid recurring payment",
    )
    .await;
    let as_text = http()
        .post(url("/v1/recurring-payments"))
        .header("content-type", "text/plain")
        .body(body(&user).to_string())
        .send()
        .await
        .unwrap();
    problem(as_text, 415, "must be sent as application/json").await;
    problem(
        create(&body(&user), Some(" ")).await,
        400,
        "Idempotency-Key must be",
    )
    .await;
    assert!(!users().await.contains(&user), "something was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_same_recurring_payment_and_refuses_another() {
    let _logs = paysaga_testenv::logs_on_failure();
    let user = paysaga_testenv::unique_name("keyed");
    let key = paysaga_testenv::unique_name("key");
    // Times to the millisecond: stored to the second, and still the same request.
    let mut asked = body(&user);
    asked["startAt"] = json!("2030-01-01T09:00:00.250+01:00");
    let first = create(&asked, Some(&key)).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = view(first, 202).await;
    assert_eq!(
        first.id,
        paysaga_operator::http::recurring::recurring_name(&user, &key)
    );
    let again = create(&asked, Some(&key)).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = view(again, 202).await;
    assert_eq!(again, first);

    let mut other = asked.clone();
    other["template"]["amount"] = json!(991);
    problem(
        create(&other, Some(&key)).await,
        409,
        "already used for a different recurring payment",
    )
    .await;
    // The same key for another payer is a recurring payment of its own.
    let bob = paysaga_testenv::unique_name("keyed-bob");
    let mut theirs = asked.clone();
    theirs["template"]["userId"] = json!(bob);
    let theirs = view(create(&theirs, Some(&key)).await, 202).await;
    assert_ne!(theirs.id, first.id);

    let mine: Vec<RecurringPayment> = objects()
        .await
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.spec.template.user_id == user)
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_payments_are_read_one_by_one_and_listed_page_by_page() {
    let _logs = paysaga_testenv::logs_on_failure();
    let mut made = BTreeSet::new();
    for _ in 0..3 {
        made.insert(created("listed").await.id);
    }
    for id in &made {
        let read = http()
            .get(url(&format!("/v1/recurring-payments/{id}")))
            .send()
            .await
            .unwrap();
        let read = view(read, 200).await;
        let object = objects().await.get(id).await.unwrap();
        assert_eq!(read, RecurringPaymentView::of(&object, ""));
    }
    // Other tests make theirs in this namespace too: every page holds at
    // most two, and ours are all on one of them.
    let mut seen = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut req = http()
            .get(url("/v1/recurring-payments"))
            .query(&[("limit", "2")]);
        if let Some(t) = &token {
            req = req.query(&[("continue", t.as_str())]);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let page: RecurringPaymentPage = resp.json().await.unwrap();
        assert!(page.items.len() <= 2, "{page:?}");
        seen.extend(page.items.into_iter().map(|v| v.id));
        pages += 1;
        match page.continue_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert!(pages >= 2, "{pages} pages");
    assert!(made.is_subset(&seen), "{made:?} not in {seen:?}");

    for query in ["limit=0", "limit=501"] {
        let resp = http()
            .get(url(&format!("/v1/recurring-payments?{query}")))
            .send()
            .await
            .unwrap();
        problem(resp, 422, "limit must be between 1 and 500").await;
    }
    let resp = http()
        .get(url("/v1/recurring-payments?limit=many"))
        .send()
        .await
        .unwrap();
    problem(resp, 400, "invalid query").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume_set_spec_suspend_and_asked_again_change_nothing() {
    let _logs = paysaga_testenv::logs_on_failure();
    let v = created("suspend").await;
    let api = objects().await;
    for (path, suspend) in [("suspend", true), ("resume", false)] {
        let at = format!("/v1/recurring-payments/{}/{path}", v.id);
        let answered = view(post(&at).await, 202).await;
        assert_eq!(answered.spec.suspend, suspend, "{path}");
        let object = api.get(&v.id).await.unwrap();
        assert_eq!(object.spec.suspend, suspend, "{path}");
        // Asked again: the same answer, nothing written.
        let again = view(post(&at).await, 202).await;
        assert_eq!(again.spec.suspend, suspend, "{path} again");
        let after = api.get(&v.id).await.unwrap();
        assert_eq!(
            after.metadata.resource_version, object.metadata.resource_version,
            "{path} again wrote"
        );
    }
    // A body, if one is sent, is not read.
    let with_body = http()
        .post(url(&format!("/v1/recurring-payments/{}/suspend", v.id)))
        .json(&json!({"anything": 1}))
        .send()
        .await
        .unwrap();
    assert!(view(with_body, 202).await.spec.suspend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_or_deleted_recurring_payment_is_neither_suspended_nor_resumed() {
    let _logs = paysaga_testenv::logs_on_failure();
    let api = objects().await;
    // Completed, as the controller would write it.
    let done = created("completed").await;
    api.patch_status(
        &done.id,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Completed", "paymentsMade": 12}})),
    )
    .await
    .unwrap();
    for path in ["suspend", "resume"] {
        let at = format!("/v1/recurring-payments/{}/{path}", done.id);
        problem(post(&at).await, 409, "has completed").await;
    }
    assert!(!api.get(&done.id).await.unwrap().spec.suspend);
    let read = http().get(url(&done.status_url)).send().await.unwrap();
    let read = view(read, 200).await;
    assert_eq!(
        (read.phase, read.payments_made),
        (Some(paysaga_api::RecurringPhase::Completed), 12)
    );

    // Being deleted: held by a finalizer, as the controller's would hold it.
    let held = created("held").await;
    api.patch(
        &held.id,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test.paysaga.dev/hold"]}})),
    )
    .await
    .unwrap();
    let deleting = http().delete(url(&held.status_url)).send().await.unwrap();
    assert_eq!(view(deleting, 202).await.id, held.id);
    assert!(
        api.get(&held.id)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    for path in ["suspend", "resume"] {
        let at = format!("/v1/recurring-payments/{}/{path}", held.id);
        problem(post(&at).await, 409, "is being deleted").await;
    }
    // Deleting it again is asking for what is under way.
    let again = http().delete(url(&held.status_url)).send().await.unwrap();
    assert_eq!(view(again, 202).await.id, held.id);
    api.patch(
        &held.id,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_with_the_recurring_payment_as_it_was_and_it_is_gone() {
    let _logs = paysaga_testenv::logs_on_failure();
    let v = created("delete").await;
    let deleted = http().delete(url(&v.status_url)).send().await.unwrap();
    let deleted = view(deleted, 202).await;
    assert_eq!(
        (deleted.id.as_str(), &deleted.spec),
        (v.id.as_str(), &v.spec)
    );
    // No controller here holds it with its finalizer: it is gone at once.
    assert!(objects().await.get_opt(&v.id).await.unwrap().is_none());
    let read = http().get(url(&v.status_url)).send().await.unwrap();
    problem(read, 404, "not found").await;
    let again = http().delete(url(&v.status_url)).send().await.unwrap();
    problem(again, 404, "not found").await;
}

/// A Payment as a firing of `recurring` makes it (no controller runs it here).
async fn payment(name: &str, recurring: Option<&str>) {
    let api: Api<Payment> = Api::namespaced(
        paysaga_testenv::kube().client().await.unwrap(),
        &stack().namespace,
    );
    let mut p = Payment::new(
        name,
        PaymentSpec {
            user_id: "alice".into(),
            amount: 990,
            currency: "EUR".into(),
            method: PaymentMethod::Card,
            description: None,
            notify: None,
        },
    );
    p.metadata = ObjectMeta {
        name: Some(name.to_string()),
        labels: recurring.map(|r| [(RECURRING_LABEL.to_string(), r.to_string())].into()),
        ..ObjectMeta::default()
    };
    api.create(&PostParams::default(), &p).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payments_a_recurring_payment_made_are_listed_and_no_others() {
    let _logs = paysaga_testenv::logs_on_failure();
    let rent = created("rent").await;
    let other = created("other").await;
    let mine = [
        format!("{}-20261201t080000z", rent.id),
        format!("{}-20270101t080000z", rent.id),
        format!("{}-20270201t080000z", rent.id),
    ];
    for name in &mine {
        payment(name, Some(&rent.id)).await;
    }
    payment(&format!("{}-20261201t080000z", other.id), Some(&other.id)).await;
    // Named like one of its firings, but not made by one.
    payment(&format!("{}-20270301t080000z", rent.id), None).await;

    let listed = |query: String| {
        let at = url(&format!("{}{query}", rent.payments_url));
        async move {
            let resp = http().get(at).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<PaymentPage>().await.unwrap()
        }
    };
    let page = listed(String::new()).await;
    let ids: BTreeSet<String> = page.items.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, mine.iter().cloned().collect());
    assert!(page.continue_token.is_none());
    assert!(
        page.items
            .iter()
            .all(|p| p.status_url == format!("/v1/payments/{}", p.id))
    );
    // Page by page.
    let first = listed("?limit=2".into()).await;
    assert_eq!(first.items.len(), 2);
    let token = first.continue_token.expect("a continue token");
    let second = listed(format!("?limit=2&continue={token}")).await;
    assert_eq!(second.items.len(), 1);
    assert!(second.continue_token.is_none());

    // One that made none: an empty page.
    let none = created("none").await;
    let resp = http().get(url(&none.payments_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<PaymentPage>().await.unwrap().items.is_empty());
    // Deleted: its Payments stay, and are no longer listed by it.
    let deleted = http().delete(url(&rent.status_url)).send().await.unwrap();
    assert_eq!(deleted.status(), 202);
    let resp = http().get(url(&rent.payments_url)).send().await.unwrap();
    problem(resp, 404, "not found").await;
    let payments = payments(&stack().namespace).await;
    for name in &mine {
        assert!(payments.get_opt(name).await.unwrap().is_some(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404() {
    let _logs = paysaga_testenv::logs_on_failure();
    for id in ["rpay-nope", "Not_A_Name", "a-"] {
        let at = format!("/v1/recurring-payments/{id}");
        let get = http().get(url(&at)).send().await.unwrap();
        problem(get, 404, "not found").await;
        let delete = http().delete(url(&at)).send().await.unwrap();
        problem(delete, 404, "not found").await;
        for path in ["suspend", "resume"] {
            problem(post(&format!("{at}/{path}")).await, 404, "not found").await;
        }
        let payments = http()
            .get(url(&format!("{at}/payments")))
            .send()
            .await
            .unwrap();
        problem(payments, 404, "not found").await;
    }
    // A route this API does not have is 404 too.
    let wrong = http()
        .get(url("/v1/recurring-payments/rpay-nope/refunds"))
        .send()
        .await
        .unwrap();
    problem(wrong, 404, "no such route").await;
}

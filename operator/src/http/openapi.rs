//! The OpenAPI 3 document of the HTTP API. Schemas are generated from the
//! Rust types (schemars, JSON Schema 2020-12 as OpenAPI 3.1 uses); the paths are listed here,
//! next to the routes they describe. Served at `/openapi.json` and checked in
//! as `docs/openapi.json` (a test fails when it is stale).

use paysaga_api::http::{
    CancelBody, CreatePayment, CreateRecurringPayment, CreateRefund, ExpediteBody, PaymentPage,
    PaymentView, RecurringPaymentPage, RecurringPaymentView, RefundPage, RefundView, ReviewBody,
};
use paysaga_api::{MAX_AMOUNT_MINOR, Phase, RecurringPhase, RefundPhase, RefundReason, Step};
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::problem::Problem;

fn problem_responses(codes: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|(code, why)| {
            (
                code.to_string(),
                json!({
                    "description": why,
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }),
            )
        })
        .collect()
}

fn with(mut base: serde_json::Map<String, Value>, extra: Value) -> Value {
    if let Value::Object(m) = extra {
        base.extend(m);
    }
    Value::Object(base)
}

/// The whole document.
pub fn document() -> Value {
    // OpenAPI 3.1 schemas are JSON Schema 2020-12: generate those, with the
    // definitions where OpenAPI keeps them.
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let create = generator.subschema_for::<CreatePayment>();
    let view = generator.subschema_for::<PaymentView>();
    let page = generator.subschema_for::<PaymentPage>();
    let cancel = generator.subschema_for::<CancelBody>();
    let review = generator.subschema_for::<ReviewBody>();
    let expedite = generator.subschema_for::<ExpediteBody>();
    let problem = generator.subschema_for::<Problem>();
    let phase = generator.subschema_for::<Phase>();
    let step = generator.subschema_for::<Step>();
    let create_refund = generator.subschema_for::<CreateRefund>();
    let refund_view = generator.subschema_for::<RefundView>();
    let refund_page = generator.subschema_for::<RefundPage>();
    let refund_phase = generator.subschema_for::<RefundPhase>();
    let refund_reason = generator.subschema_for::<RefundReason>();
    let create_recurring = generator.subschema_for::<CreateRecurringPayment>();
    let recurring_view = generator.subschema_for::<RecurringPaymentView>();
    let recurring_page = generator.subschema_for::<RecurringPaymentPage>();
    let recurring_phase = generator.subschema_for::<RecurringPhase>();
    let mut schemas = generator.take_definitions(true);
    for (name, schema) in [
        ("CreatePayment", create),
        ("PaymentView", view),
        ("PaymentPage", page),
        ("CancelBody", cancel),
        ("ReviewBody", review),
        ("ExpediteBody", expedite),
        ("Problem", problem),
        ("Phase", phase),
        ("Step", step),
        ("CreateRefund", create_refund),
        ("RefundView", refund_view),
        ("RefundPage", refund_page),
        ("RefundPhase", refund_phase),
        ("RefundReason", refund_reason),
        ("CreateRecurringPayment", create_recurring),
        ("RecurringPaymentView", recurring_view),
        ("RecurringPaymentPage", recurring_page),
        ("RecurringPhase", recurring_phase),
    ] {
        if schema.as_value().get("$ref").is_none() {
            schemas.insert(name.to_string(), schema.to_value());
        }
    }
    let payment = |code: &str, why: &str| json!({code: {"description": why, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentView"}}}}});
    let refund = |code: &str, why: &str| json!({code: {"description": why, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefundView"}}}}});
    let recurring = |code: &str, why: &str| json!({code: {"description": why, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecurringPaymentView"}}}}});
    let page_params = [
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}),
        json!({"name": "continue", "in": "query", "schema": {"type": "string"}}),
    ];
    // The codec-server protocol: `Payloads` in the protobuf JSON mapping.
    let codec_payloads = json!({"type": "object", "properties": {"payloads": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "additionalProperties": {"type": "string", "contentEncoding": "base64"}},
            "data": {"type": "string", "contentEncoding": "base64"},
        },
    }}}});
    let codec_namespace = json!({"name": "X-Namespace", "in": "header", "required": false, "schema": {"type": "string"}, "description": "the Temporal namespace of the payloads; must be the API's"});
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 253}});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "paysaga",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Payments run as durable Temporal sagas; a succeeded payment can be refunded, partly or whole, by refunds of its own; a recurring payment makes a payment from its template on a schedule. Amounts are integer minor units (1 to {MAX_AMOUNT_MINOR}). Errors are RFC 9457 problem details."),
        },
        "paths": {
            "/v1/payments": {
                "post": {
                    "operationId": "createPayment",
                    "summary": "Create a payment (idempotent with Idempotency-Key)",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false,
                                    "description": "Scoped to the payer (userId). The same key and body return the same payment (Idempotent-Replayed: true) while it exists and for 30 days after its Payment is deleted; another body with the key is 409.",
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreatePayment"}}}},
                    "responses": with(problem_responses(&[
                        ("400", "a malformed Idempotency-Key"),
                        ("409", "the key was used for a different payment"),
                        ("413", "the body is over 2 MiB"),
                        ("415", "the body was not sent as application/json"),
                        ("422", "invalid payment, with the reason (an unknown field named)"),
                        ("429", "too many payments in flight: nothing was created, retry after Retry-After"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), payment("202", "accepted; follow statusUrl")),
                },
                "get": {
                    "operationId": "listPayments",
                    "summary": "List payments, filtered and paginated",
                    "parameters": [
                        {"name": "userId", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
                        {"name": "phase", "in": "query", "schema": {"$ref": "#/components/schemas/Phase"}},
                        {"name": "step", "in": "query", "description": "e.g. ManualReview: the payments waiting for a person",
                         "schema": {"$ref": "#/components/schemas/Step"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {"name": "continue", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": with(problem_responses(&[
                        ("400", "an invalid query or continue token"),
                        ("422", "an invalid userId or limit"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), json!({"200": {"description": "a page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentPage"}}}}})),
                },
            },
            "/v1/payments/{id}": {
                "get": {
                    "operationId": "getPayment",
                    "summary": "A payment's phase, step, conditions, reason and timestamps",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such payment"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), payment("200", "the payment")),
                },
            },
            "/v1/payments/{id}/cancel": {
                "post": {
                    "operationId": "cancelPayment",
                    "summary": "Ask for a payment to be cancelled",
                    "parameters": [id_param.clone()],
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CancelBody"}}}},
                    "responses": with(problem_responses(&[
                        ("404", "no such payment"),
                        ("409", "the payment has already finished, or a cancel with another reason was already asked"),
                        ("413", "the body is over 2 MiB"),
                        ("415", "the body was not sent as application/json"),
                        ("422", "an invalid body (an unknown field named)"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), payment("202", "cancel requested (or the same cancel asked again); follow statusUrl")),
                },
            },
            "/v1/payments/{id}/review": {
                "post": {
                    "operationId": "reviewPayment",
                    "summary": "Decide on a payment in manual review: approve (retry or accept the charge) or reject (compensate)",
                    "parameters": [id_param.clone()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReviewBody"}}}},
                    "responses": with(problem_responses(&[
                        ("404", "no such payment"),
                        ("409", "the payment is not waiting for a review (or has finished)"),
                        ("413", "the body is over 2 MiB"),
                        ("415", "the body was not sent as application/json"),
                        ("422", "an invalid body (an unknown field named)"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), payment("202", "decision recorded; follow statusUrl")),
                },
            },
            "/v1/payments/{id}/expedite": {
                "post": {
                    "operationId": "expeditePayment",
                    "summary": "Stop waiting now: ask the gateway at once, or retry the charge at once",
                    "parameters": [id_param.clone()],
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExpediteBody"}}}},
                    "responses": with(problem_responses(&[
                        ("404", "no such payment"),
                        ("409", "the payment has already finished"),
                        ("413", "the body is over 2 MiB"),
                        ("415", "the body was not sent as application/json"),
                        ("422", "an invalid body (an unknown field named)"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), payment("202", "expedite requested; follow statusUrl")),
                },
            },
            "/v1/payments/{id}/refunds": {
                "post": {
                    "operationId": "createRefund",
                    "summary": "Refund a succeeded payment, partly or whole (idempotent with Idempotency-Key)",
                    "description": "Checks the payment as it is now (it exists, is not being deleted, has succeeded, has that much left to refund) and creates a Refund object, which the controller runs. The check is an early answer only: refunds asked at once may all pass it, and the ledger decides; one it refuses ends Failed (ExceedsRefundable). Refunds are owned by their payment and deleted with it: no record of a refund, or of its Idempotency-Key, outlives the payment.",
                    "parameters": [
                        id_param.clone(),
                        {"name": "Idempotency-Key", "in": "header", "required": false,
                         "description": "Scoped to the payment. The same key and body return the same refund (Idempotent-Replayed: true) while it exists, which is as long as its payment exists; another body with the key is 409.",
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                    ],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateRefund"}}}},
                    "responses": with(problem_responses(&[
                        ("400", "a malformed Idempotency-Key"),
                        ("404", "no such payment"),
                        ("409", "the payment is being deleted or has not succeeded (its phase named), or the key was used for a different refund"),
                        ("413", "the body is over 2 MiB"),
                        ("415", "the body was not sent as application/json"),
                        ("422", "an invalid refund, with the reason (an unknown field named), or more than the payment has left to refund"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), refund("202", "accepted; follow statusUrl")),
                },
                "get": {
                    "operationId": "listRefunds",
                    "summary": "A payment's refunds, oldest first (those made with kubectl too)",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such payment"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), json!({"200": {"description": "the payment's refunds", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefundPage"}}}}})),
                },
            },
            "/v1/refunds/{id}": {
                "get": {
                    "operationId": "getRefund",
                    "summary": "A refund's phase, outcome reason, message and timestamps",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such refund (deleted with its payment, if that was deleted)"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), refund("200", "the refund")),
                },
            },
            "/v1/recurring-payments": {
                "post": {
                    "operationId": "createRecurringPayment",
                    "summary": "Create a recurring payment: a Payment made from the template on a schedule (idempotent with Idempotency-Key)",
                    "description": "Creates a RecurringPayment object; the controller keeps a Temporal Schedule for it, and each firing makes an ordinary Payment from the template, named <id>-<yyyymmdd>t<hhmmss>z after the time it was due and listed at paymentsUrl.",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false,
                                    "description": "Scoped to the payer (template.userId). The same key and body return the same recurring payment (Idempotent-Replayed: true) while it exists; another body with the key is 409.",
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateRecurringPayment"}}}},
                    "responses": with(problem_responses(&[
                        ("400", "a malformed Idempotency-Key"),
                        ("409", "the key was used for a different recurring payment"),
                        ("413", "the body is over 2 MiB"),
                        ("415", "the body was not sent as application/json"),
                        ("422", "an invalid recurring payment, with the reason (an unknown field named; a schedule with both or neither of cron and every; endAt not after startAt; an invalid template)"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), recurring("202", "accepted; follow statusUrl")),
                },
                "get": {
                    "operationId": "listRecurringPayments",
                    "summary": "List recurring payments, paginated",
                    "parameters": page_params.clone(),
                    "responses": with(problem_responses(&[
                        ("400", "an invalid query or continue token"),
                        ("422", "an invalid limit"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), json!({"200": {"description": "a page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecurringPaymentPage"}}}}})),
                },
            },
            "/v1/recurring-payments/{id}": {
                "get": {
                    "operationId": "getRecurringPayment",
                    "summary": "A recurring payment's spec, phase, next firings and the payments it made so far",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such recurring payment"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), recurring("200", "the recurring payment")),
                },
                "delete": {
                    "operationId": "deleteRecurringPayment",
                    "summary": "Stop a recurring payment for good: its Schedule is deleted, the Payments it made stay",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such recurring payment"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), recurring("202", "deletion asked; the recurring payment as it was")),
                },
            },
            "/v1/recurring-payments/{id}/suspend": {
                "post": {
                    "operationId": "suspendRecurringPayment",
                    "summary": "Pause the firings until resumed (suspending a suspended one changes nothing)",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such recurring payment"),
                        ("409", "the recurring payment has completed or is being deleted"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), recurring("202", "spec.suspend is true; follow statusUrl")),
                },
            },
            "/v1/recurring-payments/{id}/resume": {
                "post": {
                    "operationId": "resumeRecurringPayment",
                    "summary": "Fire again after a suspend (resuming an active one changes nothing)",
                    "parameters": [id_param.clone()],
                    "responses": with(problem_responses(&[
                        ("404", "no such recurring payment"),
                        ("409", "the recurring payment has completed or is being deleted"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), recurring("202", "spec.suspend is false; follow statusUrl")),
                },
            },
            "/v1/recurring-payments/{id}/payments": {
                "get": {
                    "operationId": "listRecurringPaymentPayments",
                    "summary": "The Payments a recurring payment made (those still kept), paginated",
                    "parameters": [id_param, page_params[0].clone(), page_params[1].clone()],
                    "responses": with(problem_responses(&[
                        ("400", "an invalid query or continue token"),
                        ("404", "no such recurring payment"),
                        ("422", "an invalid limit"),
                        ("503", "overloaded (Retry-After) or Kubernetes unavailable"),
                    ]), json!({"200": {"description": "a page of its payments", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentPage"}}}}})),
                },
            },
            "/codec/encode": {
                "post": {
                    "operationId": "codecEncode",
                    "summary": "Temporal codec server: encrypt payloads with the primary key",
                    "parameters": [codec_namespace.clone()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": codec_payloads.clone()}}},
                    "responses": with(problem_responses(&[
                        ("400", "X-Namespace names another Temporal namespace"),
                        ("422", "not payloads, or not base64"),
                        ("503", "no codec keyring configured"),
                    ]), json!({"200": {"description": "the payloads, encrypted", "content": {"application/json": {"schema": codec_payloads.clone()}}}})),
                },
            },
            "/codec/decode": {
                "post": {
                    "operationId": "codecDecode",
                    "summary": "Temporal codec server: decrypt payloads (those not encrypted come back unchanged)",
                    "parameters": [codec_namespace],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": codec_payloads.clone()}}},
                    "responses": with(problem_responses(&[
                        ("400", "X-Namespace names another Temporal namespace"),
                        ("422", "not payloads, not base64, or a payload that does not decrypt (unknown key, tampered)"),
                        ("503", "no codec keyring configured"),
                    ]), json!({"200": {"description": "the payloads, decrypted", "content": {"application/json": {"schema": codec_payloads}}}})),
                },
            },
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "the process answers"}}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {
                "200": {"description": "Kubernetes and Temporal answer"},
                "503": {"description": "not ready, and why"}}}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (psk_…, made with `paysaga-operator api-key create`) or a Kubernetes token issued for the audience `paysaga` (a projected ServiceAccount token). What the caller may do is what Kubernetes RBAC grants its user on paysaga.dev resources in the API's namespace.",
            }},
        },
    });
    guarded(&mut doc);
    doc
}

/// Every operation but the probes takes a bearer credential, and can be
/// refused for it (401), for RBAC (403) or for the caller's rate (429).
fn guarded(doc: &mut Value) {
    let refusals = problem_responses(&[
        (
            "401",
            "no credential, or one not accepted (WWW-Authenticate: Bearer)",
        ),
        (
            "403",
            "the caller's RBAC does not allow this (or, with payer scoping, not for this payer)",
        ),
        (
            "429",
            "over the caller's rate (Retry-After), or too many payments in flight",
        ),
    ]);
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, methods) in paths.iter_mut() {
        if !(path.starts_with("/v1/") || path.starts_with("/codec/")) {
            continue;
        }
        for op in methods.as_object_mut().expect("methods").values_mut() {
            op["security"] = json!([{"bearer": []}]);
            let responses = op["responses"].as_object_mut().expect("responses");
            for (code, answer) in &refusals {
                responses
                    .entry(code.clone())
                    .or_insert_with(|| answer.clone());
            }
        }
    }
}

/// The document as checked in: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut text =
        serde_json::to_string_pretty(&document()).expect("serializing the OpenAPI document");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_openapi_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == super::document_text(),
            "docs/openapi.json is stale against the Rust types: run `make generate` and commit the result"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = super::document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
    }
}

//! The knobs and the audit view: `GET`/`PUT /admin/config`,
//! `GET`/`PUT`/`DELETE /admin/scenarios/{paymentId}`,
//! `GET /admin/gateway-ledger`, and `GET /healthz`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use paysaga_api::external::{GatewayLedgerEntry, Scenario, SimConfig};
use serde_json::Value;

use crate::{ApiError, Sim, callbacks::MAX_CALLBACK_COPIES, error::AppJson, fraud, validate};

/// Rates must be probabilities and the callback URL an http(s) URL.
pub fn validate_config(config: &SimConfig) -> Result<(), String> {
    let rates = [
        ("transientFailureRate", config.transient_failure_rate),
        ("declineRate", config.decline_rate),
        ("callbackFailureRate", config.callback_failure_rate),
        ("callbackDropRate", config.callback_drop_rate),
        ("fraudRejectRate", config.fraud_reject_rate),
    ];
    for (name, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{name} must be within [0, 1], got {rate}"));
        }
    }
    if let Some(url) = &config.callback_url {
        validate::http_url("callbackUrl", url)?;
    }
    Ok(())
}

/// `current` with the fields of the JSON object `patch` replaced. Unknown
/// fields are refused (a typo would otherwise change nothing silently);
/// `"callbackUrl": null` clears the URL.
pub fn merge_config(current: &SimConfig, patch: Value) -> Result<SimConfig, String> {
    let Value::Object(patch) = patch else {
        return Err("the config patch must be a JSON object".to_owned());
    };
    let mut merged =
        serde_json::to_value(current).map_err(|e| format!("cannot serialise the config: {e}"))?;
    let Value::Object(fields) = &mut merged else {
        return Err("the config does not serialise to an object".to_owned());
    };
    for (name, value) in patch {
        if !fields.contains_key(&name) {
            let known: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown config field {name:?} (known: {})",
                known.join(", ")
            ));
        }
        fields.insert(name, value);
    }
    let config: SimConfig =
        serde_json::from_value(merged).map_err(|e| format!("invalid config: {e}"))?;
    validate_config(&config)?;
    Ok(config)
}

pub fn validate_scenario(scenario: &Scenario) -> Result<(), String> {
    if let Some(score) = scenario.fraud_score.filter(|&s| s > fraud::MAX_SCORE) {
        return Err(format!(
            "fraudScore must be within [0, {}], got {score}",
            fraud::MAX_SCORE
        ));
    }
    if scenario.callback_copies > MAX_CALLBACK_COPIES {
        return Err(format!(
            "callbackCopies must be at most {MAX_CALLBACK_COPIES}, got {}",
            scenario.callback_copies
        ));
    }
    Ok(())
}

/// `GET /admin/config`.
pub async fn get_config(State(sim): State<Arc<Sim>>) -> Json<SimConfig> {
    Json(sim.config())
}

/// `PUT /admin/config`: merges the fields given; answers the new config.
pub async fn put_config(
    State(sim): State<Arc<Sim>>,
    AppJson(patch): AppJson<Value>,
) -> Result<Json<SimConfig>, ApiError> {
    let mut state = sim.lock();
    let config = merge_config(&state.config, patch).map_err(ApiError::BadRequest)?;
    tracing::info!(?config, "config changed");
    state.config = config.clone();
    Ok(Json(config))
}

/// `GET /admin/scenarios/{paymentId}`.
pub async fn get_scenario(
    State(sim): State<Arc<Sim>>,
    Path(payment_id): Path<String>,
) -> Result<Json<Scenario>, ApiError> {
    sim.lock()
        .scenarios
        .get(&payment_id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no scenario for payment {payment_id:?}")))
}

/// `PUT /admin/scenarios/{paymentId}`: stores (or replaces) the payment's
/// scenario; answers it. `{prefix}*` sets it for every payment whose ID
/// starts with `prefix` and has none of its own.
pub async fn put_scenario(
    State(sim): State<Arc<Sim>>,
    Path(payment_id): Path<String>,
    AppJson(scenario): AppJson<Scenario>,
) -> Result<Json<Scenario>, ApiError> {
    validate_scenario(&scenario).map_err(ApiError::BadRequest)?;
    tracing::info!(%payment_id, ?scenario, "scenario set");
    sim.lock().scenarios.insert(payment_id, scenario.clone());
    Ok(Json(scenario))
}

/// `DELETE /admin/scenarios/{paymentId}`: the payment follows the global
/// rates again. `204` whether or not it had a scenario.
pub async fn delete_scenario(
    State(sim): State<Arc<Sim>>,
    Path(payment_id): Path<String>,
) -> StatusCode {
    sim.lock().scenarios.remove(&payment_id);
    StatusCode::NO_CONTENT
}

/// `GET /admin/gateway-ledger`.
pub async fn gateway_ledger(State(sim): State<Arc<Sim>>) -> Json<Vec<GatewayLedgerEntry>> {
    Json(sim.lock().gateway.ledger())
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_merges() {
        let current = SimConfig {
            latency_ms: 10,
            decline_rate: 0.1,
            callback_url: Some("http://127.0.0.1:1/cb".into()),
            ..SimConfig::default()
        };
        let ok = |patch: Value| merge_config(&current, patch).expect("valid patch");

        assert_eq!(ok(json!({})), current);
        let merged = ok(json!({"declineRate": 0.5, "callbackDelayMs": 30}));
        assert_eq!(
            (
                merged.latency_ms,
                merged.decline_rate,
                merged.callback_delay_ms
            ),
            (10, 0.5, 30)
        );
        assert_eq!(merged.callback_url, current.callback_url);
        assert_eq!(ok(json!({"callbackUrl": null})).callback_url, None);
        assert_eq!(
            ok(json!({"transientFailureRate": 1})).transient_failure_rate,
            1.0
        );

        let refused = [
            (
                json!({"declineRate": 1.5}),
                "declineRate must be within [0, 1]",
            ),
            (
                json!({"fraudRejectRate": -0.1}),
                "fraudRejectRate must be within [0, 1]",
            ),
            (json!({"latencyMs": -1}), "invalid config"),
            (json!({"latencyMs": null}), "invalid config"),
            (
                json!({"declineRat": 0.5}),
                "unknown config field \"declineRat\"",
            ),
            (
                json!({"callbackUrl": "nope"}),
                "callbackUrl \"nope\" is not a URL",
            ),
            (json!([1]), "must be a JSON object"),
        ];
        for (patch, want) in refused {
            let err = merge_config(&current, patch.clone()).expect_err(&patch.to_string());
            assert!(err.contains(want), "{patch}: {err}");
        }
    }

    #[test]
    fn config_validation_refuses_nan() {
        let config = SimConfig {
            callback_drop_rate: f64::NAN,
            ..SimConfig::default()
        };
        assert!(validate_config(&config).is_err());
    }

    #[test]
    fn scenarios() {
        let table = [
            (Scenario::default(), true),
            (
                Scenario {
                    fraud_score: Some(100),
                    callback_copies: 100,
                    ..Scenario::default()
                },
                true,
            ),
            (
                Scenario {
                    fraud_score: Some(101),
                    ..Scenario::default()
                },
                false,
            ),
            (
                Scenario {
                    callback_copies: 101,
                    ..Scenario::default()
                },
                false,
            ),
        ];
        for (scenario, ok) in table {
            assert_eq!(validate_scenario(&scenario).is_ok(), ok, "{scenario:?}");
        }
    }

    #[test]
    fn a_prefix_scenario_steers_each_payment_it_names_on_its_own() {
        let flaky = Scenario {
            transient_failures: 2,
            ..Scenario::default()
        };
        let declined = Scenario {
            decline: true,
            ..Scenario::default()
        };
        let mut all = std::collections::HashMap::from([
            ("payment-ns-a-*".to_string(), flaky),
            ("payment-ns-*".to_string(), declined),
            ("payment-ns-a-1".to_string(), Scenario::default()),
        ]);
        let mut scenario = |id: &str| crate::scenario(&mut all, id).cloned();
        assert_eq!(
            scenario("payment-ns-a-1"),
            Some(Scenario::default()),
            "its own first"
        );
        assert_eq!(
            scenario("payment-ns-a-2").unwrap().transient_failures,
            2,
            "the longest prefix"
        );
        assert!(scenario("payment-ns-b-1").unwrap().decline);
        assert_eq!(scenario("payment-other-1"), None);
        // What one payment uses up is its own.
        crate::scenario(&mut all, "payment-ns-a-2")
            .unwrap()
            .transient_failures = 0;
        assert_eq!(
            crate::scenario(&mut all, "payment-ns-a-3")
                .unwrap()
                .transient_failures,
            2
        );
    }
}

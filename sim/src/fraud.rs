//! Fraud scoring: `POST /fraud/v1/score`.
//!
//! The rules ([`rules_score`]), deterministic:
//!
//! | rule | points | reason |
//! |---|---|---|
//! | every payment | 5 (the base) | — |
//! | `amount >= 500_000` minor units | +40 | `large amount (>= 500000 minor units)` |
//! | method `wallet` | +20 | `wallet payment` |
//! | `userId` starts with `fraud` | +60 | `user id flagged (starts with "fraud")` |
//!
//! The score is capped at 100. Then ([`decide_score`]): a payment whose
//! scenario sets `fraudScore` gets that score (reason `scenario override`);
//! a payment with no scenario is forced to 100 with probability
//! `fraudRejectRate` (reason `random reject (fraudRejectRate)`, after the
//! rules' reasons). A payment with a scenario is never rejected at random.

use std::sync::Arc;

use axum::{Json, extract::State};
use paysaga_api::{
    PaymentMethod,
    external::{FraudScoreRequest, FraudScoreResponse, Scenario},
};

use crate::{ApiError, Sim, error::AppJson, rng::happens, validate};

pub const BASE_SCORE: u32 = 5;
pub const MAX_SCORE: u32 = 100;
pub const LARGE_AMOUNT: i64 = 500_000;
pub const RANDOM_REJECT_REASON: &str = "random reject (fraudRejectRate)";
pub const SCENARIO_REASON: &str = "scenario override";

/// The rules' score; see the module documentation.
pub fn rules_score(req: &FraudScoreRequest) -> FraudScoreResponse {
    let rules: [(bool, u32, &str); 3] = [
        (
            req.amount >= LARGE_AMOUNT,
            40,
            "large amount (>= 500000 minor units)",
        ),
        (req.method == PaymentMethod::Wallet, 20, "wallet payment"),
        (
            req.user_id.starts_with("fraud"),
            60,
            "user id flagged (starts with \"fraud\")",
        ),
    ];
    let mut score = BASE_SCORE;
    let mut reasons = Vec::new();
    for (fires, points, reason) in rules {
        if fires {
            score += points;
            reasons.push(reason.to_owned());
        }
    }
    FraudScoreResponse {
        score: score.min(MAX_SCORE),
        reasons,
    }
}

/// The answer for one request, given the payment's scenario, the reject rate
/// and a draw in `[0, 1)`.
pub fn decide_score(
    req: &FraudScoreRequest,
    scenario: Option<&Scenario>,
    reject_rate: f64,
    draw: f64,
) -> FraudScoreResponse {
    if let Some(score) = scenario.and_then(|s| s.fraud_score) {
        return FraudScoreResponse {
            score: score.min(MAX_SCORE),
            reasons: vec![SCENARIO_REASON.to_owned()],
        };
    }
    let mut response = rules_score(req);
    if scenario.is_none() && happens(reject_rate, draw) {
        response.score = MAX_SCORE;
        response.reasons.push(RANDOM_REJECT_REASON.to_owned());
    }
    response
}

fn validate_request(req: &FraudScoreRequest) -> Result<(), ApiError> {
    validate::non_empty("paymentId", &req.payment_id)?;
    validate::non_empty("userId", &req.user_id)?;
    validate::positive_amount(req.amount)?;
    validate::currency(&req.currency)
}

/// `POST /fraud/v1/score`.
#[tracing::instrument(skip_all, fields(payment_id = %req.payment_id, user_id = %req.user_id))]
pub async fn score(
    State(sim): State<Arc<Sim>>,
    AppJson(req): AppJson<FraudScoreRequest>,
) -> Result<Json<FraudScoreResponse>, ApiError> {
    validate_request(&req)?;
    sim.simulate_latency().await;
    let response = {
        let mut guard = sim.lock();
        let state = &mut *guard;
        let draw = state.rng.next_f64();
        decide_score(
            &req,
            crate::scenario(&mut state.scenarios, &req.payment_id).as_deref(),
            state.config.fraud_reject_rate,
            draw,
        )
    };
    tracing::info!(score = response.score, reasons = ?response.reasons, "fraud score");
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(user: &str, amount: i64, method: PaymentMethod) -> FraudScoreRequest {
        FraudScoreRequest {
            payment_id: "p".into(),
            user_id: user.into(),
            amount,
            currency: "EUR".into(),
            method,
        }
    }

    #[test]
    fn rules() {
        use PaymentMethod::{BankTransfer, Card, Wallet};
        let table = [
            (req("alice", 1_250, Card), 5, 0),
            (req("alice", 499_999, BankTransfer), 5, 0),
            (req("alice", 500_000, Card), 45, 1),
            (req("alice", 10, Wallet), 25, 1),
            (req("fraudster", 10, Card), 65, 1),
            (req("alice-fraud", 10, Card), 5, 0),
            (req("alice", 500_000, Wallet), 65, 2),
            (req("fraud-bob", 10, Wallet), 85, 2),
            (req("fraud", 900_000, Wallet), 100, 3),
        ];
        for (r, score, reasons) in table {
            let got = rules_score(&r);
            assert_eq!(
                (got.score, got.reasons.len()),
                (score, reasons),
                "{r:?}: {got:?}"
            );
        }
    }

    #[test]
    fn overrides_and_random_rejects() {
        let r = req("alice", 10, PaymentMethod::Card);
        let with_score = Scenario {
            fraud_score: Some(70),
            ..Scenario::default()
        };
        let without_score = Scenario::default();
        let table = [
            ("rules", None, 0.0, 0.0, 5, vec![]),
            (
                "random reject",
                None,
                0.5,
                0.1,
                100,
                vec![RANDOM_REJECT_REASON],
            ),
            ("reject rate misses", None, 0.5, 0.9, 5, vec![]),
            (
                "scenario score",
                Some(&with_score),
                1.0,
                0.0,
                70,
                vec![SCENARIO_REASON],
            ),
            (
                "scenario without score: rules, no random",
                Some(&without_score),
                1.0,
                0.0,
                5,
                vec![],
            ),
        ];
        for (name, scenario, rate, draw, score, reasons) in table {
            let got = decide_score(&r, scenario, rate, draw);
            assert_eq!(got.score, score, "{name}");
            assert_eq!(got.reasons, reasons, "{name}");
        }
    }
}

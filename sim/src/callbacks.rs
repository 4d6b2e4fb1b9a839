//! The gateway's asynchronous confirmations: what to confirm
//! ([`plan_confirmation`]), and their signed delivery with retries.
//!
//! After the delay the charge is settled (its status becomes the outcome's),
//! unless it was refunded meanwhile, which cancels the confirmation. The
//! [`GatewayCallback`] is then POSTed to the charge's `callbackUrl`, else the
//! configured one, signed with [`paysaga_api::signature::sign`] over the
//! exact bytes sent (re-signed with a fresh timestamp on each attempt).
//! Connection errors, 5xx and 429 are retried with exponential backoff
//! ([`RetryPolicy`]); any other answer ends the delivery. A scenario's
//! `callbackCopies` sends that many identical deliveries.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    http::{HeaderValue, header::CONTENT_TYPE},
};
use paysaga_api::names::REQUEST_ID_HEADER;
use paysaga_api::{
    external::{CallbackOutcome, GatewayCallback, Scenario, SimConfig},
    signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign},
};
use tracing::Instrument;

use crate::{Sim, gateway::Settlement, rng::happens, unix_secs};

/// The most identical copies a scenario may ask for.
pub const MAX_CALLBACK_COPIES: u32 = 100;

/// How a charge will be confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmationPlan {
    /// `None`: never confirmed (the saga's timeout path).
    pub outcome: Option<CallbackOutcome>,
    pub delay_ms: u64,
    /// Identical deliveries to send (at least 1).
    pub copies: u32,
    /// `false`: the charge settles, but the confirmation is lost on its way
    /// (a scenario's `loseCallback`).
    pub deliver: bool,
}

/// The confirmation of an accepted charge. A scenario decides it whole
/// (`callback: None` = the charge stays pending and nothing is sent;
/// `loseCallback` = it settles but the confirmation is lost; delay falling
/// back to the global one); otherwise `callbackDropRate` loses the
/// confirmation of a charge that succeeds (the gateway has the money, the
/// payment never hears: its status endpoint tells), then
/// `callbackFailureRate` makes the outcome `Failed` among the others.
pub fn plan_confirmation(
    config: &SimConfig,
    scenario: Option<&Scenario>,
    drop_draw: f64,
    failure_draw: f64,
) -> ConfirmationPlan {
    match scenario {
        Some(s) => ConfirmationPlan {
            outcome: s.callback,
            delay_ms: s.callback_delay_ms.unwrap_or(config.callback_delay_ms),
            copies: s.callback_copies.clamp(1, MAX_CALLBACK_COPIES),
            deliver: !s.lose_callback,
        },
        None => {
            let lost = happens(config.callback_drop_rate, drop_draw);
            let outcome = if !lost && happens(config.callback_failure_rate, failure_draw) {
                CallbackOutcome::Failed
            } else {
                CallbackOutcome::Succeeded
            };
            ConfirmationPlan {
                outcome: Some(outcome),
                delay_ms: config.callback_delay_ms,
                copies: 1,
                deliver: !lost,
            }
        }
    }
}

// ---- retries (pure) ----------------------------------------------------------------

/// Backoff of a confirmation's delivery: `initial`, doubling, capped at
/// `max`, for at most `max_attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_attempts: 8,
        }
    }
}

/// What one delivery attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: connection refused or reset, timeout.
    NoAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAfter(Duration),
    /// The receiver refused it for good (a 4xx other than 429, or a 1xx/3xx).
    Refused,
    /// Still failing after `max_attempts`.
    Exhausted,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// What to do after attempt number `attempt` (1-based) got `result`.
    pub fn next_step(&self, attempt: u32, result: AttemptResult) -> NextStep {
        let retryable = match result {
            AttemptResult::Status(s) if (200..300).contains(&s) => return NextStep::Delivered,
            AttemptResult::Status(s) => s >= 500 || s == 429,
            AttemptResult::NoAnswer => true,
        };
        if !retryable {
            NextStep::Refused
        } else if attempt >= self.max_attempts {
            NextStep::Exhausted
        } else {
            NextStep::RetryAfter(self.backoff(attempt))
        }
    }
}

// ---- delivery (I/O) ----------------------------------------------------------------

/// A confirmation scheduled for an accepted charge.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Confirmation {
    pub payment_id: String,
    pub charge_id: String,
    pub outcome: CallbackOutcome,
    /// What was charged: the confirmation says it.
    pub amount: i64,
    pub currency: String,
    pub delay: Duration,
    pub copies: u32,
    /// Whether it is delivered once the charge is settled.
    pub deliver: bool,
    /// From the charge request; the configured URL when `None`.
    pub callback_url: Option<String>,
    /// The charge request's `X-Request-Id`, sent back with the confirmation.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The charge request's trace context: the confirmation's delivery is
    /// traced as its child.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// Runs the confirmation in the background.
pub(crate) fn spawn_confirmation(sim: Arc<Sim>, confirmation: Confirmation) {
    let span = tracing::info_span!(
        "confirmation",
        payment_id = %confirmation.payment_id,
        charge_id = %confirmation.charge_id,
        request_id = confirmation.request_id.as_deref().unwrap_or_default(),
    );
    paysaga_common::telemetry::follow(&span, confirmation.traceparent.as_deref());
    tokio::spawn(confirm(sim, confirmation).instrument(span));
}

async fn confirm(sim: Arc<Sim>, c: Confirmation) {
    tokio::time::sleep(c.delay).await;
    let url = {
        let mut state = sim.lock();
        let settled = state.gateway.settle(&c.charge_id, c.outcome);
        sim.persist(&state);
        match settled {
            Settlement::Settled => {}
            Settlement::NotPending(status) => {
                tracing::info!(
                    ?status,
                    "confirmation cancelled: the charge is no longer pending"
                );
                return;
            }
        }
        if !c.deliver {
            tracing::info!(outcome = ?c.outcome, "charge settled; its confirmation is lost (scenario)");
            return;
        }
        c.callback_url
            .clone()
            .or_else(|| state.config.callback_url.clone())
    };
    let Some(url) = url else {
        tracing::warn!(
            outcome = ?c.outcome,
            "charge settled but no confirmation sent: no callbackUrl in the charge and none configured"
        );
        return;
    };
    let callback = GatewayCallback {
        payment_id: c.payment_id,
        charge_id: c.charge_id,
        outcome: c.outcome,
        reason: (c.outcome == CallbackOutcome::Failed)
            .then(|| "simulated failure: the issuer refused the charge".to_owned()),
        amount: Some(c.amount),
        currency: Some(c.currency),
    };
    let body = match serde_json::to_vec(&callback) {
        Ok(body) => Bytes::from(body),
        Err(err) => {
            tracing::error!(error = %err, "cannot serialise the confirmation");
            return;
        }
    };
    for copy in 1..=c.copies {
        let delivery = Delivery {
            http: sim.http.clone(),
            secret: sim.callback_secret.clone(),
            retry: sim.retry,
            url: url.clone(),
            body: body.clone(),
            request_id: c.request_id.clone(),
        };
        tokio::spawn(
            delivery
                .run()
                .instrument(tracing::info_span!("delivery", copy, %url)),
        );
    }
}

struct Delivery {
    http: reqwest::Client,
    secret: Arc<[u8]>,
    retry: RetryPolicy,
    url: String,
    body: Bytes,
    request_id: Option<String>,
}

impl Delivery {
    async fn run(self) {
        let mut attempt = 1;
        loop {
            let (result, detail) = self.attempt().await;
            match self.retry.next_step(attempt, result) {
                NextStep::Delivered => {
                    tracing::info!(attempt, "confirmation delivered");
                    return;
                }
                NextStep::RetryAfter(wait) => {
                    tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, %detail, "confirmation not delivered, retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                NextStep::Refused => {
                    tracing::warn!(attempt, %detail, "confirmation refused by the receiver; giving up");
                    return;
                }
                NextStep::Exhausted => {
                    tracing::error!(attempt, %detail, "confirmation not delivered after the last attempt; giving up");
                    return;
                }
            }
        }
    }

    /// One signed POST: what it got, and a line describing it for the logs.
    async fn attempt(&self) -> (AttemptResult, String) {
        let timestamp = unix_secs();
        let signature = sign(&self.secret, timestamp, &self.body);
        let sent = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature);
        let sent = match &self.request_id {
            Some(id) => sent.header(REQUEST_ID_HEADER, id),
            None => sent,
        };
        let sent = match paysaga_common::telemetry::traceparent() {
            Some(tp) => sent.header(paysaga_common::telemetry::TRACEPARENT, tp),
            None => sent,
        };
        let sent = sent.body(self.body.clone()).send().await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let detail = if status.is_success() {
                    format!("HTTP {status}")
                } else {
                    let text = response.text().await.unwrap_or_default();
                    format!("HTTP {status}: {}", truncate(&text, 200))
                };
                (AttemptResult::Status(status.as_u16()), detail)
            }
            Err(err) => (AttemptResult::NoAnswer, error_chain(&err)),
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> &str {
    text.char_indices()
        .nth(max_chars)
        .map_or(text, |(end, _)| &text[..end])
}

/// An error and its causes, `outer: inner: ...`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_plans() {
        let global = SimConfig {
            callback_delay_ms: 40,
            callback_drop_rate: 0.2,
            callback_failure_rate: 0.3,
            ..SimConfig::default()
        };
        let plan = |outcome, delay_ms, copies| ConfirmationPlan {
            deliver: true,
            outcome,
            delay_ms,
            copies,
        };
        let lost = |outcome, delay_ms| ConfirmationPlan {
            deliver: false,
            outcome: Some(outcome),
            delay_ms,
            copies: 1,
        };
        let scenario = |callback, callback_delay_ms, callback_copies| Scenario {
            callback,
            callback_delay_ms,
            callback_copies,
            ..Scenario::default()
        };
        use CallbackOutcome::{Failed, Succeeded};
        let table = [
            (
                "sent, succeeded",
                None,
                0.5,
                0.5,
                plan(Some(Succeeded), 40, 1),
            ),
            (
                "lost: settles, never sent",
                None,
                0.1,
                0.5,
                lost(Succeeded, 40),
            ),
            ("failed", None, 0.5, 0.1, plan(Some(Failed), 40, 1)),
            (
                "a loss wins over a failure",
                None,
                0.1,
                0.1,
                lost(Succeeded, 40),
            ),
            (
                "scenario outcome",
                Some(scenario(Some(Failed), None, 0)),
                0.9,
                0.9,
                plan(Some(Failed), 40, 1),
            ),
            (
                "scenario silence",
                Some(scenario(None, None, 3)),
                0.9,
                0.9,
                plan(None, 40, 3),
            ),
            (
                "scenario delay and copies",
                Some(scenario(Some(Succeeded), Some(5), 2)),
                0.0,
                0.0,
                plan(Some(Succeeded), 5, 2),
            ),
            (
                "copies are capped",
                Some(scenario(Some(Succeeded), None, 10_000)),
                0.0,
                0.0,
                plan(Some(Succeeded), 40, MAX_CALLBACK_COPIES),
            ),
        ];
        for (name, scenario, drop, failure, want) in table {
            assert_eq!(
                plan_confirmation(&global, scenario.as_ref(), drop, failure),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..=7)
            .map(|a| policy.backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn next_steps() {
        let policy = RetryPolicy::default();
        let ms = Duration::from_millis;
        let table = [
            (1, AttemptResult::Status(200), NextStep::Delivered),
            (1, AttemptResult::Status(204), NextStep::Delivered),
            (8, AttemptResult::Status(202), NextStep::Delivered),
            (1, AttemptResult::Status(503), NextStep::RetryAfter(ms(200))),
            (2, AttemptResult::Status(500), NextStep::RetryAfter(ms(400))),
            (3, AttemptResult::Status(429), NextStep::RetryAfter(ms(800))),
            (1, AttemptResult::NoAnswer, NextStep::RetryAfter(ms(200))),
            (7, AttemptResult::NoAnswer, NextStep::RetryAfter(ms(5000))),
            (8, AttemptResult::NoAnswer, NextStep::Exhausted),
            (8, AttemptResult::Status(503), NextStep::Exhausted),
            (1, AttemptResult::Status(400), NextStep::Refused),
            (1, AttemptResult::Status(401), NextStep::Refused),
            (1, AttemptResult::Status(404), NextStep::Refused),
            (1, AttemptResult::Status(302), NextStep::Refused),
        ];
        for (attempt, result, want) in table {
            assert_eq!(
                policy.next_step(attempt, result),
                want,
                "attempt {attempt}: {result:?}"
            );
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 10), "hi");
    }
}

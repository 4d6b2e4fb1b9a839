//! The email/SMS provider: `POST /notify/v1/messages` records a message
//! (idempotent by `idempotencyKey`: a repeat gets the same `messageId` and
//! records nothing); `GET /notify/v1/messages?paymentId=..&to=..` lists them
//! in the order received. Nothing is actually sent.

use std::{collections::HashMap, sync::Arc};

use axum::{Json, extract::State, http::StatusCode};
use paysaga_api::external::{Channel, Message, NotificationRequest};
use serde::{Deserialize, Serialize};

use crate::{
    ApiError, Sim,
    error::{AppJson, AppQuery},
    unix_millis, validate,
};

/// The messages received.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    messages: Vec<Message>,
    /// Index in `messages` by idempotency key.
    by_key: HashMap<String, usize>,
}

/// `202` answer to `POST /notify/v1/messages`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MessageAccepted {
    pub message_id: String,
}

/// Filters of `GET /notify/v1/messages`; each one given must match exactly.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct MessageFilter {
    pub payment_id: Option<String>,
    pub to: Option<String>,
}

impl MessageFilter {
    pub fn matches(&self, message: &Message) -> bool {
        self.payment_id
            .as_ref()
            .is_none_or(|p| *p == message.request.payment_id)
            && self.to.as_ref().is_none_or(|t| *t == message.request.to)
    }
}

/// The recipient must fit the channel: an email address, or an E.164 phone
/// number (`+`, then 8 to 15 digits, the first not 0).
pub fn validate_recipient(channel: Channel, to: &str) -> Result<(), String> {
    match channel {
        Channel::Email => match to.split_once('@') {
            Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.contains('@') =>
            {
                Ok(())
            }
            _ => Err(format!(
                "to must be an email address for channel email, got {to:?}"
            )),
        },
        Channel::Sms => {
            let digits = to.strip_prefix('+').unwrap_or_default();
            if (8..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
            {
                Ok(())
            } else {
                Err(format!(
                    "to must be an E.164 phone number for channel sms, got {to:?}"
                ))
            }
        }
    }
}

fn validate_request(req: &NotificationRequest) -> Result<(), ApiError> {
    validate::non_empty("idempotencyKey", &req.idempotency_key)?;
    validate::non_empty("paymentId", &req.payment_id)?;
    validate::non_empty("body", &req.body)?;
    validate_recipient(req.channel, &req.to).map_err(ApiError::BadRequest)
}

/// `POST /notify/v1/messages`.
#[tracing::instrument(skip_all, fields(payment_id = %req.payment_id, key = %req.idempotency_key))]
pub async fn send(
    State(sim): State<Arc<Sim>>,
    AppJson(req): AppJson<NotificationRequest>,
) -> Result<(StatusCode, Json<MessageAccepted>), ApiError> {
    validate_request(&req)?;
    sim.simulate_latency().await;
    let mut guard = sim.lock();
    let state = &mut *guard;
    let outbox = &mut state.outbox;
    if let Some(first) = outbox
        .by_key
        .get(&req.idempotency_key)
        .and_then(|&i| outbox.messages.get(i))
    {
        tracing::info!(message_id = %first.message_id, "repeated message: nothing new recorded");
        let accepted = MessageAccepted {
            message_id: first.message_id.clone(),
        };
        return Ok((StatusCode::ACCEPTED, Json(accepted)));
    }
    let message_id = state.ids.next("msg");
    tracing::info!(%message_id, channel = ?req.channel, to = %req.to, subject = %req.subject, "message accepted");
    outbox
        .by_key
        .insert(req.idempotency_key.clone(), outbox.messages.len());
    outbox.messages.push(Message {
        message_id: message_id.clone(),
        request: req,
        received_at_ms: unix_millis(),
    });
    Ok((StatusCode::ACCEPTED, Json(MessageAccepted { message_id })))
}

/// `GET /notify/v1/messages`.
pub async fn list(
    State(sim): State<Arc<Sim>>,
    AppQuery(filter): AppQuery<MessageFilter>,
) -> Json<Vec<Message>> {
    let state = sim.lock();
    Json(
        state
            .outbox
            .messages
            .iter()
            .filter(|m| filter.matches(m))
            .cloned()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients() {
        let table = [
            (Channel::Email, "alice@example.com", true),
            (Channel::Email, "alice@localhost", false),
            (Channel::Email, "@example.com", false),
            (Channel::Email, "alice", false),
            (Channel::Email, "+4915112345678", false),
            (Channel::Sms, "+4915112345678", true),
            (Channel::Sms, "+12025550123", true),
            (Channel::Sms, "4915112345678", false),
            (Channel::Sms, "+0915112345678", false),
            (Channel::Sms, "+49 151 1234", false),
            (Channel::Sms, "+1234567", false),
            (Channel::Sms, "+1234567890123456", false),
            (Channel::Sms, "alice@example.com", false),
        ];
        for (channel, to, ok) in table {
            assert_eq!(
                validate_recipient(channel, to).is_ok(),
                ok,
                "{channel:?} {to}"
            );
        }
    }

    #[test]
    fn filters() {
        let message = |payment: &str, to: &str| Message {
            message_id: "m".into(),
            request: NotificationRequest {
                idempotency_key: "k".into(),
                payment_id: payment.into(),
                channel: Channel::Email,
                to: to.into(),
                subject: "s".into(),
                body: "b".into(),
            },
            received_at_ms: 0,
        };
        let filter = |payment: Option<&str>, to: Option<&str>| MessageFilter {
            payment_id: payment.map(Into::into),
            to: to.map(Into::into),
        };
        let m = message("p1", "a@x.io");
        let table = [
            (filter(None, None), true),
            (filter(Some("p1"), None), true),
            (filter(Some("p2"), None), false),
            (filter(None, Some("a@x.io")), true),
            (filter(Some("p1"), Some("b@x.io")), false),
        ];
        for (f, want) in table {
            assert_eq!(f.matches(&m), want, "{f:?}");
        }
    }
}

//! Merchants' webhook receivers: `POST /merchant/v1/{name}/events` checks
//! the event's signature with the receiver's secret, records the request and
//! accepts each event once by its id (a repeat is answered `200` and counted
//! as a duplicate). `PUT /admin/merchants/{name}` sets a receiver up (its
//! secret, and failures on demand); `GET` answers what it received.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use paysaga_api::external::{MerchantConfig, MerchantReceipt, MerchantRecord};
use paysaga_api::signature::{DEFAULT_TOLERANCE_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use paysaga_api::webhook::EVENT_ID_HEADER;

use crate::{ApiError, Sim, error::AppJson, unix_millis};

/// The receivers, by name.
#[derive(Debug, Default)]
pub(crate) struct Merchants {
    by_name: HashMap<String, Merchant>,
}

#[derive(Debug, Default)]
struct Merchant {
    config: MerchantConfig,
    record: MerchantRecord,
    accepted: HashSet<String>,
}

/// `PUT /admin/merchants/{name}`: sets the receiver up; what it received
/// so far is kept.
pub async fn put(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
    AppJson(config): AppJson<MerchantConfig>,
) -> Result<StatusCode, ApiError> {
    if config.secret.is_empty() {
        return Err(ApiError::BadRequest("secret must not be empty".into()));
    }
    if let Some(status) = config.always
        && !(100..=599).contains(&status)
    {
        return Err(ApiError::BadRequest(format!(
            "always must be an HTTP status, got {status}"
        )));
    }
    sim.lock().merchants.by_name.entry(name).or_default().config = config;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/merchants/{name}`.
pub async fn get(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
) -> Result<Json<MerchantRecord>, ApiError> {
    let state = sim.lock();
    let merchant = state
        .merchants
        .by_name
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no merchant {name}")))?;
    Ok(Json(merchant.record.clone()))
}

/// `POST /merchant/v1/{name}/events`.
pub async fn receive(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let mut state = sim.lock();
    let merchant = state
        .merchants
        .by_name
        .get_mut(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no merchant {name}")))?;
    let signature_valid = verify(
        merchant.config.secret.as_bytes(),
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        unix_millis() / 1000,
        DEFAULT_TOLERANCE_SECS,
    )
    .is_ok();
    let event: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let event_id = header(EVENT_ID_HEADER).unwrap_or_default().to_string();
    let body_id = event
        .as_ref()
        .and_then(|e| e.get("id"))
        .and_then(|v| v.as_str());
    let status = if !signature_valid || event.is_none() || body_id != Some(event_id.as_str()) {
        StatusCode::BAD_REQUEST
    } else if merchant.config.fail_first > 0 {
        merchant.config.fail_first -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else if let Some(always) = merchant.config.always {
        StatusCode::from_u16(always).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        StatusCode::OK
    };
    merchant.record.receipts.push(MerchantReceipt {
        event_id: event_id.clone(),
        signature_valid,
        status: status.as_u16(),
        at_ms: unix_millis(),
    });
    if status.is_success() {
        if merchant.accepted.insert(event_id) {
            merchant.record.events.extend(event);
        } else {
            merchant.record.duplicates += 1;
        }
    }
    tracing::info!(merchant = %name, status = status.as_u16(), signature_valid, "webhook received");
    Ok(status)
}

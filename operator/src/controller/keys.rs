//! The records of deleted Payments' Idempotency-Keys
//! ([`paysaga_api::idempotency`]): written by [`super::act`] before a keyed
//! Payment is let go, swept here once their `expiresAt` has passed. Only the
//! leader sweeps; a sweep that fails is tried again at the next one.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt};
use paysaga_api::idempotency::IdempotencyKey;

/// Sweeps every `every` until dropped (abort the task to stop).
pub async fn sweep_forever(client: Client, every: Duration) {
    loop {
        match sweep(&client, Timestamp::now()).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "expired Idempotency-Key records deleted"),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?every, "sweeping expired Idempotency-Key records failed")
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Deletes the records that expired before `now`, in every namespace; how
/// many. Each delete is preconditioned on the uid listed.
pub async fn sweep(client: &Client, now: Timestamp) -> kube::Result<usize> {
    let keys: Api<IdempotencyKey> = Api::all(client.clone());
    let mut swept = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = keys.list(&params).await?;
        for key in &page.items {
            if key.spec.expires_at.0 > now {
                continue;
            }
            let ns: Api<IdempotencyKey> =
                Api::namespaced(client.clone(), &key.namespace().unwrap_or_default());
            let precondition = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: key.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match ns.delete(&key.name_any(), &precondition).await {
                Ok(_) => swept += 1,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(swept),
        }
    }
}

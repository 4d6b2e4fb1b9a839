//! Leader election on a Lease, so that several replicas are safe: only the
//! leader reconciles. When it stops, it releases the Lease and another
//! replica takes over at once, mid-saga included (a second start of a
//! workflow is refused by Temporal). A leader that loses its Lease stops
//! and exits, so that it starts again as a follower.

use std::future::Future;
use std::time::Duration;

use kube::Client;

/// Which Lease, and how long it lasts without renewal.
#[derive(Debug, Clone)]
pub struct Lease {
    pub name: String,
    pub namespace: String,
    pub duration_secs: u64,
}

/// Completes when the controller is to stop.
pub type Stop = Box<dyn Future<Output = ()> + Send + Sync + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to set up the Lease: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("the Lease's watch stopped: {0}")]
    Watch(#[from] tokio::sync::watch::error::RecvError),
    #[error("lost the lease; exiting so that a fresh start waits to lead again")]
    Lost,
}

/// Waits to lead (or for `shutdown`), then runs `lead`, giving it a future
/// that completes when the Lease is lost or `shutdown` comes; then releases
/// the Lease. [`Error::Lost`] when it was lost.
pub async fn while_leading<Lead, Led>(
    kube: Client,
    lease: &Lease,
    identity: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    lead: Lead,
) -> Result<(), Error>
where
    Lead: FnOnce(Stop) -> Led,
    Led: Future<Output = ()>,
{
    let manager = kube_lease_manager::LeaseManagerBuilder::new(kube, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(identity)
        .with_duration(lease.duration_secs)
        .with_grace((lease.duration_secs / 3).max(1))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(lease = %lease.name, %identity, "waiting to lead");
    let mut signal = Box::pin(shutdown);
    while !*leader.borrow_and_update() {
        tokio::select! {
            changed = leader.changed() => changed?,
            _ = &mut signal => {
                tracing::info!("stopped before leading");
                return Ok(());
            }
        }
    }
    tracing::info!(%identity, "leading: reconciling payments");
    // Stops leading on a shutdown signal (false) or a lost Lease (true).
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut watch_leader = leader.clone();
    tokio::spawn(async move {
        let lost = tokio::select! {
            _ = signal => false,
            _ = async { while watch_leader.changed().await.is_ok() && *watch_leader.borrow() {} } => true,
        };
        let _ = lost_tx.send(lost);
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let lost = tokio::spawn(async move {
        let lost = lost_rx.await.unwrap_or(false);
        let _ = stop_tx.send(());
        lost
    });
    lead(Box::new(Box::pin(async {
        let _ = stop_rx.await;
    })))
    .await;
    // Release the Lease so another replica takes over at once.
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    if lost.await.unwrap_or(false) {
        return Err(Error::Lost);
    }
    Ok(())
}

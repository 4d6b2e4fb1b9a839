//! Persistent volumes for the one-node cluster: a claim of StorageClass
//! `local` gets a `local` PersistentVolume, a directory in the node's folder;
//! a released one is removed with its directory.
//!
//! kind ships rancher's local-path-provisioner, which makes directories with
//! helper pods from an image off a registry; the kube-controller-manager's
//! own hostPath provisioner makes them root-only (0750), which the chart's
//! non-root PostgreSQL and Temporal cannot write. A `local` volume gets the
//! pod's `fsGroup`, as on a real cluster's disks. The provisioner lives in the
//! process that owns the node and asks the API server once a second: a
//! handful of claims, no watch needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::config::NODE_NAME;

pub const STORAGE_CLASS: &str = "local";
pub const PROVISIONER: &str = "paysaga.dev/local";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The running provisioner; stops when dropped.
pub struct Provisioner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Provisioner {
    pub fn start(kubeconfig: &Path, volumes: &Path) -> Result<Provisioner> {
        std::fs::create_dir_all(volumes)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, volumes, flag) = (
            kubeconfig.to_path_buf(),
            volumes.to_path_buf(),
            stop.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("provisioner".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the provisioner");
                rt.block_on(async move {
                    let client = loop {
                        match crate::kube::client_for(&kubeconfig).await {
                            Ok(c) => break c,
                            Err(e) if flag.load(Ordering::Relaxed) => {
                                eprintln!("provisioner: no client: {e:#}");
                                return;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                        }
                    };
                    while !flag.load(Ordering::Relaxed) {
                        if let Err(e) = pass(&client, &volumes).await {
                            eprintln!("provisioner: {e:#}");
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
            })?;
        Ok(Provisioner {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One look: provision what waits, remove what was released.
async fn pass(client: &kube::Client, volumes: &Path) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for claim in claims.list(&ListParams::default()).await? {
        if let Some(pv) = volume_for(&claim, volumes) {
            let dir = local_path(&pv).expect("volume_for sets a local path");
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            match pvs.create(&PostParams::default(), &pv).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("creating a PersistentVolume"),
            }
        }
    }
    for pv in pvs.list(&ListParams::default()).await? {
        if is_released(&pv) {
            if let Some(dir) = local_path(&pv)
                && dir.starts_with(volumes)
            {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let name = pv.metadata.name.clone().unwrap_or_default();
            match pvs.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {name}")),
            }
        }
    }
    Ok(())
}

/// The volume a claim waits for: a claim of our class, not bound yet, whose
/// pod the scheduler placed (binding waits for the first consumer).
/// No client required.
pub fn volume_for(claim: &PersistentVolumeClaim, volumes: &Path) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    let annotations = claim.metadata.annotations.clone().unwrap_or_default();
    if spec.storage_class_name.as_deref() != Some(STORAGE_CLASS)
        || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
        || !annotations.contains_key(SELECTED_NODE)
    {
        return None;
    }
    let uid = claim.metadata.uid.clone()?;
    let name = format!("pvc-{uid}");
    let capacity = spec.resources.as_ref()?.requests.clone()?;
    let path = volumes.join(&name);
    let pv = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": capacity.get("storage")?},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": uid,
            },
            "local": {"path": path},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
            ]}]}},
        },
    });
    serde_json::from_value(pv).ok()
}

fn is_released(pv: &PersistentVolume) -> bool {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER);
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    ours && matches!(phase, Some("Released") | Some("Failed"))
}

fn local_path(pv: &PersistentVolume) -> Option<PathBuf> {
    Some(PathBuf::from(&pv.spec.as_ref()?.local.as_ref()?.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(class: &str, selected: bool, bound: bool) -> PersistentVolumeClaim {
        let mut annotations = serde_json::Map::new();
        if selected {
            annotations.insert(SELECTED_NODE.into(), NODE_NAME.into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "u-1", "annotations": annotations},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": if bound { "pvc-u-1" } else { "" },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_placed_claim_of_our_class_gets_a_local_volume_bound_to_it() {
        let pv = volume_for(&claim(STORAGE_CLASS, true, false), Path::new("/v")).unwrap();
        let spec = pv.spec.unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        assert_eq!(spec.local.unwrap().path, "/v/pvc-u-1");
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u-1"));
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
    }

    #[test]
    fn other_claims_are_left_alone() {
        let v = Path::new("/v");
        assert!(
            volume_for(&claim("standard", true, false), v).is_none(),
            "another class"
        );
        assert!(
            volume_for(&claim(STORAGE_CLASS, false, false), v).is_none(),
            "not placed yet"
        );
        assert!(
            volume_for(&claim(STORAGE_CLASS, true, true), v).is_none(),
            "already bound"
        );
    }
}

//! Replay of recorded histories: the workflow code of today must take the
//! same path as the code that recorded them (`worker/tests/histories/`,
//! recorded by `make record-histories` before each logic change).

use std::path::PathBuf;

use temporalio_client::WorkflowHistory;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};

use crate::workflows::{
    FraudCheckWorkflow, PATCH_HUMAN_IN_THE_LOOP, PATCH_LOCAL_ACTIVITIES, PATCH_LOCAL_FRAUD_SCORE,
    PATCH_MATCHING_CONFIRMATION, PATCH_PROGRESS_MEMO, PATCH_RECORD_ACCEPTED, PaymentWorkflow,
};

/// The data converter deployments run with (payload encryption): the
/// recorded histories were written in plaintext before it, and must replay
/// through it (it passes unencrypted payloads through).
fn encrypting() -> temporalio_common::data_converters::DataConverter {
    let keys = paysaga_common::codec::random_keyring_json("k1", &["k1"]);
    paysaga_common::codec::Keyring::parse(&keys, std::path::Path::new("replay-test"))
        .map(paysaga_common::codec::EncryptionCodec::new)
        .expect("a keyring")
        .data_converter()
}

/// The marker `patched()` records.
const PATCH_MARKER: &str = "core_patch";

fn histories(prefix: &str) -> Vec<(String, WorkflowHistory)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading tests/histories")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
        })
        .collect();
    found.sort();
    assert!(
        !found.is_empty(),
        "no {prefix}* histories in {}",
        dir.display()
    );
    found
        .into_iter()
        .map(|p| {
            let json = std::fs::read(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                WorkflowHistory::from_json(&json).expect("a recorded history"),
            )
        })
        .collect()
}

/// Histories of every version (v1: before `record-accepted`, v2: with it,
/// v3: with `progress-memo`, v4: with `human-in-the-loop`, its review,
/// recovery and expedite paths among them, v5: with `matching-confirmation`,
/// v6: with `local-activities`, recorded encrypted and saved decrypted).
#[tokio::test]
async fn recorded_histories_of_every_version_replay_on_todays_code() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .data_converter(encrypting())
            .register_workflow::<PaymentWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    let all = histories("v");
    for version in ["v1-", "v2-", "v3-", "v4-", "v5-", "v6-"] {
        assert!(
            all.iter().any(|(n, _)| n.starts_with(version)),
            "no {version} histories"
        );
    }
    for (name, history) in all {
        if let Err(e) = replayer.replay_workflow(history).await {
            panic!("{name} does not replay: {e}");
        }
    }
}

/// The patch IDs a history's markers carry, in order.
fn patches(history: &History) -> Vec<String> {
    history
        .events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::MarkerRecordedEventAttributes(m)) if m.marker_name == PATCH_MARKER => {
                m.details.get("patch-data")?.payloads.first()
            }
            _ => None,
        })
        .filter_map(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

fn recorded(name: &str) -> History {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/histories/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).expect("a recorded history")
}

/// Each versioned change is taken on replay exactly where its history's
/// `patched()` marker says it was taken when recorded: histories recorded
/// before a change carry no marker of it and replay on today's code (above),
/// and a history that took a change, with that change's marker renamed, no
/// longer replays — today's code, told the change was not taken, issues
/// other commands than the history holds. Without the guard the change
/// would run regardless of the marker, and the older histories would fail
/// the same way.
#[tokio::test]
async fn each_change_is_taken_only_where_its_marker_says() {
    for (version, before) in [
        ("v1", vec![]),
        ("v2", vec![PATCH_RECORD_ACCEPTED]),
        ("v3", vec![PATCH_RECORD_ACCEPTED, PATCH_PROGRESS_MEMO]),
        // One marker stands for all the patches before it.
        ("v6", vec![PATCH_LOCAL_ACTIVITIES]),
    ] {
        for (name, _) in histories(&format!("{version}-")) {
            assert_eq!(patches(&recorded(&name)), before, "{name}");
        }
    }
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .data_converter(encrypting())
            .register_workflow::<PaymentWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    for (name, patch) in [
        ("v2-succeeded", PATCH_RECORD_ACCEPTED),
        ("v3-succeeded", PATCH_RECORD_ACCEPTED),
        ("v3-succeeded", PATCH_PROGRESS_MEMO),
        ("v4-succeeded", PATCH_HUMAN_IN_THE_LOOP),
        ("v4-review-approved", PATCH_HUMAN_IN_THE_LOOP),
        ("v5-confirmation-mismatch", PATCH_MATCHING_CONFIRMATION),
        ("v6-succeeded", PATCH_LOCAL_ACTIVITIES),
        ("v6-review-approved", PATCH_LOCAL_ACTIVITIES),
    ] {
        let history = without_marker(recorded(name), patch, name);
        nondeterministic(&replayer, history, name, patch).await;
    }
}

/// The history with its `patch` marker renamed (it must have one).
fn without_marker(mut history: History, patch: &str, name: &str) -> History {
    assert!(
        patches(&history).contains(&patch.to_string()),
        "{name}: {patch}"
    );
    for e in history.events.iter_mut() {
        if let Some(Attributes::MarkerRecordedEventAttributes(m)) = &mut e.attributes
            && let Some(data) = m.details.get_mut("patch-data")
        {
            for p in data.payloads.iter_mut() {
                if serde_json::from_slice::<serde_json::Value>(&p.data)
                    .is_ok_and(|v| v["id"] == patch)
                {
                    p.data = serde_json::to_vec(
                        &serde_json::json!({"id": "renamed", "deprecated": false}),
                    )
                    .unwrap();
                }
            }
        }
    }
    history
}

async fn nondeterministic(replayer: &WorkflowReplayer, history: History, name: &str, patch: &str) {
    match replayer
        .replay_workflow(WorkflowHistory::from(history))
        .await
    {
        Err(WorkflowReplayError::Replay(WorkflowReplayFailure::Nondeterminism { message })) => {
            assert!(!message.is_empty(), "{name}: {patch}");
        }
        other => {
            panic!("{name} without its {patch} marker: expected nondeterminism, got {other:?}")
        }
    }
}

/// The fraud checks recorded since v6 (the score a local activity) replay;
/// without their `local-fraud-score` marker they do not.
#[tokio::test]
async fn recorded_fraud_checks_replay_and_need_their_marker() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .data_converter(encrypting())
            .register_workflow::<FraudCheckWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    let all = histories("fraud-v");
    assert!(all.iter().any(|(n, _)| n.starts_with("fraud-v6-")));
    for (name, history) in all {
        if let Err(e) = replayer.replay_workflow(history).await {
            panic!("{name} does not replay: {e}");
        }
    }
    let name = "fraud-v6-succeeded";
    let history = without_marker(recorded(name), PATCH_LOCAL_FRAUD_SCORE, name);
    nondeterministic(&replayer, history, name, PATCH_LOCAL_FRAUD_SCORE).await;
}

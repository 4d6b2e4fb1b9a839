//! The Go SDK peer `make perf` sets beside paysaga's worker: built from
//! `bench/go-peer` with the machine's Go, run against the real Temporal
//! server, its synthetic payments succeed, and their histories have exactly
//! the shape of paysaga's newest recorded succeeded payment and fraud check,
//! event type for event type (so "the same shape" stays true when the saga
//! changes: this test then fails until the peer follows).

use std::path::PathBuf;

use paysaga_testenv::go_peer::{self, GoPeer, SyntheticInput};
use paysaga_testenv::{run_dir, temporal, unique_name, workspace_root};
use temporalio_client::{Client, UntypedWorkflow, WorkflowFetchHistoryOptions};

/// The newest recorded history named `<prefix>v<N>-succeeded.json`.
fn newest_recorded(prefix: &str) -> PathBuf {
    let dir = workspace_root().join("worker/tests/histories");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .expect("the recorded histories")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name
                .strip_prefix(&format!("{prefix}v"))?
                .strip_suffix("-succeeded.json")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.pop().expect("a recorded succeeded history").1
}

/// The event types of a recorded history, in order.
fn recorded_types(path: &PathBuf) -> Vec<i32> {
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("JSON");
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_i64().expect("event_type") as i32)
        .collect()
}

async fn types_of(client: &Client, workflow_id: &str) -> Vec<i32> {
    client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string())
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .expect("the history")
        .iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_peer_runs_paysagas_saga_shape_event_for_event() {
    let _logs = paysaga_testenv::logs_on_failure();
    let temporal = temporal();
    let _peer = tokio::task::block_in_place(|| GoPeer::start(&run_dir().join("go-peer"), temporal))
        .expect("the Go peer");
    {
        let client = paysaga_common::temporal::connect(
            &paysaga_common::temporal::TemporalOpts {
                temporal_address: temporal.address.clone(),
                temporal_namespace: temporal.namespace.clone(),
                codec_keys_file: None,
            },
            "go-peer-test",
        )
        .await
        .expect("a client");
        let ids: Vec<String> = (0..3).map(|_| unique_name("synthetic")).collect();
        let runs = ids.iter().enumerate().map(|(i, id)| {
            let client = client.clone();
            async move {
                let input = SyntheticInput::new(id, 100 + i as i64, 300);
                let outcome = paysaga_bench::run_workflow(
                    &client,
                    go_peer::TASK_QUEUE,
                    go_peer::PAYMENT_WORKFLOW,
                    id,
                    &input,
                )
                .await
                .expect("a synthetic payment's result");
                (id.clone(), outcome)
            }
        });
        for (id, outcome) in futures::future::join_all(runs).await {
            assert_eq!(outcome["phase"], "Succeeded", "{id}: {outcome}");
            assert_eq!(outcome["chargeId"], format!("ch-{id}"), "{id}: {outcome}");
        }

        let payment = newest_recorded("");
        let fraud = newest_recorded("fraud-");
        assert_eq!(
            types_of(&client, &ids[0]).await,
            recorded_types(&payment),
            "the peer's payment has the event types of {}",
            payment.display()
        );
        assert_eq!(
            types_of(&client, &go_peer::fraud_workflow_id(&ids[0])).await,
            recorded_types(&fraud),
            "the peer's fraud check has the event types of {}",
            fraud.display()
        );
    }
}

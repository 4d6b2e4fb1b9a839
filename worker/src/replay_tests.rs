//! Replay of recorded histories: the workflow code of today must take the
//! same path as the code that recorded them (`worker/tests/histories/`,
//! recorded by `make record-histories` before each logic change).

use std::path::PathBuf;

use paysaga_api::external::GatewayCallback;
use paysaga_api::saga::{CancelRequest, PaymentInput, PaymentOutcome, PaymentProgress};
use temporalio_client::WorkflowHistory;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::workflows::{PaymentWorkflow, SagaHost, SagaState, run_saga};

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
/// recovery and expedite paths among them).
#[tokio::test]
async fn recorded_histories_of_every_version_replay_on_todays_code() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<PaymentWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    let all = histories("v");
    for version in ["v1-", "v2-", "v3-", "v4-"] {
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

/// Today's saga with its versioned change applied unconditionally, i.e.
/// without `patched()`: what a careless change would have shipped.
#[workflow]
#[derive(Default)]
struct UnguardedPaymentWorkflow {
    state: SagaState,
    payment_id: String,
}

impl SagaHost for UnguardedPaymentWorkflow {
    fn saga(&self) -> &SagaState {
        &self.state
    }
    fn saga_mut(&mut self) -> &mut SagaState {
        &mut self.state
    }
    fn set_payment_id(&mut self, id: &str) {
        self.payment_id = id.to_string();
    }
    const GUARD_PATCHES: bool = false;
}

#[workflow_methods]
impl UnguardedPaymentWorkflow {
    #[run(name = paysaga_api::saga::PAYMENT_WORKFLOW)]
    async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: PaymentInput,
    ) -> WorkflowResult<PaymentOutcome> {
        run_saga(ctx, &input).await
    }

    #[signal(name = paysaga_api::saga::SIGNAL_GATEWAY_CALLBACK)]
    fn gateway_callback(&mut self, _ctx: &mut SyncWorkflowContext<Self>, cb: GatewayCallback) {
        let id = self.payment_id.clone();
        self.state.accept_callback(&id, cb);
    }

    #[signal(name = paysaga_api::saga::SIGNAL_CANCEL)]
    fn cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, req: CancelRequest) {
        self.state.request_cancel(req);
    }

    #[query(name = paysaga_api::saga::QUERY_STATUS)]
    fn status(&self, _ctx: &WorkflowContextView) -> PaymentProgress {
        self.state.progress()
    }
}

#[tokio::test]
async fn the_same_change_without_patched_is_caught_as_nondeterminism() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<UnguardedPaymentWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    // Each older version lacks at least one change made since.
    let older = histories("v1-")
        .into_iter()
        .chain(histories("v2-"))
        .chain(histories("v3-"));
    for (name, history) in older {
        match replayer.replay_workflow(history).await {
            Err(WorkflowReplayError::Replay(WorkflowReplayFailure::Nondeterminism { message })) => {
                assert!(!message.is_empty(), "{name}");
            }
            other => panic!("{name}: expected nondeterminism, got {other:?}"),
        }
    }
}

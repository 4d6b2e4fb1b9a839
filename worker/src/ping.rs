//! `PingWorkflow`: the smallest workflow that proves the whole path works
//! (client → server → worker → activity → result). The payment saga replaces
//! it as the worker's purpose; it stays as a diagnostic.

use std::time::Duration;

use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, WorkflowContext, WorkflowResult,
    activities::{ActivityContext, ActivityError},
};

#[workflow]
#[derive(Default)]
pub struct PingWorkflow;

#[workflow_methods]
impl PingWorkflow {
    /// Answers `pong: <input>` by way of an activity.
    #[run(name = "PingWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: String) -> WorkflowResult<String> {
        let answer = ctx
            .execute_activity(
                PingActivities::pong,
                input,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
            )
            .await?;
        Ok(answer)
    }
}

pub struct PingActivities;

#[activities]
impl PingActivities {
    #[activity(name = "pong")]
    pub async fn pong(_ctx: ActivityContext, input: String) -> Result<String, ActivityError> {
        Ok(format!("pong: {input}"))
    }
}

//! The operator's view of RecurringPayments' Temporal Schedules: create,
//! describe, update, delete, list — by ID, without the worker crate.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use paysaga_api::recurring::{OverlapPolicy, RECURRING_FIRE_WORKFLOW, RecurringFire};
use temporalio_client::schedules::{
    CreateScheduleOptions, DeleteScheduleOptions, ListSchedulesOptions, PauseScheduleOptions,
    ScheduleAction, ScheduleDescriptionAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_client::{Client, RpcOptions, UntypedWorkflow};
use temporalio_common::data_converters::{PayloadConverter, RawValue};

/// What a Schedule should be, from a RecurringPayment's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub cron: Option<String>,
    pub every: Option<Duration>,
    pub time_zone: Option<String>,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    /// Firings left (`None`: no limit).
    pub remaining: Option<i64>,
    pub paused: bool,
    pub overlap: OverlapPolicy,
    pub catchup: Duration,
    /// The action's fixed argument.
    pub fire: RecurringFire,
    pub task_queue: String,
}

impl Desired {
    fn spec(&self) -> ScheduleSpec {
        ScheduleSpec::builder()
            .cron_strings(self.cron.iter().cloned().collect())
            .intervals(self.every.iter().map(|d| (*d).into()).collect())
            .timezone_name(self.time_zone.clone().unwrap_or_default())
            .maybe_start_time(self.start)
            .maybe_end_time(self.end)
            .build()
    }

    fn overlap(&self) -> ScheduleOverlapPolicy {
        match self.overlap {
            OverlapPolicy::Skip => ScheduleOverlapPolicy::Skip,
            OverlapPolicy::BufferOne => ScheduleOverlapPolicy::BufferOne,
            OverlapPolicy::AllowAll => ScheduleOverlapPolicy::AllowAll,
        }
    }
}

/// A Schedule as `describe` tells it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Described {
    pub paused: bool,
    /// Firings left, when limited.
    pub remaining: Option<i64>,
    pub future: Vec<SystemTime>,
    pub actions: i64,
    pub overlap_skipped: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleFailure {
    /// Temporal refused the schedule as given (e.g. a cron value out of
    /// range, an unknown time zone): no retry helps.
    #[error("{0}")]
    Refused(String),
    #[error("schedule {id}: {source}")]
    Temporal {
        id: String,
        #[source]
        source: ScheduleError,
    },
}

fn code(e: &ScheduleError) -> Option<tonic::Code> {
    match e {
        ScheduleError::Rpc(s) => Some(s.code()),
        _ => None,
    }
}

fn failure(id: &str, source: ScheduleError) -> ScheduleFailure {
    match &source {
        ScheduleError::Rpc(s) if s.code() == tonic::Code::InvalidArgument => {
            ScheduleFailure::Refused(s.message().to_string())
        }
        _ => ScheduleFailure::Temporal {
            id: id.to_string(),
            source,
        },
    }
}

/// The Schedules, addressed by ID.
#[derive(Clone)]
pub struct Schedules {
    client: Client,
}

impl Schedules {
    pub fn new(client: Client) -> Self {
        Schedules { client }
    }

    /// The Schedule, or `None` when there is none.
    pub async fn describe(&self, id: &str) -> Result<Option<Described>, ScheduleFailure> {
        let d = match self
            .client
            .get_schedule_handle(id)
            .describe(RpcOptions::default())
            .await
        {
            Ok(d) => d,
            Err(e) if code(&e) == Some(tonic::Code::NotFound) => return Ok(None),
            Err(e) => return Err(failure(id, e)),
        };
        let state = d.raw().schedule.as_ref().and_then(|s| s.state.as_ref());
        Ok(Some(Described {
            paused: d.paused(),
            remaining: state
                .filter(|s| s.limited_actions)
                .map(|s| s.remaining_actions),
            future: d.future_action_times(),
            actions: d.action_count(),
            overlap_skipped: d.overlap_skipped(),
        }))
    }

    /// Creates the Schedule (paused, then brought to `desired` by
    /// [`Self::update`], which also sets what creation cannot). `false`
    /// when it existed already.
    pub async fn create(&self, id: &str, desired: &Desired) -> Result<bool, ScheduleFailure> {
        let arg = RawValue::from_value(&desired.fire, &PayloadConverter::default());
        let action = ScheduleAction::start_workflow(
            UntypedWorkflow::new(RECURRING_FIRE_WORKFLOW),
            arg,
            desired.task_queue.clone(),
            id.to_string(),
        );
        let options = CreateScheduleOptions::builder()
            .action(action)
            .spec(desired.spec())
            .overlap_policy(desired.overlap())
            .paused(true)
            .note("paysaga: being configured")
            .build();
        let created = match self.client.create_schedule(id, options).await {
            Ok(_) => true,
            Err(e) if code(&e) == Some(tonic::Code::AlreadyExists) => false,
            Err(e) => return Err(failure(id, e)),
        };
        self.update(id, desired).await?;
        Ok(created)
    }

    /// Brings the Schedule to `desired`: when, how many, paused, overlap,
    /// catch-up.
    pub async fn update(&self, id: &str, desired: &Desired) -> Result<(), ScheduleFailure> {
        let d = desired.clone();
        self.client
            .get_schedule_handle(id)
            .update(
                move |u| {
                    u.set_spec(d.spec())
                        .set_remaining_actions(d.remaining)
                        .set_paused(d.paused)
                        .set_note(if d.paused {
                            "suspended (spec.suspend)"
                        } else {
                            ""
                        })
                        .set_overlap_policy(d.overlap())
                        .set_catchup_window(d.catchup);
                },
                RpcOptions::default(),
            )
            .await
            .map_err(|e| failure(id, e))
    }

    /// Pauses the Schedule, saying why.
    pub async fn pause(&self, id: &str, why: &str) -> Result<(), ScheduleFailure> {
        self.client
            .get_schedule_handle(id)
            .pause(Some(why.to_string()), PauseScheduleOptions::default())
            .await
            .map_err(|e| failure(id, e))
    }

    /// The RecurringPayment a Schedule fires for, read from its action: `None`
    /// when it is gone or is not a paysaga firing (another application's
    /// Schedule that happens to share the prefix).
    pub async fn fires_for(&self, id: &str) -> Result<Option<RecurringFire>, ScheduleFailure> {
        let d = match self
            .client
            .get_schedule_handle(id)
            .describe(RpcOptions::default())
            .await
        {
            Ok(d) => d,
            Err(e) if code(&e) == Some(tonic::Code::NotFound) => return Ok(None),
            Err(e) => return Err(failure(id, e)),
        };
        let action = match d.action() {
            ScheduleDescriptionAction::StartWorkflow(a)
                if a.workflow_type() == RECURRING_FIRE_WORKFLOW =>
            {
                a
            }
            _ => return Ok(None),
        };
        Ok(action
            .raw_args()
            .and_then(|p| p.first())
            .and_then(|p| serde_json::from_slice(&p.data).ok()))
    }

    /// Deletes the Schedule; one already gone is fine.
    pub async fn delete(&self, id: &str) -> Result<(), ScheduleFailure> {
        match self
            .client
            .get_schedule_handle(id)
            .delete(DeleteScheduleOptions::default())
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(tonic::Code::NotFound) => Ok(()),
            Err(e) => Err(failure(id, e)),
        }
    }

    /// The IDs of every Schedule whose ID starts with `prefix`.
    pub async fn ids(&self, prefix: &str) -> Result<Vec<String>, ScheduleFailure> {
        let mut stream = self.client.list_schedules(ListSchedulesOptions::default());
        let mut ids = Vec::new();
        while let Some(s) = stream.next().await {
            let s = s.map_err(|e| failure(prefix, e))?;
            if s.schedule_id().starts_with(prefix) {
                ids.push(s.schedule_id().to_string());
            }
        }
        Ok(ids)
    }
}

//! A workflow's history, folded into what the controller shows of it:
//! its run, its progress as published in the memo, its outcome once closed.
//! No client required: the follower ([`super::Follower`]) brings the pages.

use std::time::SystemTime;

use paysaga_api::saga::{PROGRESS_MEMO, PaymentOutcome, PaymentProgress};
use temporalio_client::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::common::v1::Payload;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::temporal::Observation;

/// What the history told of one workflow so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Followed {
    pub run_id: Option<String>,
    pub started_at: Option<SystemTime>,
    /// The newest progress the workflow published in its memo.
    pub progress: Option<PaymentProgress>,
    pub closed: Option<ClosedRun>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClosedRun {
    pub at: Option<SystemTime>,
    pub status: WorkflowExecutionStatus,
    pub outcome: Option<PaymentOutcome>,
}

fn event_time(e: &HistoryEvent) -> Option<SystemTime> {
    e.event_time.and_then(|t| SystemTime::try_from(t).ok())
}

fn decode<T: serde::de::DeserializeOwned>(p: &Payload) -> Option<T> {
    serde_json::from_slice(&p.data).ok()
}

/// What a page of events changed.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Changed {
    /// The run's start was seen: what to observe is known.
    pub started: bool,
    /// When the newest progress was published.
    pub progress: Option<SystemTime>,
    /// When the run closed.
    pub closed: Option<SystemTime>,
}

impl Changed {
    pub fn any(&self) -> bool {
        self.started || self.progress.is_some() || self.closed.is_some()
    }
}

impl Followed {
    /// Folds a page of events in (a page seen twice changes nothing the
    /// second time) and says what changed, and when: at each event's time,
    /// or `received` (when the page came) for an event without one. Pure.
    pub fn fold(&mut self, events: &[HistoryEvent], received: SystemTime) -> Changed {
        let mut changed = Changed::default();
        for e in events {
            let now = || event_time(e).or(Some(received));
            if self.closed.is_some() {
                break;
            }
            let closed = |status, outcome| ClosedRun {
                at: event_time(e),
                status,
                outcome,
            };
            match &e.attributes {
                Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                    if self.run_id.is_none() {
                        changed.started = true;
                    }
                    self.run_id = Some(a.original_execution_run_id.clone());
                    self.started_at = event_time(e);
                    continue;
                }
                Some(Attributes::WorkflowPropertiesModifiedEventAttributes(a)) => {
                    let Some(progress) = a
                        .upserted_memo
                        .as_ref()
                        .and_then(|m| m.fields.get(PROGRESS_MEMO))
                        .and_then(decode::<PaymentProgress>)
                    else {
                        continue;
                    };
                    if self.progress.as_ref() != Some(&progress) {
                        self.progress = Some(progress);
                        changed.progress = now();
                    }
                    continue;
                }
                Some(Attributes::WorkflowExecutionCompletedEventAttributes(a)) => {
                    let outcome = a
                        .result
                        .as_ref()
                        .and_then(|r| r.payloads.first())
                        .and_then(decode::<PaymentOutcome>);
                    self.closed = Some(closed(WorkflowExecutionStatus::Completed, outcome));
                }
                Some(Attributes::WorkflowExecutionFailedEventAttributes(_)) => {
                    self.closed = Some(closed(WorkflowExecutionStatus::Failed, None));
                }
                Some(Attributes::WorkflowExecutionTimedOutEventAttributes(_)) => {
                    self.closed = Some(closed(WorkflowExecutionStatus::TimedOut, None));
                }
                Some(Attributes::WorkflowExecutionTerminatedEventAttributes(_)) => {
                    self.closed = Some(closed(WorkflowExecutionStatus::Terminated, None));
                }
                Some(Attributes::WorkflowExecutionCanceledEventAttributes(_)) => {
                    self.closed = Some(closed(WorkflowExecutionStatus::Canceled, None));
                }
                Some(Attributes::WorkflowExecutionContinuedAsNewEventAttributes(_)) => {
                    self.closed = Some(closed(WorkflowExecutionStatus::ContinuedAsNew, None));
                }
                _ => continue,
            }
            changed.closed = now();
        }
        changed
    }

    /// The workflow as the reconciler sees it, once its start is known.
    pub fn observation(&self) -> Option<Observation> {
        let run_id = self.run_id.clone()?;
        Some(match &self.closed {
            Some(c) => Observation::Closed {
                run_id,
                started_at: self.started_at,
                closed_at: c.at,
                status: c.status,
                outcome: c.outcome.clone(),
            },
            None => Observation::Running {
                run_id,
                started_at: self.started_at,
                progress: self.progress.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paysaga_api::saga::{StepEvent, StepRecord};
    use paysaga_api::{Phase, Step};
    use std::time::Duration;
    use temporalio_common::protos::temporal::api::common::v1::{Memo, Payloads};
    use temporalio_common::protos::temporal::api::history::v1::{
        WorkflowExecutionCompletedEventAttributes, WorkflowExecutionStartedEventAttributes,
        WorkflowExecutionTerminatedEventAttributes, WorkflowPropertiesModifiedEventAttributes,
    };

    fn event(ms: u64, attributes: Attributes) -> HistoryEvent {
        HistoryEvent {
            event_time: Some((SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).into()),
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    fn json<T: serde::Serialize>(v: &T) -> Payload {
        Payload {
            data: serde_json::to_vec(v).unwrap(),
            ..Default::default()
        }
    }

    fn started(ms: u64) -> HistoryEvent {
        event(
            ms,
            Attributes::WorkflowExecutionStartedEventAttributes(
                WorkflowExecutionStartedEventAttributes {
                    original_execution_run_id: "run-1".into(),
                    ..Default::default()
                },
            ),
        )
    }

    fn progress(step: Step) -> PaymentProgress {
        PaymentProgress {
            phase: Phase::Processing,
            step,
            reason: None,
            message: None,
            history: vec![StepRecord {
                step,
                event: StepEvent::Started,
                at_ms: 5,
                detail: None,
            }],
            review: None,
            ignored_callbacks: Vec::new(),
        }
    }

    fn memo(ms: u64, key: &str, p: &PaymentProgress) -> HistoryEvent {
        event(
            ms,
            Attributes::WorkflowPropertiesModifiedEventAttributes(
                WorkflowPropertiesModifiedEventAttributes {
                    upserted_memo: Some(Memo {
                        fields: [(key.to_string(), json(p))].into(),
                    }),
                    ..Default::default()
                },
            ),
        )
    }

    /// When the pages of these tests come.
    fn received() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(9_000)
    }

    fn fold(f: &mut Followed, events: &[HistoryEvent]) -> Changed {
        f.fold(events, received())
    }

    fn ms(t: SystemTime) -> u128 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    #[test]
    fn nothing_is_observed_before_the_start_event() {
        let mut f = Followed::default();
        assert!(!fold(&mut f, &[]).any());
        assert_eq!(f.observation(), None);
    }

    #[test]
    fn the_newest_published_progress_is_what_runs() {
        let mut f = Followed::default();
        let changed = fold(
            &mut f,
            &[
                started(1000),
                memo(1100, PROGRESS_MEMO, &progress(Step::ValidateAccount)),
                HistoryEvent::default(), // e.g. a workflow task: not a change
                memo(1200, PROGRESS_MEMO, &progress(Step::Debit)),
            ],
        );
        assert!(changed.started && changed.closed.is_none());
        assert_eq!(changed.progress.map(ms), Some(1200));
        // The same page again (the two polls overlap): nothing new.
        let again = fold(&mut f, &[memo(1200, PROGRESS_MEMO, &progress(Step::Debit))]);
        assert!(!again.any());
        match f.observation() {
            Some(Observation::Running {
                run_id,
                started_at,
                progress: Some(p),
            }) => {
                assert_eq!(run_id, "run-1");
                assert_eq!(started_at.map(ms), Some(1000));
                assert_eq!(p.step, Step::Debit);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_change_without_an_event_time_is_dated_when_its_page_came() {
        let mut f = Followed::default();
        let mut update = memo(0, PROGRESS_MEMO, &progress(Step::Charge));
        update.event_time = None;
        let changed = fold(&mut f, &[started(1000), update]);
        assert_eq!(changed.progress.map(ms), Some(9_000));
    }

    #[test]
    fn other_memo_fields_and_unrelated_events_change_nothing() {
        let mut f = Followed::default();
        fold(&mut f, &[started(1000)]);
        assert!(
            !fold(
                &mut f,
                &[
                    memo(1100, "somethingElse", &progress(Step::Charge)),
                    HistoryEvent::default()
                ]
            )
            .any()
        );
        assert!(f.progress.is_none());
    }

    #[test]
    fn a_completed_run_carries_its_outcome_and_an_abnormal_end_none() {
        let outcome = PaymentOutcome {
            phase: Phase::Succeeded,
            reason: "Confirmed".into(),
            message: "ok".into(),
            charge_id: Some("ch".into()),
            history: vec![],
            review: None,
            ignored_callbacks: Vec::new(),
        };
        let mut f = Followed::default();
        fold(&mut f, &[started(1000)]);
        let changed = fold(
            &mut f,
            &[event(
                2000,
                Attributes::WorkflowExecutionCompletedEventAttributes(
                    WorkflowExecutionCompletedEventAttributes {
                        result: Some(Payloads {
                            payloads: vec![json(&outcome)],
                        }),
                        ..Default::default()
                    },
                ),
            )],
        );
        assert_eq!(changed.closed.map(ms), Some(2000));
        match f.observation() {
            Some(Observation::Closed {
                status,
                outcome: Some(o),
                closed_at,
                ..
            }) => {
                assert_eq!(status, WorkflowExecutionStatus::Completed);
                assert_eq!(o, outcome);
                assert_eq!(closed_at.map(ms), Some(2000));
            }
            other => panic!("{other:?}"),
        }

        let mut g = Followed::default();
        fold(
            &mut g,
            &[
                started(1000),
                event(
                    3000,
                    Attributes::WorkflowExecutionTerminatedEventAttributes(
                        WorkflowExecutionTerminatedEventAttributes::default(),
                    ),
                ),
            ],
        );
        assert!(matches!(
            g.observation(),
            Some(Observation::Closed {
                status: WorkflowExecutionStatus::Terminated,
                outcome: None,
                ..
            })
        ));
    }
}

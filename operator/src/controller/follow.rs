//! Following running payments' workflow histories. Each poll's events are
//! folded into what the controller knows of the workflow (its run, its
//! progress as published in the memo, its outcome once closed), and the
//! Payment is queued for reconciliation when that changed. The reconciler
//! reads the folded view instead of asking Temporal (and, through a query,
//! the busy worker) again.
//!
//! Two long polls per running workflow: one that returns only when it
//! closes (the outcome is shown at once), and one for every event, asked
//! again no sooner than the pace at which step progress is written
//! ([`super::decide::step_gap`]: 1 s, doubling): a history grows by some 25 appends per
//! payment, and a poll per append cost the Temporal server more than the
//! saga's own bookkeeping. No payment is polled on a fixed interval: each
//! poll waits for the history to change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube::runtime::reflector::ObjectRef;
use paysaga_api::saga::{PROGRESS_MEMO, PaymentOutcome, PaymentProgress};
use temporalio_client::grpc::WorkflowService;
use temporalio_client::tonic::Code;
use temporalio_client::{Client, NamespacedClient, WorkflowExecutionStatus};
use temporalio_common::protos::temporal::api::common::v1::{Payload, WorkflowExecution};
use temporalio_common::protos::temporal::api::enums::v1::HistoryEventFilterType;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;
use tokio::sync::mpsc;

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
    /// second time) and says what changed. Pure.
    pub fn fold(&mut self, events: &[HistoryEvent]) -> Changed {
        let mut changed = Changed::default();
        for e in events {
            let now = || event_time(e).or_else(|| Some(SystemTime::now()));
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

#[derive(Default)]
struct Entry {
    view: Followed,
    /// Changes not yet in the Payment's status, by when they happened (for
    /// the change→status latency): the oldest progress, and the close.
    pending_progress: Option<SystemTime>,
    pending_close: Option<SystemTime>,
    /// The last long poll failed: the view may be stale.
    failing: bool,
    task: Option<tokio::task::AbortHandle>,
}

/// The followers of running payments' histories.
#[derive(Clone)]
pub struct Follower {
    client: Client,
    tx: mpsc::Sender<ObjectRef<super::Cached>>,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    /// The least time between two polls for progress.
    progress_gap: Duration,
    polls: prometheus_client::metrics::family::Family<
        super::metrics::FilterLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Follower {
    /// Follows with progress polls at least `progress_gap` apart.
    pub fn new(
        client: Client,
        progress_gap: Duration,
        metrics: &super::metrics::Metrics,
    ) -> (Follower, mpsc::Receiver<ObjectRef<super::Cached>>) {
        let (tx, rx) = mpsc::channel(4096);
        let f = Follower {
            client,
            tx,
            entries: Arc::default(),
            progress_gap,
            polls: metrics.history_polls.clone(),
        };
        (f, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many histories are being followed.
    pub fn count(&self) -> usize {
        self.lock().values().filter(|e| e.task.is_some()).count()
    }

    /// Follows `workflow_id` (once) and wakes `obj` on each change.
    pub fn ensure(&self, workflow_id: &str, obj: ObjectRef<super::Cached>) {
        let mut entries = self.lock();
        let entry = entries.entry(workflow_id.to_string()).or_default();
        if entry.task.is_some() || entry.view.closed.is_some() {
            return;
        }
        let this = self.clone();
        let id = workflow_id.to_string();
        let task = tokio::spawn(async move {
            tokio::join!(
                this.follow(&id, &obj, HistoryEventFilterType::CloseEvent),
                this.follow(&id, &obj, HistoryEventFilterType::AllEvent),
            );
            if let Some(e) = this.lock().get_mut(&id) {
                e.task = None;
            }
        });
        entry.task = Some(task.abort_handle());
    }

    /// The workflow as its history tells it, when that is known and current.
    pub fn observation(&self, workflow_id: &str) -> Option<Observation> {
        let entries = self.lock();
        let e = entries.get(workflow_id)?;
        if e.failing {
            return None;
        }
        e.view.observation()
    }

    /// When the workflow changed in ways status does not show yet: the
    /// oldest progress not shown, and its close.
    pub fn pending(&self, workflow_id: &str) -> (Option<SystemTime>, Option<SystemTime>) {
        self.lock()
            .get(workflow_id)
            .map_or((None, None), |e| (e.pending_progress, e.pending_close))
    }

    /// Status now shows every change seen so far.
    pub fn written(&self, workflow_id: &str) {
        if let Some(e) = self.lock().get_mut(workflow_id) {
            e.pending_progress = None;
            e.pending_close = None;
        }
    }

    /// Stops following and forgets (the payment is gone, or finished and written).
    pub fn forget(&self, workflow_id: &str) {
        if let Some(e) = self.lock().remove(workflow_id)
            && let Some(task) = e.task
        {
            task.abort();
        }
    }

    fn update(&self, workflow_id: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.lock().get_mut(workflow_id) {
            f(e);
        }
    }

    async fn wake(&self, obj: &ObjectRef<super::Cached>) -> bool {
        self.tx.send(obj.clone()).await.is_ok()
    }

    fn closed(&self, workflow_id: &str) -> bool {
        self.lock()
            .get(workflow_id)
            .is_none_or(|e| e.view.closed.is_some())
    }

    /// One long poll loop over the history: every event (`AllEvent`), or
    /// only the one that closes it (`CloseEvent`).
    async fn follow(
        &self,
        workflow_id: &str,
        obj: &ObjectRef<super::Cached>,
        filter: HistoryEventFilterType,
    ) {
        let mut client = self.client.clone();
        let mut token = Vec::new();
        let mut backoff = Duration::from_millis(200);
        let progress = filter == HistoryEventFilterType::AllEvent;
        let mut progress_polls = 0u32;
        let polls = self
            .polls
            .get_or_create(&super::metrics::FilterLabel {
                filter: if progress { "all" } else { "close" }.to_string(),
            })
            .clone();
        loop {
            if progress && !token.is_empty() {
                // The close has its own poll; progress is shown at this pace.
                tokio::time::sleep(super::decide::step_gap(self.progress_gap, progress_polls))
                    .await;
                progress_polls += 1;
                if self.closed(workflow_id) {
                    return;
                }
            }
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: client.namespace(),
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: String::new(),
                }),
                next_page_token: token.clone(),
                wait_new_event: true,
                history_event_filter_type: filter as i32,
                ..Default::default()
            };
            polls.inc();
            let started = std::time::Instant::now();
            let response = match WorkflowService::get_workflow_execution_history(
                &mut client,
                temporalio_client::tonic::Request::new(request),
            )
            .await
            {
                Ok(r) => r.into_inner(),
                Err(status) if status.code() == Code::NotFound => {
                    // Gone (never started, or past retention): ask afresh.
                    self.update(workflow_id, |e| *e = Entry::default());
                    self.wake(obj).await;
                    return;
                }
                Err(status) => {
                    tracing::debug!(workflow_id, error = %status, "history long poll failed; retrying");
                    let mut first = false;
                    self.update(workflow_id, |e| {
                        first = !e.failing;
                        e.failing = true;
                    });
                    // Once per outage: the reconcile says so on the Payment.
                    if first && !self.wake(obj).await {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let events = response.history.map(|h| h.events).unwrap_or_default();
            let mut wake = false;
            self.update(workflow_id, |e| {
                let changed = e.view.fold(&events);
                e.pending_progress = e.pending_progress.or(changed.progress);
                e.pending_close = e.pending_close.or(changed.closed);
                wake |= changed.any();
                if e.failing {
                    e.failing = false;
                    wake = true;
                }
            });
            if wake && !self.wake(obj).await {
                return;
            }
            if self.closed(workflow_id) {
                return;
            }
            if progress {
                if response.next_page_token.is_empty() {
                    // The history is complete: the workflow has closed.
                    return;
                }
            } else if events.is_empty() && started.elapsed() < Duration::from_millis(100) {
                // The close poll came back empty (its long poll timed out,
                // or the server would not wait): ask again, never in a spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            token = response.next_page_token;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paysaga_api::saga::{StepEvent, StepRecord};
    use paysaga_api::{Phase, Step};
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

    fn ms(t: SystemTime) -> u128 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    #[test]
    fn nothing_is_observed_before_the_start_event() {
        let mut f = Followed::default();
        assert!(!f.fold(&[]).any());
        assert_eq!(f.observation(), None);
    }

    #[test]
    fn the_newest_published_progress_is_what_runs() {
        let mut f = Followed::default();
        let changed = f.fold(&[
            started(1000),
            memo(1100, PROGRESS_MEMO, &progress(Step::ValidateAccount)),
            HistoryEvent::default(), // e.g. a workflow task: not a change
            memo(1200, PROGRESS_MEMO, &progress(Step::Debit)),
        ]);
        assert!(changed.started && changed.closed.is_none());
        assert_eq!(changed.progress.map(ms), Some(1200));
        // The same page again (the two polls overlap): nothing new.
        let again = f.fold(&[memo(1200, PROGRESS_MEMO, &progress(Step::Debit))]);
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
    fn other_memo_fields_and_unrelated_events_change_nothing() {
        let mut f = Followed::default();
        f.fold(&[started(1000)]);
        assert!(
            !f.fold(&[
                memo(1100, "somethingElse", &progress(Step::Charge)),
                HistoryEvent::default()
            ])
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
        };
        let mut f = Followed::default();
        f.fold(&[started(1000)]);
        let changed = f.fold(&[event(
            2000,
            Attributes::WorkflowExecutionCompletedEventAttributes(
                WorkflowExecutionCompletedEventAttributes {
                    result: Some(Payloads {
                        payloads: vec![json(&outcome)],
                    }),
                    ..Default::default()
                },
            ),
        )]);
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
        g.fold(&[
            started(1000),
            event(
                3000,
                Attributes::WorkflowExecutionTerminatedEventAttributes(
                    WorkflowExecutionTerminatedEventAttributes::default(),
                ),
            ),
        ]);
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

//! Following running payments' workflow histories. Each poll's events are
//! folded ([`history`]) into what the controller knows of the workflow (its
//! run, its progress as published in the memo, its outcome once closed), and
//! the Payment is queued for reconciliation when that changed. The
//! reconciler reads the folded view instead of asking Temporal (and, through
//! a query, the busy worker) again.
//!
//! Two long polls per running workflow: one that returns only when it
//! closes (the outcome is shown at once), and one for every event, asked
//! no sooner than the pace at which step progress is written
//! ([`step_gap`]: 1 s, doubling), the first time too when the controller
//! started the run (it knows the run then): a history grows by some 15
//! appends per payment, and a poll per append cost the Temporal server more
//! than the saga's own bookkeeping. A saga that closes within the first gap
//! is read once. No payment is polled on a fixed interval: each poll waits
//! for the history to change.
//!
//! What is known of each workflow lives in the payment's entry of the
//! [`Tracker`], with the rest of its runtime state.

pub mod history;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::runtime::reflector::ObjectRef;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::tonic::Code;
use temporalio_client::{Client, NamespacedClient};
use temporalio_common::data_converters::SerializationContextData;
use temporalio_common::payload_visitor::decode_payloads;
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::enums::v1::HistoryEventFilterType;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;
use tokio::sync::mpsc;

use super::cache::Cached;
use super::metrics::{FilterLabel, Metrics};
use super::plan::pace::step_gap;
use super::tracker::{Pending, Tracker};
use crate::temporal::Observation;
pub use history::Followed;

/// Decodes the payloads of a page of events with the client's codec (payload
/// encryption, `paysaga_common::codec`): the progress memo and the outcome
/// the fold reads are encrypted in the history. An event that does not
/// decode (a key no longer in the keyring) stays encoded, is said in a
/// warning, and folds as if it carried nothing: the reconcile then asks the
/// workflow.
async fn decode_events(client: &Client, workflow_id: &str, events: &mut [HistoryEvent]) {
    let context = SerializationContextData::None;
    for e in events.iter_mut() {
        if let Err(error) = decode_payloads(e, client.data_converter().codec(), &context).await {
            tracing::warn!(workflow_id, event_id = e.event_id, %error, "cannot decode a history event's payloads");
        }
    }
}

/// The payments whose workflow changed, to reconcile.
pub type Wakes = mpsc::Receiver<ObjectRef<Cached>>;

/// What following one workflow keeps (in its payment's tracker entry).
#[derive(Default)]
pub struct Following {
    view: Followed,
    /// Changes not yet in the Payment's status.
    pub pending: Pending,
    /// The last long poll failed: the view may be stale.
    failing: bool,
    task: Option<tokio::task::AbortHandle>,
}

impl Following {
    /// Whether its history is being polled.
    pub fn polling(&self) -> bool {
        self.task.is_some()
    }

    /// Stops polling its history.
    pub fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The followers of running payments' histories.
#[derive(Clone)]
pub struct Follower {
    client: Client,
    tx: mpsc::Sender<ObjectRef<Cached>>,
    tracker: Arc<Tracker>,
    /// The least time between two polls for progress.
    progress_gap: Duration,
    polls: prometheus_client::metrics::family::Family<
        FilterLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Follower {
    /// Follows with progress polls at least `progress_gap` apart, keeping
    /// what it learns in `tracker`.
    pub fn new(
        client: Client,
        tracker: Arc<Tracker>,
        progress_gap: Duration,
        metrics: &Metrics,
    ) -> (Follower, Wakes) {
        let (tx, rx) = mpsc::channel(4096);
        let f = Follower {
            client,
            tx,
            tracker,
            progress_gap,
            polls: metrics.history_polls.clone(),
        };
        (f, rx)
    }

    /// Follows `workflow_id` (once) and wakes `obj` on each change.
    pub fn ensure(&self, workflow_id: &str, obj: ObjectRef<Cached>) {
        self.tracker.entry(workflow_id, |t| {
            let f = &mut t.follow;
            if f.task.is_some() || f.view.closed.is_some() {
                return;
            }
            let this = self.clone();
            let id = workflow_id.to_string();
            let task = tokio::spawn(async move {
                tokio::join!(
                    this.follow(&id, &obj, HistoryEventFilterType::CloseEvent),
                    this.follow(&id, &obj, HistoryEventFilterType::AllEvent),
                );
                this.update(&id, |f| f.task = None);
            });
            f.task = Some(task.abort_handle());
        });
    }

    /// What starting the run told (its id and when), so that following it
    /// need not read its history at once to learn that: the first progress
    /// poll then waits its gap like the others, and a saga that closes
    /// sooner is read once, by the close poll.
    pub fn started(&self, workflow_id: &str, run_id: &str, at: SystemTime) {
        self.tracker.entry(workflow_id, |t| {
            let view = &mut t.follow.view;
            if view.run_id.is_none() {
                view.run_id = Some(run_id.to_string());
                view.started_at = Some(at);
            }
        });
    }

    /// The workflow as its history tells it, when that is known and current.
    pub fn observation(&self, workflow_id: &str) -> Option<Observation> {
        self.tracker
            .existing(workflow_id, |t| {
                (!t.follow.failing)
                    .then(|| t.follow.view.observation())
                    .flatten()
            })
            .flatten()
    }

    fn update(&self, workflow_id: &str, f: impl FnOnce(&mut Following)) {
        self.tracker.existing(workflow_id, |t| f(&mut t.follow));
    }

    async fn wake(&self, obj: &ObjectRef<Cached>) -> bool {
        self.tx.send(obj.clone()).await.is_ok()
    }

    fn closed(&self, workflow_id: &str) -> bool {
        self.tracker
            .existing(workflow_id, |t| t.follow.view.closed.is_some())
            .unwrap_or(true)
    }

    /// One long poll loop over the history: every event (`AllEvent`), or
    /// only the one that closes it (`CloseEvent`).
    async fn follow(
        &self,
        workflow_id: &str,
        obj: &ObjectRef<Cached>,
        filter: HistoryEventFilterType,
    ) {
        let mut client = self.client.clone();
        let mut token = Vec::new();
        let mut backoff = Duration::from_millis(200);
        let progress = filter == HistoryEventFilterType::AllEvent;
        let mut progress_polls = 0u32;
        // Its run known from the start: nothing to read before the first gap.
        let mut wait_first = progress
            && self
                .tracker
                .existing(workflow_id, |t| t.follow.view.run_id.is_some())
                .unwrap_or(false);
        let polls = self
            .polls
            .get_or_create(&FilterLabel {
                filter: if progress { "all" } else { "close" }.to_string(),
            })
            .clone();
        loop {
            if progress && (!token.is_empty() || std::mem::take(&mut wait_first)) {
                // The close has its own poll; progress is shown at this pace.
                tokio::time::sleep(step_gap(self.progress_gap, progress_polls)).await;
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
                    self.update(workflow_id, |f| *f = Following::default());
                    self.wake(obj).await;
                    return;
                }
                Err(status) => {
                    tracing::debug!(workflow_id, error = %status, "history long poll failed; retrying");
                    let mut first = false;
                    self.update(workflow_id, |f| {
                        first = !f.failing;
                        f.failing = true;
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
            let mut events = response.history.map(|h| h.events).unwrap_or_default();
            decode_events(&client, workflow_id, &mut events).await;
            let mut wake = false;
            self.update(workflow_id, |f| {
                let changed = f.view.fold(&events, SystemTime::now());
                f.pending.progress = f.pending.progress.or(changed.progress);
                f.pending.closed = f.pending.closed.or(changed.closed);
                wake |= changed.any();
                if f.failing {
                    f.failing = false;
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

//! The `RecurringPayment` custom resource
//! (`recurringpayments.paysaga.dev/v1alpha1`): a Payment made again and
//! again on a Temporal Schedule. The controller owns the Schedule; each
//! firing makes an ordinary `Payment` named after the time it was due.

// Several `printcolumn(type_ = "string", ...)` entries look like repeated
// attributes to clippy; they are distinct columns of the kube derive.
#![allow(clippy::duplicated_attributes)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PaymentSpec;

/// What is paid, when, and how often.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "paysaga.dev",
    version = "v1alpha1",
    kind = "RecurringPayment",
    plural = "recurringpayments",
    shortname = "rpay",
    category = "paysaga",
    namespaced,
    status = "RecurringPaymentStatus",
    derive = "PartialEq",
    doc = "A payment made on a schedule: the controller keeps a Temporal Schedule whose every firing creates an ordinary Payment from the template, named after the time it was due.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.template.userId"),
    printcolumn(
        name = "Amount",
        type_ = "integer",
        json_path = ".spec.template.amount",
        description = "Amount of each payment in minor units (cents)"
    ),
    printcolumn(
        name = "Currency",
        type_ = "string",
        json_path = ".spec.template.currency"
    ),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".status.schedule"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextRuns[0]"),
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastPayment"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[x_kube(validation = Rule::new("self.template == oldSelf.template").message("the template is immutable: create a new RecurringPayment for other payments").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.startAt) || !has(self.endAt) || timestamp(self.endAt) > timestamp(self.startAt)").message("endAt must be after startAt"))]
#[serde(rename_all = "camelCase")]
pub struct RecurringPaymentSpec {
    /// The Payment made at each firing (validated as a Payment's spec).
    pub template: PaymentSpec,
    pub schedule: RecurringSchedule,
    /// No firing before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Time>,
    /// No firing after this; then the object is `Completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<Time>,
    /// At most this many payments; then the object is `Completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_payments: Option<i64>,
    /// Pause (`true`) or resume (`false`) the firings.
    #[serde(default)]
    pub suspend: bool,
    /// What a firing does while the payment before it has not finished.
    #[serde(default)]
    pub overlap_policy: OverlapPolicy,
    /// How late a missed firing (the server was down) may still happen, as
    /// a duration (`30s`, `5m`, `1h`, `1d`); one minute when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}(s|m|h|d)$"))]
    pub catchup_window: Option<String>,
}

/// When to fire: a cron expression or an interval, in a time zone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.cron) != has(self.every)").message("give exactly one of cron and every"))]
#[serde(rename_all = "camelCase")]
pub struct RecurringSchedule {
    /// Five fields (minute hour day-of-month month day-of-week, e.g.
    /// `0 9 1 * *`: at 09:00 on the 1st of each month) or a macro
    /// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). Temporal
    /// checks the values; the API server checks the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(
            pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*,/?LW#A-Za-z-]+( +[0-9*,/?LW#A-Za-z-]+){4})$"
        )
    )]
    pub cron: Option<String>,
    /// An interval: `30s`, `5m`, `1h`, `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}(s|m|h|d)$"))]
    pub every: Option<String>,
    /// IANA time zone of the cron expression (e.g. `Europe/Berlin`); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+/-]*$"))]
    pub time_zone: Option<String>,
}

impl RecurringSchedule {
    /// How `kubectl get` shows it.
    pub fn describe(&self) -> String {
        let base = match (&self.cron, &self.every) {
            (Some(cron), _) => cron.clone(),
            (None, Some(every)) => format!("every {every}"),
            (None, None) => String::new(),
        };
        match &self.time_zone {
            Some(tz) => format!("{base} ({tz})"),
            None => base,
        }
    }
}

/// A firing while the payment before it has not finished.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OverlapPolicy {
    /// It does not happen (counted as skipped).
    #[default]
    Skip,
    /// It waits for the one before (one at most waits).
    BufferOne,
    /// It happens anyway.
    AllowAll,
}

/// Where a recurring payment is. Written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecurringPaymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RecurringPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard conditions: `Ready` (the Schedule matches the spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The Temporal Schedule firing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// The schedule as `kubectl get` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The next firings, as the Schedule tells them (up to three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_runs: Vec<Time>,
    /// The newest Payment made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_payment: Option<String>,
    /// Firings that made a Payment (the Schedule's count of actions).
    #[serde(default)]
    pub payments_made: i64,
    /// Of the Payments made that still exist: how many succeeded, failed
    /// (or were cancelled).
    #[serde(default)]
    pub payments_succeeded: i64,
    #[serde(default)]
    pub payments_failed: i64,
    /// Of `paymentsMade`, those made by earlier Schedules of this object (a
    /// Schedule deleted out of band is made again; its count goes on).
    #[serde(default)]
    pub payments_made_before: i64,
    /// Firings skipped because the payment before had not finished.
    #[serde(default)]
    pub skipped: i64,
    /// The `metadata.generation` the Schedule was last brought in line with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `Active` → `Suspended` ⇄ `Active` → `Completed`; `Failed` when Temporal
/// refuses the schedule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RecurringPhase {
    Active,
    Suspended,
    Completed,
    Failed,
}

/// What `RecurringFireWorkflow` starts with: the fixed arguments of the
/// Schedule's action (the template is immutable, so they never change).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecurringFire {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub template: PaymentSpec,
}

/// How a firing ended: the Payment it made and how that payment ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FireOutcome {
    pub payment: String,
    /// `Succeeded`, `Failed`, `Cancelled`, or `Deleted` (gone before it ended).
    pub phase: String,
}

/// Workflow type of a firing (task queue [`crate::names::PAYMENTS_TASK_QUEUE`]).
pub const RECURRING_FIRE_WORKFLOW: &str = "RecurringFireWorkflow";

/// The Schedule of a RecurringPayment: new for a re-created object (UID).
pub fn schedule_id(meta: &ObjectMeta) -> String {
    crate::names::object_id("recurring", meta)
}

/// The Payment a firing due at `due` (Unix seconds, UTC) makes:
/// `<name>-<yyyymmdd>t<hhmmss>z`, deterministic, so that a firing run again
/// finds the Payment it made instead of paying twice.
pub fn payment_name(recurring: &str, due: k8s_openapi::jiff::Timestamp) -> String {
    let t = due.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    format!("{recurring}-{}", t.strftime("%Y%m%dt%H%M%Sz"))
}

/// The due time a Schedule puts at the end of each firing's workflow ID
/// (`<prefix>-2026-12-02T10:46:00Z`).
pub fn due_from_workflow_id(workflow_id: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let at = workflow_id
        .len()
        .checked_sub("2026-12-02T10:46:00Z".len())?;
    workflow_id.get(at..)?.parse().ok()
}

/// A duration as the spec writes it (`30s`, `5m`, `1h`, `1d`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_names_and_columns_match_the_design() {
        let crd = RecurringPayment::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("recurringpayments.paysaga.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["rpay".to_string()]));
        let columns: Vec<&str> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "User", "Amount", "Currency", "Schedule", "Next", "Last", "Phase"
            ]
        );
    }

    #[test]
    fn a_firing_s_payment_is_named_after_its_due_time() {
        let due: k8s_openapi::jiff::Timestamp = "2026-12-02T10:46:00Z".parse().unwrap();
        assert_eq!(payment_name("rent", due), "rent-20261202t104600z");
        assert_eq!(
            due_from_workflow_id("recurring-ns-rent-0d1f-2026-12-02T10:46:00Z"),
            Some(due)
        );
        assert_eq!(due_from_workflow_id("short"), None);
        assert_eq!(
            due_from_workflow_id("recurring-ns-rent-uid-not-a-time!!!!"),
            None
        );
    }

    #[test]
    fn durations_parse_as_the_spec_writes_them() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "s", "0s", "5", "5w", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_schedule_reads_as_kubectl_shows_it() {
        let s = |cron: Option<&str>, every: Option<&str>, tz: Option<&str>| RecurringSchedule {
            cron: cron.map(Into::into),
            every: every.map(Into::into),
            time_zone: tz.map(Into::into),
        };
        assert_eq!(
            s(Some("0 9 1 * *"), None, Some("Europe/Berlin")).describe(),
            "0 9 1 * * (Europe/Berlin)"
        );
        assert_eq!(s(None, Some("30s"), None).describe(), "every 30s");
    }
}

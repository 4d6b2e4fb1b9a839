//! The ledger audit: money is conserved, and every payment's entries match
//! how it ended. Pure: it judges a [`Snapshot`] read from the ledger.
//!
//! Refunds are kept twice on purpose: the record of each refund (`refunds`)
//! and the credit it made (`refund_entries`). Each is checked against the
//! other, so a row changed in either is named by its refund id, besides the
//! account it makes drift.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    pub currency: String,
    pub balance: i64,
    pub opening_balance: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub payment_id: String,
    /// `debit` or `credit`.
    pub operation: String,
    pub user_id: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub phase: String,
    pub reason: String,
}

/// A refund as recorded (a row of `refunds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    pub refund_id: String,
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
    pub currency: String,
    /// `reserved`, `succeeded` or `failed`.
    pub status: String,
}

/// The credit a succeeded refund made (a row of `refund_entries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundEntry {
    pub refund_id: String,
    pub payment_id: String,
    pub user_id: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub accounts: Vec<Account>,
    pub entries: Vec<Entry>,
    pub outcomes: Vec<Outcome>,
    pub refunds: Vec<RefundRecord>,
    pub refund_entries: Vec<RefundEntry>,
}

// `Outcome::phase` is the saga's phase: `Processing` while it runs (recorded
// when the payment is accepted), then `Succeeded`, `Failed` or `Cancelled`.

/// One thing that is wrong, naming the account or payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discrepancy {
    /// opening − debits + credits + refunds ≠ balance.
    AccountDrift {
        user_id: String,
        expected: i64,
        balance: i64,
    },
    /// A succeeded payment whose money is not (exactly once) held.
    SucceededNotDebited {
        payment_id: String,
        debited: i64,
        credited: i64,
        amount: i64,
    },
    /// A failed or cancelled payment that kept money.
    NotRestored {
        payment_id: String,
        phase: String,
        debited: i64,
        credited: i64,
    },
    /// A credit larger than the debit it compensates.
    OverCredited {
        payment_id: String,
        debited: i64,
        credited: i64,
    },
    /// A refund's credit and its record disagree, or one is missing.
    RefundMismatch { refund_id: String, detail: String },
    /// Refunds of a payment that credited more than it captured
    /// (debited − credited).
    OverRefunded {
        payment_id: String,
        refund_ids: Vec<String>,
        refunded: i64,
        captured: i64,
    },
    /// A refund credited for a payment that did not succeed (`phase` is
    /// `None` when no outcome is recorded).
    RefundOfUnsucceeded {
        refund_id: String,
        payment_id: String,
        phase: Option<String>,
    },
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discrepancy::AccountDrift {
                user_id,
                expected,
                balance,
            } => write!(
                f,
                "account {user_id}: balance {balance} but opening − debits + credits + refunds = {expected}"
            ),
            Discrepancy::SucceededNotDebited {
                payment_id,
                debited,
                credited,
                amount,
            } => write!(
                f,
                "payment {payment_id}: Succeeded for {amount} but debited {debited}, credited {credited}"
            ),
            Discrepancy::NotRestored {
                payment_id,
                phase,
                debited,
                credited,
            } => write!(
                f,
                "payment {payment_id}: {phase} but debited {debited} and credited back only {credited}"
            ),
            Discrepancy::OverCredited {
                payment_id,
                debited,
                credited,
            } => write!(
                f,
                "payment {payment_id}: credited {credited}, more than the {debited} debited"
            ),
            Discrepancy::RefundMismatch { refund_id, detail } => {
                write!(f, "refund {refund_id}: {detail}")
            }
            Discrepancy::OverRefunded {
                payment_id,
                refund_ids,
                refunded,
                captured,
            } => write!(
                f,
                "payment {payment_id}: refunded {refunded} ({}), more than the {captured} captured",
                refund_ids.join(", ")
            ),
            Discrepancy::RefundOfUnsucceeded {
                refund_id,
                payment_id,
                phase,
            } => match phase {
                Some(phase) => write!(
                    f,
                    "refund {refund_id}: credited for payment {payment_id}, which is {phase}, not Succeeded"
                ),
                None => write!(
                    f,
                    "refund {refund_id}: credited for payment {payment_id}, which has no outcome"
                ),
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub accounts: usize,
    pub payments: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Succeeded refunds.
    pub refunds: usize,
    /// Payments accepted or with ledger entries that have not ended yet.
    pub in_flight: Vec<String>,
    /// Money per currency.
    pub money: BTreeMap<String, Money>,
    pub discrepancies: Vec<Discrepancy>,
}

/// Where one currency's money is: `opening = balances + captured + in flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Money {
    /// Σ opening balances.
    pub opening: i64,
    /// Σ balances now.
    pub balances: i64,
    /// Paid out by succeeded payments, net of what was refunded.
    pub captured: i64,
    /// Credited back to the accounts by refunds (already in `balances`).
    pub refunded: i64,
}

impl Money {
    /// Debited by payments that have not ended yet.
    pub fn in_flight(&self) -> i64 {
        self.opening - self.balances - self.captured
    }
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ledger audit: {} accounts, {} payments ({} succeeded, {} failed, {} cancelled, {} in flight), {} refunds",
            self.accounts,
            self.payments,
            self.succeeded,
            self.failed,
            self.cancelled,
            self.in_flight.len(),
            self.refunds
        )?;
        for (currency, m) in &self.money {
            writeln!(
                f,
                "{currency}: opening {} = balances {} + captured {} (refunded {}) + in flight {}",
                m.opening,
                m.balances,
                m.captured,
                m.refunded,
                m.in_flight()
            )?;
        }
        for id in &self.in_flight {
            writeln!(f, "in flight: {id}")?;
        }
        if self.discrepancies.is_empty() {
            write!(f, "verdict: OK, money is conserved")
        } else {
            for d in &self.discrepancies {
                writeln!(f, "DISCREPANCY: {d}")?;
            }
            write!(
                f,
                "verdict: FAILED, {} discrepancies",
                self.discrepancies.len()
            )
        }
    }
}

/// Judges a snapshot.
pub fn audit(snapshot: &Snapshot) -> Report {
    let mut report = Report {
        accounts: snapshot.accounts.len(),
        ..Report::default()
    };
    // (debited, credited) per payment and per account.
    let mut per_payment: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut per_account: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for e in &snapshot.entries {
        let p = per_payment.entry(&e.payment_id).or_default();
        let a = per_account.entry(&e.user_id).or_default();
        if e.operation == "debit" {
            p.0 += e.amount;
            a.0 += e.amount;
        } else {
            p.1 += e.amount;
            a.1 += e.amount;
        }
    }
    // Refund credits per payment (with their refund ids) and per account.
    let mut refunded_payment: BTreeMap<&str, (i64, Vec<String>)> = BTreeMap::new();
    let mut refunded_account: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &snapshot.refund_entries {
        let p = refunded_payment.entry(&r.payment_id).or_default();
        p.0 += r.amount;
        p.1.push(r.refund_id.clone());
        *refunded_account.entry(&r.user_id).or_default() += r.amount;
    }
    for acc in &snapshot.accounts {
        let (debited, credited) = per_account
            .get(acc.user_id.as_str())
            .copied()
            .unwrap_or_default();
        let refunded = refunded_account
            .get(acc.user_id.as_str())
            .copied()
            .unwrap_or_default();
        let expected = acc.opening_balance - debited + credited + refunded;
        let money = report.money.entry(acc.currency.clone()).or_default();
        money.opening += acc.opening_balance;
        money.balances += acc.balance;
        money.refunded += refunded;
        if expected != acc.balance {
            report.discrepancies.push(Discrepancy::AccountDrift {
                user_id: acc.user_id.clone(),
                expected,
                balance: acc.balance,
            });
        }
    }
    let outcomes: BTreeMap<&str, &Outcome> = snapshot
        .outcomes
        .iter()
        .map(|o| (o.payment_id.as_str(), o))
        .collect();
    report.payments = outcomes.len();
    for (id, &(debited, credited)) in &per_payment {
        if credited > debited && debited > 0 {
            report.discrepancies.push(Discrepancy::OverCredited {
                payment_id: id.to_string(),
                debited,
                credited,
            });
        }
    }
    let settled = |o: &Outcome| matches!(o.phase.as_str(), "Succeeded" | "Failed" | "Cancelled");
    for id in per_payment.keys() {
        if !outcomes.get(id).is_some_and(|o| settled(o)) {
            report.in_flight.push(id.to_string());
        }
    }
    for (id, o) in &outcomes {
        let (debited, credited) = per_payment.get(id).copied().unwrap_or_default();
        match o.phase.as_str() {
            // Accepted and still running: judged once it ends.
            "Pending" | "Processing" => {
                if !per_payment.contains_key(id) {
                    report.in_flight.push(id.to_string());
                }
            }
            "Succeeded" => {
                report.succeeded += 1;
                let refunded = refunded_payment.get(id).map_or(0, |r| r.0);
                report.money.entry(o.currency.clone()).or_default().captured +=
                    debited - credited - refunded;
                if debited != o.amount || credited != 0 {
                    report.discrepancies.push(Discrepancy::SucceededNotDebited {
                        payment_id: id.to_string(),
                        debited,
                        credited,
                        amount: o.amount,
                    });
                }
            }
            phase => {
                if phase == "Cancelled" {
                    report.cancelled += 1;
                } else {
                    report.failed += 1;
                }
                if debited != credited {
                    report.discrepancies.push(Discrepancy::NotRestored {
                        payment_id: id.to_string(),
                        phase: phase.to_string(),
                        debited,
                        credited,
                    });
                }
            }
        }
    }
    judge_refunds(
        snapshot,
        &outcomes,
        &per_payment,
        &refunded_payment,
        &mut report,
    );
    report
}

/// Each refund's credit against its record and against the payment it gives
/// back; each succeeded record against its credit.
fn judge_refunds(
    snapshot: &Snapshot,
    outcomes: &BTreeMap<&str, &Outcome>,
    per_payment: &BTreeMap<&str, (i64, i64)>,
    refunded_payment: &BTreeMap<&str, (i64, Vec<String>)>,
    report: &mut Report,
) {
    let records: BTreeMap<&str, &RefundRecord> = snapshot
        .refunds
        .iter()
        .map(|r| (r.refund_id.as_str(), r))
        .collect();
    report.refunds = records.values().filter(|r| r.status == "succeeded").count();
    for e in &snapshot.refund_entries {
        let mut wrong = Vec::new();
        match records.get(e.refund_id.as_str()) {
            None => wrong.push(format!("credited {} but no refund is recorded", e.amount)),
            Some(r) => {
                if r.status != "succeeded" {
                    wrong.push(format!(
                        "credited {} but the refund is recorded as {}",
                        e.amount, r.status
                    ));
                }
                if r.amount != e.amount {
                    wrong.push(format!(
                        "credited {} but the refund is recorded for {}",
                        e.amount, r.amount
                    ));
                }
                if r.payment_id != e.payment_id {
                    wrong.push(format!(
                        "credited for payment {} but the refund is recorded for payment {}",
                        e.payment_id, r.payment_id
                    ));
                }
                if r.user_id != e.user_id {
                    wrong.push(format!(
                        "credited to {} but the refund is recorded for {}",
                        e.user_id, r.user_id
                    ));
                }
            }
        }
        if !wrong.is_empty() {
            report.discrepancies.push(Discrepancy::RefundMismatch {
                refund_id: e.refund_id.clone(),
                detail: wrong.join("; "),
            });
        }
        let phase = outcomes.get(e.payment_id.as_str()).map(|o| &o.phase);
        if phase.is_none_or(|p| p != "Succeeded") {
            report.discrepancies.push(Discrepancy::RefundOfUnsucceeded {
                refund_id: e.refund_id.clone(),
                payment_id: e.payment_id.clone(),
                phase: phase.cloned(),
            });
        }
    }
    let credited: BTreeMap<&str, &RefundEntry> = snapshot
        .refund_entries
        .iter()
        .map(|e| (e.refund_id.as_str(), e))
        .collect();
    for r in records.values() {
        if r.status == "succeeded" && !credited.contains_key(r.refund_id.as_str()) {
            report.discrepancies.push(Discrepancy::RefundMismatch {
                refund_id: r.refund_id.clone(),
                detail: format!(
                    "recorded as succeeded for {} but nothing was credited",
                    r.amount
                ),
            });
        }
    }
    for (id, (refunded, refund_ids)) in refunded_payment {
        let (debited, credited) = per_payment.get(id).copied().unwrap_or_default();
        if *refunded > debited - credited {
            let mut refund_ids = refund_ids.clone();
            refund_ids.sort();
            report.discrepancies.push(Discrepancy::OverRefunded {
                payment_id: id.to_string(),
                refund_ids,
                refunded: *refunded,
                captured: debited - credited,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(user: &str, opening: i64, balance: i64) -> Account {
        Account {
            user_id: user.into(),
            currency: "EUR".into(),
            balance,
            opening_balance: opening,
        }
    }
    fn entry(p: &str, op: &str, user: &str, amount: i64) -> Entry {
        Entry {
            payment_id: p.into(),
            operation: op.into(),
            user_id: user.into(),
            amount,
        }
    }
    fn outcome(p: &str, phase: &str, amount: i64) -> Outcome {
        Outcome {
            payment_id: p.into(),
            user_id: "alice".into(),
            amount,
            currency: "EUR".into(),
            phase: phase.into(),
            reason: "x".into(),
        }
    }
    fn refund(id: &str, p: &str, amount: i64, status: &str) -> RefundRecord {
        RefundRecord {
            refund_id: id.into(),
            payment_id: p.into(),
            user_id: "alice".into(),
            amount,
            currency: "EUR".into(),
            status: status.into(),
        }
    }
    fn refund_entry(id: &str, p: &str, amount: i64) -> RefundEntry {
        RefundEntry {
            refund_id: id.into(),
            payment_id: p.into(),
            user_id: "alice".into(),
            amount,
        }
    }
    /// Adds a succeeded refund of `amount` and the credit it made.
    fn refunded(s: &mut Snapshot, id: &str, p: &str, amount: i64) {
        s.refunds.push(refund(id, p, amount, "succeeded"));
        s.refund_entries.push(refund_entry(id, p, amount));
        s.accounts[0].balance += amount;
    }

    /// `ok` captured 1000, of which 200 was refunded (`ok-r1`); a second
    /// refund is reserved and a third failed, neither moved money.
    fn clean() -> Snapshot {
        Snapshot {
            accounts: vec![account("alice", 10_000, 9_200)],
            entries: vec![
                entry("ok", "debit", "alice", 1_000),
                entry("failed", "debit", "alice", 500),
                entry("failed", "credit", "alice", 500),
                entry("early-cancel", "credit", "alice", 0),
            ],
            outcomes: vec![
                outcome("ok", "Succeeded", 1_000),
                outcome("failed", "Failed", 500),
                outcome("early-cancel", "Cancelled", 700),
            ],
            refunds: vec![
                refund("ok-r1", "ok", 200, "succeeded"),
                refund("ok-r2", "ok", 300, "reserved"),
                refund("ok-r3", "ok", 800, "failed"),
            ],
            refund_entries: vec![refund_entry("ok-r1", "ok", 200)],
        }
    }

    #[test]
    fn a_consistent_ledger_is_clean() {
        let r = audit(&clean());
        assert!(r.is_clean(), "{r}");
        assert_eq!(
            (r.succeeded, r.failed, r.cancelled, r.refunds),
            (1, 1, 1, 1)
        );
        let eur = r.money["EUR"];
        assert_eq!(
            (
                eur.opening,
                eur.balances,
                eur.captured,
                eur.refunded,
                eur.in_flight()
            ),
            (10_000, 9_200, 800, 200, 0)
        );
        let text = r.to_string();
        assert!(
            text.starts_with(
                "ledger audit: 1 accounts, 3 payments (1 succeeded, 1 failed, 1 cancelled, 0 in flight), 1 refunds\n\
                 EUR: opening 10000 = balances 9200 + captured 800 (refunded 200) + in flight 0\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("verdict: OK, money is conserved"));
    }

    #[test]
    fn a_refund_in_full_leaves_nothing_captured() {
        let mut s = clean();
        refunded(&mut s, "ok-r4", "ok", 800);
        let r = audit(&s);
        assert!(r.is_clean(), "{r}");
        let eur = r.money["EUR"];
        assert_eq!(
            (eur.balances, eur.captured, eur.refunded, eur.in_flight()),
            (10_000, 0, 1_000, 0)
        );
    }

    #[test]
    fn a_tampered_refund_credit_is_named_with_the_drift_it_causes() {
        let mut s = clean();
        s.refund_entries[0].amount += 1;
        let r = audit(&s);
        assert_eq!(
            r.discrepancies,
            [
                Discrepancy::AccountDrift {
                    user_id: "alice".into(),
                    expected: 9_201,
                    balance: 9_200,
                },
                Discrepancy::RefundMismatch {
                    refund_id: "ok-r1".into(),
                    detail: "credited 201 but the refund is recorded for 200".into(),
                },
            ]
        );
        let text = r.to_string();
        assert!(
            text.contains(
                "DISCREPANCY: refund ok-r1: credited 201 but the refund is recorded for 200"
            ),
            "{text}"
        );
        assert!(text.ends_with("verdict: FAILED, 2 discrepancies"), "{text}");
    }

    #[test]
    fn each_discrepancy_names_what_is_wrong() {
        type Case = (fn(&mut Snapshot), Discrepancy);
        let cases: Vec<Case> = vec![
            (
                |s| s.accounts[0].balance = 9_001,
                Discrepancy::AccountDrift {
                    user_id: "alice".into(),
                    expected: 9_200,
                    balance: 9_001,
                },
            ),
            (
                |s| {
                    s.entries.remove(2);
                    s.accounts[0].balance = 8_700;
                },
                Discrepancy::NotRestored {
                    payment_id: "failed".into(),
                    phase: "Failed".into(),
                    debited: 500,
                    credited: 0,
                },
            ),
            (
                |s| {
                    s.entries.remove(0);
                    s.accounts[0].balance = 10_200;
                },
                Discrepancy::SucceededNotDebited {
                    payment_id: "ok".into(),
                    debited: 0,
                    credited: 0,
                    amount: 1_000,
                },
            ),
            (
                |s| {
                    s.entries[2].amount = 600;
                    s.accounts[0].balance = 9_300;
                },
                Discrepancy::OverCredited {
                    payment_id: "failed".into(),
                    debited: 500,
                    credited: 600,
                },
            ),
            (
                |s| {
                    s.refunds.remove(0);
                },
                Discrepancy::RefundMismatch {
                    refund_id: "ok-r1".into(),
                    detail: "credited 200 but no refund is recorded".into(),
                },
            ),
            (
                |s| s.refunds[0].status = "reserved".into(),
                Discrepancy::RefundMismatch {
                    refund_id: "ok-r1".into(),
                    detail: "credited 200 but the refund is recorded as reserved".into(),
                },
            ),
            (
                |s| s.refunds[0].payment_id = "failed".into(),
                Discrepancy::RefundMismatch {
                    refund_id: "ok-r1".into(),
                    detail: "credited for payment ok but the refund is recorded for payment failed"
                        .into(),
                },
            ),
            (
                |s| s.refunds[0].user_id = "bob".into(),
                Discrepancy::RefundMismatch {
                    refund_id: "ok-r1".into(),
                    detail: "credited to alice but the refund is recorded for bob".into(),
                },
            ),
            (
                |s| {
                    s.refund_entries.remove(0);
                    s.accounts[0].balance = 9_000;
                },
                Discrepancy::RefundMismatch {
                    refund_id: "ok-r1".into(),
                    detail: "recorded as succeeded for 200 but nothing was credited".into(),
                },
            ),
            (
                |s| refunded(s, "ok-r4", "ok", 900),
                Discrepancy::OverRefunded {
                    payment_id: "ok".into(),
                    refund_ids: vec!["ok-r1".into(), "ok-r4".into()],
                    refunded: 1_100,
                    captured: 1_000,
                },
            ),
            (
                |s| refunded(s, "failed-r1", "failed", 100),
                Discrepancy::RefundOfUnsucceeded {
                    refund_id: "failed-r1".into(),
                    payment_id: "failed".into(),
                    phase: Some("Failed".into()),
                },
            ),
            (
                |s| refunded(s, "ghost-r1", "ghost", 100),
                Discrepancy::RefundOfUnsucceeded {
                    refund_id: "ghost-r1".into(),
                    payment_id: "ghost".into(),
                    phase: None,
                },
            ),
        ];
        for (break_it, want) in cases {
            let mut s = clean();
            break_it(&mut s);
            let r = audit(&s);
            assert!(
                r.discrepancies.contains(&want),
                "wanted {want:?} in {:?}",
                r.discrepancies
            );
            let text = r.to_string();
            assert!(text.contains(&format!("DISCREPANCY: {want}\n")), "{text}");
            assert!(text.contains("verdict: FAILED"));
        }
    }

    #[test]
    fn accepted_payments_are_in_flight_until_they_end() {
        let mut s = clean();
        s.outcomes.push(outcome("running", "Processing", 300));
        s.entries.push(entry("running", "debit", "alice", 300));
        s.accounts[0].balance -= 300;
        s.outcomes.push(outcome("just-accepted", "Processing", 10));
        let r = audit(&s);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.in_flight, ["running", "just-accepted"]);
        assert_eq!((r.succeeded, r.failed, r.cancelled), (1, 1, 1));
    }

    #[test]
    fn entries_without_an_outcome_are_in_flight() {
        let mut s = clean();
        s.entries.push(entry("pending", "debit", "alice", 100));
        s.accounts[0].balance -= 100;
        let r = audit(&s);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.in_flight, ["pending"]);
    }
}

//! The ledger audit: money is conserved, and every payment's entries match
//! how it ended. Pure: it judges a [`Snapshot`] read from the ledger.

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub accounts: Vec<Account>,
    pub entries: Vec<Entry>,
    pub outcomes: Vec<Outcome>,
}

// `Outcome::phase` is the saga's phase: `Processing` while it runs (recorded
// when the payment is accepted), then `Succeeded`, `Failed` or `Cancelled`.

/// One thing that is wrong, naming the account or payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discrepancy {
    /// opening − debits + credits ≠ balance.
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
                "account {user_id}: balance {balance} but opening − debits + credits = {expected}"
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
    /// Paid out by succeeded payments.
    pub captured: i64,
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
            "ledger audit: {} accounts, {} payments ({} succeeded, {} failed, {} cancelled, {} in flight)",
            self.accounts,
            self.payments,
            self.succeeded,
            self.failed,
            self.cancelled,
            self.in_flight.len()
        )?;
        for (currency, m) in &self.money {
            writeln!(
                f,
                "{currency}: opening {} = balances {} + captured {} + in flight {}",
                m.opening,
                m.balances,
                m.captured,
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
    for acc in &snapshot.accounts {
        let (debited, credited) = per_account
            .get(acc.user_id.as_str())
            .copied()
            .unwrap_or_default();
        let expected = acc.opening_balance - debited + credited;
        let money = report.money.entry(acc.currency.clone()).or_default();
        money.opening += acc.opening_balance;
        money.balances += acc.balance;
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
                report.money.entry(o.currency.clone()).or_default().captured += debited - credited;
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
    report
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

    fn clean() -> Snapshot {
        Snapshot {
            accounts: vec![account("alice", 10_000, 9_000)],
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
        }
    }

    #[test]
    fn a_consistent_ledger_is_clean() {
        let r = audit(&clean());
        assert!(r.is_clean(), "{r}");
        assert_eq!((r.succeeded, r.failed, r.cancelled), (1, 1, 1));
        let eur = r.money["EUR"];
        assert_eq!(
            (eur.opening, eur.balances, eur.captured, eur.in_flight()),
            (10_000, 9_000, 1_000, 0)
        );
        assert!(r.to_string().ends_with("verdict: OK, money is conserved"));
    }

    #[test]
    fn each_discrepancy_names_what_is_wrong() {
        type Case = (fn(&mut Snapshot), Discrepancy);
        let cases: Vec<Case> = vec![
            (
                |s| s.accounts[0].balance = 9_001,
                Discrepancy::AccountDrift {
                    user_id: "alice".into(),
                    expected: 9_000,
                    balance: 9_001,
                },
            ),
            (
                |s| {
                    s.entries.remove(2);
                    s.accounts[0].balance = 8_500;
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
                    s.accounts[0].balance = 10_000;
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
                    s.accounts[0].balance = 9_100;
                },
                Discrepancy::OverCredited {
                    payment_id: "failed".into(),
                    debited: 500,
                    credited: 600,
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
            assert!(r.to_string().contains("verdict: FAILED"));
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

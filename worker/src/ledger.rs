//! The accounts ledger: PostgreSQL in the chart and in tests, SQLite as the
//! embedded default for `make dev`. One code path for both (sqlx `Any`), with
//! portable SQL.
//!
//! Every debit and credit is a ledger entry unique on (payment, operation) and
//! every operation locks the account row first (a no-op `UPDATE`, which is a
//! row lock in PostgreSQL and the write lock in SQLite), so retries,
//! duplicates and races never move money twice.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

/// What can go wrong in the ledger. `Rejected` variants are permanent
/// (business) refusals; `Database` is transient.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("no account for user {0:?}")]
    NoAccount(String),
    #[error("account of user {0:?} is frozen")]
    Frozen(String),
    #[error("account of user {user:?} holds {account}, not {requested}")]
    CurrencyMismatch {
        user: String,
        account: String,
        requested: String,
    },
    #[error("account of user {user:?} holds {balance}, less than {amount}")]
    InsufficientFunds {
        user: String,
        balance: i64,
        amount: i64,
    },
    #[error("payment {0} was already compensated; refusing a late debit")]
    AlreadyCompensated(String),
    #[error("invalid account seed {0:?}: expected user:CUR:balance[:frozen]")]
    BadSeed(String),
    #[error("ledger database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("ledger migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl LedgerError {
    /// A refusal that no retry can change.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LedgerError::Database(_) | LedgerError::Migrate(_))
    }
}

/// The outcome of an idempotent money movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Applied {
    /// Money moved now.
    Moved,
    /// An earlier attempt already moved it; nothing moved now.
    AlreadyDone,
    /// There was nothing to move (a credit with no debit).
    Nothing,
}

/// A demo account, from configuration: `user:CUR:balance[:frozen]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSeed {
    pub user_id: String,
    pub currency: String,
    pub balance: i64,
    pub frozen: bool,
}

impl FromStr for AccountSeed {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LedgerError::BadSeed(s.to_string());
        let parts: Vec<&str> = s.trim().split(':').collect();
        let (user, currency, balance, frozen) = match parts.as_slice() {
            [u, c, b] => (u, c, b, false),
            [u, c, b, "frozen"] => (u, c, b, true),
            _ => return Err(bad()),
        };
        let balance: i64 = balance.parse().map_err(|_| bad())?;
        let currency_ok = currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase());
        if user.is_empty() || !currency_ok || balance < 0 {
            return Err(bad());
        }
        Ok(AccountSeed {
            user_id: user.to_string(),
            currency: currency.to_string(),
            balance,
            frozen,
        })
    }
}

/// Parses a list of seeds separated by commas or semicolons.
pub fn parse_seeds(list: &str) -> Result<Vec<AccountSeed>, LedgerError> {
    list.split([',', ';'])
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect()
}

#[derive(Clone, Debug)]
pub struct Ledger {
    pool: AnyPool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Ledger {
    /// Connects (`postgres://…` or `sqlite://…?mode=rwc`) and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Ledger, LedgerError> {
        install_default_drivers();
        // SQLite has one writer at a time; more connections only contend.
        let max = if url.starts_with("sqlite:") {
            1
        } else {
            max_connections
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Ledger { pool })
    }

    /// Opens the demo accounts that do not exist yet; existing ones are left alone.
    pub async fn seed(&self, seeds: &[AccountSeed]) -> Result<(), LedgerError> {
        for s in seeds {
            sqlx::query(
                "INSERT INTO accounts (user_id, currency, balance, opening_balance, status) \
                 VALUES ($1, $2, $3, $3, $4) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&s.user_id)
            .bind(&s.currency)
            .bind(s.balance)
            .bind(if s.frozen { "frozen" } else { "active" })
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// The account's balance, if it exists.
    pub async fn balance(&self, user_id: &str) -> Result<Option<i64>, LedgerError> {
        let row = sqlx::query("SELECT balance FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)))
    }

    /// Checks that the account exists, is active, holds `currency` and at
    /// least `amount`. Moves nothing.
    pub async fn validate(
        &self,
        user_id: &str,
        currency: &str,
        amount: i64,
    ) -> Result<(), LedgerError> {
        let row = sqlx::query("SELECT currency, balance, status FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| LedgerError::NoAccount(user_id.to_string()))?;
        check_account(user_id, &row, currency, amount)
    }

    /// Debits `amount` for `payment_id`. Idempotent; refused after the payment
    /// was compensated (a late retry must not take money back out).
    pub async fn debit(
        &self,
        payment_id: &str,
        user_id: &str,
        currency: &str,
        amount: i64,
    ) -> Result<Applied, LedgerError> {
        let mut tx = self.pool.begin().await?;
        lock_account(&mut tx, user_id).await?;
        let ops = entries(&mut tx, payment_id).await?;
        if ops.contains_key("debit") {
            return Ok(Applied::AlreadyDone);
        }
        if ops.contains_key("credit") {
            return Err(LedgerError::AlreadyCompensated(payment_id.to_string()));
        }
        let row = sqlx::query("SELECT currency, balance, status FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        check_account(user_id, &row, currency, amount)?;
        insert_entry(&mut tx, payment_id, "debit", user_id, amount, currency).await?;
        sqlx::query("UPDATE accounts SET balance = balance - $1 WHERE user_id = $2")
            .bind(amount)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Applied::Moved)
    }

    /// Credits back what `payment_id` debited. Idempotent. With no debit, it
    /// records a zero tombstone so that a debit arriving later is refused.
    pub async fn credit(
        &self,
        payment_id: &str,
        user_id: &str,
        currency: &str,
    ) -> Result<Applied, LedgerError> {
        let mut tx = self.pool.begin().await?;
        lock_account(&mut tx, user_id).await?;
        let ops = entries(&mut tx, payment_id).await?;
        if ops.contains_key("credit") {
            return Ok(Applied::AlreadyDone);
        }
        let applied = match ops.get("debit") {
            Some(&debited) => {
                insert_entry(&mut tx, payment_id, "credit", user_id, debited, currency).await?;
                sqlx::query("UPDATE accounts SET balance = balance + $1 WHERE user_id = $2")
                    .bind(debited)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                Applied::Moved
            }
            None => {
                insert_entry(&mut tx, payment_id, "credit", user_id, 0, currency).await?;
                Applied::Nothing
            }
        };
        tx.commit().await?;
        Ok(applied)
    }

    /// Records how a payment ended (upsert: recording twice is harmless).
    pub async fn record_outcome(
        &self,
        payment_id: &str,
        user_id: &str,
        amount: i64,
        currency: &str,
        phase: &str,
        reason: &str,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO payment_outcomes (payment_id, user_id, amount, currency, phase, reason, recorded_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (payment_id) DO UPDATE SET phase = excluded.phase, reason = excluded.reason, \
             recorded_ms = excluded.recorded_ms",
        )
        .bind(payment_id)
        .bind(user_id)
        .bind(amount)
        .bind(currency)
        .bind(phase)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Everything the audit needs, read in one go.
    pub async fn snapshot(&self) -> Result<crate::audit::Snapshot, LedgerError> {
        use crate::audit::{Account, Entry, Outcome, Snapshot};
        let accounts =
            sqlx::query("SELECT user_id, currency, balance, opening_balance FROM accounts")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Account {
                    user_id: r.get(0),
                    currency: r.get(1),
                    balance: r.get(2),
                    opening_balance: r.get(3),
                })
                .collect();
        let entries =
            sqlx::query("SELECT payment_id, operation, user_id, amount FROM ledger_entries")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Entry {
                    payment_id: r.get(0),
                    operation: r.get(1),
                    user_id: r.get(2),
                    amount: r.get(3),
                })
                .collect();
        let outcomes = sqlx::query(
            "SELECT payment_id, user_id, amount, currency, phase, reason FROM payment_outcomes",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Outcome {
            payment_id: r.get(0),
            user_id: r.get(1),
            amount: r.get(2),
            currency: r.get(3),
            phase: r.get(4),
            reason: r.get(5),
        })
        .collect();
        Ok(Snapshot {
            accounts,
            entries,
            outcomes,
        })
    }
}

fn check_account(
    user_id: &str,
    row: &sqlx::any::AnyRow,
    currency: &str,
    amount: i64,
) -> Result<(), LedgerError> {
    let account_currency: String = row.get(0);
    let balance: i64 = row.get(1);
    let status: String = row.get(2);
    if status != "active" {
        return Err(LedgerError::Frozen(user_id.to_string()));
    }
    if account_currency != currency {
        return Err(LedgerError::CurrencyMismatch {
            user: user_id.to_string(),
            account: account_currency,
            requested: currency.to_string(),
        });
    }
    if balance < amount {
        return Err(LedgerError::InsufficientFunds {
            user: user_id.to_string(),
            balance,
            amount,
        });
    }
    Ok(())
}

async fn lock_account(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
) -> Result<(), LedgerError> {
    let locked = sqlx::query("UPDATE accounts SET balance = balance WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if locked.rows_affected() == 0 {
        return Err(LedgerError::NoAccount(user_id.to_string()));
    }
    Ok(())
}

/// The payment's entries: operation → amount.
async fn entries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    payment_id: &str,
) -> Result<BTreeMap<String, i64>, LedgerError> {
    let rows = sqlx::query("SELECT operation, amount FROM ledger_entries WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect())
}

async fn insert_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    payment_id: &str,
    operation: &str,
    user_id: &str,
    amount: i64,
    currency: &str,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO ledger_entries (payment_id, operation, user_id, amount, currency, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(payment_id)
    .bind(operation)
    .bind(user_id)
    .bind(amount)
    .bind(currency)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        let seeds = parse_seeds("alice:EUR:100000; bob:USD:0:frozen,").unwrap();
        assert_eq!(
            seeds,
            [
                AccountSeed {
                    user_id: "alice".into(),
                    currency: "EUR".into(),
                    balance: 100_000,
                    frozen: false
                },
                AccountSeed {
                    user_id: "bob".into(),
                    currency: "USD".into(),
                    balance: 0,
                    frozen: true
                },
            ]
        );
        for bad in [
            "alice",
            "alice:eur:1",
            "alice:EUR:-1",
            "alice:EUR:1:closed",
            ":EUR:1",
            "a:EUR:1.5",
        ] {
            assert!(parse_seeds(bad).is_err(), "{bad} parsed");
        }
    }
}

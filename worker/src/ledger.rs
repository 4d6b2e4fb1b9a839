//! The accounts ledger: PostgreSQL in the chart and in tests, SQLite as the
//! embedded default for `make dev`. One code path for both (sqlx `Any`), with
//! portable SQL.
//!
//! Every debit and credit is a ledger entry unique on (payment, operation) and
//! every operation locks the account row first (a no-op `UPDATE`, which is a
//! row lock in PostgreSQL and the write lock in SQLite), so retries,
//! duplicates and races never move money twice.
//!
//! A refund gives back part or all of what a succeeded payment captured, in
//! two steps around the gateway call: [`Ledger::reserve_refund`] sets the
//! amount aside (a `reserved` row counts against what is left, so two refunds
//! racing for the last cent cannot both reach the gateway), then
//! [`Ledger::complete_refund`] credits the payer or [`Ledger::release_refund`]
//! gives the reservation up. Both lock the payer's account row first, like
//! every money movement, which serialises all refunds of that payer's payments
//! under PostgreSQL's default READ COMMITTED as well as in SQLite.

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
    #[error(
        "payment {payment_id} has not succeeded ({}); nothing to refund",
        .phase.as_deref().unwrap_or("no outcome recorded")
    )]
    PaymentNotRefundable {
        payment_id: String,
        phase: Option<String>,
    },
    #[error("payment {payment_id} was paid in {payment}; cannot refund it in {requested}")]
    RefundCurrencyMismatch {
        payment_id: String,
        payment: String,
        requested: String,
    },
    #[error("payment {payment_id} was paid by {payer:?}; cannot refund it to {requested:?}")]
    RefundPayerMismatch {
        payment_id: String,
        payer: String,
        requested: String,
    },
    #[error(
        "payment {payment_id} captured {captured}, of which {refunded} is refunded or reserved; \
         {} is left, less than the {requested} requested",
        .captured - .refunded
    )]
    ExceedsRefundable {
        payment_id: String,
        captured: i64,
        /// Succeeded and reserved by other refunds of the payment.
        refunded: i64,
        requested: i64,
    },
    #[error("refund {refund_id} of {amount}: a refund must be positive")]
    RefundNotPositive { refund_id: String, amount: i64 },
    #[error("refund {0} is not reserved")]
    RefundNotReserved(String),
    #[error("refund {0} already succeeded; it cannot be released")]
    RefundAlreadySucceeded(String),
    #[error("refund {0} was released (failed); it cannot complete")]
    RefundAlreadyFailed(String),
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

/// A refund to reserve: `amount` of `payment_id` back to its payer. The
/// refund id is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundClaim {
    pub refund_id: String,
    pub payment_id: String,
    pub user_id: String,
    pub currency: String,
    pub amount: i64,
}

/// Where a refund is in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum RefundState {
    /// Set aside: counts against what is left to refund; nothing moved yet.
    Reserved,
    /// Credited to the payer.
    Succeeded {
        gateway_refund_id: Option<String>,
        /// Σ succeeded refunds of the payment, this one included.
        payment_refunded: i64,
    },
    /// Released; nothing moved.
    Failed { reason: String },
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
    /// SQLite rather than PostgreSQL: the few statements they spell apart.
    sqlite: bool,
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
        let sqlite = url.starts_with("sqlite:");
        let max = if sqlite { 1 } else { max_connections };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Ledger { pool, sqlite })
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

    /// Records how a payment stands (upsert: recording twice is harmless).
    /// Answers whether this changed what was recorded (false on a retry).
    pub async fn record_outcome(
        &self,
        payment_id: &str,
        user_id: &str,
        amount: i64,
        currency: &str,
        phase: &str,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "INSERT INTO payment_outcomes (payment_id, user_id, amount, currency, phase, reason, recorded_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (payment_id) DO UPDATE SET phase = excluded.phase, reason = excluded.reason, \
             recorded_ms = excluded.recorded_ms \
             WHERE payment_outcomes.phase <> excluded.phase OR payment_outcomes.reason <> excluded.reason",
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
        Ok(done.rows_affected() > 0)
    }

    /// Sets `claim.amount` aside for a refund of a succeeded payment, if that
    /// much is left of what it captured. Idempotent on the refund id: a refund
    /// already recorded answers with its state, whatever the claim says now.
    pub async fn reserve_refund(&self, claim: &RefundClaim) -> Result<RefundState, LedgerError> {
        let mut tx = self.pool.begin().await?;
        // Every refund of this payer's payments waits here for the others.
        lock_account(&mut tx, &claim.user_id).await?;
        if let Some(refund) = refund_row(&mut tx, &claim.refund_id).await? {
            return refund.state(&mut tx).await;
        }
        if claim.amount <= 0 {
            return Err(LedgerError::RefundNotPositive {
                refund_id: claim.refund_id.clone(),
                amount: claim.amount,
            });
        }
        let outcome = sqlx::query(
            "SELECT user_id, currency, phase FROM payment_outcomes WHERE payment_id = $1",
        )
        .bind(&claim.payment_id)
        .fetch_optional(&mut *tx)
        .await?;
        let not_refundable = |phase| LedgerError::PaymentNotRefundable {
            payment_id: claim.payment_id.clone(),
            phase,
        };
        let outcome = outcome.ok_or_else(|| not_refundable(None))?;
        let (payer, currency, phase): (String, String, String) =
            (outcome.get(0), outcome.get(1), outcome.get(2));
        if phase != "Succeeded" {
            return Err(not_refundable(Some(phase)));
        }
        if payer != claim.user_id {
            return Err(LedgerError::RefundPayerMismatch {
                payment_id: claim.payment_id.clone(),
                payer,
                requested: claim.user_id.clone(),
            });
        }
        if currency != claim.currency {
            return Err(LedgerError::RefundCurrencyMismatch {
                payment_id: claim.payment_id.clone(),
                payment: currency,
                requested: claim.currency.clone(),
            });
        }
        let ops = entries(&mut tx, &claim.payment_id).await?;
        let captured = ops.get("debit").copied().unwrap_or_default()
            - ops.get("credit").copied().unwrap_or_default();
        let refunded = refunds_of(&mut tx, &claim.payment_id, Counted::Held).await?;
        if refunded.saturating_add(claim.amount) > captured {
            return Err(LedgerError::ExceedsRefundable {
                payment_id: claim.payment_id.clone(),
                captured,
                refunded,
                requested: claim.amount,
            });
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO refunds (refund_id, payment_id, user_id, amount, currency, status, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $6)",
        )
        .bind(&claim.refund_id)
        .bind(&claim.payment_id)
        .bind(&claim.user_id)
        .bind(claim.amount)
        .bind(&claim.currency)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefundState::Reserved)
    }

    /// Credits the payer with a reserved refund the gateway made. Idempotent.
    /// Returns what happened and Σ succeeded refunds of the payment after it.
    pub async fn complete_refund(
        &self,
        refund_id: &str,
        gateway_refund_id: &str,
    ) -> Result<(Applied, i64), LedgerError> {
        let mut tx = self.pool.begin().await?;
        let refund = lock_refund(&mut tx, refund_id)
            .await?
            .ok_or_else(|| LedgerError::RefundNotReserved(refund_id.to_string()))?;
        match refund.status.as_str() {
            "succeeded" => {
                let refunded = refunds_of(&mut tx, &refund.payment_id, Counted::Succeeded).await?;
                return Ok((Applied::AlreadyDone, refunded));
            }
            "failed" => return Err(LedgerError::RefundAlreadyFailed(refund_id.to_string())),
            _ => {}
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO refund_entries (refund_id, payment_id, user_id, amount, currency, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(refund_id)
        .bind(&refund.payment_id)
        .bind(&refund.user_id)
        .bind(refund.amount)
        .bind(&refund.currency)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE accounts SET balance = balance + $1 WHERE user_id = $2")
            .bind(refund.amount)
            .bind(&refund.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE refunds SET status = 'succeeded', gateway_refund_id = $1, updated_ms = $2 \
             WHERE refund_id = $3",
        )
        .bind(gateway_refund_id)
        .bind(now)
        .bind(refund_id)
        .execute(&mut *tx)
        .await?;
        let refunded = refunds_of(&mut tx, &refund.payment_id, Counted::Succeeded).await?;
        tx.commit().await?;
        Ok((Applied::Moved, refunded))
    }

    /// Gives up a reserved refund (the gateway refused it): it is marked
    /// failed with `reason` and no longer counts; no money moves. `Moved`
    /// means released now; `Nothing`, that no such refund was reserved.
    pub async fn release_refund(
        &self,
        refund_id: &str,
        reason: &str,
    ) -> Result<Applied, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let Some(refund) = lock_refund(&mut tx, refund_id).await? else {
            return Ok(Applied::Nothing);
        };
        match refund.status.as_str() {
            "failed" => return Ok(Applied::AlreadyDone),
            "succeeded" => return Err(LedgerError::RefundAlreadySucceeded(refund_id.to_string())),
            _ => {}
        }
        sqlx::query(
            "UPDATE refunds SET status = 'failed', reason = $1, updated_ms = $2 WHERE refund_id = $3",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(refund_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Applied::Moved)
    }

    /// Σ succeeded refunds of the payment.
    pub async fn payment_refunded(&self, payment_id: &str) -> Result<i64, LedgerError> {
        let mut conn = self.pool.acquire().await?;
        refunds_of(&mut conn, payment_id, Counted::Succeeded).await
    }

    /// Everything the audit needs, read in one go: one read-only transaction
    /// that sees a single moment, so a debit committed between two of its
    /// reads cannot show up as an entry without its balance (or the reverse).
    /// PostgreSQL's default (read committed) gives each statement its own
    /// moment, hence repeatable read; a SQLite read transaction already sees
    /// one.
    pub async fn snapshot(&self) -> Result<crate::audit::Snapshot, LedgerError> {
        use crate::audit::{Account, Entry, Outcome, RefundEntry, RefundRecord, Snapshot};
        let mut tx = self.pool.begin().await?;
        if !self.sqlite {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let accounts =
            sqlx::query("SELECT user_id, currency, balance, opening_balance FROM accounts")
                .fetch_all(&mut *tx)
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
                .fetch_all(&mut *tx)
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
        .fetch_all(&mut *tx)
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
        let refunds = sqlx::query(
            "SELECT refund_id, payment_id, user_id, amount, currency, status FROM refunds",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| RefundRecord {
            refund_id: r.get(0),
            payment_id: r.get(1),
            user_id: r.get(2),
            amount: r.get(3),
            currency: r.get(4),
            status: r.get(5),
        })
        .collect();
        let refund_entries =
            sqlx::query("SELECT refund_id, payment_id, user_id, amount FROM refund_entries")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| RefundEntry {
                    refund_id: r.get(0),
                    payment_id: r.get(1),
                    user_id: r.get(2),
                    amount: r.get(3),
                })
                .collect();
        tx.commit().await?;
        Ok(Snapshot {
            accounts,
            entries,
            outcomes,
            refunds,
            refund_entries,
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

/// A row of `refunds`.
struct Refund {
    payment_id: String,
    user_id: String,
    amount: i64,
    currency: String,
    status: String,
    reason: Option<String>,
    gateway_refund_id: Option<String>,
}

impl Refund {
    async fn state(self, conn: &mut sqlx::AnyConnection) -> Result<RefundState, LedgerError> {
        Ok(match self.status.as_str() {
            "succeeded" => RefundState::Succeeded {
                gateway_refund_id: self.gateway_refund_id,
                payment_refunded: refunds_of(conn, &self.payment_id, Counted::Succeeded).await?,
            },
            "failed" => RefundState::Failed {
                reason: self.reason.unwrap_or_default(),
            },
            _ => RefundState::Reserved,
        })
    }
}

async fn refund_row(
    conn: &mut sqlx::AnyConnection,
    refund_id: &str,
) -> Result<Option<Refund>, LedgerError> {
    let row = sqlx::query(
        "SELECT payment_id, user_id, amount, currency, status, reason, gateway_refund_id \
         FROM refunds WHERE refund_id = $1",
    )
    .bind(refund_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Refund {
        payment_id: r.get(0),
        user_id: r.get(1),
        amount: r.get(2),
        currency: r.get(3),
        status: r.get(4),
        reason: r.get(5),
        gateway_refund_id: r.get(6),
    }))
}

/// Locks the account of the refund's payer, then reads the refund again: its
/// status only changes under that lock.
async fn lock_refund(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    refund_id: &str,
) -> Result<Option<Refund>, LedgerError> {
    let Some(refund) = refund_row(tx, refund_id).await? else {
        return Ok(None);
    };
    lock_account(tx, &refund.user_id).await?;
    refund_row(tx, refund_id).await
}

/// Which refunds of a payment to add up.
#[derive(Clone, Copy)]
enum Counted {
    /// Credited to the payer.
    Succeeded,
    /// Credited or reserved: what is no longer left to refund.
    Held,
}

/// Σ amount of the payment's refunds. Added up here rather than by `SUM`,
/// which PostgreSQL returns as `NUMERIC` for a `BIGINT` column.
async fn refunds_of(
    conn: &mut sqlx::AnyConnection,
    payment_id: &str,
    counted: Counted,
) -> Result<i64, LedgerError> {
    let sql = match counted {
        Counted::Succeeded => {
            "SELECT amount FROM refunds WHERE payment_id = $1 AND status = 'succeeded'"
        }
        Counted::Held => {
            "SELECT amount FROM refunds WHERE payment_id = $1 \
             AND status IN ('reserved', 'succeeded')"
        }
    };
    let rows = sqlx::query(sql).bind(payment_id).fetch_all(conn).await?;
    Ok(rows.iter().map(|r| r.get::<i64, _>(0)).sum())
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

-- The accounts ledger. Portable between PostgreSQL and SQLite.
-- Money is integer minor units. Each ledger entry is unique on
-- (payment_id, operation), so a retried debit or credit never moves money twice.

CREATE TABLE IF NOT EXISTS accounts (
    user_id         TEXT PRIMARY KEY,
    currency        TEXT NOT NULL,
    balance         BIGINT NOT NULL CHECK (balance >= 0),
    -- What the account held when it was opened: the audit's reference.
    opening_balance BIGINT NOT NULL CHECK (opening_balance >= 0),
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen'))
);

CREATE TABLE IF NOT EXISTS ledger_entries (
    payment_id TEXT NOT NULL,
    operation  TEXT NOT NULL CHECK (operation IN ('debit', 'credit')),
    user_id    TEXT NOT NULL REFERENCES accounts (user_id),
    -- A credit of 0 is a tombstone: the payment was compensated before any
    -- debit landed, and a late debit must be refused.
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    currency   TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (payment_id, operation)
);

CREATE TABLE IF NOT EXISTS payment_outcomes (
    payment_id  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    phase       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_ms BIGINT NOT NULL
);

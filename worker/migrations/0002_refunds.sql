-- Refunds of succeeded payments. Portable between PostgreSQL and SQLite.
--
-- Two tables on purpose: `refunds` is the record of each refund (reserved
-- while the gateway is asked, then succeeded or failed) and `refund_entries`
-- is the money, one credit per succeeded refund. The audit checks each
-- against the other, so a row changed in one of them is named.

CREATE TABLE IF NOT EXISTS refunds (
    refund_id         TEXT PRIMARY KEY,
    payment_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL REFERENCES accounts (user_id),
    amount            BIGINT NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL,
    -- A reserved refund counts against what is left to refund, so two
    -- refunds racing for the last cent cannot both go to the gateway.
    status            TEXT NOT NULL CHECK (status IN ('reserved', 'succeeded', 'failed')),
    reason            TEXT,
    gateway_refund_id TEXT,
    created_ms        BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS refunds_payment_id ON refunds (payment_id);

CREATE TABLE IF NOT EXISTS refund_entries (
    refund_id  TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES accounts (user_id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    currency   TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

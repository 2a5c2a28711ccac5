-- Same tables as schemas/postgres/0003_journal_and_stats.sql (keep them in step).
-- The double-entry journal, the balances it sums to, and the dashboards' daily figures. All
-- amounts are integer minor units; every entry's lines balance (sum of debits = sum of credits).

-- One journal line. An entry is every line of one event (`entry_id` = the event's id).
CREATE TABLE ledger_entry (
    entry_id     text   NOT NULL,
    line         integer NOT NULL,
    merchant_id  text   NOT NULL,
    order_id     text   NOT NULL,
    event_type   text   NOT NULL,
    -- The outside document the entry answers to: the channel_trade_no of a payment, the
    -- refund_id of a refund (what reconciliation matches a channel statement's lines on).
    reference    text   NOT NULL,
    account      text   NOT NULL,
    debit_minor  integer NOT NULL CHECK (debit_minor >= 0),
    credit_minor integer NOT NULL CHECK (credit_minor >= 0),
    currency     text   NOT NULL,
    occurred_at  text NOT NULL,
    PRIMARY KEY (entry_id, line)
);
CREATE INDEX ledger_entry_merchant_account ON ledger_entry (merchant_id, account, occurred_at);
-- Reconciliation: one channel's day, and lookups by document.
CREATE INDEX ledger_entry_account_time ON ledger_entry (account, occurred_at);
CREATE INDEX ledger_entry_reference ON ledger_entry (reference);

-- Sum of a merchant's journal lines per account and currency.
CREATE TABLE account_balance (
    merchant_id  text   NOT NULL,
    account      text   NOT NULL,
    currency     text   NOT NULL,
    debit_minor  integer NOT NULL,
    credit_minor integer NOT NULL,
    lines        integer NOT NULL,
    PRIMARY KEY (merchant_id, account, currency)
);

-- What the journal projection must remember of an order to post later events (its merchant,
-- channel, refund amounts): JSON, private to the projection.
CREATE TABLE journal_order (
    order_id text PRIMARY KEY,
    doc      text NOT NULL
);

-- Per merchant, UTC day and currency: orders created, paid, refunds succeeded.
CREATE TABLE merchant_daily_stats (
    merchant_id       text   NOT NULL,
    day               text NOT NULL,
    currency          text   NOT NULL,
    orders_created    integer NOT NULL,
    orders_paid       integer NOT NULL,
    paid_minor        integer NOT NULL,
    refunds_succeeded integer NOT NULL,
    refunded_minor    integer NOT NULL,
    PRIMARY KEY (merchant_id, day, currency)
);

-- `GET /v1/orders?status=`: newest first within one status.
CREATE INDEX order_view_merchant_status_created ON order_view (merchant_id, status, created_at DESC, order_id DESC);

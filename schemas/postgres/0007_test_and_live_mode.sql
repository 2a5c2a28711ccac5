-- Same as schemas/sqlite/0007_test_and_live_mode.sql (keep them in step).
-- Test mode and live mode. Every order belongs to one mode (OrderCreated 2.0's terms.mode; older
-- events are upcast: an order on the sandbox is a test order, on any real channel a live one),
-- and nothing derived from orders may mix them.

-- A merchant has one API key and one webhook secret per mode (a test notification must never
-- carry the signature live receivers trust). The key and secret it had before are its live ones;
-- `payledger merchants test-key <id>` issues test ones.
ALTER TABLE merchants ADD COLUMN test_webhook_secret text;
ALTER TABLE merchants ADD COLUMN test_api_key_sha256 text UNIQUE;

-- The notify queue keeps its delivery state: its rows get the mode of their order, read from the
-- order's OrderCreated event (the read models may lag the log).
ALTER TABLE notify_job ADD COLUMN mode text NOT NULL DEFAULT 'live';
UPDATE notify_job SET mode = 'test' WHERE order_id IN (
    SELECT aggregate_id FROM events
    WHERE event_type = 'OrderCreated' AND payload -> 'OrderCreated' -> 'terms' ->> 'channel' = 'sandbox'
);
ALTER TABLE notify_job ALTER COLUMN mode DROP DEFAULT;
DROP INDEX notify_job_merchant_created;
CREATE INDEX notify_job_merchant_created ON notify_job (merchant_id, mode, created_at, notification_id);

-- Test orders created before modes existed keep their ids, which were keyed like live ones:
-- creating a test order also looks there while this is set (payledger_domain::ids).
INSERT INTO settings (key, value)
SELECT 'legacy_test_order_ids', 'true'
WHERE EXISTS (
    SELECT 1 FROM events
    WHERE event_type = 'OrderCreated' AND payload -> 'OrderCreated' -> 'terms' ->> 'channel' = 'sandbox'
);

-- The read models are rebuilt from the log with the mode in their keys: the daily figures and
-- balances summed test and live money together, which no update of their rows can split. Their
-- checkpoints go, so the projector folds the whole log again on its next start.
DROP TABLE order_view;
DROP TABLE refund_view;
DROP TABLE merchant_daily_stats;
DROP TABLE ledger_entry;
DROP TABLE account_balance;
DROP TABLE journal_order;
DELETE FROM subscriber_checkpoint WHERE name IN ('order_view', 'journal');

CREATE TABLE order_view (
    order_id      text PRIMARY KEY,
    merchant_id   text   NOT NULL,
    mode          text   NOT NULL,
    out_trade_no  text   NOT NULL,
    status        text   NOT NULL,
    amount_minor  bigint NOT NULL,
    currency      text   NOT NULL,
    channel       text   NOT NULL,
    created_at    text COLLATE "C" NOT NULL,
    updated_at    text COLLATE "C" NOT NULL,
    last_sequence bigint NOT NULL,
    doc           text   NOT NULL,
    expire_at     text COLLATE "C",
    UNIQUE (merchant_id, mode, out_trade_no)
);
CREATE INDEX order_view_merchant_created ON order_view (merchant_id, mode, created_at DESC, order_id DESC);
CREATE INDEX order_view_merchant_status_created ON order_view (merchant_id, mode, status, created_at DESC, order_id DESC);
CREATE INDEX order_view_awaiting_expire ON order_view (expire_at, order_id) WHERE status = 'awaiting_payment';
CREATE INDEX order_view_awaiting_created ON order_view (created_at, order_id) WHERE status = 'awaiting_payment';

CREATE TABLE refund_view (
    refund_id     text PRIMARY KEY,
    order_id      text   NOT NULL,
    merchant_id   text   NOT NULL,
    mode          text   NOT NULL,
    out_refund_no text   NOT NULL,
    status        text   NOT NULL,
    amount_minor  bigint NOT NULL,
    currency      text   NOT NULL,
    created_at    text COLLATE "C" NOT NULL,
    updated_at    text COLLATE "C" NOT NULL,
    doc           text   NOT NULL
);
CREATE INDEX refund_view_order ON refund_view (order_id);

CREATE TABLE ledger_entry (
    entry_id     text   NOT NULL,
    line         bigint NOT NULL,
    merchant_id  text   NOT NULL,
    mode         text   NOT NULL,
    order_id     text   NOT NULL,
    event_type   text   NOT NULL,
    reference    text   NOT NULL,
    account      text   NOT NULL,
    debit_minor  bigint NOT NULL CHECK (debit_minor >= 0),
    credit_minor bigint NOT NULL CHECK (credit_minor >= 0),
    currency     text   NOT NULL,
    occurred_at  text COLLATE "C" NOT NULL,
    PRIMARY KEY (entry_id, line)
);
CREATE INDEX ledger_entry_merchant_account ON ledger_entry (merchant_id, mode, account, occurred_at);
CREATE INDEX ledger_entry_account_time ON ledger_entry (account, occurred_at);
CREATE INDEX ledger_entry_reference ON ledger_entry (reference);

CREATE TABLE account_balance (
    merchant_id  text   NOT NULL,
    mode         text   NOT NULL,
    account      text   NOT NULL,
    currency     text   NOT NULL,
    debit_minor  bigint NOT NULL,
    credit_minor bigint NOT NULL,
    lines        bigint NOT NULL,
    PRIMARY KEY (merchant_id, mode, account, currency)
);

CREATE TABLE journal_order (
    order_id text PRIMARY KEY,
    doc      text NOT NULL
);

CREATE TABLE merchant_daily_stats (
    merchant_id       text   NOT NULL,
    mode              text   NOT NULL,
    day               text COLLATE "C" NOT NULL,
    currency          text   NOT NULL,
    orders_created    bigint NOT NULL,
    orders_paid       bigint NOT NULL,
    paid_minor        bigint NOT NULL,
    refunds_succeeded bigint NOT NULL,
    refunded_minor    bigint NOT NULL,
    PRIMARY KEY (merchant_id, mode, day, currency)
);

-- Same tables as schemas/postgres/0002_ledger.sql (keep them in step); times are RFC 3339 UTC
-- text with microseconds, so byte order (SQLite's BINARY collation) is time order.

-- A global-log subscriber's position; written in the same transaction as its effects.
CREATE TABLE subscriber_checkpoint (
    name           text   PRIMARY KEY,
    transaction_id integer NOT NULL DEFAULT 0,
    global_position integer NOT NULL DEFAULT 0,
    updated_at     text NOT NULL
);

CREATE TABLE merchants (
    merchant_id    text PRIMARY KEY,
    -- hex SHA-256 of the API key: keys are 256-bit random tokens, so a fast hash is enough and
    -- lets us look the merchant up by it.
    api_key_sha256 text NOT NULL UNIQUE,
    webhook_secret text NOT NULL,
    created_at     text NOT NULL
);

-- Installation-wide settings, e.g. the sandbox channel's callback signing secret.
CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Read model: one row per order; `doc` is the full order view as JSON.
CREATE TABLE order_view (
    order_id      text PRIMARY KEY,
    merchant_id   text   NOT NULL,
    out_trade_no  text   NOT NULL,
    status        text   NOT NULL,
    amount_minor  integer NOT NULL,
    currency      text   NOT NULL,
    channel       text   NOT NULL,
    created_at    text NOT NULL,
    updated_at    text NOT NULL,
    last_sequence integer NOT NULL,
    doc           text   NOT NULL,
    UNIQUE (merchant_id, out_trade_no)
);
CREATE INDEX order_view_merchant_created ON order_view (merchant_id, created_at DESC, order_id DESC);

CREATE TABLE refund_view (
    refund_id     text PRIMARY KEY,
    order_id      text   NOT NULL,
    merchant_id   text   NOT NULL,
    out_refund_no text   NOT NULL,
    status        text   NOT NULL,
    amount_minor  integer NOT NULL,
    currency      text   NOT NULL,
    created_at    text NOT NULL,
    updated_at    text NOT NULL,
    doc           text   NOT NULL
);
CREATE INDEX refund_view_order ON refund_view (order_id);

-- The notify queue: one row per merchant notification, built from the global log.
CREATE TABLE notify_job (
    notification_id  text PRIMARY KEY,
    merchant_id      text   NOT NULL,
    order_id         text   NOT NULL,
    event_type       text   NOT NULL,
    notify_url       text   NOT NULL,
    body             text   NOT NULL,
    status           text   NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  text NOT NULL,
    last_status_code integer,
    last_error       text,
    created_at       text NOT NULL,
    updated_at       text NOT NULL
);
CREATE INDEX notify_job_due ON notify_job (status, next_attempt_at);

-- Every delivery attempt, kept for the merchant's and our audit.
CREATE TABLE notify_attempt (
    notification_id text   NOT NULL,
    attempt         integer NOT NULL,
    attempted_at    text NOT NULL,
    status_code     integer,
    latency_ms      integer NOT NULL,
    error           text,
    PRIMARY KEY (notification_id, attempt)
);

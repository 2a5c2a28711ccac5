-- Times are RFC 3339 UTC text with microseconds ("2026-11-21T05:17:19.123456Z"): one format on
-- both backends, readable in psql, and byte order = time order under the "C" collation.

-- A global-log subscriber's position; written in the same transaction as its effects.
CREATE TABLE subscriber_checkpoint (
    name           text   PRIMARY KEY,
    transaction_id bigint NOT NULL DEFAULT 0,
    global_position bigint NOT NULL DEFAULT 0,
    updated_at     text COLLATE "C" NOT NULL
);

CREATE TABLE merchants (
    merchant_id    text PRIMARY KEY,
    -- hex SHA-256 of the API key: keys are 256-bit random tokens, so a fast hash is enough and
    -- lets us look the merchant up by it.
    api_key_sha256 text NOT NULL UNIQUE,
    webhook_secret text NOT NULL,
    created_at     text COLLATE "C" NOT NULL
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
    amount_minor  bigint NOT NULL,
    currency      text   NOT NULL,
    channel       text   NOT NULL,
    created_at    text COLLATE "C" NOT NULL,
    updated_at    text COLLATE "C" NOT NULL,
    last_sequence bigint NOT NULL,
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
    amount_minor  bigint NOT NULL,
    currency      text   NOT NULL,
    created_at    text COLLATE "C" NOT NULL,
    updated_at    text COLLATE "C" NOT NULL,
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
    attempts         bigint NOT NULL DEFAULT 0,
    next_attempt_at  text COLLATE "C" NOT NULL,
    last_status_code bigint,
    last_error       text,
    created_at       text COLLATE "C" NOT NULL,
    updated_at       text COLLATE "C" NOT NULL
);
CREATE INDEX notify_job_due ON notify_job (status, next_attempt_at);

-- Every delivery attempt, kept for the merchant's and our audit.
CREATE TABLE notify_attempt (
    notification_id text   NOT NULL,
    attempt         bigint NOT NULL,
    attempted_at    text COLLATE "C" NOT NULL,
    status_code     bigint,
    latency_ms      bigint NOT NULL,
    error           text,
    PRIMARY KEY (notification_id, attempt)
);

-- The console (operators and merchants' staff in the browser). The reasons are in
-- schemas/postgres/0009_console.sql.
CREATE TABLE console_events (
    position       integer PRIMARY KEY AUTOINCREMENT,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    sequence       integer NOT NULL CHECK (sequence >= 1),
    event_type     text    NOT NULL,
    actor          text    NOT NULL,
    at             text    NOT NULL,
    payload        text    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
) STRICT;
CREATE INDEX console_events_type ON console_events (event_type, position);
CREATE TRIGGER console_events_no_update BEFORE UPDATE ON console_events BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE refused');
END;
CREATE TRIGGER console_events_no_delete BEFORE DELETE ON console_events BEGIN
    SELECT RAISE(ABORT, 'events are immutable: DELETE refused');
END;

CREATE TABLE console_sessions (
    token_hash   text    PRIMARY KEY,
    user_id      text    NOT NULL,
    stage        text    NOT NULL,
    csrf_token   text    NOT NULL,
    address      text    NOT NULL,
    created_at   integer NOT NULL,
    last_seen_at integer NOT NULL
) STRICT;
CREATE INDEX console_sessions_user ON console_sessions (user_id);

CREATE INDEX order_view_mode_created ON order_view (mode, created_at DESC, order_id DESC);
CREATE INDEX order_view_mode_status_created ON order_view (mode, status, created_at DESC, order_id DESC);
CREATE INDEX order_view_out_trade_no ON order_view (out_trade_no);
-- The console's refund and notification lists (every merchant of one mode, newest first) and
-- its journal search by order.
CREATE INDEX refund_view_mode_created ON refund_view (mode, created_at DESC, refund_id DESC);
CREATE INDEX notify_job_mode_created ON notify_job (mode, created_at DESC, notification_id DESC);
-- What needs a person, newest first, without reading past every settled row: refunds still open
-- and notifications failing (the queries repeat these predicates word for word, so that both
-- planners use the partial indexes).
CREATE INDEX refund_view_open ON refund_view (mode, created_at DESC, refund_id DESC)
    WHERE status IN ('pending', 'failed');
CREATE INDEX notify_job_failing ON notify_job (mode, created_at DESC, notification_id DESC)
    WHERE status = 'abandoned' OR (status = 'pending' AND attempts > 0);
CREATE INDEX ledger_entry_order ON ledger_entry (order_id);

-- Merchants managed in the console: disabled (its API keys refused), and a rotated webhook
-- secret's predecessor, which keeps signing beside the new one until its time (RFC 3339 UTC), so
-- that a merchant switches its receiver without losing a notification. Sealed like the current
-- ones, under places of their own.
ALTER TABLE merchants ADD COLUMN disabled_at text;
ALTER TABLE merchants ADD COLUMN previous_webhook_secret text;
ALTER TABLE merchants ADD COLUMN previous_webhook_secret_until text;
ALTER TABLE merchants ADD COLUMN previous_test_webhook_secret text;
ALTER TABLE merchants ADD COLUMN previous_test_webhook_secret_until text;

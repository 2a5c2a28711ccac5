-- The console (operators and merchants' staff in the browser).
--
-- Console users are event-sourced: one `ConsoleUser` aggregate per person, its events here.
-- They are kept out of `events` on purpose: every reader of the payment log (projections,
-- notifier, relay, replay) reads `events` by its global order with no aggregate condition, and
-- `GlobalLog::head` is what a read waits for; a console event there would be a row no payment
-- projection ever moves past. Same rules as `events`: a sequence per aggregate under the primary
-- key (optimistic concurrency), never updated, never deleted.
CREATE TABLE console_events (
    position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 1),
    event_type     text   NOT NULL,
    -- The user's e-mail address: who did it.
    actor          text   NOT NULL,
    -- The event's own time, RFC 3339 UTC.
    at             text   NOT NULL,
    payload        text   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX console_events_type ON console_events (event_type, position);
CREATE TRIGGER console_events_immutable BEFORE UPDATE OR DELETE ON console_events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

-- Server-side console sessions. Not events: a session is a credential, its start and end are
-- the `LoginSucceeded` / `LoggedOut` events. `token_hash`: SHA-256 of the cookie's token, so a
-- read of this table logs nobody in. `stage`: what the session may do yet (`password`: change
-- the one-time password; `totp`: give the second factor; `enrol`: enrol one; `full`). Times in
-- unix seconds.
CREATE TABLE console_sessions (
    token_hash   text   PRIMARY KEY,
    user_id      text   NOT NULL,
    stage        text   NOT NULL,
    csrf_token   text   NOT NULL,
    address      text   NOT NULL,
    created_at   bigint NOT NULL,
    last_seen_at bigint NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Operators' order lists: every merchant of one mode, newest first.
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

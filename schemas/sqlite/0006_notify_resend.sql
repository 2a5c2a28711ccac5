-- Same as schemas/postgres/0006_notify_resend.sql (keep them in step).
-- GET /v1/notifications lists one merchant's notify queue newest first, keyset on
-- (created_at, notification_id); without this index every page scans the whole queue.
CREATE INDEX notify_job_merchant_created ON notify_job (merchant_id, created_at, notification_id);

-- POST /v1/notifications/{id}/resend: who asked last, when, and how many times. A resend is not
-- a delivery attempt, so it is kept on the job rather than in notify_attempt.
ALTER TABLE notify_job ADD COLUMN resend_count integer NOT NULL DEFAULT 0;
ALTER TABLE notify_job ADD COLUMN resent_at text;
ALTER TABLE notify_job ADD COLUMN resent_by text;

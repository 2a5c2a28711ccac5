-- Same as schemas/sqlite/0010_daily_stats_per_channel.sql (keep them in step).
-- The daily figures per channel as well (the console's overview shows volume, orders, success
-- rate and refunds per channel). One table keyed one column finer, not a second table beside it:
-- the order projection still writes one upsert per batch, and `GET /v1/stats/daily` sums a day's
-- channels (a handful of rows).
--
-- No update of the old rows can split them by channel, so the order projection's read models are
-- folded again from the log: its checkpoint goes, and the projector rebuilds `order_view`,
-- `refund_view` and `merchant_daily_stats` on its next start (reads wait until it has caught up).
-- Their indexes stay. (`payledger rebuild order_view` does the same into shadow tables.)
DROP TABLE merchant_daily_stats;
CREATE TABLE merchant_daily_stats (
    merchant_id       text   NOT NULL,
    mode              text   NOT NULL,
    day               text COLLATE "C" NOT NULL,
    currency          text   NOT NULL,
    channel           text   NOT NULL,
    orders_created    bigint NOT NULL,
    orders_paid       bigint NOT NULL,
    paid_minor        bigint NOT NULL,
    refunds_succeeded bigint NOT NULL,
    refunded_minor    bigint NOT NULL,
    PRIMARY KEY (merchant_id, mode, day, currency, channel)
);
-- The operators' overview: every merchant of a mode, last 30 days.
CREATE INDEX merchant_daily_stats_mode_day ON merchant_daily_stats (mode, day);
DELETE FROM order_view;
DELETE FROM refund_view;
DELETE FROM subscriber_checkpoint WHERE name = 'order_view';

-- Several accounts per channel: which account opened an order (its id and channel-side identity),
-- so a configuration change can be checked against the orders an account still serves. Rows
-- from before keep NULL: those orders were opened before accounts were recorded, and belong to
-- the channel's legacy account (the events say the same: ChannelOrderOpened 1.0 has no account).
ALTER TABLE order_view ADD COLUMN channel_account text;
ALTER TABLE order_view ADD COLUMN channel_account_identity text;

-- The accounts' open work: refunds still pending (and the refund sweep's pending list).
CREATE INDEX refund_view_pending ON refund_view (order_id) WHERE status = 'pending';

-- Same as schemas/postgres/0005_monitor_schedule.sql (keep them in step).
-- The order monitor queries awaiting orders at the channel when their age crosses a point of its
-- schedule (1m, 5m, 15m): each round it reads the awaiting orders created in a window
-- (created_at in (a, b], keyset order created_at, order_id). No index covered created_at without
-- merchant_id; this partial one holds only the few awaiting orders.
-- The monitor's query names the status literally, so the planner can use this index.
CREATE INDEX order_view_awaiting_created ON order_view (created_at, order_id) WHERE status = 'awaiting_payment';

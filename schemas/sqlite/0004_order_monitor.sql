-- Same as schemas/postgres/0004_order_monitor.sql (keep them in step).
-- The order monitor finds orders still awaiting payment whose expire_at has passed. expire_at
-- was only inside `doc`; a column with a partial index makes that query read the few awaiting
-- orders instead of the whole table. Same text format as the other times (fmt_ts).
ALTER TABLE order_view ADD COLUMN expire_at text;

-- Rows written before this migration: from the view document, where chrono wrote 0, 3, 6 or 9
-- fractional digits; padded or cut to the 6 the projection writes (it truncates too).
UPDATE order_view SET expire_at = json_extract(doc, '$.expire_at');
UPDATE order_view SET expire_at = substr(expire_at, 1, 19) || '.'
    || substr(CASE WHEN instr(expire_at, '.') > 0 THEN substr(expire_at, 21, length(expire_at) - 21) ELSE '' END
              || '000000', 1, 6)
    || 'Z';

-- The monitor's query names the status literally, so the planner can use this index.
CREATE INDEX order_view_awaiting_expire ON order_view (expire_at, order_id) WHERE status = 'awaiting_payment';

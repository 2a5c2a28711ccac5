-- The event store: postgres-es 0.5 columns plus what a global, ordered log needs.
-- postgres-es names every column it writes, so the extra columns are filled by defaults.
CREATE TABLE events (
    aggregate_type  text   NOT NULL,
    aggregate_id    text   NOT NULL,
    sequence        bigint NOT NULL CHECK (sequence >= 1),
    event_type      text   NOT NULL,
    event_version   text   NOT NULL,
    payload         jsonb  NOT NULL,
    metadata        jsonb  NOT NULL,
    -- Commit order is (transaction_id, global_position): identity values are handed out at
    -- insert time, not commit time, so readers only read below pg_snapshot_xmin (see DESIGN.md).
    global_position bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    transaction_id  xid8   NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX events_global_order ON events (transaction_id, global_position);

-- Events are facts: never updated, never deleted.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % refused', TG_OP;
END $$;
CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

-- Snapshots are not used (cqrs-es 0.5 snapshot modes apply events twice); the table exists
-- only because postgres-es is configured with a snapshot table name.
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL,
    current_snapshot bigint NOT NULL,
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

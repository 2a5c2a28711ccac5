-- Snapshots of console users. The reasons are in schemas/postgres/0011_console_snapshots.sql
-- (keep them in step).
CREATE TABLE console_snapshots (
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    sequence       integer NOT NULL,
    version        integer NOT NULL,
    state          text    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

CREATE INDEX console_events_type_position ON console_events (aggregate_type, position);
CREATE INDEX console_events_actor_position ON console_events (actor, position);

-- The event store: sqlite-es 0.5 columns plus what a global, ordered log needs.
CREATE TABLE events (
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    sequence       integer NOT NULL CHECK (sequence >= 1),
    event_type     text    NOT NULL,
    event_version  text    NOT NULL,
    payload        text    NOT NULL,
    metadata       text    NOT NULL,
    recorded_at    text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- The composite primary key is what sqlite-es maps to an optimistic-lock conflict
    -- (SQLITE_CONSTRAINT_PRIMARYKEY), so the global position lives in its own table.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

-- The global log's order. SQLite has one writer at a time, so insert order is commit order;
-- AUTOINCREMENT keeps positions stable (VACUUM may renumber plain rowids).
CREATE TABLE event_positions (
    global_position integer PRIMARY KEY AUTOINCREMENT,
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    sequence        integer NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TRIGGER events_position AFTER INSERT ON events BEGIN
    INSERT INTO event_positions (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
END;

-- Events are facts: never updated, never deleted.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN
    SELECT RAISE(ABORT, 'events are immutable: UPDATE refused');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN
    SELECT RAISE(ABORT, 'events are immutable: DELETE refused');
END;

CREATE TABLE snapshots (
    aggregate_type   text    NOT NULL,
    aggregate_id     text    NOT NULL,
    last_sequence    integer NOT NULL,
    current_snapshot integer NOT NULL,
    payload          text    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

-- Same as schemas/sqlite/0011_console_snapshots.sql (keep them in step).
-- Snapshots of console users. Every console request loads its user (the session's check), and
-- every action a user takes is an event of that user (`ActionRecorded`): folded from the first
-- event, each request would read the user's whole history, which grows without end. So the
-- transaction that appends a user's events also stores the user as the fold left it; a load
-- reads the snapshot and only the events after its `sequence`.
--
-- A cache of the fold, never a fact: the events stay the truth (the audit log reads them),
-- deleting a row only makes the next load read from the first event, and `version` names the
-- fold that wrote it (`ConsoleUser::SNAPSHOT_VERSION`): a row of another version is ignored.
CREATE TABLE console_snapshots (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    version        bigint NOT NULL,
    state          text   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- The audit log pages newest first through console users' events, all of them or one actor's.
-- Indexes that lead with those columns, so that the planner never sorts a busy user's whole
-- history to find a page (it did, at 100,000 events of one user: 160 ms a page).
CREATE INDEX console_events_type_position ON console_events (aggregate_type, position);
CREATE INDEX console_events_actor_position ON console_events (actor, position);

-- Version 2: the change feed for outbound sync, and the audit log.

-- What was stored, in the data's own transaction (Options.ChangeFeed):
-- kind 'r' a new reading, 'a' an alert saved. Deleted once handled.
CREATE TABLE feed (
    seq bigserial PRIMARY KEY,
    kind text NOT NULL,
    patient text NOT NULL,
    device text NOT NULL DEFAULT '',
    reading text NOT NULL DEFAULT '',
    t bigint NOT NULL DEFAULT 0,
    received bigint NOT NULL DEFAULT 0,
    alert text NOT NULL DEFAULT ''
);

-- The tamper-evident audit log (internal/audit): records by index, and
-- the signed tree head after the last one.
CREATE TABLE audit (idx bigint PRIMARY KEY, rec bytea NOT NULL);
CREATE TABLE audit_head (id integer PRIMARY KEY CHECK (id = 1), head bytea NOT NULL);

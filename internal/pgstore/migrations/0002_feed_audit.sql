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

-- Tamper-evident audit logs (internal/audit), one per node (its signing
-- key's log name): records by index, and the signed tree head after the
-- last one.
CREATE TABLE audit (log text NOT NULL, idx bigint NOT NULL, rec bytea NOT NULL, PRIMARY KEY (log, idx));
CREATE TABLE audit_head (log text PRIMARY KEY, head bytea NOT NULL);

-- Vigil's PostgreSQL schema, version 1. Times are Unix milliseconds
-- (bigint) unless named _ns; records keep their Go JSON form in doc.

CREATE TABLE patients (id text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE devices (id text PRIMARY KEY, serial text NOT NULL DEFAULT '', doc jsonb NOT NULL);
CREATE INDEX devices_serial ON devices (serial) WHERE serial <> '';
CREATE TABLE users (id text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE tokens (id text PRIMARY KEY, doc jsonb NOT NULL);

-- Which device was on which patient when: to_ns NULL while current.
CREATE TABLE assignments (
    device text NOT NULL,
    patient text NOT NULL,
    from_ns bigint NOT NULL,
    to_ns bigint,
    PRIMARY KEY (device, from_ns)
);
CREATE INDEX assignments_patient ON assignments (patient, from_ns);

-- A series: one patient's values of one LOINC code from one device (and
-- one method where the code alone does not tell values apart).
CREATE TABLE series (
    id bigserial PRIMARY KEY,
    patient text NOT NULL,
    code text NOT NULL,
    device text NOT NULL,
    method text NOT NULL DEFAULT '',
    unit text NOT NULL DEFAULT '',
    kind text NOT NULL DEFAULT '',   -- 'text': text or coded values
    sampling jsonb,                  -- a MedTech SampledData mapping's grouping
    UNIQUE (patient, code, device, method)
);

-- Samples, partitioned by month of device time (partitions are created
-- as data for a month arrives: samples_yYYYYmMM).
CREATE TABLE samples (
    series bigint NOT NULL,
    t bigint NOT NULL,                 -- device time, Unix ms
    value double precision NOT NULL DEFAULT 0,
    lag integer NOT NULL DEFAULT 0,    -- receive time - device time, seconds
    text_value jsonb,                  -- {"s": text} or {"c": concept}
    origin jsonb,                      -- HL7 v2 location, equipment, containment
    PRIMARY KEY (series, t)
) PARTITION BY RANGE (t);

-- Idempotency: a (device, reading id) is stored once.
CREATE TABLE reading_ids (
    device text NOT NULL,
    id text NOT NULL,
    received bigint NOT NULL,
    PRIMARY KEY (device, id)
);

CREATE TABLE alerts (id text PRIMARY KEY, patient text NOT NULL, state text NOT NULL, raised_ns bigint NOT NULL, doc jsonb NOT NULL);
CREATE INDEX alerts_raised ON alerts (raised_ns DESC, id DESC);
CREATE TABLE dead_letters (id text PRIMARY KEY, device text NOT NULL DEFAULT '', reason text NOT NULL DEFAULT '', doc jsonb NOT NULL);
-- json, not jsonb: templates come back byte for byte as uploaded.
CREATE TABLE mappings (id text NOT NULL, version integer NOT NULL, doc json NOT NULL, PRIMARY KEY (id, version));
CREATE TABLE rules (id text NOT NULL, version integer NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (id, version));
CREATE TABLE events (device text NOT NULL, id text NOT NULL, patient text NOT NULL, t_ns bigint NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (device, id));
CREATE INDEX events_patient ON events (patient, t_ns);
CREATE TABLE reviews (id text PRIMARY KEY, patient text NOT NULL, at_ns bigint NOT NULL, doc jsonb NOT NULL);
CREATE INDEX reviews_patient ON reviews (patient, at_ns);
CREATE TABLE subscriptions (id text PRIMARY KEY, doc jsonb NOT NULL);

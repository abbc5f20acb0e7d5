-- Peer measurement for docs/benchmarks.md: bytes per reading value in PostgreSQL for the same
-- data the Pebble benchmark stores (one day of 1 Hz heart rate and SpO2 for one patient, with
-- the idempotency key Vigil needs), as a plain table with its primary key and a time index.
-- Run: psql -h 127.0.0.1 -U postgres -d test -f tools/peers/postgres-bytes-per-reading.sql
DROP TABLE IF EXISTS vigil_peer_readings;
CREATE TABLE vigil_peer_readings (
  device  text NOT NULL,
  id      text NOT NULL,
  patient text NOT NULL,
  code    text NOT NULL,
  time    timestamptz NOT NULL,
  value   double precision NOT NULL,
  PRIMARY KEY (device, id, code)
);
CREATE INDEX ON vigil_peer_readings (patient, code, time);
INSERT INTO vigil_peer_readings
SELECT 'mon', 'r' || s, 'p1', c.code, timestamptz '2026-11-02 10:00:00+00' + s * interval '1 second',
       CASE WHEN c.code = '8867-4' THEN round(72 + 5 * sin(s / 600.0) + random() * 2) ELSE round(96 + random() * 3) END
FROM generate_series(0, 86399) s, (VALUES ('8867-4'), ('59408-5')) c(code);
VACUUM ANALYZE vigil_peer_readings;
SELECT count(*) AS values,
       pg_total_relation_size('vigil_peer_readings') AS bytes,
       round(pg_total_relation_size('vigil_peer_readings')::numeric / count(*), 1) AS bytes_per_value
FROM vigil_peer_readings;
DROP TABLE vigil_peer_readings;

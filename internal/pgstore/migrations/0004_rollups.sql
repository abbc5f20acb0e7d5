-- Version 4: rollups of expired samples (retention): min, max, sum and
-- count per series for each minute ('m') and hour ('h').
CREATE TABLE rollups (
    series bigint NOT NULL,
    res char(1) NOT NULL,
    start bigint NOT NULL,            -- Unix ms
    min double precision NOT NULL,
    max double precision NOT NULL,
    sum double precision NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (series, res, start)
);

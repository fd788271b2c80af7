-- 003 financing totals: each loaded file's engagement lines summed by what the consolidated
-- views group on. Written with the file's rows, in the same transaction; the consolidated
-- views read these few thousand rows instead of scanning every line (5M lines: 500 ms → 5 ms).
CREATE TABLE financing_totals (
    file_id           INTEGER NOT NULL,
    partner           VARCHAR NOT NULL,
    axis              TINYINT NOT NULL,
    year              SMALLINT NOT NULL,
    insee_code        VARCHAR NOT NULL,
    instrument        VARCHAR,
    counts_as_engaged BOOLEAN NOT NULL,
    amount_eur        DECIMAL(18, 2) NOT NULL,
    lines             BIGINT NOT NULL
);

INSERT INTO financing_totals
SELECT file_id, partner, axis, year, insee_code, instrument, counts_as_engaged,
       sum(amount_eur), count(*)
FROM engagement_rows
GROUP BY ALL;

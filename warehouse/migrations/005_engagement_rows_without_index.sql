-- 005 engagement rows without an index. The primary key (file_id, row_key) made DuckDB build
-- an ART index over every loaded line: at 5M lines it cost ~1 s of the insert and ~0.8 s of
-- the commit, and 40 MB of warehouse. Nothing looks rows up by that key (the views read
-- financing_totals; history scans by file), and the loader already proves what the key
-- guarded: every row read ends in exactly one place (row keys are the reader's row ids), or
-- the transaction rolls back. DuckDB cannot drop a primary key, so the table is rebuilt.
CREATE TABLE engagement_rows_005 (
    file_id         INTEGER NOT NULL,
    row_key         BIGINT NOT NULL,   -- reading order within the file (unique across sheets)
    source_row      INTEGER NOT NULL,  -- the row a person sees: spreadsheet row, CSV line
    sheet           VARCHAR,           -- the workbook's sheet, NULL for text files
    partner         VARCHAR NOT NULL,
    operation_id    VARCHAR NOT NULL,
    insee_code      VARCHAR NOT NULL,
    commune_label   VARCHAR,
    axis            TINYINT NOT NULL,
    category        VARCHAR,
    year            SMALLINT NOT NULL,
    engagement_date DATE,
    instrument      VARCHAR,
    instrument_label VARCHAR,
    scheme          VARCHAR,
    project_label   VARCHAR,
    amount_eur      DECIMAL(18, 2) NOT NULL,
    status          VARCHAR NOT NULL,
    counts_as_engaged BOOLEAN NOT NULL
);
INSERT INTO engagement_rows_005 SELECT * FROM engagement_rows ORDER BY file_id, row_key;
DROP TABLE engagement_rows;
ALTER TABLE engagement_rows_005 RENAME TO engagement_rows;

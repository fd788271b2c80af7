-- 010 engagement rows with their compression declared. A load's rows are compressed as they
-- are written, and DuckDB chose each text column's method by trying every one it has on every
-- segment (dictionary, FSST, dictionary + FSST, uncompressed): a quarter of the CPU of a 1M-row
-- load's insert. The methods it chose are declared instead, so only those run: dictionary for
-- the columns of few values (codes, labels, categories, statuses, the partner), FSST for the
-- operation ids (nearly all different); the free text (project_label) and the numbers keep
-- DuckDB's choice. The warehouse file keeps its size. DuckDB cannot alter a column's
-- compression, so the table is rebuilt (as in 005). A DuckLake stores Parquet files: nothing
-- to change there (warehouse/lake/010_engagement_rows_compression.sql).
CREATE TABLE engagement_rows_010 (
    file_id         INTEGER NOT NULL,
    row_key         BIGINT NOT NULL,   -- reading order within the file (unique across sheets)
    source_row      INTEGER NOT NULL,  -- the row a person sees: spreadsheet row, CSV line
    sheet           VARCHAR USING COMPRESSION dictionary,  -- the workbook's sheet, NULL for text files
    partner         VARCHAR USING COMPRESSION dictionary NOT NULL,
    operation_id    VARCHAR USING COMPRESSION fsst NOT NULL,
    insee_code      VARCHAR USING COMPRESSION dictionary NOT NULL,
    commune_label   VARCHAR USING COMPRESSION dictionary,
    axis            TINYINT NOT NULL,
    category        VARCHAR USING COMPRESSION dictionary,
    year            SMALLINT NOT NULL,
    engagement_date DATE,
    instrument      VARCHAR USING COMPRESSION dictionary,
    instrument_label VARCHAR USING COMPRESSION dictionary,
    scheme          VARCHAR USING COMPRESSION dictionary,
    project_label   VARCHAR,
    amount_eur      DECIMAL(18, 2) NOT NULL,
    status          VARCHAR USING COMPRESSION dictionary NOT NULL,
    counts_as_engaged BOOLEAN NOT NULL
);
INSERT INTO engagement_rows_010 SELECT * FROM engagement_rows ORDER BY file_id, row_key;
DROP TABLE engagement_rows;
ALTER TABLE engagement_rows_010 RENAME TO engagement_rows;

-- 007 held exports: a stock export that would withdraw too much of its partner's current
-- export is loaded into history but held (status 'held'): it is not current until someone
-- accepts it (cdv-etl accept FILE_ID). The ledger keeps why it was held: the export it was
-- compared with, the operations withdrawn (absent from the file, or in it but quarantined)
-- and their engaged euros, and when it was accepted. DuckDB cannot alter a CHECK constraint,
-- so the table is rebuilt: every column and row kept, file ids still drawn from file_seq.
CREATE TABLE files_007 (
    file_id          INTEGER PRIMARY KEY DEFAULT nextval('file_seq'),
    partner          VARCHAR,
    file_name        VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    size_bytes       BIGINT NOT NULL,
    extraction_date  DATE,
    loaded_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,
    status           VARCHAR NOT NULL CHECK (status IN ('loaded', 'duplicate', 'rejected', 'held')),
    reason           VARCHAR,
    message          VARCHAR,
    rows_read        INTEGER NOT NULL DEFAULT 0,
    rows_loaded      INTEGER NOT NULL DEFAULT 0,
    rows_quarantined INTEGER NOT NULL DEFAULT 0,
    loaded_amount_eur  DECIMAL(18, 2),
    engaged_amount_eur DECIMAL(18, 2),
    control_total_eur  DECIMAL(18, 2),
    control_total_diff_eur DECIMAL(18, 2),
    duplicate_of     INTEGER,
    forced_reloads   INTEGER NOT NULL DEFAULT 0,
    stat_device      UBIGINT,
    stat_inode       UBIGINT,
    stat_mtime_ns    BIGINT,
    stat_ctime_ns    BIGINT,
    compared_file_id INTEGER,             -- the partner's current export when this one was loaded
    withdrawn_operations INTEGER,         -- its operations in none of this file's loaded rows
    withdrawn_absent INTEGER,             -- of which absent from this file
    withdrawn_quarantined INTEGER,        -- of which in this file, but quarantined
    withdrawn_eur    DECIMAL(18, 2),      -- their engaged euros in the current export
    accepted_at      TIMESTAMP            -- when a held export was accepted
);
INSERT INTO files_007 (
    file_id, partner, file_name, sha256, size_bytes, extraction_date, loaded_at, status, reason, message,
    rows_read, rows_loaded, rows_quarantined, loaded_amount_eur, engaged_amount_eur, control_total_eur,
    control_total_diff_eur, duplicate_of, forced_reloads, stat_device, stat_inode, stat_mtime_ns, stat_ctime_ns
)
SELECT
    file_id, partner, file_name, sha256, size_bytes, extraction_date, loaded_at, status, reason, message,
    rows_read, rows_loaded, rows_quarantined, loaded_amount_eur, engaged_amount_eur, control_total_eur,
    control_total_diff_eur, duplicate_of, forced_reloads, stat_device, stat_inode, stat_mtime_ns, stat_ctime_ns
FROM files;
DROP TABLE files;
ALTER TABLE files_007 RENAME TO files;

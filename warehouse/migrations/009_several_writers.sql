-- 009 several writers: file and reference-load ids, and the ledger's keys, kept without
-- constraints or sequences, so that the same SQL runs on a DuckDB file and on a DuckLake
-- (which has neither) and several processes may write at once.
--
-- id_counters replaces the sequences. It also serialises every check-then-insert on a key:
-- a transaction that takes an id, or decides that a file's bytes are new, or adds a partner,
-- first UPDATEs this one row, so two such transactions conflict at commit and the loser runs
-- again, reading what the winner wrote (cdv_etl/load/transactions.py). The ids go on from
-- the highest one used, by a row or by its sequence.
CREATE TABLE id_counters (
    next_file_id           INTEGER NOT NULL,
    next_reference_load_id INTEGER NOT NULL
);
INSERT INTO id_counters
SELECT
    greatest(
        (SELECT coalesce(max(file_id), 0) + 1 FROM files),
        (SELECT coalesce(max(last_value), 0) + 1 FROM duckdb_sequences()
         WHERE database_name = current_database() AND sequence_name = 'file_seq')
    ),
    greatest(
        (SELECT coalesce(max(reference_load_id), 0) + 1 FROM reference_loads),
        (SELECT coalesce(max(last_value), 0) + 1 FROM duckdb_sequences()
         WHERE database_name = current_database() AND sequence_name = 'reference_load_seq')
    );
ALTER TABLE files ALTER file_id DROP DEFAULT;
ALTER TABLE reference_loads ALTER reference_load_id DROP DEFAULT;
DROP SEQUENCE IF EXISTS file_seq;
DROP SEQUENCE IF EXISTS reference_load_seq;

-- Who took each file id, and when (the short claim transaction, before the file is read).
-- A claim with no files row is a load in flight: the same bytes ingested meanwhile elsewhere
-- are "being loaded" and wait for the next run. It goes stale when its process is gone (same
-- host) or it is older than CDV_CLAIM_TIMEOUT; the next ingest of those bytes takes it over.
CREATE TABLE file_claims (
    file_id    INTEGER NOT NULL,
    sha256     VARCHAR NOT NULL,
    file_name  VARCHAR NOT NULL,
    claimed_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    claimed_by VARCHAR NOT NULL   -- host:pid
);

-- 009 quarantined operations: the typed operation id and amount of each rejected row, as the
-- parse read them (NULL when absent or unreadable), stored at load time beside the partner's
-- cells. The changes between two exports match a quarantined row to a loaded one by operation
-- id (an id may be built from several cells, so the raw record alone cannot give it), and the
-- feedback to partners shows the euros a rejected row concerns. Rows quarantined before this
-- migration keep NULL: re-ingest their file with --force to fill them.
ALTER TABLE quarantine_rows ADD COLUMN operation_id VARCHAR;
ALTER TABLE quarantine_rows ADD COLUMN amount_eur DECIMAL(18, 2);

-- 010 on a DuckLake: its tables are Parquet files, which DuckLake's writer compresses; DuckDB's
-- own column compression (warehouse/migrations/010_engagement_rows_compression.sql) does not
-- apply. Nothing changes; the migration is recorded so that both backends keep one history.
SELECT 'nothing to change on a lake' AS migration_010;

-- 007 held exports, on a DuckLake: the columns of ../migrations/007_held_exports.sql, added in
-- place. The DuckDB file rebuilds `files` only because DuckDB cannot alter its CHECK on status;
-- a lake has no CHECK (nor the primary key and sequence default the rebuild keeps), so adding
-- the columns at the end gives the same table: same columns, same order, same types.
ALTER TABLE files ADD COLUMN compared_file_id INTEGER;
ALTER TABLE files ADD COLUMN withdrawn_operations INTEGER;
ALTER TABLE files ADD COLUMN withdrawn_absent INTEGER;
ALTER TABLE files ADD COLUMN withdrawn_quarantined INTEGER;
ALTER TABLE files ADD COLUMN withdrawn_eur DECIMAL(18, 2);
ALTER TABLE files ADD COLUMN accepted_at TIMESTAMP;

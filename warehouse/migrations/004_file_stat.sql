-- 004 file stat: what each ledger file looked like on disk when it was hashed.
-- A file met again with the same device, inode, size, modification and change times is the
-- same bytes (the quick check of make, rsync and git): it is recognised without reading it
-- again. Any write to a file moves its change time, which no tool can set back.
ALTER TABLE files ADD COLUMN stat_device UBIGINT;
ALTER TABLE files ADD COLUMN stat_inode UBIGINT;
ALTER TABLE files ADD COLUMN stat_mtime_ns BIGINT;
ALTER TABLE files ADD COLUMN stat_ctime_ns BIGINT;

"""The published warehouse: a read-only copy that a load never blocks nor half-updates.

DuckDB lets one process open a file for writing and then refuses every other process, even
read-only ones. So analysts never open the warehouse itself: after each successful run,
the pipeline checkpoints it, copies it to a temporary file beside the published one, makes
that copy durable, and renames it over the previous one — an atomic step on POSIX. A
reader holds either the previous copy or the new one, never a mix.

A DuckLake needs no copy: its readers attach the lake read-only and see its latest commit
(``cdv_etl.publish.reader``), so on a lake there is nothing to publish and nothing is stale.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from cdv_etl.faults import checkpoint
from cdv_etl.load.warehouse import is_lake

STATE_SQL = """SELECT (SELECT count(*) FROM files), (SELECT max(file_id) FROM files),
    (SELECT sum(forced_reloads) FROM files), (SELECT CAST(max(loaded_at) AS VARCHAR) FROM files),
    (SELECT max(reference_load_id) FROM reference_loads), (SELECT max(version) FROM schema_migrations),
    (SELECT max(checksum) FROM schema_views)"""
"""What the warehouse holds, in a few numbers: equal in two files means the same loads."""


def state(con: duckdb.DuckDBPyConnection) -> tuple[object, ...]:
    row = con.execute(STATE_SQL).fetchone()
    return tuple(row) if row else ()


def is_stale(con: duckdb.DuckDBPyConnection, target: Path) -> bool:
    """True when the published copy is missing or lags the warehouse (e.g. after a crash
    between a load's commit and its publication): the next run then publishes. Never on a lake."""
    if is_lake(con):
        return False
    if not target.exists():
        return True
    try:
        pub = duckdb.connect(str(target), read_only=True)
    except duckdb.Error:
        return True
    try:
        return state(pub) != state(con)
    except duckdb.Error:
        return True
    finally:
        pub.close()


def publish(con: duckdb.DuckDBPyConnection, warehouse: Path, target: Path) -> Path | None:
    """Copy the DuckDB file ``warehouse`` to ``target`` for readers; ``None`` on a lake, where nothing is copied."""
    if is_lake(con):
        return None
    con.execute("CHECKPOINT")
    checkpoint("publish.checkpointed")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a run killed while publishing
        stale.unlink(missing_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(warehouse, tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        checkpoint("publish.copied")
        os.replace(tmp, target)
        checkpoint("publish.renamed")
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return target

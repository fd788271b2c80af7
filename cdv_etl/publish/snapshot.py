"""The published warehouse: a read-only copy that a load never blocks nor half-updates.

DuckDB lets one process open a file for writing and then refuses every other process, even
read-only ones. So analysts never open the warehouse itself: after each successful run,
the pipeline checkpoints it, copies it to a temporary file beside the published one, makes
that copy durable, and renames it over the previous one — an atomic step on POSIX. A
reader holds either the previous copy or the new one, never a mix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb


def publish(con: duckdb.DuckDBPyConnection, warehouse: Path, target: Path) -> Path:
    con.execute("CHECKPOINT")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(warehouse, tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return target

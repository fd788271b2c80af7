"""Opening a warehouse for reading: the published copy (never blocked) or, on request, the live one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cdv_etl.errors import CdvError


@contextmanager
def read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to ``path``, closed on leaving; a clear error when there is none.

    The published copy is replaced by renaming a new file over it: a connection keeps the
    copy it opened, so every query of one command sees one state of the warehouse.
    """
    if not path.exists():
        raise CdvError(f"no warehouse at {path}", "load something first (cdv-etl ingest FILE, or cdv-etl demo)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise CdvError(
                f"the warehouse {path} is being written by another process: {exc}",
                "query the published copy instead (drop --live), or wait for the load",
            ) from exc
        raise CdvError(f"cannot open {path}: {exc}", "is it a DuckDB warehouse?") from exc
    try:
        yield con
    finally:
        con.close()

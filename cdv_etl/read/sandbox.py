"""The hardened DuckDB that reads a partner's file.

Partner files come from outside. They are parsed in an in-memory DuckDB of their own, which
may touch only that file and a private work folder (``allowed_paths``,
``allowed_directories``, then ``enable_external_access = false``), within a memory limit,
with its configuration locked so that nothing read from the file can loosen it. The
warehouse itself is never attached there: the loader receives Arrow data.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def reader_connection(source: Path, workdir: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    spill = workdir / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "temp_directory": str(spill)})
    try:
        con.execute("SET allowed_directories = ?", [[str(workdir.resolve()) + "/"]])
        con.execute("SET allowed_paths = ?", [[str(source.resolve())]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con

"""The analysts' connection: the warehouse read-only, with DuckDB's access to files and the network off.

Every read path analysts use (``cdv-etl sql``, ``files``, ``quarantine``, ``changes``,
``export``, ``docs``, ``report``) opens the warehouse here. A person's SQL can read the
warehouse's views and macros and nothing else: no ``COPY … TO`` or ``EXPORT DATABASE`` (files
are written by ``cdv-etl export``, from Python, one output file at a time), no ``read_csv`` of
another file, no ``INSTALL``, ``LOAD`` or ``ATTACH``. As in the partner files' sandbox
(``cdv_etl.read.sandbox``), ``enable_external_access`` is turned off after the database is
opened, then the configuration is locked so that no statement can turn it back on.

DuckDB shares one database instance between the connections a process opens on the same
file, and these settings belong to the instance: a second connection finds it locked already.

A DuckLake is read in place, with no copy: attached ``READ_ONLY`` in an in-memory DuckDB, and
DuckDB may read files under the lake's data path only (``allowed_directories``, set before the
lock-down, or no view could read its Parquet). The connection holds one transaction, hence one
snapshot of the lake, for the whole command. The lock-down does not keep a session from the
catalog database itself (``postgres_execute`` on the lake's metadata catalog): the libpq user
that readers' ``CDV_WAREHOUSE`` names must be allowed to SELECT only (README, "Warehouse backends").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from cdv_etl.errors import CdvError
from cdv_etl.load.backend import DuckLake

EXPORT_HINT = (
    "use `cdv-etl export VIEW_OR_QUERY -o FILE` to write a view or a query to xlsx, csv or parquet"
    " (`cdv-etl export --help`)"
)
_SESSION = "this session reads the warehouse only (read-only, with DuckDB's file and network access off)"


ReadTarget = Path | DuckLake
"""What analysts read: the published copy of a DuckDB file, or the lake itself."""


def readable(target: ReadTarget) -> bool:
    """Whether there is something to read: a lake always; a DuckDB file's copy once published."""
    return isinstance(target, DuckLake) or target.exists()


@contextmanager
def read_only(target: ReadTarget) -> Iterator[duckdb.DuckDBPyConnection]:
    """The hardened, read-only connection to ``target``, closed on leaving; a clear error when there is none.

    A DuckDB file: the published copy is replaced by renaming a new file over it, and a
    connection keeps the copy it opened. A lake: the connection's one transaction keeps the
    snapshot its first query saw (and, as any DuckDB transaction, refuses further queries once
    one has failed at run time: a command stops at its first error). Either way, every query of
    one command sees one state of the warehouse.
    """
    if isinstance(target, DuckLake):
        from cdv_etl.load.warehouse import connect, lake_data_path  # `cdv-etl sql` on a file stays light

        con = connect(target, read_only=True, timeout_s=0)  # a local catalog being written: say so at once
        try:
            _lock_down(con, target.display, allowed_directories=[lake_data_path(con)])
            con.execute("BEGIN TRANSACTION")
            yield con
        finally:
            con.close()
        return
    path = target
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
        _lock_down(con, str(path))
        yield con
    finally:
        con.close()


def _lock_down(con: duckdb.DuckDBPyConnection, source: str, allowed_directories: list[str] | None = None) -> None:
    locked, external = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    ).fetchone() or (False, True)
    if not locked:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        if allowed_directories:
            con.execute("SET allowed_directories = ?", [allowed_directories])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    elif external:
        raise CdvError(
            f"{source} is already open in this process with file access on and its configuration locked",
            "close the other connection to it first",
        )


def query(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """A person's SQL on ``con``: its columns and rows, or a CdvError saying what was refused."""
    try:
        cur = con.execute(sql, list(params or []))
        return [d[0] for d in cur.description or []], cur.fetchall()
    except duckdb.Error as exc:
        raise query_error(exc, sql) from exc


def query_error(exc: duckdb.Error, sql: str) -> CdvError:
    """What a failed statement was refused, in words, and what to do instead."""
    text = str(exc)
    try:
        kinds = {s.type for s in duckdb.extract_statements(sql)}
    except duckdb.Error:
        kinds = set()
    kind = duckdb.StatementType
    if isinstance(exc, duckdb.PermissionException):
        if kinds & {kind.COPY, kind.EXPORT}:
            return CdvError(f"refused: writing files from SQL (COPY … TO, EXPORT DATABASE): {_SESSION}", EXPORT_HINT)
        if kind.LOAD in kinds or "extension" in text.lower():
            return CdvError(
                f"refused: installing or loading DuckDB extensions (INSTALL, LOAD): {_SESSION}",
                "the warehouse's views need no extension; `cdv-etl docs` lists them",
            )
        if kind.ATTACH in kinds:
            return CdvError(
                f"refused: attaching another database (ATTACH): {_SESSION}",
                "query the warehouse's views (`cdv-etl docs`); to join other data, "
                "export what you need with `cdv-etl export` and join it in your own tool",
            )
        return CdvError(
            f"refused: reading files other than the warehouse (read_csv, read_parquet, glob, …): {_SESSION} — {text}",
            "query the warehouse's views (`cdv-etl docs`); a partner's file is loaded with `cdv-etl ingest FILE`",
        )
    if "configuration has been locked" in text:
        return CdvError(
            f"refused: changing the session's settings (SET, RESET): {_SESSION} — {text}",
            "run the query without SET; its settings are fixed",
        )
    if "read-only mode" in text:
        return CdvError(
            f"refused: changing the warehouse: {_SESSION} — {text}",
            "analysts read; data enters through `cdv-etl ingest` (temporary tables are allowed: CREATE TEMP TABLE)",
        )
    return CdvError(f"query failed: {text}", "check the SQL; `cdv-etl docs` lists the views")

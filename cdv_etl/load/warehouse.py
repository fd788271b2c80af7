"""The warehouse: opening it (a DuckDB file, one writer at a time, or a DuckLake), migrating it, its views.

Both backends keep one SQL interface: the same tables, columns, views, macros and docs (the
DuckLake tests compare them). What a lake lacks (keys, CHECK, sequences, comments on view
columns and macros) is replaced by the same means on both, or by a ``warehouse/lake/`` variant.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from cdv_etl.errors import CdvError, WarehouseBusy
from cdv_etl.load.backend import Backend, DuckDBFile, DuckLake, mask_secrets
from cdv_etl.load.transactions import CommitConflict, in_transaction
from cdv_etl.read.sandbox import extension
from cdv_etl.specs import PartnerSpec, safe_yaml

_log = logging.getLogger("cdv_etl")

PUBLIC_VIEWS = (
    "financing",
    "financing_history",
    "file_loads",
    "quarantine",
    "quarantine_all_failures",
    "v_quarantine_summary",
    "current_files",
    "v_financing_by_axis",
    "v_financing_by_partner",
    "v_financing_by_year",
    "v_financing_axis_partner_year",
    "v_financing_by_convention",
    "v_financing_by_commune",
    "v_envelope_consumption",
    "v_changes",
    "v_control_totals",
    "v_commune_map",
)
"""The stable SQL interface analysts use (documented in the README and by ``cdv-etl docs``)."""


def sql_dir() -> Path:
    """``warehouse/`` of the project (or its copy inside an installed wheel)."""
    here = Path(__file__).resolve().parent.parent
    repo = here.parent / "warehouse"
    return repo if (repo / "migrations").is_dir() else here / "_sql"


LAKE_BASELINE = 6
"""A DuckLake starts at this migration in one step: 001-006 use PRIMARY KEY, CHECK and sequences,
which DuckLake lacks, so ``warehouse/lake/baseline_006.sql`` creates their tables instead."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    lake_sql: str | None = None
    """``warehouse/lake/<name>.sql``: the same change for a DuckLake, when ``sql`` uses what a lake lacks."""

    @property
    def checksum(self) -> str:
        """Of ``sql``, the migration's own file: recorded on either backend, so both keep one history."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def sql_for(self, lake: bool) -> str:
        return self.lake_sql if lake and self.lake_sql is not None else self.sql


def migrations() -> list[Migration]:
    found = []
    for path in sorted((sql_dir() / "migrations").glob("[0-9][0-9][0-9]_*.sql")):
        version = int(path.name[:3])
        variant = sql_dir() / "lake" / path.name
        lake_sql = variant.read_text(encoding="utf-8") if variant.is_file() else None
        found.append(Migration(version, path.stem, path.read_text(encoding="utf-8"), lake_sql))
    return found


def _views_sql() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((sql_dir() / "views").glob("*.sql")))


def _column_docs() -> dict[str, str]:
    path = sql_dir().parent / "warehouse" / "columns.yaml"
    if not path.exists():
        path = sql_dir() / "columns.yaml"
    data = safe_yaml(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items()}


@contextmanager
def writer_lock(warehouse: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """One writer at a time, across processes: a ``filelock`` lock on ``<warehouse>.lock``.

    Held for a whole run (a nightly run spans several tasks, each opening the warehouse),
    so no other run can slip in between two of its files. Re-entrant within a process,
    across threads (Prefect runs tasks in worker threads): one lock object per path, shared.
    Waits up to ``timeout_s``, then fails with a clear message naming the holder, having
    changed nothing. ``filelock`` uses ``flock`` on Unix and ``msvcrt`` on Windows.
    """
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    path = Path(str(warehouse.resolve()) + ".lock")
    lock = FileLock(path, thread_local=False, is_singleton=True)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            # Say so at once: a person (or a test) sees the run wait rather than hang.
            _log.warning("waiting up to %.0f s for the warehouse lock, held by %s", timeout_s, _holder(path))
            lock.acquire(timeout=timeout_s, poll_interval=0.05)
    except Timeout:
        raise WarehouseBusy(
            f"the warehouse {warehouse} is being written by {_holder(path)} "
            f"(waited {timeout_s:.0f} s); nothing was changed",
            "wait for that run to finish and try again, or raise CDV_LOCK_TIMEOUT",
        ) from None
    try:
        if lock.lock_counter == 1:
            _note_holder(path)
        yield
    finally:
        lock.release()


def _note_holder(path: Path) -> None:
    """Who holds the lock, written into the lock file for the runs that wait (best effort:
    Windows keeps a locked file's bytes from other handles)."""
    with suppress(OSError):
        path.write_text(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}", encoding="utf-8")


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()[:200] or "another process"
    except OSError:
        return "another process"


_SPILLS = itertools.count(1)


def connect(
    target: Path | Backend,
    *,
    read_only: bool = False,
    timeout_s: float = 60.0,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (a DuckDB file's path, or a ``Backend``), waiting up to ``timeout_s`` for another
    writer to finish.

    A DuckDB file: DuckDB lets one process write it; a second one gets "Could not set lock". We
    retry with a growing pause, then fail with a message that says who holds the lock.

    A DuckLake: an in-memory DuckDB that loads the lake's extensions from their wheels (nothing
    is downloaded, nothing autoloads), attaches the lake as ``lake`` (``READ_ONLY`` for
    ``read_only``) and makes it the default catalog. A lake whose catalog is a local file is
    locked like a DuckDB file while attached, and waited for in the same way.
    """
    backend = DuckDBFile(target) if isinstance(target, Path) else target
    config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": memory_limit} if memory_limit else {}
    # No query of the warehouse relies on the order rows were inserted in (row_key and the
    # views' ORDER BY do): letting DuckDB insert in any order makes a 5M-row load parallel
    # and keeps its memory bounded.
    config["preserve_insertion_order"] = False
    if isinstance(backend, DuckLake):
        config["autoinstall_known_extensions"] = False
        config["autoload_known_extensions"] = False
        # An in-memory DuckDB spills to ``.tmp`` in the working folder: the user's, wherever a
        # command runs. Spill to a folder of this connection's own under the system's temp folder
        # instead (DuckDB makes it at the first spill, and removes it on closing).
        config["temp_directory"] = str(Path(tempfile.gettempdir()) / f"cdv-etl-{os.getpid()}-{next(_SPILLS)}")
        if not read_only and backend.catalog == "duckdb":
            Path(backend.target).parent.mkdir(parents=True, exist_ok=True)
    elif not read_only:
        backend.path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        try:
            if isinstance(backend, DuckLake):
                return _attach_lake(backend, read_only=read_only, config=config)
            return duckdb.connect(str(backend.path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            locked = "Could not set lock" in str(exc)
            if not locked or time.monotonic() >= deadline:
                if locked:
                    raise WarehouseBusy(
                        f"the warehouse {backend.display} is locked by another process (waited {timeout_s:.0f} s): "
                        f"{exc}",
                        "another load is running; wait for it to finish, or raise "
                        "CDV_LOCK_TIMEOUT / --lock-timeout. Nothing was changed.",
                    ) from exc
                if isinstance(backend, DuckLake):
                    raise lake_error(backend, exc) from exc
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        except duckdb.Error as exc:
            if isinstance(backend, DuckLake):
                raise lake_error(backend, exc) from exc
            raise


LAKE = "lake"
"""The name a DuckLake warehouse is attached under (and ``USE``d), in every connection cdv-etl opens."""


def _attach_lake(
    lake: DuckLake, *, read_only: bool, config: dict[str, str | bool | int | float | list[str]]
) -> duckdb.DuckDBPyConnection:
    con = with_extensions(lake.extensions(), config)
    try:
        con.execute(lake.attach_sql(LAKE, read_only=read_only))
        con.execute(f"USE {LAKE}")
    except BaseException:
        con.close()
        raise
    return con


_SIGNATURE_CHECKED: dict[Path, tuple[int, int, int, int]] = {}
"""The extension files whose signature DuckDB has checked in this process, with what they were on
disk then (device, inode, size, modification time)."""


def _on_disk(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def with_extensions(
    names: tuple[str, ...], config: dict[str, str | bool | int | float | list[str]]
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the extensions ``names`` loaded, each from its pinned wheel.

    DuckDB checks an extension's signature at every load, in every new DuckDB: a SHA-256 of the
    whole file, 0.2 s of CPU each for ducklake's 36 MB and postgres_scanner's 42 MB, and a command
    opens several lake connections. The code a load runs is the library the process mapped at its
    first load of that path (the dynamic loader maps a path once per process). So a file's signature
    is checked once per process: a later load of the same file, unchanged on disk since, skips the
    check (``allow_unsigned_extensions`` for those loads only, set back to false at once: the
    connection then refuses an unsigned extension as any other does). A file that changed, or was
    never checked here, is checked again.
    """
    paths = [extension(name) for name in names]
    before = [_on_disk(p) for p in paths]
    checked = all(_SIGNATURE_CHECKED.get(p) == seen for p, seen in zip(paths, before, strict=True))
    con = duckdb.connect(":memory:", config={**config, "allow_unsigned_extensions": checked})
    try:
        for path in paths:
            con.load_extension(str(path))
        if checked:
            con.execute("SET allow_unsigned_extensions = false")
        else:
            for path, seen in zip(paths, before, strict=True):
                if _on_disk(path) == seen:  # what DuckDB checked is what was there before and after
                    _SIGNATURE_CHECKED[path] = seen
    except BaseException:
        con.close()
        raise
    return con


def lake_error(lake: DuckLake, exc: duckdb.Error) -> CdvError:
    """What DuckDB's failure to attach ``lake`` means, and what to do: never DuckDB's own "INSTALL ..." hint
    (nothing is downloaded), never the catalog's password."""
    text = mask_secrets(str(exc))
    where = f"the lake {lake.display}"
    if "Extension" in text and "not found" in text:
        wheels = ", ".join(f"duckdb-extension-{n.replace('_', '-')}=={duckdb.__version__}" for n in lake.extensions())
        return CdvError(
            f"cannot open {where}: DuckDB has not loaded an extension it needs ({text.splitlines()[0]})",
            f"reinstall the project (make install), or pip install {wheels}",
        )
    if "Unable to connect to Postgres" in text:
        reason = text.split('": ', 1)[-1].strip()
        hint = "start PostgreSQL there, or correct host and port in CDV_WAREHOUSE / -w"
        if "does not exist" in reason and "database" in reason:
            hint = "create the catalog database (createdb), or correct dbname in CDV_WAREHOUSE / -w"
        elif "authentication" in reason or "role" in reason:
            hint = "check user and password in CDV_WAREHOUSE / -w, and the server's pg_hba.conf"
        return CdvError(f"cannot reach the catalog of {where}: {reason}", hint)
    if "Unique file handle conflict" in text:
        return CdvError(
            f"cannot open {where}: this process has its local catalog open already, and a local catalog "
            "takes one connection at a time, readers included",
            "close the other connection first; for several readers and writers, put the catalog in PostgreSQL "
            "(ducklake:postgres:...)",
        )
    if "creating a new DuckLake is explicitly disabled" in text or (
        "read-only mode" in text and "does not exist" in text
    ):
        return CdvError(
            f"there is no warehouse in {where} yet",
            "create it first: cdv-etl init (with CDV_DATA_PATH naming where its data files go)",
        )
    if "data_path is not set" in text:
        return CdvError(
            f"{where} does not exist yet, and a new lake needs a place for its data files",
            "set CDV_DATA_PATH to a directory (or an s3:// URL) and run cdv-etl init again",
        )
    if "does not match existing data path" in text:
        return CdvError(
            f"CDV_DATA_PATH {lake.data_path} is not the data path {where} was created with: {text.splitlines()[0]}",
            "unset CDV_DATA_PATH (an existing lake knows its data path), or set it to the lake's",
        )
    return CdvError(
        f"cannot open {where}: {text}",
        "check CDV_WAREHOUSE / -w (and CDV_DATA_PATH); the accepted forms: cdv-etl init --help",
    )


def lake_data_path(con: duckdb.DuckDBPyConnection) -> str:
    """Where the attached lake keeps its data files, as its catalog records it."""
    row = con.execute("SELECT value FROM ducklake_options(?) WHERE option_name = 'data_path'", [LAKE]).fetchone()
    if not row:
        raise CdvError(f"the lake attached as {LAKE} records no data path", "is it a DuckLake made by cdv-etl init?")
    return str(row[0])


def is_lake(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con``'s default catalog is a DuckLake (rather than a DuckDB file)."""
    row = con.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return bool(row and row[0] == "ducklake")


@contextmanager
def open_warehouse(
    target: Path | Backend, *, timeout_s: float = 60.0, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(target, timeout_s=timeout_s, memory_limit=memory_limit)
    try:
        yield con
    finally:
        con.close()


def applied_versions(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    key = " NOT NULL" if is_lake(con) else " PRIMARY KEY"  # DuckLake has no keys
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS schema_migrations (
               version INTEGER{key}, name VARCHAR NOT NULL,
               checksum VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"""
    )
    rows = con.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(v): str(c) for v, c in rows}


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply pending migrations, each in its own transaction, then (re)create the views.

    Idempotent: a warehouse that is up to date is left untouched. Returns what was applied.
    An applied migration whose file has changed since is refused: it would no longer describe
    the warehouse it built.

    On a DuckLake, a new warehouse starts from ``warehouse/lake/baseline_006.sql`` (then the
    reference data of 002), recorded as migrations 1-6 with their own files' checksums; a
    migration that has a ``warehouse/lake/`` variant runs that. Two processes migrating one lake
    at once conflict at commit: the loser reads what the winner applied and goes on from there.
    """
    tries = 5
    for attempt in range(1, tries + 1):
        try:
            return _migrate(con)
        except CommitConflict as exc:
            if attempt == tries:
                raise CdvError(
                    f"the warehouse's migrations kept conflicting with another process's ({tries} tries); "
                    "what was applied is whole, the rest was not",
                    "run cdv-etl init again once the other process is done",
                ) from exc
            _log.info("migrating: another process changed the warehouse meanwhile (%s); reading it again", exc)
    raise AssertionError("unreachable")  # the last attempt returns or raises


def _migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    lake = is_lake(con)
    known = migrations()
    done = applied_versions(con)
    applied: list[str] = []
    if lake and not done:
        baseline = [m for m in known if m.version <= LAKE_BASELINE]

        def start(c: duckdb.DuckDBPyConnection) -> None:
            c.execute((sql_dir() / "lake" / f"baseline_{LAKE_BASELINE:03d}.sql").read_text(encoding="utf-8"))
            # The baseline is 001-006's tables; their data is 002's INSERTs, which run as they are.
            c.execute(next(m.sql for m in baseline if m.version == 2))
            c.executemany(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                [[m.version, m.name, m.checksum] for m in baseline],
            )

        in_transaction(con, start, what="lake's baseline", tries=1)
        applied.append(f"baseline_{LAKE_BASELINE:03d}")
        done = applied_versions(con)
    _refuse_newer(con, done, known)
    for m in known:
        if m.version in done:
            if done[m.version] != m.checksum:
                raise CdvError(
                    f"migration {m.name} was changed after it was applied to this warehouse "
                    "(its checksum differs from the one recorded in schema_migrations); nothing was changed",
                    f"migrations are history: restore warehouse/migrations/{m.name}.sql as it was "
                    "and put the change in a new migration",
                )
            continue

        def apply(c: duckdb.DuckDBPyConnection, m: Migration = m) -> None:
            c.execute(m.sql_for(lake))
            c.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                [m.version, m.name, m.checksum],
            )

        in_transaction(con, apply, what=f"migration {m.name}", tries=1)
        applied.append(m.name)
    if apply_views(con):
        applied.append("views")
    return applied


def _refuse_newer(con: duckdb.DuckDBPyConnection, done: dict[int, str], known: list[Migration]) -> None:
    """Refuse a warehouse that a newer cdv-etl migrated (``done`` holds versions ``known`` lacks):
    this code would write it on the old schema's assumptions, and put its older views back over the
    newer ones. With several machines writing one lake, each must run a cdv-etl at least as new."""
    ahead = sorted(set(done) - {m.version for m in known})
    if not ahead:
        return
    names = dict(con.execute("SELECT version, name FROM schema_migrations").fetchall())
    raise CdvError(
        f"this warehouse was migrated by a newer cdv-etl: migration(s) "
        f"{', '.join(str(names.get(v, v)) for v in ahead)} are unknown to this one, which stops at {known[-1].name}; "
        "nothing was changed",
        "upgrade cdv-etl on this machine to the version that migrated the warehouse (every machine that "
        "writes it runs that version or newer), then run the command again",
    )


def apply_views(con: duckdb.DuckDBPyConnection) -> bool:
    """(Re)create the public views and their docs when their SQL or docs changed.

    A view's own comment is ``COMMENT ON VIEW`` (in its SQL). The docs of the views' columns
    (``columns.yaml``) and of the table macros (their SQL inserts them) go to ``schema_docs``,
    on either backend: DuckLake refuses ``COMMENT ON COLUMN`` of a view and ``COMMENT ON MACRO``.
    """
    views_sql = _views_sql()
    docs = _column_docs()
    checksum = hashlib.sha256((views_sql + repr(sorted(docs.items()))).encode()).hexdigest()
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_views (checksum VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_docs ("
        "kind VARCHAR NOT NULL, "  # 'column' (of a public view) or 'macro' (a table macro)
        "name VARCHAR NOT NULL, "  # the view or the macro
        "column_name VARCHAR, "  # the view's column; NULL for a macro
        "comment VARCHAR NOT NULL)"
    )
    current = con.execute("SELECT checksum FROM schema_views").fetchone()
    if current and current[0] == checksum:
        return False

    def apply() -> None:
        con.execute("DELETE FROM schema_docs")
        con.execute(views_sql)
        cols = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "AND table_name IN (SELECT unnest(?)) ORDER BY table_name, column_index",
            [list(PUBLIC_VIEWS)],
        ).fetchall()
        rows = [[v, c, docs.get(f"{v}.{c}") or docs.get(c)] for v, c in cols]
        con.executemany(
            "INSERT INTO schema_docs (kind, name, column_name, comment) VALUES ('column', ?, ?, ?)",
            [r for r in rows if r[2]],
        )
        con.execute("DELETE FROM schema_views")
        con.execute("INSERT INTO schema_views (checksum) VALUES (?)", [checksum])

    in_transaction(con, lambda _: apply(), what="views", tries=1)
    return True


def sync_partners(con: duckdb.DuckDBPyConnection, specs: dict[str, PartnerSpec]) -> None:
    """A partner added by a new spec file appears in the reference data.

    No constraint keeps a partner to one row (a lake has none): the partners missing are added
    by ``INSERT … WHERE NOT EXISTS`` in a transaction serialised by ``id_counters``, so two
    writers adding the same partner at once conflict and the second finds it there. Nothing is
    written when no partner is missing."""
    from cdv_etl.load.claims import serialise

    rows = [(s.partner, s.name) for s in specs.values()]
    known = {str(r[0]) for r in con.execute("SELECT partner FROM partners").fetchall()}
    if all(partner in known for partner, _ in rows):
        return

    def unit(c: duckdb.DuckDBPyConnection) -> None:
        serialise(c)
        for partner, name in rows:
            c.execute(
                "INSERT INTO partners (partner, name) SELECT ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM partners WHERE partner = ?)",
                [partner, name, partner],
            )

    in_transaction(con, unit, what="addition of the new partners")


def init_warehouse(target: Path | Backend, specs: dict[str, PartnerSpec], *, timeout_s: float = 60.0) -> list[str]:
    """Create or upgrade the warehouse; a DuckDB file is then checkpointed (a lake needs no such step)."""
    with open_warehouse(target, timeout_s=timeout_s) as con:
        applied = migrate(con)
        sync_partners(con, specs)
        if not is_lake(con):
            con.execute("CHECKPOINT")
        return applied

"""Shared fixtures: real DuckDB files in temporary folders, the shared specimens, one Prefect server."""

from __future__ import annotations

import atexit
import importlib.metadata
import itertools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pg_server import PgServer
from pg_server import bin_dir as pg_bin_dir
from pg_server import start as start_pg
from prefect_server import (
    BIN,
    DEPLOYMENTS,
    PrefectServer,
    free_port,
    shared_server,
    start_server,
    stop_shared_server,
)

from cdv_etl.config import Settings
from cdv_etl.load.backend import DuckLake, parse_warehouse
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.pipeline import Pipeline, open_pipeline

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A command run without PREFECT_API_URL may start Prefect's temporary server; on a busy machine
# it takes longer than Prefect's default 20 s to answer (this and every child process inherit it).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")

# Property tests draw the same examples on every run (a failure is reproducible, a pass means
# the same thing each time); `pytest --hypothesis-profile=explore` draws new ones on each run.
hypothesis_settings.register_profile("deterministic", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile("deterministic")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CDV_SHARED_DATA", ROOT.parent / "shared" / "data"))
SPECIMENS = SHARED / "partner_exports"
ANCT_REFERENCE = SHARED / "reference" / "acv_communes_2024-04.geojson"

needs_shared = pytest.mark.skipif(
    not (SPECIMENS / "expected.json").exists(),
    reason=f"shared test data not found at {SHARED} (set CDV_SHARED_DATA, or clone beside ../shared)",
)


def expected() -> dict[str, dict]:
    return json.loads((SPECIMENS / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(warehouse=tmp_path / "wh" / "cdv.duckdb", inbox=tmp_path / "inbox", lock_timeout_s=5)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the session (``tests/pg_server.py``: socket only, its own
    folder), the DuckLake catalogs' host; stopped at the end. Skipped (failed in CI) without PostgreSQL."""
    if pg_bin_dir() is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install -y postgresql)")
    server = start_pg()
    try:
        yield server
    finally:
        server.stop()


_LAKES = itertools.count(1)


@pytest.fixture
def fresh_lake(pg_server: PgServer, tmp_path: Path) -> Settings:
    """Settings for a new, empty DuckLake: a catalog database of its own on the session's PostgreSQL
    (``createdb``), its data files under ``tmp_path/lake-data``. Nothing is attached yet: the first
    writable ``connect`` creates the lake (``cdv-etl init`` / ``migrate`` its tables)."""
    libpq = pg_server.createdb(f"lake_{os.getpid()}_{next(_LAKES)}")
    lake = parse_warehouse(f"ducklake:postgres:{libpq}", str(tmp_path / "lake-data"))
    assert isinstance(lake, DuckLake)
    return lake_settings(tmp_path, lake)


def lake_settings(folder: Path, lake: DuckLake) -> Settings:
    """Settings for the lake ``lake``, its other folders (warehouse path, inbox) in ``folder``, as ``fresh_lake``'s."""
    return Settings(warehouse=folder / "wh" / "cdv.duckdb", inbox=folder / "inbox", lock_timeout_s=5).with_(lake=lake)


class LakeTemplates:
    """DuckLakes built once per session (per pytest-xdist worker: each has its own PostgreSQL), for
    the tests whose subject is not how a lake is built; each such test gets a copy (``clone``).

    ``migrated`` is a lake as ``cdv-etl init`` leaves it (``open_pipeline``: the migrations, views and
    docs, the specs' partners); ``sample`` is that lake holding the bundled sample reference. Each is
    built by the code under test, for real, on an empty catalog database: replaying the migrations
    costs ~2.5 s of CPU per lake, copying one a few milliseconds.

    A copy is the catalog database copied by PostgreSQL (``createdb --template``), the data folder
    copied, and the copy's ``data_path`` (in ``ducklake_metadata``) set to its own folder: the one
    absolute path a DuckLake catalog holds, schema, table and file paths being relative to it (checked
    at each copy). ``tests/test_lake_sql.py`` checks that a copy is the lake a migration makes.
    Tests of the migrations themselves, or of creating a lake, use ``fresh_lake``."""

    KINDS = ("migrated", "sample")

    def __init__(self, server: PgServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self._built: dict[str, tuple[str, Path]] = {}

    def template(self, kind: str) -> tuple[str, Path]:
        """The catalog database and the data folder of the template ``kind``, built at first use."""
        if kind not in self._built:
            if kind not in self.KINDS:
                raise ValueError(f"no lake template {kind!r}: {self.KINDS}")
            name = f"template_{kind}_{os.getpid()}"
            data = self.folder / kind / "lake-data"
            lake = parse_warehouse(f"ducklake:postgres:{self.server.createdb(name)}", str(data))
            assert isinstance(lake, DuckLake)
            with open_pipeline(lake_settings(self.folder / kind, lake), need_reference=False) as pipe:
                if kind == "sample":
                    pipe.load_reference(SAMPLE_REFERENCE)
            # Closed: PostgreSQL copies a database no session is connected to.
            self._built[kind] = (name, data)
        return self._built[kind]

    def clone(self, kind: str, folder: Path) -> DuckLake:
        """A new lake, a copy of the template ``kind``: its catalog a new database, its data files
        in a folder of its own under ``folder``."""
        template, data = self.template(kind)
        name = f"lake_{os.getpid()}_{next(_LAKES)}"
        libpq = self.server.clone(template, name)
        target = folder / f"{name}-data"
        shutil.copytree(data, target)
        lake = parse_warehouse(f"ducklake:postgres:{libpq}", str(target))
        assert isinstance(lake, DuckLake) and lake.data_path is not None
        literal = lake.data_path.replace("'", "''")
        checked = self.server.psql(
            name,
            f"UPDATE ducklake_metadata SET value = '{literal}' WHERE key = 'data_path' AND scope IS NULL; "
            f"SELECT (SELECT count(*) FROM ducklake_metadata WHERE key = 'data_path' AND value = '{literal}') "
            "|| ' ' || (SELECT count(*) FROM ducklake_metadata WHERE value LIKE '/%') "
            "|| ' ' || ((SELECT count(*) FROM ducklake_schema WHERE NOT path_is_relative) "
            "+ (SELECT count(*) FROM ducklake_table WHERE NOT path_is_relative) "
            "+ (SELECT count(*) FROM ducklake_data_file WHERE NOT path_is_relative) "
            "+ (SELECT count(*) FROM ducklake_delete_file WHERE NOT path_is_relative))",
        ).splitlines()[-1]  # after the UPDATE's tag
        # The data path set, and no other absolute path in the catalog (it would name the template's folder).
        assert checked == "1 1 0", f"the copy of the lake template {kind} is not its own lake: {checked}"
        return lake


@pytest.fixture(scope="session")
def lake_templates(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> LakeTemplates:
    """The session's lake templates (``LakeTemplates``), built at first use."""
    return LakeTemplates(pg_server, tmp_path_factory.mktemp("lake-templates"))


@pytest.fixture
def migrated_lake(lake_templates: LakeTemplates, tmp_path: Path) -> Settings:
    """Settings for a new lake as ``cdv-etl init`` leaves it (a copy of the session's ``migrated`` template)."""
    return lake_settings(tmp_path, lake_templates.clone("migrated", tmp_path))


@pytest.fixture
def sample_lake(lake_templates: LakeTemplates, tmp_path: Path) -> Settings:
    """Settings for a new lake holding the bundled sample reference and no export (a copy of the
    session's ``sample`` template)."""
    return lake_settings(tmp_path, lake_templates.clone("sample", tmp_path))


LOADED_LAKE = pytest.mark.xdist_group("loaded lake")
"""The mark of the tests that read ``loaded_lake``: ``--dist loadgroup`` runs them in one worker,
which builds it once."""


@pytest.fixture(scope="session")
def loaded_lake(lake_templates: LakeTemplates, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings]:
    """A lake holding what a DuckDB file warehouse of two rounds of the demo exports holds, and that
    file, for comparing answers: built once per session (mark its tests ``LOADED_LAKE``), and only
    read. The rows are put in with plain SQL (``lake_helpers.copy_into_lake``), not by the loader."""
    from analyst_helpers import demo_warehouse
    from lake_helpers import copy_into_lake

    folder = tmp_path_factory.mktemp("loaded-lake")
    file = demo_warehouse(folder / "file", loads=2)
    lake = Settings(warehouse=folder / "wh" / "cdv.duckdb").with_(lake=lake_templates.clone("migrated", folder))
    from cdv_etl.load.warehouse import connect

    con = connect(lake.backend)
    try:
        copy_into_lake(file.warehouse, con)
    finally:
        con.close()
    return lake, file


@pytest.fixture(params=["file", "lake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh, empty warehouse on each backend in turn: a DuckDB file, then a DuckLake
    (``fresh_lake``). For the tests of the one SQL interface both backends share; a lake costs far
    more per statement and per connection (its catalog in PostgreSQL), so the rest of the suite runs
    on the file."""
    if request.param == "lake":
        lake: Settings = request.getfixturevalue("fresh_lake")
        return lake
    return Settings(warehouse=tmp_path / "wh" / "cdv.duckdb", inbox=tmp_path / "inbox", lock_timeout_s=5)


_SHARED_TEMP: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _shared_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, note the run's temporary folder that all its workers share (the parent
    of each worker's own; pytest removes it with the run's other old folders): see ``shared_temp``."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _SHARED_TEMP.append(_shared_folder(tmp_path_factory))


def shared_temp() -> Path | None:
    """The temporary folder the workers of this pytest-xdist run share (None without xdist): where
    a costly fixture is built once for the whole run, under a ``filelock`` lock, then copied."""
    return _SHARED_TEMP[0] if _SHARED_TEMP else None


_SAMPLE_WAREHOUSE: list[Settings] = []


def sample_warehouse(settings: Settings) -> Settings:
    """Put at ``settings.warehouse`` a fresh warehouse holding the bundled sample reference, and
    its published copy: built once per session (migrations, reference load, publish: ~0.5 s of
    CPU), then copied for each test (milliseconds). Opening it syncs ``settings``' own specs."""
    if not _SAMPLE_WAREHOUSE:
        folder = Path(tempfile.mkdtemp(prefix="cdv-sample-warehouse-"))
        atexit.register(shutil.rmtree, folder, True)
        built = Settings(warehouse=folder / "cdv.duckdb")
        with open_pipeline(built, need_reference=False) as p:
            p.load_reference(SAMPLE_REFERENCE)
        _SAMPLE_WAREHOUSE.append(built)
    return copy_warehouse(_SAMPLE_WAREHOUSE[0], settings)


def copy_warehouse(source: Settings, settings: Settings) -> Settings:
    """Copy ``source``'s warehouse and published copy to where ``settings`` keeps them."""
    for origin, target in ((source.warehouse, settings.warehouse), (source.published_path, settings.published_path)):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
    return settings


@pytest.fixture
def pipe(settings: Settings) -> Iterator[Pipeline]:
    """A pipeline on a fresh warehouse holding the bundled sample reference."""
    with open_pipeline(sample_warehouse(settings)) as p:
        yield p


def table_snapshot(con) -> dict[str, list]:  # type: ignore[no-untyped-def]
    """Every row of every base table, sorted: to compare a warehouse before and after."""
    names = [
        r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1").fetchall()
    ]
    return {n: sorted(map(repr, con.execute(f'SELECT * FROM "{n}"').fetchall())) for n in names}


SERVED_WAREHOUSE = pytest.mark.xdist_group("prefect served warehouse")
"""The mark of the modules whose runs name no warehouse, so write the one `cdv-etl serve` serves
(and whose reports it serves): ``--dist loadgroup`` (pytest-xdist) runs them in one worker, one
after the other, so that each sees that warehouse as the other left it, never half-way. The
other tests that use the session's Prefect server pass their own warehouses and run in any worker."""

_PREFECT_SERVER: list[PrefectServer] = []
"""The session's Prefect server, in the process that started it (``prefect_server.shared_server``)."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``prefect_server`` mark on every test that uses the session's Prefect server (it names
    ``prefect_served``, or a fixture that does): ``pytest -m prefect_server`` runs them alone. A
    test that reaches the server through ``request.getfixturevalue`` carries the mark itself.

    When a test of the session will need the server, it starts now, in a thread, while the first
    tests run (each pytest-xdist worker collects every test: the first one to get the lock starts it)."""
    for item in items:
        if "prefect_served" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.prefect_server)
    if config.option.collectonly or not any(item.get_closest_marker("prefect_server") for item in items):
        return
    factory: pytest.TempPathFactory | None = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        folder = _shared_folder(factory)  # (here: the first call makes the base folder, in one thread)
        threading.Thread(target=_session_server, args=(config, folder), name="prefect-server", daemon=True).start()


def _session_server(config: pytest.Config, folder: Path) -> tuple[PrefectServer, Path]:
    """The session's server: started by this process if no other has started it (``shared_server``).
    Called early in a thread (an error there is raised again by the fixture's own call), then by
    ``prefect_served``."""
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider: a migration each session
    template = cache.mkdir("prefect-db") / f"prefect-{prefect_version()}.db" if cache is not None else None
    return shared_server(folder, lambda work, pids: _start_prefect(work, pids, template), _PREFECT_SERVER)


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every process of the session shares: under pytest-xdist, the parent of each
    worker's base temporary folder (the controller's own); else the base temporary folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _start_prefect(work: Path, pids: Path, template: Path | None) -> PrefectServer:
    """A new Prefect server (its own PREFECT_HOME on the embedded SQLite, a copy of ``template``
    when there is one) and ``cdv-etl serve`` serving the deployments to it, as in production; their
    process ids written to ``pids`` as they start."""
    server = start_server(work / "prefect-home", template=template, pids=pids)
    server.reports_port = free_port()  # chosen once the server holds its own port, so that the two differ
    try:
        server.start_child(
            [str(BIN / "cdv-etl"), "serve"],
            cwd=work,
            log=work / "serve.log",
            CDV_WAREHOUSE=str(work / "wh" / "cdv.duckdb"),
            # Runs of every worker's tests queue for the writers' slot: a guard against a hang, not a timing.
            CDV_LOCK_TIMEOUT=str(LOCK_TIMEOUT_S),
            CDV_REPORTS_PORT=str(server.reports_port),
        )
        for name in DEPLOYMENTS:
            server.deployment_id(name)
    except BaseException:
        server.stop()
        raise
    return server


LOCK_TIMEOUT_S = 600
"""How long a flow run on the session's server waits for the writers' slot (``CDV_LOCK_TIMEOUT``):
the tests of both pytest-xdist workers write through that one slot, so a run may wait for the
other worker's; a guard against a hang."""


@pytest.fixture(scope="session")
def prefect_served(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[tuple[PrefectServer, Path]]:
    """The session's one real Prefect server (a free port, its own PREFECT_HOME on the embedded
    SQLite) and ``cdv-etl serve`` serving the deployments to it, as in production.

    One for the whole session, however many pytest-xdist workers: the first worker to get a file
    lock in the folder the session's processes share starts it, as soon as it has collected a test
    that needs it (``pytest_collection_modifyitems``), and writes where it listens there; the others
    wait for the lock and attach (``prefect_server.shared_server``); the controller stops it at the
    session's end (``pytest_sessionfinish``). A migrated, empty database is kept in pytest's cache
    (by Prefect version) and copied, so a session runs no migration.

    Runs that name no warehouse write to ``<work>/wh/cdv.duckdb``, whose ``reports/`` folder
    ``cdv-etl serve`` serves on ``server.reports_port`` (a free port): the modules whose runs do
    are marked ``SERVED_WAREHOUSE``. A test that needs its own state passes its own warehouse and
    inbox as the run's parameters, and its own names for what it creates on the server.
    """
    server, work = _session_server(pytestconfig, _shared_folder(tmp_path_factory))
    try:
        yield server, work
    finally:
        server.stop()  # what this process's tests started on it; the server itself: the controller's


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (the one process without pytest-xdist) stops the session's Prefect server,
    once every worker has finished."""
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker
        return
    factory: pytest.TempPathFactory | None = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        session.config.stash[_PREFECT_CPU] = stop_shared_server(factory.getbasetemp())


_PREFECT_CPU = pytest.StashKey[float | None]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The CPU time of the session's Prefect server and `cdv-etl serve` (with the runs it served),
    which no pytest process counts among its children's (``/usr/bin/time`` misses it)."""
    used = config.stash.get(_PREFECT_CPU, None)
    if used is not None:
        terminalreporter.write_line(f"Prefect server and cdv-etl serve: {used:.1f} s of CPU")


CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium: the browser of the UI and report tests (Makefile and .ci/run install it)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def skip_or_fail(reason: str) -> None:
    """A requirement missing here (a browser, PostgreSQL): skip on a developer's machine, fail in CI
    (the test must run there)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run)")
    pytest.skip(reason)


def prefect_version() -> str:
    return importlib.metadata.version("prefect")


def one_worker(module: str) -> pytest.MarkDecorator:
    """The mark of a module whose module-scoped fixture is costly (a warehouse, a report, a
    browser): ``--dist loadgroup`` runs all its tests in one pytest-xdist worker, so the fixture
    is built once per session rather than once in each worker its tests would be spread over.
    Usage: ``pytestmark = one_worker(__name__)``."""
    return pytest.mark.xdist_group(f"module {module}")

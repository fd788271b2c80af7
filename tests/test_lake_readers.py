"""Readers of a DuckLake, with no copy: `cdv-etl sql`, docs, export, changes and the report attach the lake
read-only, locked down as on the published copy, and each command sees one snapshot.

The lake's rows are put in with plain SQL, not by the loader (that is the several-writers work): a
DuckDB file warehouse holding two rounds of the demo exports is copied table by table into the lake
(``lake_helpers.copy_into_lake``), and each command's answer is compared with the file's.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import duckdb_extension_ducklake
import pytest
from analyst_helpers import run_cli
from conftest import LOADED_LAKE, ROOT
from lake_helpers import migrated
from pg_server import PgServer

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.backend import DuckLake, parse_libpq, parse_warehouse
from cdv_etl.load.warehouse import LAKE, connect, lake_data_path
from cdv_etl.publish.reader import read_only
from cdv_etl.publish.report import build_report
from cdv_etl.publish.snapshot import is_stale, publish

pytestmark = LOADED_LAKE


def _url(lake: Settings) -> str:
    assert lake.lake is not None
    return lake.lake.attach_target  # what a reader gives: no data path (the lake knows its own)


def test_sql_reads_the_lake_as_the_published_copy(loaded_lake: tuple[Settings, Settings], tmp_path: Path) -> None:
    lake, file = loaded_lake
    query = "SELECT * FROM v_financing_by_partner ORDER BY partner"
    on_file = run_cli(["sql", "-f", "csv", "-w", str(file.warehouse), query], tmp_path).stdout
    on_lake = run_cli(["sql", "-f", "csv", "-w", _url(lake), query], tmp_path).stdout
    assert on_lake == on_file and on_lake.count("\n") == 6  # a header and the five partners
    # CDV_WAREHOUSE names the lake as well as -w does.
    by_env = run_cli(["sql", "-f", "csv", query], tmp_path, env={"CDV_WAREHOUSE": _url(lake)}).stdout
    assert by_env == on_file


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "refused: reading files other than the warehouse"),
        ("COPY (SELECT 1) TO '/tmp/cdv-lake-leak.csv'", "refused: writing files from SQL"),
        ("INSERT INTO partners VALUES ('x', 'y')", "refused: changing the warehouse"),
        ("ATTACH '/tmp/cdv-lake-other.duckdb' AS other", "refused: attaching another database"),
        ("SET enable_external_access = true", "refused: changing the session's settings"),
    ],
)
def test_a_lake_session_is_locked_down_as_the_published_copy_is(
    loaded_lake: tuple[Settings, Settings], tmp_path: Path, sql: str, refused: str
) -> None:
    lake, _ = loaded_lake
    done = run_cli(["sql", "-w", _url(lake), sql], tmp_path, ok=False)
    assert done.returncode == 2 and refused in done.stderr, done.stderr
    assert not Path("/tmp/cdv-lake-leak.csv").exists() and not Path("/tmp/cdv-lake-other.duckdb").exists()


def test_only_the_lakes_data_path_is_readable(loaded_lake: tuple[Settings, Settings]) -> None:
    lake, _ = loaded_lake
    assert lake.lake is not None and lake.data_path is not None
    with read_only(lake.lake) as con:
        assert lake_data_path(con) == lake.data_path
        parquet = con.execute("SELECT count(*) FROM glob(?)", [lake.data_path + "**/*.parquet"]).fetchone()
        assert parquet and parquet[0] > 0  # the views read Parquet files: allowed_directories lets them
        rows = con.execute("SELECT count(*) FROM financing").fetchone()
        assert rows and rows[0] > 0
        with pytest.raises(duckdb.Error, match="file system operations are disabled"):
            con.execute("SELECT count(*) FROM glob('/etc/*')").fetchall()


def test_docs_export_changes_and_report_read_the_lake(loaded_lake: tuple[Settings, Settings], tmp_path: Path) -> None:
    lake, file = loaded_lake
    for name, source in (("lake", _url(lake)), ("file", str(file.warehouse))):
        run_cli(["docs", "-w", source, "-o", str(tmp_path / f"{name}.md")], tmp_path)
        run_cli(["export", "v_envelope_consumption", "-w", source, "-o", str(tmp_path / f"{name}.csv")], tmp_path)
        out = run_cli(["changes", "-f", "csv", "-w", source], tmp_path).stdout
        (tmp_path / f"{name}.changes").write_text(out, encoding="utf-8")

    def dictionary(name: str) -> str:  # the page, but for the line naming its source and time
        return re.sub(r"^Produit par .*$", "", (tmp_path / f"{name}.md").read_text(encoding="utf-8"), flags=re.M)

    assert dictionary("lake") == dictionary("file") and "### financing_as_of" in dictionary("lake")
    assert "password" not in (tmp_path / "lake.md").read_text(encoding="utf-8")
    assert (tmp_path / "lake.csv").read_bytes() == (tmp_path / "file.csv").read_bytes()
    changes = (tmp_path / "lake.changes").read_text(encoding="utf-8")
    assert changes == (tmp_path / "file.changes").read_text(encoding="utf-8") and changes.count("\n") > 2
    assert lake.lake is not None
    page = build_report(lake.lake)
    assert f"Source : {html.escape(lake.lake.display)} — vues publiques" in page and '<figure class="chart">' in page


def test_a_command_sees_one_snapshot_of_the_lake(migrated_lake: Settings) -> None:
    assert migrated_lake.lake is not None
    count = "SELECT count(*) FROM partners"
    with read_only(migrated_lake.lake) as reader:
        before = reader.execute(count).fetchone()
        assert before is not None
        writer = connect(migrated_lake.backend)
        try:
            writer.execute("INSERT INTO partners VALUES ('newcomer', 'Un nouveau partenaire')")  # committed
        finally:
            writer.close()
        assert reader.execute(count).fetchone() == before  # the command's snapshot
    with read_only(migrated_lake.lake) as later:
        assert later.execute(count).fetchone() == (before[0] + 1,)


def test_nothing_is_published_or_stale_on_a_lake(migrated_lake: Settings, tmp_path: Path) -> None:
    con = connect(migrated_lake.backend)
    target = tmp_path / "copy.duckdb"
    try:
        assert not is_stale(con, target)
        assert publish(con, migrated_lake.warehouse, target) is None
    finally:
        con.close()
    assert not target.exists()
    with pytest.raises(CdvError, match="no warehouse at"), read_only(target):  # a file reader needs its copy
        pass


def test_a_select_only_role_reads_the_lake_and_cannot_write_its_catalog(
    pg_server: PgServer, fresh_lake: Settings
) -> None:
    assert fresh_lake.lake is not None
    params = parse_libpq(fresh_lake.lake.target)
    # The README's grants, in the new catalog database before the lake is created.
    for grant in (
        "CREATE ROLE analyst LOGIN",
        "GRANT USAGE ON SCHEMA public TO analyst",
        "ALTER DEFAULT PRIVILEGES FOR ROLE cdv IN SCHEMA public GRANT SELECT ON TABLES TO analyst",
    ):
        pg_server.psql(params["dbname"], grant)
    migrated(fresh_lake).close()
    analyst = parse_warehouse(
        f"ducklake:postgres:{pg_server.libpq(params['dbname']).replace('user=cdv', 'user=analyst')}"
    )
    assert isinstance(analyst, DuckLake)
    with read_only(analyst) as con:
        assert con.execute("SELECT count(*) FROM partners").fetchone() == (5,)
        assert con.execute("SELECT count(*) FROM v_financing_by_axis").fetchone() == (5,)
        # The catalog is reachable by name from a locked-down session; the role is what refuses.
        with pytest.raises(duckdb.Error, match="permission denied"):
            con.execute(f"CALL postgres_execute('__ducklake_metadata_{LAKE}', 'COMMIT; CREATE TABLE evil (a int)')")
    assert pg_server.psql(params["dbname"], "SELECT count(*) FROM pg_tables WHERE tablename = 'evil'") == "0"


def test_the_readmes_duckdb_cli_and_python_snippets_read_the_lake(loaded_lake: tuple[Settings, Settings]) -> None:
    """The README's two ways for an analyst to read a lake without cdv-etl, run as written: only the
    catalog (the README's example server) and the wheels' folder (its `.venv`) are this machine's."""
    lake, file = loaded_lake
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = "ducklake:postgres:host=/run/postgresql dbname=acv user=analyst"
    site = str(Path(duckdb_extension_ducklake.__file__).parent.parent) + "/"

    def here(snippet: str) -> str:
        assert example in snippet, "the README's lake example changed: update this test"
        return snippet.replace(example, _url(lake)).replace(".venv/lib/python3.11/site-packages/", site)

    with duckdb.connect(str(file.published_path), read_only=True) as con:
        by_axis = con.execute("FROM v_financing_by_axis ORDER BY axis").fetchall()
        by_partner = sorted(con.execute("SELECT partner, engaged_eur FROM v_financing_by_partner").fetchall())
    assert len(by_axis) == 5 and len(by_partner) == 5

    cli_sql = re.search(r'```sh\nduckdb -c "(.*?)"\n```', readme, flags=re.S)
    assert cli_sql, "the README's DuckDB CLI snippet for a lake is gone"
    duckdb_bin = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    assert duckdb_bin, f"no duckdb CLI beside {sys.executable}: install the dev extras (duckdb-cli)"
    proc = subprocess.run(
        [duckdb_bin, "-no-init", "-json", "-c", here(cli_sql.group(1))], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout, parse_float=Decimal)  # the cents as printed
    assert {r["axis"]: Decimal(r["engaged_eur"]) for r in rows} == {r[0]: r[3] for r in by_axis}

    python = re.search(r"```python\n(from importlib\.resources import files\n.*?)```", readme, flags=re.S)
    assert python, "the README's Python snippet for a lake is gone"
    namespace: dict[str, object] = {}
    exec(compile(here(python.group(1)), "README.md (Python, lake)", "exec"), namespace)
    assert sorted(namespace["rows"]) == by_partner  # type: ignore[call-overload]

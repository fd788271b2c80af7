"""The official DuckDB CLI (the duckdb-cli package) opens the published warehouse read-only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import demo_warehouse
from conftest import one_worker

from cdv_etl.config import Settings
from cdv_etl.load.warehouse import PUBLIC_VIEWS
from cdv_etl.pipeline import open_pipeline

pytestmark = one_worker(__name__)

DUCKDB = shutil.which("duckdb", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return demo_warehouse(tmp_path_factory.mktemp("duckdb_cli"), loads=2)


def duckdb_cli(database: Path, sql: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    if DUCKDB is None:
        pytest.fail(f"no duckdb CLI beside {sys.executable}: install the dev extras (duckdb-cli)")
    proc = subprocess.run(
        [DUCKDB, "-readonly", "-no-init", "-json", str(database), "-c", sql],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_cli_queries_every_public_view_while_a_writer_holds_the_warehouse(warehouse: Settings) -> None:
    published = warehouse.published_path
    con = duckdb.connect(str(published), read_only=True)
    counts = {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchone()[0] for v in PUBLIC_VIEWS}
    con.close()
    assert all(counts[v] > 0 for v in ("financing", "financing_history", "v_changes", "quarantine")), counts
    with open_pipeline(warehouse):  # a load holds the warehouse for writing meanwhile
        locked = duckdb_cli(warehouse.warehouse, "SELECT 1", ok=False)
        assert locked.returncode != 0 and "lock" in (locked.stdout + locked.stderr).lower()
        for view in PUBLIC_VIEWS:
            out = duckdb_cli(published, f'SELECT count(*) AS n FROM "{view}"').stdout
            assert json.loads(out) == [{"n": counts[view]}], view


def test_the_cli_reads_exact_decimals_and_the_history_macros(warehouse: Settings) -> None:
    published = warehouse.published_path
    con = duckdb.connect(str(published), read_only=True)
    total = con.execute("SELECT sum(amount_eur) FROM financing WHERE counts_as_engaged").fetchone()[0]
    by_partner = dict(con.execute("SELECT partner, engaged_eur FROM v_financing_by_partner").fetchall())
    known_today = con.execute("SELECT count(*) FROM financing_as_of(current_date)").fetchone()[0]
    con.close()
    assert isinstance(total, Decimal) and total == sum(by_partner.values())
    out = json.loads(
        duckdb_cli(
            published,
            "SELECT sum(amount_eur) AS total, sum(amount_eur)::VARCHAR AS text FROM financing WHERE counts_as_engaged",
        ).stdout
    )
    assert out == [{"total": str(total), "text": str(total)}]  # the same cents, as text
    assert Decimal(out[0]["total"]) == total
    rows = json.loads(duckdb_cli(published, "SELECT partner, engaged_eur FROM v_financing_by_partner").stdout)
    assert {r["partner"]: Decimal(r["engaged_eur"]) for r in rows} == by_partner
    assert json.loads(duckdb_cli(published, "SELECT count(*) AS n FROM financing_as_of(current_date)").stdout) == [
        {"n": known_today}
    ]


def test_the_published_copy_cannot_be_written(warehouse: Settings) -> None:
    proc = duckdb_cli(warehouse.published_path, "CREATE TABLE notes (t VARCHAR)", ok=False)
    assert proc.returncode != 0 and "read-only" in (proc.stdout + proc.stderr)

"""The command line starts light: `--help` and `sql` import none of the data stack.

Each command imports what it uses (``cdv_etl/cli.py``); a module-level import of the pipeline,
pandas or Prefect would make every command pay for it. A fresh interpreter per case, since
the test process itself has imported everything already. Structural, not timed: the start-up
times are measured in ``bench/`` (``python -m bench.harness --cli``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from analyst_helpers import run_cli
from conftest import one_worker

pytestmark = one_worker(__name__)

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "pandera", "pyarrow", "prefect", "numpy", "matplotlib", "openpyxl", "yaml")

_PROBE = """
import json, sys
from cdv_etl.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stdout.flush()
roots = sorted({m.split(".")[0] for m in sys.modules})
sys.stderr.write("\\nMODULES " + json.dumps({"code": code, "roots": roots}) + "\\n")
"""


def _modules_after(*args: str) -> tuple[int, set[str], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    line = next(li for li in proc.stderr.splitlines() if li.startswith("MODULES "))
    found = json.loads(line.removeprefix("MODULES "))
    return int(found["code"] or 0), set(found["roots"]), proc.stdout


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with its published copy, made by the command line itself (in this process:
    only the probes need a fresh interpreter)."""
    warehouse = tmp_path_factory.mktemp("startup") / "cdv.duckdb"
    for args in (["init"], ["reference", "load", "--sample"], ["publish"]):
        run_cli([*args, "-w", str(warehouse)], ROOT)
    return warehouse


def test_help_imports_neither_duckdb_nor_the_data_stack() -> None:
    code, roots, out = _modules_after("--help")
    assert code == 0
    assert "ingest" in out and "sql" in out
    assert not roots & {*HEAVY, "duckdb", "pydantic"}, roots & {*HEAVY, "duckdb", "pydantic"}


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_sql_imports_duckdb_but_not_the_data_stack(published: Path, fmt: str) -> None:
    code, roots, out = _modules_after("sql", "-w", str(published), "-f", fmt, "SELECT 41 + 1 AS answer")
    assert code == 0
    assert "42" in out
    assert "duckdb" in roots
    assert not roots & set(HEAVY), roots & set(HEAVY)


def test_ingest_does_not_import_prefect(tmp_path: Path, published: Path) -> None:
    """An ingest needs the pipeline (pandas and pandera validate), never the orchestrator."""
    export = tmp_path / "AL_ACV_export_2026-10.csv"
    export.write_bytes(
        "Référence opération;Code commune;Nom commune;Type d'opération;Produit;Montant engagé;Date décision CE\r\n"
        "AL-1;80001;Abbeville;Réhabilitation;Prêt;1 234,50 €;15/03/2024\r\n".encode("cp1252")
    )
    code, roots, out = _modules_after("ingest", "-w", str(published), str(export))
    assert code == 0, out
    assert "loaded" in out
    assert {"duckdb", "pandas", "pandera"} <= roots
    assert "prefect" not in roots

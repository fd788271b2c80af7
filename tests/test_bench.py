"""The benchmarks' files are what the partners send, and the pipeline quarantines exactly the
mistakes the generator planted (``bench/`` is not shipped; this keeps it working)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from bench.generate import ensure
from cdv_etl.config import Settings
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.pipeline import open_pipeline


def test_generated_exports_load_with_exactly_the_planted_mistakes(tmp_path: Path) -> None:
    al = ensure("action_logement", 10_000, tmp_path / "data")
    bdt = ensure("bdt", 10_000, tmp_path / "data")
    raw = Path(al["path"]).read_bytes()
    assert raw.count(b"\r\n") == 10_001 and b"\x80" in raw and b'"' not in raw  # CRLF, cp1252 €, no quotes
    raw.decode("cp1252")
    with open_pipeline(Settings(warehouse=tmp_path / "wh" / "cdv.duckdb"), need_reference=False) as pipe:
        pipe.load_reference(SAMPLE_REFERENCE)
        for entry in (al, bdt):
            result = pipe.ingest(Path(entry["path"]), today=date(2026, 11, 30))
            assert (result.status, result.rows_read, result.rows_quarantined) == (
                "loaded",
                10_000,
                entry["expected_quarantined"],
            )
    assert ensure("action_logement", 10_000, tmp_path / "data") == al  # reused, not rewritten


def test_the_floor_and_dlt_type_the_same_amounts(tmp_path: Path) -> None:
    """The two yardsticks load the same export: every row, and the amounts that dlt's pyarrow
    typing reads are exactly those the project's own parser reads (the comparison is fair)."""
    import duckdb

    from bench.steps import floor_plan, step_dlt_csv, step_floor_csv

    al = ensure("action_logement", 10_000, tmp_path / "data")
    plan = floor_plan()
    assert step_floor_csv({"file": al["path"], "workdir": str(tmp_path / "floor"), "plan": plan})["rows"] == 10_000
    utf8 = tmp_path / "export.utf8.csv"
    utf8.write_text(Path(al["path"]).read_text(encoding=plan["encoding"]), encoding="utf-8")
    typed = duckdb.execute(
        f"SELECT count(amount_eur), sum(amount_eur), count(engagement_date) FROM (SELECT {plan['select']} "
        "FROM read_csv(?, delim = ?, header = true, all_varchar = true))",
        [str(utf8), plan["delimiter"]],
    ).fetchone()
    assert typed is not None
    pytest.importorskip("dlt")
    dlt = step_dlt_csv({"file": al["path"], "workdir": str(tmp_path / "dlt"), "plan": plan})
    assert dlt["rows"] == 10_000
    assert dlt["column_types"] == {"amount_eur": "DECIMAL(18,2)", "engagement_date": "DATE"}
    assert (dlt["amounts"], Decimal(dlt["amount_sum"])) == (typed[0], typed[1])
    assert not (tmp_path / "dlt").exists()  # its pipeline folder and database went with it

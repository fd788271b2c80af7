"""The benchmarks' files are what the partners send, and the pipeline quarantines exactly the
mistakes the generator planted (``bench/`` is not shipped; this keeps it working)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

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

"""Each documented outcome of a text file: every encoding, undecodable bytes, a missing
column, an empty file, a header-only file — on a partner added by one spec file, no code."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import ROOT, sample_warehouse, table_snapshot

from cdv_etl.config import Settings
from cdv_etl.pipeline import Pipeline, open_pipeline

HEADER = "ref;code;montant;date;statut"
ROWS = [
    "R1;47001;1 234,50 €;05/03/2021;engagé",  # Agen, a € sign and a plain space
    "R2;1004;2\u00a0000,00;06/03/2022;engagé",  # Ambérieu, code lost its zero, NBSP
    "R3;2A004;3\u202f000,25 €;07/03/2023;engagé",  # Ajaccio, narrow no-break space
    "R4;62498;10,00;08/03/2024;ENGAGÉ ",  # Lens, status in capitals
]
SPEC = """
partner: region_test
name: Région de test
file_pattern: 'region_test_\\d{{4}}-\\d{{2}}\\.csv'
format: {{type: csv, encoding: {encoding}, delimiter: ";"}}
extraction_date: {{source: filename, pattern: 'region_test_(\\d{{4}}-\\d{{2}})', format: '%Y-%m'}}
fields:
  operation_id: {{column: ref}}
  insee_code: {{column: code, parser: insee}}
  amount_eur: {{column: montant, parser: french_number}}
  engagement_date: {{column: date, parser: date_dmy}}
  status: {{column: statut}}
axis: 4
default_instrument: grant
statuses:
  engagé: {{counts_as_engaged: true}}
"""


def make_pipe(tmp_path: Path, encoding: str) -> Iterator[Pipeline]:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    for f in (ROOT / "schemas" / "partners").glob("*.yaml"):
        (specs / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    (specs / "region_test.yaml").write_text(SPEC.format(encoding=encoding), encoding="utf-8")
    s = sample_warehouse(Settings(warehouse=tmp_path / "cdv.duckdb", specs_dir=specs, lock_timeout_s=5))
    with open_pipeline(s) as p:
        yield p


@pytest.fixture(params=["utf-8", "utf-8-sig", "cp1252", "utf-16"])
def encoded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Pipeline, Path]]:
    enc = request.param
    path = tmp_path / "region_test_2024-12.csv"
    text = "\r\n".join([HEADER, *ROWS]) + "\r\n"
    if enc == "cp1252":  # Windows-1252 has no narrow no-break space
        text = text.replace("\u202f", "\u00a0")
    path.write_bytes(text.encode(enc))
    yield from ((p, path) for p in make_pipe(tmp_path, enc))


def test_every_encoding_loads_exactly(encoded: tuple[Pipeline, Path]) -> None:
    pipe, path = encoded
    r = pipe.ingest(path)
    assert (r.status, r.partner, r.rows_read, r.rows_loaded, r.rows_quarantined) == (
        "loaded",
        "region_test",
        4,
        4,
        0,
    ), r.message
    assert r.engaged_amount_eur == Decimal("6244.75")
    rows = pipe.con.execute(
        "SELECT operation_id, insee_code, axis, amount_eur, source_row FROM financing ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("R1", "47001", 4, Decimal("1234.50"), 2),
        ("R2", "01004", 4, Decimal("2000.00"), 3),
        ("R3", "2A004", 4, Decimal("3000.25"), 4),
        ("R4", "62498", 4, Decimal("10.00"), 5),
    ]


def test_latin1_reading_would_have_corrupted_the_euro(tmp_path: Path) -> None:
    """The € of Windows-1252 is byte 0x80; declared cp1252 it survives into the raw record."""
    path = tmp_path / "region_test_2024-12.csv"
    path.write_bytes(("\r\n".join([HEADER, "R9;47001;abc €;05/03/2021;engagé"]) + "\r\n").encode("cp1252"))
    for pipe in make_pipe(tmp_path, "cp1252"):
        r = pipe.ingest(path)
        assert r.rows_quarantined == 1
        value = pipe.con.execute("SELECT value FROM quarantine WHERE rule = 'amount_unparseable'").fetchone()[0]
        assert value == "abc €"


def test_undecodable_bytes_reject_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "region_test_2024-12.csv"
    data = ("\r\n".join([HEADER, *ROWS]) + "\r\n").encode("utf-8")
    path.write_bytes(data.replace("Ambérieu".encode(), b"Amb\xe9rieu") + b"R5;47001;\xff;01/01/2020;engag\xe9\r\n")
    for pipe in make_pipe(tmp_path, "utf-8"):
        before = table_snapshot(pipe.con)
        r = pipe.ingest(path)
        assert r.status == "rejected" and r.reason == "encoding"
        assert "byte 0xFF" in r.message and "line 6" in r.message and "UTF-8" in r.message
        after = table_snapshot(pipe.con)
        assert after["engagement_rows"] == before["engagement_rows"] == []
        assert after["quarantine_rows"] == []
        assert pipe.con.execute("SELECT status, reason FROM file_loads").fetchall() == [("rejected", "encoding")]


def test_cp1252_undefined_byte_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "region_test_2024-12.csv"
    path.write_bytes(HEADER.encode() + b"\r\nR1;47001;12,00;05/03/2021;engag\x81\r\n")
    for pipe in make_pipe(tmp_path, "cp1252"):
        r = pipe.ingest(path)
        assert (r.status, r.reason) == ("rejected", "encoding")
        assert "0x81" in r.message and "Windows-1252" in r.message


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "region_test_2024-12.csv"
    path.write_text("ref;code;date;statut\nR1;47001;05/03/2021;engagé\n", encoding="utf-8")
    for pipe in make_pipe(tmp_path, "utf-8"):
        r = pipe.ingest(path)
        assert (r.status, r.reason) == ("rejected", "missing_columns")
        assert "'montant'" in r.message
        assert pipe.con.execute("SELECT count(*) FROM engagement_rows").fetchone()[0] == 0


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "region_test_2024-12.csv"
    path.write_bytes(b"")
    for pipe in make_pipe(tmp_path, "utf-8"):
        r = pipe.ingest(path)
        assert (r.status, r.reason) == ("rejected", "empty")


def test_header_only_file_is_rejected_and_keeps_the_current_export(tmp_path: Path) -> None:
    good = tmp_path / "region_test_2024-11.csv"
    good.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    empty = tmp_path / "region_test_2024-12.csv"
    empty.write_text(HEADER + "\n", encoding="utf-8")
    for pipe in make_pipe(tmp_path, "utf-8"):
        assert pipe.ingest(good).status == "loaded"
        r = pipe.ingest(empty)
        assert (r.status, r.reason) == ("rejected", "no_data")
        assert pipe.con.execute("SELECT count(*) FROM financing").fetchone()[0] == 4


def test_blank_lines_keep_line_numbers_true(tmp_path: Path) -> None:
    path = tmp_path / "region_test_2024-12.csv"
    lines = [HEADER, ROWS[0], "", "", ROWS[1], "R7;99999;5,00;01/01/2021;engagé"]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    for pipe in make_pipe(tmp_path, "utf-8"):
        r = pipe.ingest(path)
        assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (3, 2, 1)
        assert pipe.con.execute("SELECT source_row, value FROM quarantine").fetchall() == [(6, "99999")]
        assert sorted(pipe.con.execute("SELECT source_row FROM financing").fetchall()) == [(2,), (5,)]


def test_unknown_file_name_is_rejected_with_the_known_partners(tmp_path: Path) -> None:
    path = tmp_path / "mystery.csv"
    path.write_text("a;b\n1;2\n", encoding="utf-8")
    for pipe in make_pipe(tmp_path, "utf-8"):
        r = pipe.ingest(path)
        assert (r.status, r.reason) == ("rejected", "unknown_partner")
        assert "--partner" in r.message and "region_test" in r.message

"""A new partner by one spec file and no code: a Région's JSON export, a CSV dated by a column.

Each test writes the partner's spec into a specs folder of its own (beside the project's five),
as a person adding a partner would, and ingests the partner's file into a real warehouse.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, sample_warehouse
from openpyxl import Workbook

from cdv_etl.config import Settings
from cdv_etl.errors import SpecError
from cdv_etl.pipeline import Pipeline, open_pipeline
from cdv_etl.read.json import read_json
from cdv_etl.read.sandbox import reader_connection
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, JsonFormat, load_spec

TODAY = date(2026, 12, 1)

REGION_SPEC = """
partner: region_ge
name: Région Grand Est
description: JSON export of the Région's aides, one record per aide.
file_pattern: 'region_ge_aides_.*\\.json'
format:
  type: json
  records_path: {records_path}
extraction_date: {extraction_date}
fields:
  operation_id: {{column: id}}
  insee_code: {{column: commune.insee, parser: insee}}
  commune_label: {{column: commune.nom}}
  category: {{column: axe}}
  amount_eur: {{column: montant, parser: decimal}}
  engagement_date: {{column: date, parser: date_iso}}
axis_code: true
default_instrument: grant
"""

# The Région's records: one of each shape the issue met, and one null axis (R2).
AIDES: list[dict[str, Any]] = [
    {"id": "R1", "commune": {"insee": "47001", "nom": "Agen"}, "axe": 5, "montant": "1234.50", "date": "2024-03-05"},
    {"id": "R2", "commune": {"insee": "01004", "nom": "Ambérieu"}, "axe": None, "montant": "99", "date": "2024-03-06"},
    {"id": "R3", "commune": {"insee": 1004, "nom": None}, "axe": 1, "montant": "2000", "date": "2024-03-07"},
    {"id": "R4", "commune": {"insee": "2A004", "nom": "Ajaccio"}, "axe": 3, "montant": 3000.25, "date": "2025-01-02"},
    {
        "id": "R5",
        "commune": {"insee": "62498", "nom": "Lens"},
        "axe": 2,
        "montant": "12345678.90",
        "date": "2025-11-30",
    },
]


@contextmanager
def partner_pipeline(tmp_path: Path, name: str, spec: str) -> Iterator[Pipeline]:
    """A warehouse whose specs are the project's five and this one file."""
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    for f in (ROOT / "schemas" / "partners").glob("*.yaml"):
        (specs / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    (specs / f"{name}.yaml").write_text(spec, encoding="utf-8")
    s = Settings(warehouse=tmp_path / "cdv.duckdb", specs_dir=specs, lock_timeout_s=5)
    with open_pipeline(sample_warehouse(s)) as p:  # the session's sample warehouse, copied; these specs synced
        yield p


def region_spec(records_path: str = "aides", extraction_date: str = "{source: field, field: extraction}") -> str:
    return REGION_SPEC.format(records_path=json.dumps(records_path), extraction_date=extraction_date)


def financing(pipe: Pipeline) -> list[tuple[Any, ...]]:
    return pipe.con.execute(
        "SELECT operation_id, insee_code, axis, amount_eur, engagement_date, source_row FROM financing ORDER BY 1"
    ).fetchall()


def test_region_json_partner_by_one_spec_file(tmp_path: Path) -> None:
    """Done when (a): nested records, an integer axis, string amounts, the file's own extraction date."""
    path = tmp_path / "region_ge_aides_2025.json"
    path.write_text(json.dumps({"extraction": "2025-11-30", "aides": AIDES}, indent=2), encoding="utf-8")
    with partner_pipeline(tmp_path, "region_ge", region_spec()) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.partner, r.rows_read, r.rows_loaded, r.rows_quarantined) == (
            "loaded",
            "region_ge",
            5,
            4,
            1,
        ), r.message
        assert r.extraction_date == date(2025, 11, 30)
        assert pipe.con.execute("SELECT extraction_date FROM files").fetchall() == [(date(2025, 11, 30),)]
        # The null axis of R2 changed no other record: each keeps its own text, 5 is "5" (not "5.0").
        categories = pipe.con.execute("SELECT category FROM financing ORDER BY operation_id").fetchall()
        assert categories == [("5",), ("1",), ("3",), ("2",)]
        assert financing(pipe) == [
            ("R1", "47001", 5, Decimal("1234.50"), date(2024, 3, 5), 1),
            ("R3", "01004", 1, Decimal("2000.00"), date(2024, 3, 7), 3),
            ("R4", "2A004", 3, Decimal("3000.25"), date(2025, 1, 2), 4),
            ("R5", "62498", 2, Decimal("12345678.90"), date(2025, 11, 30), 5),
        ]
        quarantined = pipe.con.execute("SELECT source_row, rule, value, raw_record FROM quarantine").fetchall()
        assert [q[:3] for q in quarantined] == [(2, "unknown_category", None)]
        raw = json.loads(quarantined[0][3])
        assert (raw["id"], raw["axe"], raw["commune.insee"], raw["commune.nom"]) == ("R2", None, "01004", "Ambérieu")


def test_nested_records_path_and_nested_extraction_field(tmp_path: Path) -> None:
    path = tmp_path / "region_ge_aides_2025.json"
    doc = {"meta": {"extraction": "30/11/2025", "source": "SI aides"}, "data": {"aides": AIDES[:1], "n": 1}}
    path.write_text(json.dumps(doc), encoding="utf-8")
    spec = region_spec("data.aides", "{source: field, field: meta.extraction, parser: date_dmy}")
    with partner_pipeline(tmp_path, "region_ge", spec) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.rows_loaded, r.extraction_date) == ("loaded", 1, date(2025, 11, 30)), r.message
        assert financing(pipe) == [("R1", "47001", 5, Decimal("1234.50"), date(2024, 3, 5), 1)]


def test_top_level_array_of_records(tmp_path: Path) -> None:
    path = tmp_path / "region_ge_aides_2025-11.json"
    path.write_text(json.dumps(AIDES[2:]), encoding="utf-8-sig")  # with a byte-order mark
    spec = region_spec("", "{source: filename, pattern: 'aides_(\\d{4}-\\d{2})', format: '%Y-%m'}")
    with partner_pipeline(tmp_path, "region_ge", spec) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.rows_loaded, r.extraction_date) == ("loaded", 3, date(2025, 11, 30)), r.message
        assert [(row[0], row[-1]) for row in financing(pipe)] == [("R3", 1), ("R4", 2), ("R5", 3)]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"extraction": "2025-11-30", "aides": [\n  {"id": "R1",\n   "axe" 5}\n]}', "line 3, column 10"),
        ('{"extraction": "2025-11-30", "aides": [\n  {"id": "R1"}', "line 2, column 15"),
    ],
    ids=["missing colon", "truncated"],
)
def test_a_syntax_error_rejects_the_file_with_its_position(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "region_ge_aides_2025.json"
    path.write_text(text, encoding="utf-8")
    with partner_pipeline(tmp_path, "region_ge", region_spec()) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.reason) == ("rejected", "unreadable")
        assert r.message.startswith(f"{path.name}: not valid JSON at {where}: "), r.message
        assert pipe.con.execute("SELECT count(*) FROM financing").fetchone() == (0,)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"extraction": "2025-11-30", "records": AIDES}, "no 'aides' in the JSON document"),
        ({"extraction": "2025-11-30", "aides": {"R1": AIDES[0]}}, "'aides' is a JSON object, not a list of records"),
        (
            {"extraction": "2025-11-30", "aides": [AIDES[0], "R2"]},
            "record 2 of 'aides' is a JSON string, not an object",
        ),
        ({"aides": AIDES}, "no extraction date: the file has no field 'extraction'"),
        ({"extraction": "30 novembre", "aides": AIDES}, "in field 'extraction' '30 novembre' is not a date"),
    ],
    ids=["no records", "not a list", "not an object", "no date field", "not a date"],
)
def test_a_document_not_as_the_spec_says_is_rejected(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "region_ge_aides_2025.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with partner_pipeline(tmp_path, "region_ge", region_spec()) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert r.status == "rejected" and message in r.message, r.message


FILE_NUMBER = itertools.count(1)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One warehouse for the axis codes: each case ingests a file of its own (not a stock that
    shrinks: no case is held)."""
    spec = region_spec() + "hold_threshold_pct: 100\n"
    with partner_pipeline(tmp_path_factory.mktemp("region"), "region_ge", spec) as pipe:
        yield pipe


@pytest.mark.parametrize(
    ("axe", "axis"),
    [
        (1, 1),
        (5, 5),
        (5.0, 5),
        ("5", 5),
        (" 4 ", 4),
        ("Axe 5", 5),
        ("AXE 2", 2),
        ("axe3", 3),
        ("axe 5 - équipements", 5),
        ("Axe 4 – espaces publics", 4),
        (0, None),
        (6, None),
        ("Axe X", None),
        ("Axe 5 équipements", None),
        ("", None),
        (None, None),
    ],
)
def test_axis_codes(region: Pipeline, tmp_path: Path, axe: object, axis: int | None) -> None:
    path = tmp_path / f"region_ge_aides_{next(FILE_NUMBER)}.json"
    record = {**AIDES[0], "axe": axe}
    path.write_text(json.dumps({"extraction": "2025-11-30", "aides": [record, AIDES[2]]}), encoding="utf-8")
    r = region.ingest(path, today=TODAY)
    assert r.status == "loaded", r.message
    loaded = region.con.execute(
        "SELECT operation_id, axis FROM financing_history WHERE file_id = ? ORDER BY 1", [r.file_id]
    ).fetchall()
    quarantined = region.con.execute("SELECT source_row, rule FROM quarantine WHERE file_id = ?", [r.file_id])
    if axis is None:
        assert loaded == [("R3", 1)]
        assert quarantined.fetchall() == [(1, "unknown_category")]
    else:
        assert loaded == [("R1", axis), ("R3", 1)]
        assert quarantined.fetchall() == []


CSV_SPEC = """
partner: departement_test
name: Département de test
file_pattern: 'dep_test_aides\\.csv'
format: {type: csv, delimiter: ";"}
extraction_date: {source: column, column: "Date d'extraction", parser: date_dmy}
fields:
  operation_id: {column: ref}
  insee_code: {column: code, parser: insee}
  amount_eur: {column: montant, parser: french_number}
  engagement_date: {column: date, parser: date_dmy}
  category: {column: axe}
axis_code: true
default_instrument: grant
"""


def write_csv(path: Path, extraction_dates: list[str]) -> None:
    rows = [f"R{i};47001;1 000,{i:02d};05/03/2024;Axe {i};{d}" for i, d in enumerate(extraction_dates, start=1)]
    path.write_text("\n".join(["ref;code;montant;date;axe;Date d'extraction", *rows]) + "\n", encoding="utf-8")


def test_csv_partner_dated_by_a_column(tmp_path: Path) -> None:
    """Done when (b): the extraction date is a column that holds the same date on every row."""
    path = tmp_path / "dep_test_aides.csv"
    write_csv(path, ["30/11/2025", "30/11/2025 ", "30/11/2025"])
    with partner_pipeline(tmp_path, "departement_test", CSV_SPEC) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.rows_loaded, r.extraction_date) == ("loaded", 3, date(2025, 11, 30)), r.message
        assert [(row[0], row[2], row[3]) for row in financing(pipe)] == [
            ("R1", 1, Decimal("1000.01")),
            ("R2", 2, Decimal("1000.02")),
            ("R3", 3, Decimal("1000.03")),
        ]


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (
            ["30/11/2025", "30/11/2025", "31/10/2025"],
            "column \"Date d'extraction\" holds different extraction dates: '30/11/2025' at row 2 "
            "and '31/10/2025' at row 4; an export has one extraction date, nothing was loaded",
        ),
        (["30/11/2025", "", "30/11/2025"], 'column "Date d\'extraction" is empty at row 3'),
        (["2025-11-30", "2025-11-30"], "the extraction date in column \"Date d'extraction\" at row 2 '2025-11-30'"),
    ],
    ids=["two dates", "a blank cell", "not the parser's format"],
)
def test_csv_whose_date_column_differs_is_rejected(tmp_path: Path, dates: list[str], message: str) -> None:
    path = tmp_path / "dep_test_aides.csv"
    write_csv(path, dates)
    with partner_pipeline(tmp_path, "departement_test", CSV_SPEC) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.reason) == ("rejected", "extraction_date"), r.message
        assert message in r.message, r.message
        assert pipe.con.execute("SELECT count(*) FROM financing").fetchone() == (0,)


def test_csv_without_its_date_column_is_missing_a_column(tmp_path: Path) -> None:
    path = tmp_path / "dep_test_aides.csv"
    path.write_text("ref;code;montant;date;axe\nR1;47001;10,00;05/03/2024;1\n", encoding="utf-8")
    with partner_pipeline(tmp_path, "departement_test", CSV_SPEC) as pipe:
        r = pipe.ingest(path, today=TODAY)
        assert (r.status, r.reason) == ("rejected", "missing_columns"), r.message
        assert 'missing: "Date d\'extraction"' in r.message


XLSX_SPEC = """
partner: epci_test
name: EPCI de test
file_pattern: 'epci_test\\.xlsx'
format: {type: xlsx, sheets: all}
extraction_date: {source: column, column: Extraction, parser: date_excel}
fields:
  operation_id: {column: ref}
  insee_code: {column: code, parser: insee}
  amount_eur: {column: montant, parser: decimal}
  engagement_date: {column: date, parser: date_excel}
axis: 2
default_instrument: grant
"""


@pytest.mark.parametrize("second", [date(2025, 11, 30), date(2025, 12, 31)], ids=["one date", "two dates"])
def test_xlsx_dated_by_a_column_on_every_sheet(tmp_path: Path, second: date) -> None:
    path = tmp_path / "epci_test.xlsx"
    wb = Workbook()
    first = wb.active
    assert first is not None
    first.title = "2024"
    first.append(["ref", "code", "montant", "date", "Extraction"])
    first.append(["E1", "47001", 100.5, date(2024, 5, 1), date(2025, 11, 30)])
    other = wb.create_sheet("2025")
    other.append(["ref", "code", "montant", "date", "Extraction"])
    other.append(["E2", "62498", 200, date(2025, 5, 1), date(2025, 11, 30)])
    other.append(["E3", "62498", 300, date(2025, 6, 1), second])
    wb.save(path)
    with partner_pipeline(tmp_path, "epci_test", XLSX_SPEC) as pipe:
        r = pipe.ingest(path, today=TODAY)
        if second == date(2025, 11, 30):
            assert (r.status, r.rows_loaded, r.extraction_date) == ("loaded", 3, date(2025, 11, 30)), r.message
        else:
            assert (r.status, r.reason) == ("rejected", "extraction_date"), r.message
            assert "at row 2 of sheet '2024'" in r.message and "at row 3 of sheet '2025'" in r.message, r.message


@pytest.mark.parametrize(
    ("extraction_date", "message"),
    [
        ("{source: cell, pattern: 'du (.*)', format: '%d/%m/%Y'}", "from cell reads a workbook's title rows"),
        ("{source: column, column: extraction}", "from column is for CSV and XLSX files; for JSON use source: field"),
        ("{source: field}", "extraction_date from field needs field"),
        ("{source: field, field: extraction, format: '%Y'}", "from field takes field, parser, not format"),
        ("{source: field, field: extraction, parser: year}", "date_iso"),
    ],
)
def test_an_extraction_date_that_cannot_work_is_a_spec_error(
    tmp_path: Path, extraction_date: str, message: str
) -> None:
    spec = tmp_path / "region_ge.yaml"
    spec.write_text(region_spec(extraction_date=extraction_date), encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert message in str(err.value)


def test_axis_code_is_one_of_the_axis_sources(tmp_path: Path) -> None:
    spec = tmp_path / "region_ge.yaml"
    spec.write_text(region_spec() + "axis: 1\n", encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert "give exactly one of axis_map, axis_pattern, axis_code or axis" in str(err.value)


def test_json_cells_keep_each_value_as_its_own_text(tmp_path: Path) -> None:
    """Nested objects become dotted columns in the records' order; arrays and mixed values stay JSON text."""
    records = [
        {"id": 1, "lieu": {"commune": {"insee": 1004}}, "tags": ["a", "b"], "m": 10},
        {"id": 2, "lieu": None, "tags": [], "m": 10.5, "extra": {"x": True}},
        {"id": 3, "lieu": {"commune": {"insee": "2A004"}}, "m": "1 000,00", "extra": 7},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(records), encoding="utf-16")
    work = tmp_path / "work"
    con = reader_connection(path, work, "256MB")
    try:
        raw = read_json(con, path, JsonFormat(type="json", encoding="utf-16"), work)
        assert raw.columns == ["id", "lieu.commune.insee", "tags", "m", "extra"]
        rows = con.execute(f"SELECT * EXCLUDE ({SHEET_COLUMN}) FROM {raw.table} ORDER BY {ROW_KEY_COLUMN}").fetchall()
    finally:
        con.close()
    assert rows == [
        (0, 1, "1", "1004", '["a","b"]', "10", None),
        (1, 2, "2", None, "[]", "10.5", '{"x":true}'),
        (2, 3, "3", "2A004", None, "1 000,00", "7"),
    ]

"""Exports: Excel, CSV and Parquet, exact amounts, and no formula injection from a partner's text."""

from __future__ import annotations

import csv
import zipfile
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import duckdb
import pyarrow.parquet as pq
import pytest
from analyst_helpers import al_export, fresh_settings, run_cli
from openpyxl import load_workbook

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.pipeline import open_pipeline
from cdv_etl.publish.cells import csv_value, neutralise
from cdv_etl.publish.export import EURO_FORMAT, export

HYPERLINK = '=HYPERLINK("http://x","y")'
# The partner's "Type d'opération" (loaded as ``scheme``): text a spreadsheet could run.
KINDS = {
    "AL1": HYPERLINK,
    "AL2": "+33 1 23 45 67 89",
    "AL3": "-Réhabilitation lourde",
    "AL4": "@SUM(A1:A9)",
    "AL5": "Construction neuve",
}
AMOUNTS = {"AL1": "1 234 567,89", "AL2": "0,01", "AL3": "98 765,40", "AL4": "10,00", "AL5": "2 500,00"}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("export")
    s = fresh_settings(folder)
    rows = [
        {"ref": ref, "insee": "01004", "amount": AMOUNTS[ref], "day": "15/03/2021", "kind": kind}
        for ref, kind in KINDS.items()
    ]
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(folder, "2024-10", rows)).rows_loaded == len(KINDS)
    return s


@pytest.fixture
def published(warehouse: Settings) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    yield con
    con.close()


def _sheet_xml_values(path: Path) -> dict[str, str]:
    """Cell reference → the raw text of its value in the sheet's XML (what Excel reads)."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as z:
        root = ElementTree.fromstring(z.read("xl/worksheets/sheet1.xml"))
    return {c.get("r"): (c.findtext("m:v", namespaces=ns) or "") for c in root.iterfind(".//m:c", ns)}


def test_excel_keeps_a_formula_label_as_text_and_amounts_as_numbers(
    published: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    out = tmp_path / "financing.xlsx"
    result = export(published, "financing", out)
    assert result.rows == len(KINDS) and result.fmt == "xlsx"
    ws = load_workbook(out)["financing"]
    header = [c.value for c in ws[1]]
    col = {name: i + 1 for i, name in enumerate(header)}
    by_ref = {ws.cell(r, col["operation_id"]).value: r for r in range(2, ws.max_row + 1)}
    for ref, kind in KINDS.items():
        cell = ws.cell(by_ref[ref], col["scheme"])
        assert cell.value == kind and cell.data_type == "s", (ref, cell.value, cell.data_type)
        # Every text a spreadsheet could run (=, +, -, @ in front) carries Excel's quote prefix,
        # so Excel keeps it text even when the cell is edited; plain text does not.
        assert cell.quotePrefix == (ref != "AL5"), (ref, kind, cell.quotePrefix)
    raw = _sheet_xml_values(out)
    for ref, amount in AMOUNTS.items():
        cell = ws.cell(by_ref[ref], col["amount_eur"])
        exact = Decimal(amount.replace(" ", "").replace(",", "."))
        assert cell.data_type == "n" and isinstance(cell.value, int | float), (ref, cell.value)
        assert cell.number_format == EURO_FORMAT
        assert Decimal(raw[cell.coordinate]) == exact  # the file holds the exact decimal text
    insee = ws.cell(2, col["insee_code"])
    assert insee.value == "01004" and insee.data_type == "s"  # a code, not the number 1004
    assert ws.cell(2, col["engagement_date"]).is_date
    # Bold frozen header, columns wide enough for their header and their values.
    assert ws.freeze_panes == "A2"
    assert all(c.font.b for c in ws[1])
    for name, i in col.items():
        width = ws.column_dimensions[ws.cell(1, i).column_letter].width
        assert len(name) <= width <= 60, (name, width)
    assert ws.column_dimensions[ws.cell(1, col["scheme"]).column_letter].width >= len("-Réhabilitation lourde")
    about = dict(load_workbook(out)["about"].iter_rows(values_only=True))
    assert about["source"] == "financing" and about["rows"] == len(KINDS)


def test_csv_neutralises_text_not_numbers(published: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "financing.csv"
    export(published, "financing", out)
    rows = {r["operation_id"]: r for r in csv.DictReader(out.open(encoding="utf-8", newline=""))}
    assert rows["AL1"]["scheme"] == "'" + HYPERLINK
    assert rows["AL3"]["scheme"] == "'-Réhabilitation lourde"
    assert rows["AL5"]["scheme"] == "Construction neuve"
    assert rows["AL1"]["amount_eur"] == "1234567.89" and rows["AL2"]["amount_eur"] == "0.01"
    assert rows["AL1"]["insee_code"] == "01004"
    # A query: a negative amount stays a number, a tab or a carriage return in front is neutralised.
    out = tmp_path / "query.csv"
    export(
        published,
        "SELECT -5.10::DECIMAL(18, 2) AS delta_eur, chr(9) || '=1+1' AS tab, chr(13) || 'x' AS cr, '@a' AS at, 3 AS n",
        out,
    )
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[1].startswith("-5.10,'\t=1+1,")
    row = next(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert row == {"delta_eur": "-5.10", "tab": "'\t=1+1", "cr": "'\rx", "at": "'@a", "n": "3"}


def test_neutralise_follows_owasp() -> None:
    for text in ("=1", "+1", "-1", "@a", "\tx", "\rx"):
        assert neutralise(text) == "'" + text
    for text in ("a=1", " =1", "1", "", "Construction"):
        assert neutralise(text) == text
    assert csv_value(Decimal("-12.50")) == "-12.50" and csv_value(-3) == -3 and csv_value(None) == ""


def test_parquet_keeps_exact_decimals(published: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    out = tmp_path / "financing.parquet"
    export(published, "financing", out)
    table = pq.read_table(out)
    assert str(table.schema.field("amount_eur").type) == "decimal128(18, 2)"
    assert str(table.schema.field("insee_code").type) == "string"
    amounts = dict(zip(table.column("operation_id").to_pylist(), table.column("amount_eur").to_pylist(), strict=True))
    assert amounts == {ref: Decimal(a.replace(" ", "").replace(",", ".")) for ref, a in AMOUNTS.items()}
    assert HYPERLINK in table.column("scheme").to_pylist()  # not a spreadsheet: the text as it is
    # DuckDB reads it back to the same DECIMAL(18,2) sum.
    total = duckdb.sql("SELECT sum(amount_eur) FROM read_parquet($p)", params={"p": str(out)}).fetchone()[0]
    assert total == published.execute("SELECT sum(amount_eur) FROM financing").fetchone()[0]


def test_a_name_that_is_no_public_view_is_refused(published: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with pytest.raises(CdvError, match="not a public view"):
        export(published, "engagement_rows", tmp_path / "x.csv")
    with pytest.raises(CdvError, match="unknown export format"):
        export(published, "financing", tmp_path / "x.txt")
    with pytest.raises(CdvError, match="query failed"):
        export(published, "SELECT nope FROM financing", tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_export_command(warehouse: Settings, tmp_path: Path) -> None:
    wh = str(warehouse.warehouse)
    out = run_cli(
        ["export", "v_financing_by_partner", "--format", "xlsx", "-o", str(tmp_path / "p.xlsx"), "-w", wh], tmp_path
    ).stdout
    assert "rows" in out and (tmp_path / "p.xlsx").exists()
    ws = load_workbook(tmp_path / "p.xlsx").active
    header = [c.value for c in ws[1]]
    engaged = {ws.cell(r, 1).value: ws.cell(r, header.index("engaged_eur") + 1) for r in range(2, ws.max_row + 1)}
    total = sum(Decimal(a.replace(" ", "").replace(",", ".")) for a in AMOUNTS.values())
    assert Decimal(_sheet_xml_values(tmp_path / "p.xlsx")[engaged["action_logement"].coordinate]) == total
    assert engaged["action_logement"].number_format == EURO_FORMAT
    run_cli(
        ["export", "SELECT operation_id, scheme FROM financing ORDER BY 1", "-o", str(tmp_path / "q.csv"), "-w", wh],
        tmp_path,
    )
    assert (tmp_path / "q.csv").read_text(encoding="utf-8").splitlines()[1] == 'AL1,"\'=HYPERLINK(""http://x"",""y"")"'
    bad = run_cli(["export", "nope", "-o", str(tmp_path / "n.csv"), "-w", wh], tmp_path, ok=False)
    assert bad.returncode == 2 and "not a public view" in bad.stderr

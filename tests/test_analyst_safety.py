"""What analysts run is safe: SQL sandboxed, partner text printed as written, exports that neutralise
formulas, never cut a cell silently and keep their types; the data dictionary in French with the rule codes."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from analyst_helpers import al_export, fresh_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from cdv_etl.cli import app
from cdv_etl.config import Settings
from cdv_etl.load.warehouse import PUBLIC_VIEWS
from cdv_etl.pipeline import open_pipeline
from cdv_etl.publish.dictionary import rule_explanations
from cdv_etl.publish.export import EURO_FORMAT, EXCEL_MAX_TEXT
from cdv_etl.publish.reader import read_only
from cdv_etl.publish.tables import query_table
from schemas.canonical import RULES

ROOT = Path(__file__).resolve().parent.parent
HYPERLINK = '=HYPERLINK("http://x","y")'
MARKUP = ["x[/]y", "[bold red]Lens[/]", "a:x:b", ":smile:"]
"""Text rich would read as markup or emoji codes (x[/]y made rich raise MarkupError)."""


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two Action Logement exports whose text looks like markup and formulas.

    September: AL1 (then withdrawn) and AL2. October: AL2 and an operation whose id is a formula,
    communes and kinds written as markup, and two rows quarantined for their INSEE code: one
    reads as markup, one as a formula.
    """
    folder = tmp_path_factory.mktemp("analyst_safety")
    s = fresh_settings(folder)
    september = [
        {"ref": "AL1", "insee": "01004", "amount": "1 234,56", "day": "15/03/2021"},
        {"ref": "AL2", "insee": "01004", "amount": "10,00", "day": "15/03/2021"},
    ]
    october = [
        {"ref": "AL2", "insee": "01004", "amount": "10,00", "day": "15/03/2021"},
        {"ref": HYPERLINK, "insee": "01004", "amount": "2 500,00", "day": "16/03/2021", "kind": "a:x:b :smile:"},
        {"ref": "AL4", "insee": "01004", "amount": "7,00", "day": "16/03/2021", "commune": "[bold red]Lens[/]"},
        {"ref": "AL5", "insee": "x[/]y", "amount": "1,00", "day": "16/03/2021"},
        {"ref": "AL6", "insee": HYPERLINK, "amount": "1,00", "day": "16/03/2021"},
    ]
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(folder, "2024-09", september)).rows_loaded == 2
        result = pipe.ingest(al_export(folder, "2024-10", october))
        assert (result.rows_loaded, result.rows_quarantined) == (3, 2), result.message
        assert result.status == "held" and result.file_id is not None  # AL1 withdrawn: half the stock
        pipe.accept(result.file_id)
    return s


def cli(*args: str, code: int = 0) -> tuple[str, str]:
    """``cdv-etl ARGS`` in this process: stdout and stderr, after checking the exit code."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


# -- 1. the SQL sandbox ------------------------------------------------------------------------


REFUSED = [
    ("COPY (SELECT 1) TO '{tmp}/x.csv'", "writing files from SQL", "cdv-etl export"),
    ("COPY financing TO '{tmp}/x.parquet' (FORMAT parquet)", "writing files from SQL", "cdv-etl export"),
    ("EXPORT DATABASE '{tmp}/dump'", "writing files from SQL", "cdv-etl export"),
    ("SELECT * FROM read_csv('/etc/passwd')", "reading files other than the warehouse", "cdv-etl docs"),
    ("SELECT * FROM read_text('/etc/hostname')", "reading files other than the warehouse", "cdv-etl docs"),
    ("SELECT * FROM glob('/etc/*')", "reading files other than the warehouse", "cdv-etl docs"),
    ("INSTALL httpfs", "installing or loading DuckDB extensions", "need no extension"),
    ("LOAD excel", "installing or loading DuckDB extensions", "need no extension"),
    ("ATTACH '{tmp}/y.duckdb'", "attaching another database", "cdv-etl export"),
    ("SET enable_external_access = true", "changing the session's settings", "without SET"),
    ("RESET lock_configuration", "changing the session's settings", "without SET"),
    ("CREATE TABLE mine AS SELECT 1", "changing the warehouse", "cdv-etl ingest"),
]


@pytest.mark.parametrize(("statement", "refused", "hint"), REFUSED)
def test_sql_refuses_files_extensions_attach_and_settings(
    warehouse: Settings, tmp_path: Path, statement: str, refused: str, hint: str
) -> None:
    sql = statement.format(tmp=tmp_path)
    for command in (["sql", sql], ["sql", "--live", sql], ["export", sql, "-o", str(tmp_path / "out.csv")]):
        _, err = cli(*command, "-w", str(warehouse.warehouse), code=2)
        assert f"error: refused: {refused}" in err and hint in err, (command, err)
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_views_and_table_macros_work_in_the_sandbox(warehouse: Settings) -> None:
    queries = {
        "SELECT count(*) AS n FROM financing": 3,
        "SELECT count(*) AS n FROM financing_as_of(DATE '2099-12-31')": 3,
        "SELECT count(*) AS n FROM engaged_as_of(DATE '2099-12-31')": 1,
        "SELECT count(*) AS n FROM changes_between(NULL, NULL)": 3,
        "SELECT count(*) AS n FROM v_changes": 3,
        "SELECT sum(operations) AS n FROM v_financing_by_axis": 3,
        "SELECT count(*) AS n FROM quarantine": 2,
        # A temporary table lives in memory: analysts may stage a result.
        "CREATE TEMP TABLE mine AS SELECT * FROM financing; SELECT count(*) AS n FROM mine": 3,
    }
    for sql, n in queries.items():
        out, _ = cli("sql", "-w", str(warehouse.warehouse), "-f", "json", sql)
        assert json.loads(out) == [{"n": n}], sql


def test_the_analysts_connection_is_locked_and_shares_its_instance(warehouse: Settings) -> None:
    with read_only(warehouse.published_path) as con, read_only(warehouse.published_path) as again:
        for c in (con, again):
            assert c.execute(
                "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
            ).fetchone() == (False, True)
        with pytest.raises(duckdb.PermissionException):
            again.execute("SELECT * FROM read_csv('/etc/passwd')")


def test_no_analyst_read_path_opens_duckdb_itself() -> None:
    """Every read path (sql, files, quarantine, changes, export, docs, report) goes through the reader."""
    paths = [ROOT / "cdv_etl" / "cli.py", ROOT / "cdv_etl" / "cli_analyst.py"]
    paths += [p for p in (ROOT / "cdv_etl" / "publish").glob("*.py") if p.name not in ("reader.py", "snapshot.py")]
    for path in paths:
        assert "duckdb.connect" not in path.read_text(encoding="utf-8"), path


# -- 2. partner text printed as written ---------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def shown(text: str) -> str:
    """What a table must show for ``text``: the text, control characters as their escapes (\\x1b, \\t)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def render_cell(value: str) -> list[str]:
    """The lines of a one-cell query table, without the table's own borders and padding."""
    table = query_table(["v"], [(value,)])
    table.box, table.show_header, table.padding = None, False, (0, 0)
    buf = io.StringIO()
    Console(file=buf, width=4 * len(value) + 80, color_system=None, legacy_windows=False).print(table)
    return buf.getvalue().split("\n")[:-1]


FRAGMENTS = st.sampled_from(
    ["[", "]", "/", ":", "[/]", "[/", "[bold red]", "[link=http://x]", ":smile:", ":x:", "\\", "\x1b[31m"]
    + ["\t", "\r", "\n", "\r\n", "\x00", "\x07", "\x85", "\u2028", "\u200b", "e\u0301", "中", "🙂", " "]
)
PARTNER_TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=12).map("".join)


@pytest.fixture(scope="module")
def memory() -> Iterator[duckdb.DuckDBPyConnection]:
    """One in-memory DuckDB for every example (opening one costs more than the example itself)."""
    con = duckdb.connect()
    yield con
    con.close()


@settings(max_examples=300, deadline=None)
@given(PARTNER_TEXT)
def test_any_text_from_the_warehouse_is_printed_as_written(memory: duckdb.DuckDBPyConnection, text: str) -> None:
    (value,) = memory.execute("SELECT ?::VARCHAR", [text]).fetchone()  # as DuckDB returns it
    lines = shown(value).split("\n")
    width = max(1, *(cell_len(line) for line in lines))
    assert render_cell(value) == [line + " " * (width - cell_len(line)) for line in lines]


def test_markup_and_emoji_codes_from_partners_print_as_written(warehouse: Settings, tmp_path: Path) -> None:
    w = str(warehouse.warehouse)
    out, _ = cli("quarantine", "-w", w)
    assert "│ x[/]y " in out and "INSEE code 'x[/]y' is not a commune" in out
    out, _ = cli("sql", "-w", w, "SELECT 'x[/]y' AS v")
    assert "x[/]y" in out
    out, _ = cli("sql", "-w", w, "SELECT commune_label, scheme FROM financing_history WHERE is_current")
    assert "[bold red]Lens[/]" in out and "a:x:b :smile:" in out and "❌" not in out and "🙂" not in out
    out, _ = cli("sql", "-w", w, 'SELECT 1 AS "[red]name[/]"')
    assert "[red]name[/]" in out
    # A query's error quotes the query, markup and all.
    _, err = cli("sql", "-w", w, "SELECT 'x[/]y' FROM nowhere", code=2)
    assert "SELECT 'x[/]y' FROM nowhere" in err


def test_load_results_print_partner_text_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from cdv_etl.cli import print_results
    from cdv_etl.load.loader import LoadResult

    name = "[red]AL[/] x[/]y :smile:.csv"
    print_results(
        [
            LoadResult(name, "a:x:b", "loaded", rows_read=1, rows_loaded=1, quarantine_by_rule={"commune_missing": 1}),
            LoadResult(name, None, "rejected", message=f"{name}: [bold]not[/] a:x:b"),
        ]
    )
    out, err = capsys.readouterr()
    assert name in out and "a:x:b" in out and f"  {name}: quarantined by rule — commune_missing 1" in out
    assert f"✗ {name}: [bold]not[/] a:x:b" in err


# -- 3. exports: one neutralisation, no silent cut, types kept ------------------------------------


def test_quarantine_and_changes_csv_are_neutralised_like_exports(warehouse: Settings) -> None:
    w = str(warehouse.warehouse)
    out, _ = cli("quarantine", "-w", w, "-f", "csv")
    values = {r["value"] for r in csv.DictReader(io.StringIO(out))}
    assert values == {"x[/]y", "'" + HYPERLINK}
    out, _ = cli("changes", "-w", w, "--partner", "action_logement", "-f", "csv")
    rows = {r["operation_id"]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"AL1", "AL4", "'" + HYPERLINK}
    assert rows["AL1"]["change"] == "withdrawn" and rows["AL1"]["engaged_delta_eur"] == "-1234.56"  # a number
    # JSON is data, not a spreadsheet: exact.
    out, _ = cli("quarantine", "-w", w, "-f", "json")
    assert {r["value"] for r in json.loads(out)} == {"x[/]y", HYPERLINK}
    # The export's CSV says the same as the quarantine's.
    _, _ = cli("export", "-w", w, "SELECT value FROM quarantine", "-o", str(warehouse.warehouse.parent / "q.csv"))
    exported = (warehouse.warehouse.parent / "q.csv").read_text(encoding="utf-8")
    assert {r["value"] for r in csv.DictReader(io.StringIO(exported))} == values


LONG = 1_000_000


def test_xlsx_export_names_every_cell_it_cuts(warehouse: Settings, tmp_path: Path) -> None:
    sql = (
        f"SELECT 'short' AS label, 1 AS n UNION ALL SELECT repeat('ab', {LONG // 2}), 2 "
        f"UNION ALL SELECT repeat('é', {EXCEL_MAX_TEXT}), 3 UNION ALL SELECT repeat('x', {EXCEL_MAX_TEXT + 1}), 4 "
        "ORDER BY n"
    )
    out_path = tmp_path / "long.xlsx"
    out, err = cli("export", "-w", str(warehouse.warehouse), sql, "-o", str(out_path), code=1)
    assert "4 rows × 2 columns written to" in out
    assert "2 cell(s) changed to fit Excel" in err and "csv or parquet" in err
    assert f"A3 (row 3, column label, {LONG:,} characters): cut to 32,767 characters" in err
    assert f"A5 (row 5, column label, {EXCEL_MAX_TEXT + 1:,} characters)" in err and "A4" not in err
    wb = load_workbook(out_path, read_only=True)
    sheet = wb[wb.sheetnames[0]]
    cells = [r[0] for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert cells[0] == "short" and cells[2] == "é" * EXCEL_MAX_TEXT  # at the limit: whole
    for cut, length in ((cells[1], LONG), (cells[3], EXCEL_MAX_TEXT + 1)):
        assert len(cut) == EXCEL_MAX_TEXT and cut.endswith(
            f"[cut by the xlsx export: {length:,} characters; csv and parquet exports keep it whole]"
        )
    about = {r[0]: r[1] for r in wb["about"].iter_rows(values_only=True)}
    assert about["cells changed"].startswith("2 cell(s) changed") and "A3" in about and "A5" in about
    # csv and parquet keep the text whole
    limit = csv.field_size_limit(2 * LONG)
    for fmt in ("csv", "parquet"):
        path = tmp_path / f"long.{fmt}"
        cli("export", "-w", str(warehouse.warehouse), sql, "-o", str(path))
        texts = (
            [r["label"] for r in csv.DictReader(path.open(encoding="utf-8"))]
            if fmt == "csv"
            else pq.read_table(path).column("label").to_pylist()
        )
        assert [len(t) for t in texts] == [5, LONG, EXCEL_MAX_TEXT, EXCEL_MAX_TEXT + 1], fmt
    csv.field_size_limit(limit)


def test_no_public_view_or_macro_returns_a_hugeint(warehouse: Settings) -> None:
    with read_only(warehouse.published_path) as con:
        found = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE table_name IN (SELECT unnest(?)) AND data_type IN ('HUGEINT', 'UHUGEINT')",
            [list(PUBLIC_VIEWS)],
        ).fetchall()
        for macro in (
            "financing_as_of(DATE '2099-12-31')",
            "engaged_as_of(DATE '2099-12-31')",
            "changes_between(NULL, NULL)",
        ):
            found += [
                (macro, r[0], r[1])
                for r in con.execute(f"DESCRIBE SELECT * FROM {macro}").fetchall()
                if r[1] in ("HUGEINT", "UHUGEINT")
            ]
        counts = con.execute(
            "SELECT DISTINCT data_type FROM duckdb_columns() "
            "WHERE column_name IN ('operations', 'partners', 'failures')"
        ).fetchall()
    assert found == []
    assert counts == [("BIGINT",)]


def test_exports_keep_counts_amounts_and_dates_typed(warehouse: Settings, tmp_path: Path) -> None:
    sql = (
        "SELECT partner, operations, engaged_eur, extraction_date FROM v_financing_by_partner "
        "WHERE partner = 'action_logement'"
    )
    w = str(warehouse.warehouse)
    for fmt in ("xlsx", "csv", "parquet"):
        cli("export", "-w", w, sql, "-o", str(tmp_path / f"p.{fmt}"))
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("operations").type == pa.int64()
    assert table.schema.field("engaged_eur").type == pa.decimal128(18, 2)
    assert table.schema.field("extraction_date").type == pa.date32()
    assert table.to_pylist() == [
        {
            "partner": "action_logement",
            "operations": 3,
            "engaged_eur": Decimal("2517.00"),
            "extraction_date": date(2024, 10, 31),
        }
    ]
    (row,) = csv.DictReader((tmp_path / "p.csv").open(encoding="utf-8"))
    assert row == {
        "partner": "action_logement",
        "operations": "3",
        "engaged_eur": "2517.00",
        "extraction_date": "2024-10-31",
    }
    sheet = load_workbook(tmp_path / "p.xlsx")["export"]
    ops, eur, day = sheet["B2"], sheet["C2"], sheet["D2"]
    assert (ops.data_type, ops.value) == ("n", 3) and isinstance(ops.value, int)
    assert (eur.data_type, eur.number_format) == ("n", EURO_FORMAT) and Decimal(str(eur.value)) == Decimal("2517.00")
    assert isinstance(day.value, datetime) and day.value.date() == date(2024, 10, 31) and day.is_date


# -- 8. the data dictionary --------------------------------------------------------------------


def test_dictionary_is_french_and_lists_the_rule_codes(warehouse: Settings) -> None:
    out, _ = cli("docs", "-w", str(warehouse.warehouse))
    assert out.startswith("# Dictionnaire des données de cdv-etl")
    assert "| colonne | type | description |" in out and "## Codes des règles" in out
    assert "| `operations` | BIGINT | Nombre de lignes d'engagement qui comptent comme engagées. |" in out
    assert "HUGEINT" not in out
    codes = re.findall(r"^\| `(\w+)` \| (.+) \|$", out.split("## Codes des règles", 1)[1], flags=re.M)
    assert [c for c, _ in codes] == [r.id for r in sorted(RULES.values(), key=lambda r: r.order)]
    assert codes == [(code, text.replace("|", "\\|")) for code, text in rule_explanations()]

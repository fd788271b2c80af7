"""Exports for analysts: a public view or a query, to Excel, CSV or Parquet.

Money stays exact: Excel cells hold the amount's decimal text as a number (with a euro
format), CSV writes the decimal text, Parquet keeps ``decimal(18,2)``.

Formula injection: every text cell goes through ``cdv_etl.publish.cells`` (as every file
written for people does). In CSV, a formula-like cell gets a leading single quote. In Excel,
the cell keeps the partner's exact text but is written as a string cell with Excel's "quote
prefix" (what Excel itself does when a person types a leading apostrophe): it is shown as
typed and never evaluated, even after editing. Numbers, dates and booleans are never
touched, so a negative amount stays a number. Parquet is not a spreadsheet format: text is
written as it is.

Excel holds at most 32,767 characters in a cell, and no control character but the tab and
line breaks. A longer text is cut, and says so at its end; control characters are dropped.
Nothing is changed silently: the result lists the cells changed (``ExportResult.changed``),
the workbook's ``about`` sheet names them, and ``cdv-etl export`` prints them and exits with
1. CSV and Parquet keep every text whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from cdv_etl.errors import CdvError
from cdv_etl.load.warehouse import PUBLIC_VIEWS
from cdv_etl.publish.cells import is_formula_like, write_csv
from cdv_etl.publish.reader import query_error
from cdv_etl.sql import quote_ident as _quote_ident

FORMATS = ("xlsx", "csv", "parquet")
EURO_FORMAT = '#,##0.00 "€"'
DATE_FORMAT = "dd/mm/yyyy"
TIMESTAMP_FORMAT = "dd/mm/yyyy hh:mm:ss"
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_TEXT = 32_767
_BATCH = 10_000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


CHANGED_LISTED = 1_000
"""At most this many changed cells are listed (the result and the ``about`` sheet count them all)."""


@dataclass(frozen=True)
class ChangedCell:
    """A data cell of a workbook whose text Excel could not hold as it is."""

    row: int  # the sheet's row number (the header is row 1)
    column: str
    letter: str
    length: int  # characters of the original text
    what: str  # what was done to it

    @property
    def ref(self) -> str:
        return f"{self.letter}{self.row}"

    def __str__(self) -> str:
        return f"{self.ref} (row {self.row}, column {self.column}, {self.length:,} characters): {self.what}"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    fmt: str
    rows: int
    columns: list[str]
    sql: str
    changed: list[ChangedCell] = field(default_factory=list)  # the first CHANGED_LISTED
    changed_count: int = 0


def source_sql(name_or_query: str) -> str:
    """``SELECT * FROM "view"`` for a public view's name; any other text is taken as a query."""
    text = name_or_query.strip().rstrip(";").strip()
    if _IDENTIFIER.fullmatch(text):
        views = {v.lower(): v for v in PUBLIC_VIEWS}
        if text.lower() not in views:
            raise CdvError(
                f"{text!r} is not a public view",
                f"public views: {', '.join(PUBLIC_VIEWS)}; or give a query, "  # noqa: S608 - a hint
                "e.g. \"SELECT * FROM financing WHERE partner = 'anah'\"",
            )
        return f"SELECT * FROM {_quote_ident(views[text.lower()])}"  # noqa: S608 - a known view, quoted
    return text


def format_for(path: Path, fmt: str | None) -> str:
    """The format asked for, or the one the file's suffix names."""
    chosen = (fmt or path.suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        raise CdvError(
            f"unknown export format {chosen or path.name!r}",
            f"use --format {'|'.join(FORMATS)} (or a file name ending in .xlsx, .csv or .parquet)",
        )
    return chosen


def export(
    con: duckdb.DuckDBPyConnection, name_or_query: str, out: Path, fmt: str | None = None, *, origin: str | None = None
) -> ExportResult:
    """Export a public view (by name) or a query's result to ``out``, replaced atomically.

    ``con`` should be read-only (the published warehouse); ``origin`` names it in the
    workbook's ``about`` sheet.
    """
    out = Path(out)
    chosen = format_for(out, fmt)
    sql = source_sql(name_or_query)
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        raise query_error(exc, sql) from exc
    if cur.description is None:
        raise CdvError("that statement returns no rows to export", "give a view name or a SELECT query")
    columns = [d[0] for d in cur.description]
    types = [d[1] for d in cur.description]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    changes = _Changes(columns)
    try:
        if chosen == "xlsx":
            about = [
                ("source", name_or_query.strip()),
                ("sql", sql),
                ("warehouse", origin or ""),
                ("exported at", datetime.now().replace(microsecond=0)),
            ]
            rows = _write_xlsx(cur, columns, types, tmp, _sheet_name(name_or_query), about, changes)
        elif chosen == "csv":
            rows = _write_csv(cur, columns, tmp)
        else:
            rows = _write_parquet(cur, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, chosen, rows, columns, sql, changes.listed, changes.count)


# -- CSV ---------------------------------------------------------------------------------------


def _write_csv(cur: duckdb.DuckDBPyConnection, columns: list[str], path: Path) -> int:
    with path.open("w", encoding="utf-8", newline="") as fh:
        return write_csv(fh, columns, iter(lambda: cur.fetchmany(_BATCH), []))


# -- Parquet -----------------------------------------------------------------------------------


def _write_parquet(cur: duckdb.DuckDBPyConnection, path: Path) -> int:
    reader = cur.to_arrow_reader(_BATCH)
    rows = 0
    with pq.ParquetWriter(str(path), reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


# -- Excel -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """How a column's cells are written and shown."""

    name: str  # money, number, integer, float, date, timestamp, bool, text
    number_format: str | None = None


def column_kind(column: str, duck_type: Any) -> _Kind:
    """Money is a DECIMAL with cents whose name says euros (or as wide as the warehouse's amounts)."""
    type_id = getattr(duck_type, "id", str(duck_type)).lower()
    if type_id == "decimal":
        params = dict(getattr(duck_type, "children", []) or [])
        precision, scale = int(params.get("precision", 18)), int(params.get("scale", 2))
        name = column.lower()
        if scale == 2 and not name.endswith("_pct") and ("eur" in name or precision >= 18):
            return _Kind("money", EURO_FORMAT)
        return _Kind("number", "#,##0" + ("." + "0" * scale if scale else ""))
    if type_id in (
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "hugeint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "uhugeint",
    ):
        return _Kind("integer")
    if type_id in ("float", "double"):
        return _Kind("float", "#,##0.00")
    if type_id == "date":
        return _Kind("date", DATE_FORMAT)
    if type_id.startswith("timestamp"):
        return _Kind("timestamp", TIMESTAMP_FORMAT)
    if type_id == "boolean":
        return _Kind("bool")
    return _Kind("text")


class _Changes:
    """The data cells changed to fit Excel, as they are written (``row`` is the sheet's current row)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.row = 1
        self.count = 0
        self.listed: list[ChangedCell] = []

    def note(self, column: int, length: int, what: str) -> None:
        self.count += 1
        if len(self.listed) < CHANGED_LISTED:
            self.listed.append(ChangedCell(self.row, self.columns[column], get_column_letter(column + 1), length, what))


def _excel_text(value: Any) -> tuple[str, str | None]:
    """The text Excel can hold, and what was changed to get it (None: nothing)."""
    original = value if isinstance(value, str) else str(value)
    text = ILLEGAL_CHARACTERS_RE.sub("", original)
    what = []
    if len(text) < len(original):
        what.append(f"{len(original) - len(text):,} control character(s) dropped")
    if len(text) > EXCEL_MAX_TEXT:
        marker = f"… [cut by the xlsx export: {len(original):,} characters; csv and parquet exports keep it whole]"
        text = text[: EXCEL_MAX_TEXT - len(marker)] + marker
        what.append(f"cut to {EXCEL_MAX_TEXT:,} characters (Excel's limit)")
    return text, "; ".join(what) or None


def _fitted(value: Any) -> str:
    """A header or ``about`` cell's text (names and the query, not data): a cut shows in the cell itself."""
    return _excel_text(value)[0]


def _cell_writer(ws: Worksheet, kind: _Kind, note: Callable[[int, str], None]) -> Callable[[Any], Any]:
    """A function from a value to what ``ws.append`` takes for this column."""

    def styled(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Decimal):
            # openpyxl would write float(value) to 16 digits (98765.39999999999 for 98765.40):
            # the cell gets the exact decimal text instead, still a number cell.
            cell = WriteOnlyCell(ws, value=f"{value:f}")
            cell.data_type = "n"
        else:
            cell = WriteOnlyCell(ws, value=value)
        cell.number_format = kind.number_format or "General"
        return cell

    def timestamp(value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.replace(tzinfo=None)  # Excel has no time zones: the wall-clock time
        return styled(value)

    def text(value: Any) -> Any:
        if value is None:
            return None
        original = value if isinstance(value, str) else str(value)
        value, what = _excel_text(original)
        if what:
            note(len(original), what)
        if not is_formula_like(value):
            return value
        cell = WriteOnlyCell(ws, value=value)
        cell.data_type = "s"  # a string, not a formula
        cell.quotePrefix = True  # Excel keeps it text even when the cell is edited
        return cell

    if kind.name in ("money", "number", "float", "date"):
        return styled
    if kind.name == "timestamp":
        return timestamp
    if kind.name in ("integer", "bool"):
        return lambda v: v
    return text


def _display_width(value: Any, kind: _Kind) -> int:
    if value is None:
        return 0
    if kind.name == "money":
        return len(f"{value:,.2f} €")
    if kind.name in ("number", "float"):
        return len(f"{value:,.2f}")
    if kind.name == "date":
        return 10
    if kind.name == "timestamp":
        return 19
    return max((len(line) for line in str(value).splitlines()), default=0)


def _widths(columns: Sequence[str], kinds: Sequence[_Kind], sample: Sequence[Sequence[Any]]) -> list[float]:
    """Wide enough for the header (bold) and the first rows, within 8 and 60 characters."""
    widths = []
    for i, (column, kind) in enumerate(zip(columns, kinds, strict=True)):
        longest = max([len(column) + 2] + [_display_width(r[i], kind) for r in sample])
        widths.append(float(min(max(longest + 2, 8), 60)))
    return widths


def _sheet_name(name_or_query: str) -> str:
    text = name_or_query.strip()
    if _IDENTIFIER.fullmatch(text):
        return text[:31]
    return "export"


def _write_xlsx(
    cur: duckdb.DuckDBPyConnection,
    columns: list[str],
    types: list[Any],
    path: Path,
    sheet: str,
    about: list[tuple[str, Any]],
    changes: _Changes,
) -> int:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=sheet)
    kinds = [column_kind(c, t) for c, t in zip(columns, types, strict=True)]
    writers = [_cell_writer(ws, k, partial(changes.note, i)) for i, k in enumerate(kinds)]
    batch = cur.fetchmany(_BATCH)
    for i, width in enumerate(_widths(columns, kinds, batch[:1000]), start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="E8EEF4")
    header = []
    for column, kind in zip(columns, kinds, strict=True):
        cell = WriteOnlyCell(ws, value=_fitted(column))
        cell.data_type = "s"
        cell.font = bold
        cell.fill = fill
        cell.alignment = Alignment(
            horizontal="right" if kind.name in ("money", "number", "float", "integer") else "left", vertical="center"
        )
        header.append(cell)
    ws.append(header)
    rows = 0
    while batch:
        if rows + len(batch) >= EXCEL_MAX_ROWS:
            raise CdvError(
                f"more than {EXCEL_MAX_ROWS - 1:,} rows: too many for one Excel sheet",
                "export to csv or parquet, or filter the query",
            )
        for r in batch:
            changes.row += 1
            ws.append([w(v) for w, v in zip(writers, r, strict=True)])
        rows += len(batch)
        batch = cur.fetchmany(_BATCH)
    if columns:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{rows + 1}"

    info = wb.create_sheet(title="about")
    info.column_dimensions["A"].width = 14
    info.column_dimensions["B"].width = 100
    notes: list[tuple[str, Any]] = []
    if changes.count:
        notes.append(
            (
                "cells changed",
                f"{changes.count:,} cell(s) changed to fit Excel (at most {EXCEL_MAX_TEXT:,} characters a cell, "
                "no control characters); a csv or parquet export keeps every text whole"
                + (f"; the first {CHANGED_LISTED:,} are listed below" if changes.count > CHANGED_LISTED else ""),
            )
        )
        notes += [(c.ref, str(c)) for c in changes.listed]
    for key, value in [*about, ("rows", rows), *notes]:
        label = WriteOnlyCell(info, value=key)
        label.font = bold
        if isinstance(value, datetime):
            cell = WriteOnlyCell(info, value=value)
            cell.number_format = TIMESTAMP_FORMAT
        else:
            cell = WriteOnlyCell(info, value=value if isinstance(value, int) else _fitted(value))
            if isinstance(value, str):
                cell.data_type = "s"
                cell.quotePrefix = is_formula_like(value)
        info.append([label, cell])
    wb.save(str(path))
    return rows

"""XLSX workbooks: title rows, a header row, blank rows, a footer total, one sheet or many.

Workbooks come from outside. Before any parser sees one, the zip container is checked:
a broken zip, a zip bomb (members that inflate far beyond the file's size), XML with a
DTD (the door to entity-expansion attacks such as "billion laughs") or a sheet whose cells
span an absurd rectangle (which the reader would allocate whole) is refused whole.
The cells are then read with python-calamine (a Rust reader that does not expand entities).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from xml.parsers import expat

import duckdb
import pyarrow as pa

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, XlsxFormat

MAX_INFLATION = 200  # uncompressed / compressed size of the whole workbook
MAX_UNCOMPRESSED = 4 * 1024**3
MAX_SHEET_CELLS = 20_000_000  # rows × columns a sheet may span: a million rows of 20 columns
# A DTD or an entity declaration, in UTF-8/ASCII or UTF-16 (either byte order).
_DTD = re.compile(b"|".join(re.escape(word.encode(enc)) for word in ("<!DOCTYPE", "<!ENTITY")
                            for enc in ("ascii", "utf-16-le", "utf-16-be")), re.IGNORECASE)
# What a zip member may do to Python's zipfile: bad headers, bad deflate data, an unknown
# compression method or zip version, encryption, offsets outside the file.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError,
               ValueError)
# Where a sheet's cells go. calamine (the reader) places a cell at its r="XFD1048576" reference,
# or, without one, after the previous cell of the row; then it allocates the whole rectangle,
# however few cells it holds. These patterns over-approximate what its XML reader sees: any
# namespace prefix, any r attribute anywhere (even in a comment or a value).
_C_START = re.compile(rb"<(?!/)(?:[^\s<>]*:)?c(?=[\s/>])")
_C_R_FIRST = re.compile(rb"<(?!/)(?:[^\s<>]*:)?c[ \t\r\n]+r[ \t\r\n]*=[ \t\r\n]*[\"'][A-Za-z]+[0-9]")
_ROW_TAG = re.compile(rb"</?(?:[^\s<>]*:)?row(?=[\s/>])")
_R_COLUMNS = re.compile(rb"r(?<![\w:.-]r)\s*=\s*[\"']([A-Za-z]+)")  # r=, not color=
_R_ROWS = re.compile(rb"r(?<![\w:.-]r)\s*=\s*[\"'][A-Za-z]*([0-9]+)")
_REF = re.compile(r"([A-Za-z]+)([0-9]+)")
_HUGE = 10**12


def _column_number(letters: bytes | str) -> int:
    if len(letters) > 5:
        return _HUGE
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ch if isinstance(ch, int) else ord(ch)) - 64
    return n


def _row_number(digits: list[bytes]) -> int:
    if not digits:
        return 0
    return _HUGE if max(map(len, digits)) > 9 else max(map(int, digits))


class _Unsure(Exception):
    """The exact model cannot follow this XML as calamine would: use the safe bound."""


def _span_of_positional_cells(xml: bytes) -> tuple[int, int]:
    """Exact (rows, columns) for well-formed XML: calamine's cell reader replayed on expat's events.

    Like calamine: nothing counts before the first <sheetData> or after its end; a cell's
    content is its value (never a cell or a row); <row r> sets the row, </row> moves to the
    next one and back to the first column; a cell without r goes after the previous cell.
    """
    st = {"started": False, "done": False, "row": 0, "col": 0, "depth": 0, "rows": 0, "cols": 0}

    def local(name: str) -> str:
        if name.count(":") > 1:  # calamine and we might split such a name differently
            raise _Unsure
        return name.rpartition(":")[2]

    def start(name: str, attrs: dict[str, str]) -> None:
        kind = local(name)
        if st["done"]:
            return
        if not st["started"]:
            st["started"] = kind == "sheetData"
            return
        if st["depth"]:  # inside a cell: its value, never a cell or a row
            st["depth"] += 1
            return
        r = attrs.get("r")
        if kind == "row" and r is not None:
            if not r.isdigit() or len(r) > 9:
                raise _Unsure
            st["row"] = int(r) - 1
        elif kind == "c":
            if r is not None:
                m = _REF.fullmatch(r)
                if m is None or len(m.group(2)) > 9:
                    raise _Unsure
                row, st["col"] = int(m.group(2)) - 1, _column_number(m.group(1)) - 1
            else:
                row = st["row"]
            st["rows"] = max(st["rows"], row + 1)
            st["cols"] = max(st["cols"], st["col"] + 1)
            st["depth"] = 1

    def end(name: str) -> None:
        kind = local(name)
        if st["done"] or not st["started"]:
            return
        if st["depth"]:
            st["depth"] -= 1
            if not st["depth"]:
                st["col"] += 1
        elif kind == "row":
            st["row"] += 1
            st["col"] = 0
        elif kind == "sheetData":
            st["done"] = True

    def no_dtd(*_args: object) -> None:
        raise _Unsure

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = no_dtd
    parser.Parse(xml, True)
    return st["rows"], st["cols"]


def sheet_span(xml: bytes) -> tuple[int, int]:
    """(rows, columns) calamine would allocate for this zip member, never under-estimated.

    Cells written with their reference first (Excel, LibreOffice, openpyxl) give the exact
    span from a fast scan. Cells without a reference are placed as calamine places them
    (replaying its reader on well-formed XML); for XML that is not well formed, the bound
    assumes every such cell and every row tag moves the position on.
    """
    columns = max(map(_column_number, set(_R_COLUMNS.findall(xml))), default=0)
    rows = _row_number(_R_ROWS.findall(xml))
    positional = sum(1 for _ in _C_START.finditer(xml)) - sum(1 for _ in _C_R_FIRST.finditer(xml))
    if positional <= 0:
        return rows, columns
    try:
        exact_rows, exact_columns = _span_of_positional_cells(xml)
        return max(rows, exact_rows), max(columns, exact_columns)
    except (_Unsure, expat.ExpatError, ValueError):
        row_tags = sum(1 for _ in _ROW_TAG.finditer(xml))
        return rows + row_tags + 1, columns + positional


def check_container(path: Path) -> None:
    """Refuse workbooks that are not zips, inflate too much, carry a DTD or span absurd ranges.

    Every member is read in full (Python checks its CRC and its declared size on the way),
    so nothing can hide past a header or behind a member's name.
    """
    hint = "ask the partner to export the workbook again (File › Save as › .xlsx)"
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            packed = max(path.stat().st_size, 1)
            if total > MAX_UNCOMPRESSED or total / packed > MAX_INFLATION:
                raise FileRejected(
                    "zip_bomb",
                    f"{path.name}: the workbook would inflate to {total / 1024**2:.0f} MB from "
                    f"{packed / 1024**2:.1f} MB (over {MAX_INFLATION}×): refused as a zip bomb",
                    hint,
                )
            for info in infos:
                if info.is_dir():
                    continue
                data = zf.read(info)
                # Images (an SVG may carry a harmless DOCTYPE) are never parsed as XML.
                if not info.filename.startswith("xl/media/") and _DTD.search(data):
                    raise FileRejected(
                        "xml_entities",
                        f"{path.name}: {info.filename} declares a DTD or XML entities, "
                        "which spreadsheets never need (entity expansion attack?): refused",
                        hint,
                    )
                rows, cols = sheet_span(data)
                if rows * cols > MAX_SHEET_CELLS:
                    raise FileRejected(
                        "sheet_too_large",
                        f"{path.name}: {info.filename} places cells {rows} rows down and {cols} "
                        f"columns across ({rows * cols:,} cells, over {MAX_SHEET_CELLS:,}): "
                        "refused unread (a sparse-sheet memory bomb?)",
                        hint,
                    )
    except _ZIP_ERRORS as exc:
        raise FileRejected(
            "unreadable", f"{path.name}: not a valid XLSX workbook ({type(exc).__name__}: {exc})", hint
        ) from exc


def _open(path: Path) -> Any:
    from python_calamine import CalamineWorkbook

    try:
        return CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types
        raise FileRejected(
            "unreadable", f"{path.name}: the workbook cannot be read: {exc}",
            "ask the partner to export the workbook again",
        ) from exc


def _is_blank(row: list[Any]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in row)


def _footer_total(row: list[Any]) -> Decimal | None:
    for cell in reversed(row):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        try:
            return Decimal(str(cell).replace(" ", "").replace("\u00a0", "").replace(",", ".")).quantize(Decimal("0.01"))
        except InvalidOperation:
            return None
    return None


def read_xlsx(con: duckdb.DuckDBPyConnection, path: Path, fmt: XlsxFormat) -> RawExport:
    check_container(path)
    wb = _open(path)
    names: list[str] = list(wb.sheet_names)
    if fmt.sheets == "first":
        wanted = names[:1]
    elif fmt.sheets == "all":
        wanted = names
    else:
        missing = [s for s in fmt.sheets if s not in names]
        if missing:
            raise FileRejected(
                "missing_sheets",
                f"{path.name}: sheet(s) {', '.join(missing)} not found (sheets: {', '.join(names)})",
                "check the workbook, or the sheets listed in the partner's spec",
            )
        wanted = list(fmt.sheets)
    frames: list[pa.Table] = []
    control_total: Decimal | None = None
    title_rows: list[str] = []
    header: list[str] | None = None
    for sheet in wanted:
        try:
            rows = wb.get_sheet_by_name(sheet).to_python(skip_empty_area=False)
        except Exception as exc:
            raise FileRejected(
                "unreadable", f"{path.name}: sheet {sheet!r} cannot be read: {exc}",
                "ask the partner to export the workbook again",
            ) from exc
        h = fmt.header_row - 1
        if len(rows) <= h:
            continue
        title_rows += [" ".join(str(c) for c in r if c not in (None, "")) for r in rows[:h]]
        sheet_header = [str(c).strip() if c not in (None, "") else f"column_{i + 1}"
                        for i, c in enumerate(rows[h])]
        if header is None:
            header = sheet_header
        elif sheet_header != header:
            raise FileRejected(
                "inconsistent_sheets",
                f"{path.name}: sheet {sheet!r} has columns {sheet_header}, "
                f"unlike the first sheet's {header}",
                "ask the partner to use the same columns on every sheet",
            )
        body = rows[h + 1:]
        numbers = list(range(fmt.header_row + 1, fmt.header_row + 1 + len(body)))
        if fmt.footer_label:
            label = fmt.footer_label.casefold()
            for i, r in enumerate(body):
                first = next((c for c in r if c not in (None, "")), None)
                if isinstance(first, str) and first.strip().casefold() == label:
                    total = _footer_total(r[1:])
                    if total is not None:
                        control_total = (control_total or Decimal(0)) + total
                    del body[i], numbers[i]
                    break
        keep = [i for i, r in enumerate(body) if not _is_blank(r)]
        width = len(header)
        kept = [body[i] for i in keep]
        if any(len(r) != width for r in kept):
            kept = [(list(r) + [""] * width)[:width] for r in kept]
        # Column by column into Arrow (zip(*rows) transposes in C): no pandas frame of
        # objects, no astype(str) over every cell, no pandas → DuckDB conversion.
        columns = list(zip(*kept, strict=True)) if kept else [() for _ in range(width)]
        arrays = [_text_array(col) for col in columns]
        arrays.append(pa.array([numbers[i] for i in keep], pa.int64()))
        arrays.append(pa.array([sheet] * len(keep), pa.string()))
        frames.append(pa.Table.from_arrays(arrays, names=[*header, SOURCE_ROW_COLUMN, SHEET_COLUMN]))
    if header is None:
        raise FileRejected(
            "no_header", f"{path.name}: no header on row {fmt.header_row} of {', '.join(wanted)}",
            "check the workbook's layout against the partner's spec (format.header_row)",
        )
    if frames:
        data = pa.concat_tables(frames)
    else:
        data = pa.table({name: pa.array([], pa.string()) for name in header}
                        | {SOURCE_ROW_COLUMN: pa.array([], pa.int64()), SHEET_COLUMN: pa.array([], pa.string())})
    data = data.append_column(ROW_KEY_COLUMN, pa.array(range(data.num_rows), pa.int64()))
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    con.register("xlsx_frame", data)
    try:
        con.execute(
            f"CREATE TEMP TABLE {STAGING_TABLE} AS SELECT * FROM xlsx_frame"  # noqa: S608
        )
    finally:
        con.unregister("xlsx_frame")
    return RawExport(STAGING_TABLE, header, data.num_rows, control_total, title_rows)


def _text_array(column: tuple[Any, ...]) -> pa.Array:
    """A column of cells as text, as ``str()`` writes each one (a missing cell stays NULL)."""
    try:
        return pa.array(column, pa.string())  # every cell already text: no Python loop
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in column], pa.string())

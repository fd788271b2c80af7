"""XLSX workbooks: title rows, a header row, blank rows, a footer total, one sheet or many.

Workbooks come from outside. Before any parser sees one, the zip container is checked:
a broken zip, a zip bomb (members that inflate far beyond the file's size) or XML with a
DTD (the door to entity-expansion attacks such as "billion laughs") is refused whole.
The cells are then read with python-calamine (a Rust reader that does not expand entities).
"""

from __future__ import annotations

import re
import zipfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, XlsxFormat

MAX_INFLATION = 200  # uncompressed / compressed size of the whole workbook
MAX_UNCOMPRESSED = 4 * 1024**3
_DTD = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


def check_container(path: Path) -> None:
    """Refuse workbooks that are not zips, inflate too much or carry a DTD."""
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
                if info.filename.endswith((".xml", ".rels")):
                    with zf.open(info) as member:
                        head = member.read(4096)
                    if _DTD.search(head):
                        raise FileRejected(
                            "xml_entities",
                            f"{path.name}: {info.filename} declares a DTD or XML entities, "
                            "which spreadsheets never need (entity expansion attack?): refused",
                            hint,
                        )
    except zipfile.BadZipFile as exc:
        raise FileRejected(
            "unreadable", f"{path.name}: not a valid XLSX workbook (not a zip file: {exc})", hint
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
    frames: list[pd.DataFrame] = []
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
        frame = pd.DataFrame([(list(body[i]) + [""] * width)[:width] for i in keep],
                             columns=range(width), dtype=object)
        frame = frame.astype(str).set_axis(header, axis=1)
        frame[SOURCE_ROW_COLUMN] = [numbers[i] for i in keep]
        frame[SHEET_COLUMN] = sheet
        frames.append(frame)
    if header is None:
        raise FileRejected(
            "no_header", f"{path.name}: no header on row {fmt.header_row} of {', '.join(wanted)}",
            "check the workbook's layout against the partner's spec (format.header_row)",
        )
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=header)
    data[ROW_KEY_COLUMN] = range(len(data))
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    con.register("xlsx_frame", data)
    try:
        con.execute(
            f"CREATE TEMP TABLE {STAGING_TABLE} AS SELECT * FROM xlsx_frame"  # noqa: S608
        )
    finally:
        con.unregister("xlsx_frame")
    return RawExport(STAGING_TABLE, header, len(data), control_total, title_rows)

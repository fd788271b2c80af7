"""XLSX workbooks: title rows, a header row, blank rows, a footer total, one sheet or many.

Workbooks come from outside. Before any parser sees one, the zip container is checked from
its directory and the first bytes of each part: a broken zip, a zip bomb (members declared
to inflate far beyond the file's size), or an XML part with a DTD (the door to
entity-expansion attacks such as "billion laughs") is refused whole.

The cells are then read by DuckDB's ``excel`` extension (``read_xlsx``) in the reader
sandbox, every cell as text and within column bounds the header sets: it streams the
sheet's XML, so memory stays flat whatever the sheet claims (sparse-sheet "bombs" cost
nothing), and a part that lies about its size or is not well-formed fails the read.
"""

from __future__ import annotations

import zipfile
import zlib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import duckdb
from defusedxml import ElementTree

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, XlsxFormat
from cdv_etl.sql import quote_ident

MAX_INFLATION = 200  # uncompressed / compressed size of the whole workbook, as its directory declares
MAX_UNCOMPRESSED = 4 * 1024**3
MAX_PROLOG = 1024 * 1024
"""An XML part must reach its first element within this many bytes. A DTD may only stand
before it (the XML parser refuses one anywhere else), so that is all the check reads."""
MAX_COLUMNS = 256
"""The widest header read (column IV, Excel 2003's limit): cells further right are ignored."""
_HINT = "ask the partner to export the workbook again (File › Save as › .xlsx)"
# What a zip member may do to Python's zipfile: bad headers, bad deflate data, an unknown
# compression method or zip version, encryption, offsets outside the file.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError,
               ValueError)


def _column_letters(n: int) -> str:
    """1 → A, 26 → Z, 27 → AA."""
    letters = ""
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _encoding(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"<\x00")):
        return "utf-16-le"
    if head.startswith((b"\xfe\xff", b"\x00<")):
        return "utf-16-be"
    return "utf-8"


def _prolog_verdict(text: str) -> str | None:
    """'dtd', 'ok' (first element reached, no DTD before it) or None (need more text).

    What may stand before an XML document's first element: an XML declaration, processing
    instructions, comments, white space, and a DTD. Anything else is not XML at all ('ok':
    no XML parser will expand entities from it).
    """
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n\ufeff":
            i += 1
        if i >= n:
            return None
        if n - i < 4:
            return None  # "<", "<!" or "<!-" at the end of what was read: tell once more arrives
        if text.startswith("<?", i):
            end = text.find("?>", i + 2)
        elif text.startswith("<!--", i):
            end = text.find("-->", i + 4)
        elif text.startswith("<!", i):
            return "dtd"
        else:
            return "ok"  # the first element (or not XML at all): nothing before it declared entities
        if end < 0:
            return None
        i = end + 2 if text[end] == "?" else end + 3


def _check_prolog(fh: IO[bytes], member: str, path: Path) -> None:
    data = b""
    while len(data) < MAX_PROLOG:
        block = fh.read(64 * 1024)
        data += block
        enc = _encoding(data)
        usable = data[: len(data) - (len(data) % 2)] if enc.startswith("utf-16") else data
        verdict = _prolog_verdict(usable.decode(enc, errors="replace"))
        if verdict == "ok":
            return
        if verdict == "dtd":
            raise FileRejected(
                "xml_entities",
                f"{path.name}: {member} declares a DTD or XML entities, which spreadsheets never "
                "need (entity expansion attack?): refused", _HINT)
        if not block:
            return  # the part ends inside its prolog: no element, nothing to expand
    raise FileRejected(
        "xml_entities",
        f"{path.name}: {member} has over {MAX_PROLOG // 1024} kB of comments or blank space before "
        "its first element (hiding a DTD?): refused", _HINT)


def check_container(path: Path) -> list[str]:
    """Refuse workbooks that are not zips, would inflate too much or carry a DTD.

    Returns the workbook's sheet names, in order. Reads the zip directory, the workbook part
    and the first bytes of every other part, never a whole sheet.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            packed = max(path.stat().st_size, 1)
            if total > MAX_UNCOMPRESSED or total / packed > MAX_INFLATION:
                raise FileRejected(
                    "zip_bomb",
                    f"{path.name}: the workbook would inflate to {total / 1024**2:.0f} MB from "
                    f"{packed / 1024**2:.1f} MB (over {MAX_INFLATION}×): refused as a zip bomb", _HINT)
            for info in infos:
                # Images (an SVG may carry a harmless DOCTYPE) are never parsed as XML.
                if info.is_dir() or info.filename.startswith("xl/media/"):
                    continue
                with zf.open(info) as fh:
                    _check_prolog(fh, info.filename, path)
            try:
                workbook = zf.read("xl/workbook.xml")
            except KeyError:
                raise FileRejected("unreadable", f"{path.name}: not an XLSX workbook (no xl/workbook.xml)",
                                   _HINT) from None
    except _ZIP_ERRORS as exc:
        raise FileRejected(
            "unreadable", f"{path.name}: not a valid XLSX workbook ({type(exc).__name__}: {exc})", _HINT
        ) from exc
    try:
        root = ElementTree.fromstring(workbook)
    except Exception as exc:  # defusedxml and expat raise several types
        raise FileRejected("unreadable", f"{path.name}: xl/workbook.xml cannot be read ({exc})", _HINT) from exc
    return [str(el.get("name")) for el in root.iter() if el.tag.rpartition("}")[2] == "sheet" and el.get("name")]


def _footer_total(row: list[Any]) -> Decimal | None:
    for cell in reversed(row):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        try:
            return Decimal(str(cell).replace(" ", "").replace("\u00a0", "").replace(",", ".")).quantize(Decimal("0.01"))
        except InvalidOperation:
            return None
    return None


def _unreadable(path: Path, sheet: str, exc: Exception) -> FileRejected:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return FileRejected("unreadable", f"{path.name}: sheet {sheet!r} cannot be read: {first}",
                        "ask the partner to export the workbook again")


_READ = ("read_xlsx(?, sheet = ?, header = false, all_varchar = true, stop_at_empty = false, "
         "range = ?)")


def read_xlsx(con: duckdb.DuckDBPyConnection, path: Path, fmt: XlsxFormat) -> RawExport:
    names = check_container(path)
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
    h = fmt.header_row
    control_total: Decimal | None = None
    title_rows: list[str] = []
    header: list[str] | None = None
    rows_read = 0
    for sheet in wanted:
        try:
            top = con.execute(f"SELECT * FROM {_READ} LIMIT ?",  # noqa: S608 - constant SQL
                              [str(path), sheet, f"A1:{_column_letters(MAX_COLUMNS)}", h]).fetchall()
        except duckdb.Error as exc:
            raise _unreadable(path, sheet, exc) from exc
        if len(top) < h or not any(c not in (None, "") for c in top[h - 1]):
            continue
        title_rows += [" ".join(str(c) for c in r if c not in (None, "")) for r in top[: h - 1]]
        cells = list(top[h - 1])
        width = max(i for i, c in enumerate(cells) if c not in (None, "")) + 1
        sheet_header = [str(c).strip() if c not in (None, "") else f"column_{i + 1}"
                        for i, c in enumerate(cells[:width])]
        if header is None:
            twice = sorted({n for n in sheet_header if sheet_header.count(n) > 1})
            if twice:
                raise FileRejected(
                    "duplicate_columns",
                    f"{path.name}: sheet {sheet!r} has the column(s) {', '.join(map(repr, twice))} twice",
                    "ask the partner to name every column once")
            header = sheet_header
            _create_staging(con, header)
        elif sheet_header != header:
            raise FileRejected(
                "inconsistent_sheets",
                f"{path.name}: sheet {sheet!r} has columns {sheet_header}, "
                f"unlike the first sheet's {header}",
                "ask the partner to use the same columns on every sheet",
            )
        letters = [_column_letters(i + 1) for i in range(width)]
        first_cell = "coalesce(" + ", ".join(f"NULLIF(trim({quote_ident(c)}), '')" for c in letters) + ")"
        try:
            # The non-blank rows below the header, numbered as the spreadsheet numbers them
            # (the open range runs to the sheet's last possible row: blank rows are dropped).
            con.execute("DROP TABLE IF EXISTS stg_sheet")
            con.execute(
                f"CREATE TEMP TABLE stg_sheet AS SELECT * FROM ("  # noqa: S608 - constant SQL
                f"SELECT row_number() OVER () + ? AS {SOURCE_ROW_COLUMN}, * FROM {_READ}) "
                f"WHERE {first_cell} IS NOT NULL", [h, str(path), sheet, f"A{h + 1}:{letters[-1]}"])
        except duckdb.Error as exc:
            raise _unreadable(path, sheet, exc) from exc
        footer_row: int | None = None
        if fmt.footer_label:
            found = con.execute(
                f"SELECT {SOURCE_ROW_COLUMN}, {', '.join(quote_ident(c) for c in letters)} FROM stg_sheet "  # noqa: S608
                f"WHERE lower({first_cell}) = lower(?) ORDER BY {SOURCE_ROW_COLUMN} LIMIT 1",
                [fmt.footer_label.strip()]).fetchone()
            if found is not None:
                footer_row = int(found[0])
                values = list(found[1:])
                label_at = next(i for i, c in enumerate(values) if c is not None and c.strip())
                total = _footer_total(values[label_at + 1:])
                if total is not None:
                    control_total = (control_total or Decimal(0)) + total
        select = ", ".join(f"{quote_ident(c)} AS {quote_ident(n)}" for c, n in zip(letters, header, strict=True))
        added = con.execute(
            f"INSERT INTO {STAGING_TABLE} SELECT {select}, {SOURCE_ROW_COLUMN}, ?::VARCHAR, "  # noqa: S608
            f"? + row_number() OVER (ORDER BY {SOURCE_ROW_COLUMN}) - 1 FROM stg_sheet "
            f"WHERE {SOURCE_ROW_COLUMN} IS DISTINCT FROM ?",
            [sheet, rows_read, footer_row]).fetchone()
        rows_read += int(added[0]) if added else 0
        con.execute("DROP TABLE stg_sheet")
    if header is None:
        raise FileRejected(
            "no_header", f"{path.name}: no header on row {fmt.header_row} of {', '.join(wanted)}",
            "check the workbook's layout against the partner's spec (format.header_row)",
        )
    return RawExport(STAGING_TABLE, header, rows_read, control_total, title_rows)


def _create_staging(con: duckdb.DuckDBPyConnection, header: list[str]) -> None:
    columns = ", ".join(f"{quote_ident(n)} VARCHAR" for n in header)
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    con.execute(
        f"CREATE TEMP TABLE {STAGING_TABLE} ({columns}, {SOURCE_ROW_COLUMN} BIGINT, "
        f"{SHEET_COLUMN} VARCHAR, {ROW_KEY_COLUMN} BIGINT)")

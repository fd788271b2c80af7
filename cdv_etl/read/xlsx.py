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

import posixpath
import re
import zipfile
import zlib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, NamedTuple

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
MAX_SCANNED = 16 * 1024**2
"""A sheet part up to this size (uncompressed) is scanned for its last row, so that the cells
are read to that row: read_xlsx reads an open range to the sheet's last possible row
(1,048,576), blank ones included, which costs 0.1–4 s a sheet however small the sheet. A
bigger part is read to the end, as before: its own rows dwarf that cost."""
MAX_COLUMNS = 256
"""The widest header read (column IV, Excel 2003's limit): cells further right are ignored."""
_HINT = "ask the partner to export the workbook again (File › Save as › .xlsx)"
# What a zip member may do to Python's zipfile: bad headers, bad deflate data, an unknown
# compression method or zip version, encryption, offsets outside the file.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError, ValueError)


def _column_letters(n: int) -> str:
    """1 → A, 26 → Z, 27 → AA."""
    letters = ""
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


_LAST_COLUMN = _column_letters(MAX_COLUMNS)


def _encoding(head: bytes) -> str:
    """The encoding an XML parser (expat) assumes from a part's first bytes: a byte-order mark,
    or, without one, a zero first byte (UTF-16BE) or a zero second byte (UTF-16LE)."""
    if head.startswith(b"\xff\xfe") or (len(head) > 1 and head[1] == 0 and head[0] != 0):
        return "utf-16-le"
    if head.startswith(b"\xfe\xff") or (head[:1] == b"\x00"):
        return "utf-16-be"
    return "utf-8"


def _directory_where_declared(path: Path, zf: zipfile.ZipFile) -> bool:
    """Whether the zip directory Python read is the one the end record declares.

    Zip readers find the directory differently: Python takes the one just before the end
    record, others (the excel extension's minizip) the declared offset. A file holding two
    directories would show the check one workbook and the reader another.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - (1 << 16) - 22))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return False
    offset = int.from_bytes(tail[at + 16 : at + 20], "little")
    if offset == 0xFFFFFFFF:  # ZIP64: the offset is in the ZIP64 end record
        locator = tail.rfind(b"PK\x06\x07", 0, at)
        if locator < 0:
            return False
        with path.open("rb") as fh:
            fh.seek(int.from_bytes(tail[locator + 8 : locator + 16], "little"))
            record = fh.read(56)
        if not record.startswith(b"PK\x06\x06"):
            return False
        offset = int.from_bytes(record[48:56], "little")
    return bool(getattr(zf, "start_dir", None) == offset)


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
                "need (entity expansion attack?): refused",
                _HINT,
            )
        if not block:
            return  # the part ends inside its prolog: no element, nothing to expand
    raise FileRejected(
        "xml_entities",
        f"{path.name}: {member} has over {MAX_PROLOG // 1024} kB of comments or blank space before "
        "its first element (hiding a DTD?): refused",
        _HINT,
    )


class SheetPart(NamedTuple):
    """What the container check learnt of a sheet before any cell is read."""

    extent: tuple[int, int] | None
    """(last column, last row) its ``<dimension>`` declares (``_declared_extent``), or None."""
    last_row: int | None
    """The highest row number its XML holds (``_last_row_in``); None: not known, read to the end."""


def check_container(path: Path) -> dict[str, SheetPart]:
    """Refuse workbooks that are not zips, would inflate too much or carry a DTD.

    Returns the workbook's sheets, in order, each with the extent its ``<dimension>`` declares
    (see ``_declared_extent``) and, for a part of at most ``MAX_SCANNED`` bytes, its last row.
    Reads the zip directory, the workbook part and the first bytes of every other part; a whole
    sheet only when it is that small.
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
                    f"{packed / 1024**2:.1f} MB (over {MAX_INFLATION}×): refused as a zip bomb",
                    _HINT,
                )
            names = [i.filename for i in infos]
            if len(set(names)) != len(names) or not _directory_where_declared(path, zf):
                raise FileRejected(
                    "unreadable",
                    f"{path.name}: the zip holds a part twice or a second directory (readers would not "
                    "agree on its content): refused",
                    _HINT,
                )
            # Every part, whatever its name or folder: the reader opens what the workbook's
            # links name, not only *.xml files, and an image may be linked as a sheet.
            for info in infos:
                with zf.open(info) as fh:
                    _check_prolog(fh, info.filename, path)
            try:
                workbook = zf.read("xl/workbook.xml")
            except KeyError:
                raise FileRejected(
                    "unreadable", f"{path.name}: not an XLSX workbook (no xl/workbook.xml)", _HINT
                ) from None
            try:
                root = ElementTree.fromstring(workbook)
            except Exception as exc:  # defusedxml and expat raise several types
                raise FileRejected("unreadable", f"{path.name}: xl/workbook.xml cannot be read ({exc})", _HINT) from exc
            sheets = [el for el in root.iter() if el.tag.rpartition("}")[2] == "sheet" and el.get("name")]
            return {str(el.get("name")): _sheet_part(zf, el) for el in sheets}
    except _ZIP_ERRORS as exc:
        raise FileRejected(
            "unreadable", f"{path.name}: not a valid XLSX workbook ({type(exc).__name__}: {exc})", _HINT
        ) from exc


def _footer_total(row: list[Any]) -> Decimal | None:
    for cell in reversed(row):
        if _is_blank(cell):
            continue
        try:
            return Decimal(str(cell).replace(" ", "").replace("\u00a0", "").replace(",", ".")).quantize(Decimal("0.01"))
        except InvalidOperation:
            return None
    return None


def _unreadable(path: Path, sheet: str, exc: Exception) -> FileRejected:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return FileRejected(
        "unreadable",
        f"{path.name}: sheet {sheet!r} cannot be read: {first}",
        "ask the partner to export the workbook again",
    )


_READ = "read_xlsx(?, sheet = ?, header = false, all_varchar = true, stop_at_empty = false, range = ?)"
# What counts as blank around a cell's text (Python's str.strip() takes these too).
_BLANKS = " \t\n\r\x0b\x0c\u00a0\u2007\u202f\u3000"
_RESERVED = {ROW_KEY_COLUMN, SOURCE_ROW_COLUMN, SHEET_COLUMN}


def _nonblank(expr: str) -> str:
    """The SQL twin of ``str.strip() or None`` over the SQL expression ``expr``."""
    return f"NULLIF(trim({expr}, '{_BLANKS}'), '')"


def _text(cell: str) -> str:
    """A named cell's text, NULL when blank."""
    return _nonblank(quote_ident(cell))


def _any_text(cells: list[str]) -> str:
    return "coalesce(" + ", ".join(_text(c) for c in cells) + ")"


def _is_blank(value: object) -> bool:
    return value is None or not str(value).strip()


def _sheet_table(index: int) -> str:
    """The temporary table holding the rows of the ``index``-th sheet read."""
    return f"stg_sheet_{int(index)}"


def _last_row(con: duckdb.DuckDBPyConnection, table: str) -> int:
    found = con.execute(f"SELECT max({SOURCE_ROW_COLUMN}) FROM {table}").fetchone()  # noqa: S608
    return int(found[0]) if found and found[0] is not None else 0


def _to_row(first_row: int, last_row: int | None) -> str:
    """The row a range from ``first_row`` ends on: the sheet's last row when known (at least
    ``first_row``: a range never runs upwards), else open (read_xlsx reads to the last possible row)."""
    return "" if last_row is None else str(max(first_row, last_row))


def _rightmost(con: duckdb.DuckDBPyConnection, path: Path, sheet: str, first_row: int, last_row: int | None) -> int:
    """The rightmost column (1-based, at most MAX_COLUMNS) holding text from ``first_row`` down.

    Columns are named by position (``#n``): read_xlsx names them after the first row it reads
    (letters, or cell references when that row is blank).
    """
    case = " ".join(
        f"WHEN {_nonblank(f'#{position}')} IS NOT NULL THEN {position}" for position in range(MAX_COLUMNS, 0, -1)
    )
    found = con.execute(
        f"SELECT max(CASE {case} END) FROM {_READ}",  # noqa: S608 - positions and constants only
        [str(path), sheet, f"A{first_row}:{_LAST_COLUMN}{_to_row(first_row, last_row)}"],
    ).fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def _rows_below(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    sheet: str,
    h: int,
    width: int,
    look_further: bool,
    index: int,
    last_row: int | None,
) -> bool:
    """The ``index``-th sheet's table: the non-blank rows below the header row ``h``, in columns named A to
    the ``width``-th letter, numbered as the spreadsheet numbers them (to ``last_row``, or to the
    sheet's last possible row when it is None; blank rows are dropped). With ``look_further``, the rows
    are read to column IV and True says some row holds a cell right of ``width``.
    """
    table = _sheet_table(index)
    letters = [_column_letters(i + 1) for i in range(width)]
    renamed = ", ".join(f"#{position} AS {quote_ident(c)}" for position, c in enumerate(letters, start=1))
    further = ", ".join(f"#{position}" for position in range(width + 1, MAX_COLUMNS + 1))
    beyond = f"coalesce({further}) IS NOT NULL" if look_further and further else "false"
    last = _LAST_COLUMN if look_further else letters[-1]
    con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(
        f"CREATE TEMP TABLE {table} AS SELECT * FROM ("  # noqa: S608 - positions, quoted letters
        f"SELECT ?::INTEGER AS _idx, row_number() OVER () + ? AS {SOURCE_ROW_COLUMN}, {renamed}, "
        f"{beyond} AS _beyond FROM {_READ}) WHERE {_any_text(letters)} IS NOT NULL OR _beyond",
        [index, h, str(path), sheet, f"A{h + 1}:{last}{_to_row(h + 1, last_row)}"],
    )
    found = con.execute(f"SELECT bool_or(_beyond) FROM {table}").fetchone()  # noqa: S608
    return bool(found and found[0])


_DIMENSION = re.compile(
    rb"<(?:[A-Za-z_][\w.-]*:)?dimension\s+ref\s*=\s*[\"']\$?([A-Za-z]{1,3})\$?[0-9]+"
    rb"(?::\$?([A-Za-z]{1,3})\$?([0-9]{1,7}))?[\"']"
)


_ROW_NUMBER = re.compile(
    rb"<(?:[A-Za-z_][\w.-]*:)?(?:row|c)\b[^>]*?\sr\s*=\s*[\"']\$?[A-Za-z]{0,3}\$?([0-9]{1,7})[\"']"
)
_ROW_ELEMENT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row\b")
_NUMBERED_ROW = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row\b[^>]*?\sr\s*=")


def _sheet_part(zf: zipfile.ZipFile, sheet: Any) -> SheetPart:
    """The extent a sheet (its workbook.xml element) declares, and its last row when its part is
    small: one read of the part, its first 64 kB, or all of it when its directory entry says it
    holds at most ``MAX_SCANNED`` bytes (a bigger part is never inflated here)."""
    part = _part_of(zf, sheet)
    if part is None:
        return SheetPart(None, None)
    try:
        small = zf.getinfo(part).file_size <= MAX_SCANNED
        with zf.open(part) as fh:
            data = fh.read(MAX_SCANNED + 1 if small else 64 * 1024)
    except (KeyError, *_ZIP_ERRORS):  # no hint: the caller reads every column, to the end
        return SheetPart(None, None)
    return SheetPart(_declared_extent(data[: 64 * 1024]), _last_row_in(data) if small else None)


def _last_row_in(data: bytes) -> int | None:
    """The highest row number a UTF-8 sheet part of at most ``MAX_SCANNED`` bytes holds: the
    largest ``r`` of its rows and cells (0 when it has no row). None — read the sheet to its
    end — when the part is bigger (whatever its directory entry said), not UTF-8, or has a row
    without its number (such a row follows the one before, which only a parser can follow).
    Matches in comments or CDATA can only raise the bound, never hide a row."""
    if len(data) > MAX_SCANNED or _encoding(data[:4]) != "utf-8":
        return None
    if len(_ROW_ELEMENT.findall(data)) != len(_NUMBERED_ROW.findall(data)):
        return None
    return max((int(n) for n in _ROW_NUMBER.findall(data)), default=0)


def _part_of(zf: zipfile.ZipFile, sheet: Any) -> str | None:
    """The zip part of a sheet (its workbook.xml element), through the workbook's relationships."""
    try:
        rid = next((v for k, v in sheet.attrib.items() if k.rpartition("}")[2] == "id"), None)
        rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
        target = next(
            (
                str(el.get("Target"))
                for el in rels.iter()
                if el.tag.rpartition("}")[2] == "Relationship" and el.get("Id") == rid
            ),
            None,
        )
    except Exception:  # no hint: the caller reads every column, to the end
        return None
    if rid is None or target is None:
        return None
    return target.lstrip("/") if target.startswith("/") else posixpath.normpath("xl/" + target)


def _declared_extent(head: bytes) -> tuple[int, int] | None:
    """(last column, last row) the ``<dimension>`` in a sheet part's first bytes declares.

    Excel, LibreOffice and the usual libraries write the range the cells really use; it tells
    whether a row may hold cells right of the header without reading the sheet twice. A
    streaming writer's placeholder is caught by the row check in ``read_xlsx``; without a
    declaration (None) every column is read.
    """
    m = _DIMENSION.search(head)
    if m is None:
        return None
    right = (m.group(2) or m.group(1)).decode("ascii")
    rows = int(m.group(3)) if m.group(3) else 1
    return _column_number(right), rows


def _column_number(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n


def read_xlsx(con: duckdb.DuckDBPyConnection, path: Path, fmt: XlsxFormat) -> RawExport:
    sheets = check_container(path)
    names = list(sheets)
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
    read: list[tuple[int, str, int | None]] = []  # (index, sheet, footer row) of each sheet kept
    for index, sheet in enumerate(wanted):
        table = _sheet_table(index)
        try:
            top = con.execute(
                f"SELECT * FROM {_READ} LIMIT ?",  # noqa: S608 - constant SQL
                [str(path), sheet, f"A1:{_LAST_COLUMN}", h],
            ).fetchall()
            cells = list(top[h - 1]) if len(top) >= h else []
            width = max((i + 1 for i, c in enumerate(cells) if not _is_blank(c)), default=0)
            bottom = sheets[sheet].last_row
            if width == 0 and _rightmost(con, path, sheet, h + 1, bottom):
                raise FileRejected(
                    "no_header",
                    f"{path.name}: sheet {sheet!r} holds data but no header on row {h}; nothing was loaded",
                    "check the workbook's layout against the partner's spec (format.header_row)",
                )
            if width:
                # Cells right of the header's last name still belong to their rows: the columns
                # run to the rightmost cell holding text (never silently cut). The sheet's
                # declared extent says when there can be none, sparing a read of every column.
                extent = sheets[sheet].extent
                trusted = extent is not None and extent[0] <= width
                beyond = _rows_below(con, path, sheet, h, width, not trusted, index, bottom)
                if trusted and extent is not None and _last_row(con, table) > extent[1]:
                    beyond = _rows_below(con, path, sheet, h, width, True, index, bottom)  # a placeholder extent
                if beyond:
                    width = max(width, _rightmost(con, path, sheet, h + 1, bottom))
                    _rows_below(con, path, sheet, h, width, False, index, bottom)
        except duckdb.Error as exc:
            raise _unreadable(path, sheet, exc) from exc
        if width == 0:
            continue  # an empty sheet
        title_rows += [" ".join(str(c) for c in r if not _is_blank(c)) for r in top[: h - 1]]
        cells += [None] * (width - len(cells))
        sheet_header = [str(c).strip() if not _is_blank(c) else f"column_{i + 1}" for i, c in enumerate(cells[:width])]
        if header is None:
            _check_names(path, sheet, sheet_header)
            header = sheet_header
        elif sheet_header != header:
            raise FileRejected(
                "inconsistent_sheets",
                f"{path.name}: sheet {sheet!r} has columns {sheet_header}, unlike the first sheet's {header}",
                "ask the partner to use the same columns on every sheet",
            )
        letters = [_column_letters(i + 1) for i in range(width)]
        footer_row: int | None = None
        if fmt.footer_label:
            found = con.execute(
                f"SELECT {SOURCE_ROW_COLUMN}, {', '.join(quote_ident(c) for c in letters)} FROM {table} "  # noqa: S608
                f"WHERE lower({_any_text(letters)}) = lower(?) ORDER BY {SOURCE_ROW_COLUMN} LIMIT 1",
                [fmt.footer_label.strip()],
            ).fetchone()
            if found is not None:
                footer_row = int(found[0])
                values = list(found[1:])
                label_at = next(i for i, c in enumerate(values) if not _is_blank(c))
                total = _footer_total(values[label_at + 1 :])
                if total is not None:
                    control_total = (control_total or Decimal(0)) + total
        read.append((index, sheet, footer_row))
    if header is None:
        raise FileRejected(
            "no_header",
            f"{path.name}: no header on row {fmt.header_row} of {', '.join(wanted)}",
            "check the workbook's layout against the partner's spec (format.header_row)",
        )
    _staging_view(con, header, read)
    counted = con.execute(f"SELECT count(*) FROM {STAGING_TABLE}").fetchone()  # noqa: S608 - constant
    return RawExport(STAGING_TABLE, header, int(counted[0]) if counted else 0, control_total, title_rows)


def _check_names(path: Path, sheet: str, header: list[str]) -> None:
    folded = [n.casefold() for n in header]
    twice = sorted({n for n in header if folded.count(n.casefold()) > 1})
    if twice:
        raise FileRejected(
            "duplicate_columns",
            f"{path.name}: sheet {sheet!r} has the column(s) {', '.join(map(repr, twice))} twice "
            "(names are compared without case)",
            "ask the partner to name every column once",
        )
    reserved = sorted(set(header) & _RESERVED)
    if reserved:
        raise FileRejected(
            "duplicate_columns",
            f"{path.name}: sheet {sheet!r} has a column named {', '.join(map(repr, reserved))}, "
            "a name cdv-etl keeps for itself",
            "ask the partner to rename that column",
        )


def _staging_view(con: duckdb.DuckDBPyConnection, header: list[str], read: list[tuple[int, str, int | None]]) -> None:
    """``stg_raw``: the sheets' rows under the header's names, footers left out — a view over
    the tables read_xlsx filled, not a second copy of the cells. A row's key is its reading
    order: the sheet's index in the high bits, its spreadsheet row in the low ones."""
    con.execute("CREATE OR REPLACE TEMP TABLE stg_sheet_meta (idx INTEGER, sheet VARCHAR, footer_row BIGINT)")
    con.executemany("INSERT INTO stg_sheet_meta VALUES (?, ?, ?)", [list(r) for r in read])
    renamed = ", ".join(f"s.{quote_ident(_column_letters(i + 1))} AS {quote_ident(n)}" for i, n in enumerate(header))
    branches = [
        f"SELECT {renamed}, s.{SOURCE_ROW_COLUMN}, m.sheet AS {SHEET_COLUMN}, "  # noqa: S608 - identifiers only
        f"(m.idx::BIGINT << 32) + s.{SOURCE_ROW_COLUMN} AS {ROW_KEY_COLUMN} "
        f"FROM {_sheet_table(index)} AS s JOIN stg_sheet_meta AS m ON m.idx = s._idx "
        f"WHERE s.{SOURCE_ROW_COLUMN} IS DISTINCT FROM m.footer_row"
        for index, _sheet, _footer in read
    ]
    con.execute(f"DROP VIEW IF EXISTS {STAGING_TABLE}")
    con.execute(f"CREATE TEMP VIEW {STAGING_TABLE} AS {' UNION ALL '.join(branches)}")

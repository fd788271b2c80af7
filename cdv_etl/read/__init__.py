"""Read stage: a partner's file → a staging relation of text cells, one row per data row.

Every reader produces the same thing: a DuckDB temporary view or table ``stg_raw`` whose
columns are the partner's own (as text), plus ``_row_key`` (reading order), ``_source_row``
(the row a person sees in the file; for JSON, the record's position from 1) and ``_sheet``
(for workbooks). Nothing is interpreted yet: parsing is the validate stage's job — but for the
extraction date, when the spec takes it from the file's data (a JSON field or a column).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from cdv_etl.errors import FileRejected
from cdv_etl.sql import quote_ident

if TYPE_CHECKING:
    import duckdb

    from cdv_etl.specs import ExtractionDateSpec, PartnerSpec

STAGING_TABLE = "stg_raw"
SETTLED_NS = 2_000_000_000


@dataclass(frozen=True)
class DateSeen:
    """An extraction date as the file's data gives it (a JSON field, a cell of a date column)."""

    text: str | None
    parsed: date | None
    where: str
    """Where a person finds it: "field 'meta.extraction'", "row 12", "row 12 of sheet 2024"."""


@dataclass
class RawExport:
    """What the read stage learnt about a file."""

    table: str
    columns: list[str]
    rows_read: int
    control_total: Decimal | None = None
    title_rows: list[str] | None = None
    dates_seen: list[DateSeen] = field(default_factory=list)
    """For an extraction date from a field: its value, if the field exists. From a column: the
    first row of each different date (the first two, in reading order)."""


@dataclass(frozen=True)
class FileStat:
    """What a file looks like on disk: the ledger's quick check of "same bytes as before"."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    taken_ns: int = 0
    """When the stat was taken (epoch ns)."""

    @classmethod
    def of(cls, path: Path) -> FileStat:
        taken = time.time_ns()
        st = path.stat()
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, taken)

    @property
    def settled(self) -> bool:
        """Whether the file had not changed for a while when the stat was taken.

        A file written in the same clock tick as the stat (coarse timestamps, network file
        systems) could be rewritten without its times moving: such a stat is not kept for the
        quick check (git's "racily clean" entries).
        """
        return self.taken_ns - max(self.mtime_ns, self.ctime_ns) > SETTLED_NS


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_size(path: Path, max_mb: float) -> int:
    size = path.stat().st_size
    if size == 0:
        raise FileRejected(
            "empty",
            f"{path.name}: the file is empty (0 bytes); nothing was loaded",
            "ask the partner to send the export again",
        )
    if size > max_mb * 1024 * 1024:
        raise FileRejected(
            "too_large",
            f"{path.name}: {size / 1024 / 1024:.1f} MB is over the {max_mb:g} MB limit; the file was not read",
            "check the file; raise CDV_MAX_FILE_MB if such a size is expected",
        )
    return size


def read_export(con: duckdb.DuckDBPyConnection, path: Path, spec: PartnerSpec, workdir: Path) -> RawExport:
    """Read ``path`` into the staging table, or raise FileRejected."""
    from cdv_etl.specs import CsvFormat, JsonFormat, XlsxFormat

    fmt = spec.format
    if isinstance(fmt, CsvFormat):
        from cdv_etl.read.csv import read_csv

        raw = read_csv(con, path, fmt, workdir)
    elif isinstance(fmt, XlsxFormat):
        from cdv_etl.read.xlsx import read_xlsx

        raw = read_xlsx(con, path, fmt)
    elif isinstance(fmt, JsonFormat):
        from cdv_etl.read.json import read_json

        raw = read_json(con, path, fmt, workdir)
    else:  # pragma: no cover - the spec model admits no other format
        raise TypeError(fmt)
    if raw.rows_read == 0:
        raise FileRejected(
            "no_data",
            f"{path.name}: the file has a header but no data rows; nothing was loaded "
            "(an empty export would wipe the partner's current figures)",
            "ask the partner whether the extraction failed, and for a complete export",
        )
    raw.dates_seen = _dates_seen(con, spec.extraction_date, raw)
    return raw


def _dates_seen(con: duckdb.DuckDBPyConnection, rule: ExtractionDateSpec, raw: RawExport) -> list[DateSeen]:
    """The extraction date(s) the file's data holds, parsed as the fields are (``parser_sql``)."""
    from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN
    from cdv_etl.validate.parse import parser_sql

    parsed = parser_sql(rule.date_parser, "t")
    if rule.source == "field" and rule.field is not None:
        from cdv_etl.read.json import document_text

        found, text = document_text(con, rule.field)
        if not found:
            return []
        row = con.execute(f"SELECT {parsed} FROM (SELECT ?::VARCHAR AS t)", [text]).fetchone()  # noqa: S608
        return [DateSeen(text, row[0] if row else None, f"field {rule.field!r}")]
    if rule.source == "column" and rule.column in raw.columns:
        # The first row of each different date (NULL for a blank or unparseable cell), in reading order.
        date_column = quote_ident(rule.column)
        cells = (
            f"SELECT {date_column} AS t, {ROW_KEY_COLUMN} AS k, {SOURCE_ROW_COLUMN} AS r, "  # noqa: S608 - quoted
            f"{SHEET_COLUMN} AS sh FROM {STAGING_TABLE}"
        )
        rows = con.execute(
            "SELECT t, d, r, sh FROM (SELECT DISTINCT ON (d) t, d, k, r, sh FROM ("  # noqa: S608 - quoted
            f"SELECT t, {parsed} AS d, k, r, sh FROM ({cells})) ORDER BY d, k) ORDER BY k LIMIT 2"
        ).fetchall()
        return [DateSeen(t, d, f"row {r}" + (f" of sheet {sh!r}" if sh else "")) for t, d, r, sh in rows]
    return []


def extraction_date(path: Path, spec: PartnerSpec, raw: RawExport, today: date) -> date:
    """The export's extraction date, as the partner's spec says; never moved.

    A month or a year stands for its last day, or for ``today`` while it is under way (an
    export of the month is extracted on one of its days, at the latest the day it arrives).
    An export dated after ``today`` is rejected whole (``extraction_date_in_future``).
    """
    rule = spec.extraction_date
    if rule.source == "filename":
        assert rule.pattern and rule.format
        m = re.search(rule.pattern, path.name)
        text = (m.group(1) if m.groups() else m.group(0)) if m else None
        period = _parse_period(text, rule.format) if text is not None else None
        if period is None:
            raise FileRejected(
                "extraction_date",
                f"{path.name}: no extraction date in the file name (expected {rule.pattern!r})",
                "rename the file as the partner's spec expects, or fix extraction_date in it",
            )
        where = "the file name"
    elif rule.source == "cell":
        assert rule.pattern and rule.format
        period, text = None, None
        for row in raw.title_rows or []:
            m = re.search(rule.pattern, row)
            if m:
                text = m.group(1)
                period = _parse_period(text, rule.format)
                break
        if period is None:
            raise FileRejected(
                "extraction_date",
                f"{path.name}: no extraction date in the title rows (expected {rule.pattern!r})",
                "check the file's title rows, or fix extraction_date in the partner's spec",
            )
        where = "the title rows"
    elif rule.source in ("field", "column"):
        seen = _date_in_data(path, rule, raw.dates_seen)
        assert seen.parsed is not None
        text, period = seen.text, (seen.parsed, seen.parsed)
        where = seen.where if rule.source == "field" else f"column {rule.column!r} ({seen.where})"
    else:
        return today
    first, last = period
    if first > today:
        begins = "" if first == last else f", which begins on {first.isoformat()},"
        raise FileRejected(
            "extraction_date_in_future",
            f"{path.name}: the extraction date {text!r} in {where}{begins} is after today "
            f"({today.isoformat()}); nothing was loaded",
            "ask the partner for the export's real extraction date and have the file sent (or renamed) with it; "
            "if this machine's clock is wrong, set it right, then ingest the file again",
        )
    return min(last, today)  # a month or a year under way: extracted today at the latest


def _date_in_data(path: Path, rule: ExtractionDateSpec, seen: list[DateSeen]) -> DateSeen:
    """The one extraction date of a JSON field or a date column, or a rejection that says why not."""
    where = f"field {rule.field!r}" if rule.source == "field" else f"column {rule.column!r}"
    fix = f"check the file, or fix extraction_date ({rule.source}, parser) in the partner's spec"
    if not seen:
        raise FileRejected("extraction_date", f"{path.name}: no extraction date: the file has no {where}", fix)
    first = seen[0]
    if first.parsed is None:
        value = f"{first.text!r} is not a date ({rule.date_parser})" if first.text is not None else "is empty"
        at = "" if rule.source == "field" else f" at {first.where}"
        raise FileRejected("extraction_date", f"{path.name}: the extraction date in {where}{at} {value}", fix)
    if len(seen) > 1:
        other = seen[1]
        if other.parsed is None:
            value = f"holds {other.text!r}, not a date" if other.text is not None else "is empty"
            message = f"{where} {value} at {other.where} (it holds {first.text!r} at {first.where})"
        else:
            message = (
                f"{where} holds different extraction dates: {first.text!r} at {first.where} "
                f"and {other.text!r} at {other.where}"
            )
        raise FileRejected(
            "extraction_date",
            f"{path.name}: {message}; an export has one extraction date, nothing was loaded",
            "ask the partner for an export of one extraction with its date on every row, "
            "or fix extraction_date.column in the partner's spec",
        )
    return first


def _parse_period(text: str, fmt: str) -> tuple[date, date] | None:
    """The (first, last) day a date of ``fmt`` stands for: one day, a month or a year."""
    from cdv_etl.specs import last_day

    try:
        first = datetime.strptime(text, fmt).date()
    except ValueError:
        return None
    return first, last_day(first, fmt)

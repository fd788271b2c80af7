"""Read stage: a partner's file → a staging relation of text cells, one row per data row.

Every reader produces the same thing: a DuckDB temporary view ``stg_raw`` (a table for JSON,
which is read through pandas) whose columns are
the partner's own (as text), plus ``_source_row`` (the row a person sees in the file) and,
for workbooks, ``_sheet``. Nothing is interpreted yet: parsing is the validate stage's job.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from cdv_etl.errors import FileRejected

if TYPE_CHECKING:
    import duckdb

    from cdv_etl.specs import PartnerSpec

STAGING_TABLE = "stg_raw"
SETTLED_NS = 2_000_000_000


@dataclass
class RawExport:
    """What the read stage learnt about a file."""

    table: str
    columns: list[str]
    rows_read: int
    control_total: Decimal | None = None
    title_rows: list[str] | None = None


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

        raw = read_json(con, path, fmt)
    else:  # pragma: no cover - the spec model admits no other format
        raise TypeError(fmt)
    if raw.rows_read == 0:
        raise FileRejected(
            "no_data",
            f"{path.name}: the file has a header but no data rows; nothing was loaded "
            "(an empty export would wipe the partner's current figures)",
            "ask the partner whether the extraction failed, and for a complete export",
        )
    return raw


def extraction_date(path: Path, spec: PartnerSpec, raw: RawExport, today: date) -> date:
    """The export's extraction date, as the partner's spec says, never after ``today``."""
    rule = spec.extraction_date
    found: date | None = None
    if rule.source == "filename":
        assert rule.pattern and rule.format
        m = re.search(rule.pattern, path.name)
        if m:
            found = _parse_period(m.group(1) if m.groups() else m.group(0), rule.format)
        if found is None:
            raise FileRejected(
                "extraction_date",
                f"{path.name}: no extraction date in the file name (expected {rule.pattern!r})",
                "rename the file as the partner's spec expects, or fix extraction_date in it",
            )
    elif rule.source == "cell":
        assert rule.pattern and rule.format
        for text in raw.title_rows or []:
            m = re.search(rule.pattern, text)
            if m:
                found = _parse_period(m.group(1), rule.format)
                break
        if found is None:
            raise FileRejected(
                "extraction_date",
                f"{path.name}: no extraction date in the title rows (expected {rule.pattern!r})",
                "check the file's title rows, or fix extraction_date in the partner's spec",
            )
    else:
        found = today
    return min(found, today)


def _parse_period(text: str, fmt: str) -> date | None:
    from cdv_etl.specs import last_day

    try:
        return last_day(datetime.strptime(text, fmt).date(), fmt)
    except ValueError:
        return None

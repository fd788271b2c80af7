"""The cells of the files written for people: one neutralisation of formula-like text, one CSV writer.

Formula injection (OWASP, "CSV Injection"): a partner's text that begins with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return could run as a formula in a spreadsheet. Every file
a person opens in a spreadsheet goes through this module: ``cdv-etl export`` (CSV and
Excel), ``cdv-etl quarantine --format csv`` (the list sent back to the partner), ``cdv-etl
changes --format csv`` and the feedback workbook. In CSV such a cell gets a leading single
quote (``'=HYPERLINK(...)``), as OWASP recommends; Excel writers keep the text and mark the
cell as text (``is_formula_like``). Numbers, dates and booleans are never touched, so a
negative amount stays a number. JSON output is data, not a spreadsheet: it stays exact.

Standard library only: ``cdv-etl sql --format csv`` imports no spreadsheet library.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TextIO

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""OWASP's list: a cell that begins with one of these may be read as a formula."""


def is_formula_like(text: str) -> bool:
    return text.startswith(FORMULA_TRIGGERS)


def neutralise(text: str) -> str:
    """``'=1+1`` for ``=1+1``: a CSV cell a spreadsheet shows as text, never runs."""
    return "'" + text if is_formula_like(text) else text


def csv_value(value: Any) -> Any:
    """The text of one CSV cell: exact decimals, ISO dates, neutralised text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, date | time):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, int | float):
        return value
    return neutralise(str(value))  # lists, structs, UUIDs: their text, neutralised too


def write_csv(
    fh: TextIO, columns: Sequence[str], batches: Iterable[Sequence[Sequence[Any]]], lineterminator: str = "\r\n"
) -> int:
    """Every CSV written for people (exports, quarantine lists, changes): neutralised cells; the rows written."""
    writer = csv.writer(fh, lineterminator=lineterminator)  # a field holding \r or \n is quoted (RFC 4180)
    writer.writerow([neutralise(c) for c in columns])
    rows = 0
    for batch in batches:
        writer.writerows([csv_value(v) for v in r] for r in batch)
        rows += len(batch)
    return rows

"""Readable tables for people: query results and load results, with rich."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from cdv_etl.load.loader import LoadResult

SUMMARY_QUERIES: list[tuple[str, str]] = [
    ("Engaged by axis", "SELECT axis, short_label, engaged_eur, operations, share_pct FROM v_financing_by_axis"),
    (
        "Engaged by partner",
        "SELECT partner, partner_name, engaged_eur, operations, extraction_date FROM v_financing_by_partner",
    ),
    ("Engaged by year", "SELECT * FROM v_financing_by_year"),
    (
        "Envelope consumption",
        "SELECT partner, envelope, envelope_eur, engaged_eur, used_pct FROM v_envelope_consumption",
    ),
    (
        "Quarantine (current exports)",
        "SELECT partner, rule, rows_quarantined FROM v_quarantine_summary WHERE is_current",
    ),
]
"""The consolidated figures a person reads after a run: printed by the CLI, summarised in Prefect."""


def euros(value: Decimal | None) -> str:
    """1 382 606 512,03 € — French grouping with narrow no-break spaces."""
    if value is None:
        return "—"
    text = f"{value:,.2f}".replace(",", "\u202f").replace(".", ",")
    return f"{text} €"


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Decimal) and (column.endswith("_eur") or column == "amount"):
        return euros(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def query_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    from rich.table import Table

    table = Table(title=title, header_style="bold", show_lines=False)
    numeric = [
        bool(rows)
        and all(
            isinstance(r[i], int | float | Decimal) and not isinstance(r[i], bool) for r in rows if r[i] is not None
        )
        for i in range(len(columns))
    ]
    for name, right in zip(columns, numeric, strict=True):
        table.add_column(name, justify="right" if right else "left", overflow="fold")
    for r in rows:
        table.add_row(*(_cell(v, c) for v, c in zip(r, columns, strict=True)))
    return table


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, date | datetime):
        return v.isoformat()
    return str(v)


def as_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(["" if v is None else v for v in r] for r in rows)
    return buf.getvalue()


def as_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Records; amounts as strings so that no float ever rounds a cent."""
    records = [dict(zip(columns, r, strict=True)) for r in rows]
    return json.dumps(records, default=_json_default, ensure_ascii=False, indent=1)


def load_results_table(results: Sequence[LoadResult]) -> Table:
    from rich.table import Table

    table = Table(title="Files", header_style="bold")
    for name, just in [
        ("file", "left"),
        ("partner", "left"),
        ("status", "left"),
        ("read", "right"),
        ("loaded", "right"),
        ("quarantined", "right"),
        ("engaged", "right"),
        ("control total", "right"),
        ("check", "left"),
    ]:
        table.add_column(name, justify=just, overflow="fold")  # type: ignore[arg-type]
    for r in results:
        style = {"loaded": "green", "duplicate": "yellow", "rejected": "red"}.get(r.status, "")
        ok = r.control_total_ok
        check = "—" if ok is None else ("✓" if ok else f"✗ {euros(r.control_total_diff_eur)}")
        table.add_row(
            r.file_name,
            r.partner or "?",
            f"[{style}]{r.status}[/{style}]",
            str(r.rows_read),
            str(r.rows_loaded),
            str(r.rows_quarantined),
            euros(r.engaged_amount_eur),
            euros(r.control_total_eur),
            check,
        )
    return table

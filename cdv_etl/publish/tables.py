"""Readable tables for people: query results and load results, with rich.

Every cell is a ``rich.text.Text``, never a string rich would parse: a partner's text is
printed as written (``x[/]y``, ``[bold red]Lens[/]``, ``a:x:b``, ``:smile:`` stay as they are;
rich would read markup and emoji codes in a string). Control characters other than the line
break (and Unicode's line and paragraph separators, which a terminal would not show as one
line) are shown as escapes (``\\x1b``, ``\\t``, ``\\u2028``), never sent to the terminal.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cdv_etl.publish.cells import write_csv

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

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

SUMMARY_LABELS: dict[str, str] = {
    "Engaged by axis": "Engagé par axe",
    "Engaged by partner": "Engagé par partenaire",
    "Engaged by year": "Engagé par année",
    "Envelope consumption": "Consommation des enveloppes",
    "Quarantine (current exports)": "Quarantaine (exports courants)",
    "axis": "axe",
    "short_label": "libellé",
    "engaged_eur": "engagé",
    "operations": "opérations",
    "share_pct": "part",
    "partner": "partenaire",
    "partner_name": "nom",
    "extraction_date": "extrait le",
    "year": "année",
    "envelope": "enveloppe",
    "envelope_eur": "montant de l'enveloppe",
    "used_pct": "consommé",
    "rule": "règle",
    "rows_quarantined": "lignes en quarantaine",
}
"""French headings and column headers of ``SUMMARY_QUERIES`` for the Prefect artifacts (the SQL keeps its names)."""


def euros(value: Decimal | None) -> str:
    """1 382 606 512,03 € — French grouping with narrow no-break spaces."""
    if value is None:
        return "—"
    text = f"{value:,.2f}".replace(",", "\u202f").replace(".", ",")
    return f"{text} €"


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
"""Unicode's control characters (category Cc) but the line break, and the line and paragraph separators."""


def plain(text: str, style: str = "") -> Text:
    """``text`` as written, for a rich table or ``console.print``: no markup, no emoji codes."""
    from rich.text import Text

    return Text(_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text), style=style)


def _cell(value: Any, column: str) -> Text:
    if value is None:
        return plain("NULL", style="dim")
    if isinstance(value, Decimal) and (column.endswith("_eur") or column == "amount"):
        return plain(euros(value))
    if isinstance(value, bool):
        return plain("yes" if value else "no")
    return plain(str(value))


def query_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> Table:
    from rich.table import Table

    table = Table(title=None if title is None else plain(title), header_style="bold", show_lines=False)
    numeric = [
        any(r[i] is not None for r in rows)  # a column of NULLs only is no number column
        and all(
            isinstance(r[i], int | float | Decimal) and not isinstance(r[i], bool) for r in rows if r[i] is not None
        )
        for i in range(len(columns))
    ]
    for name, right in zip(columns, numeric, strict=True):
        table.add_column(plain(name), justify="right" if right else "left", overflow="fold")
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
    """CSV for people (a partner's list of rejects, changes): the cells of ``cdv-etl export``'s CSV."""
    buf = io.StringIO()
    write_csv(buf, columns, [rows], lineterminator="\n")
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
        style = {"loaded": "green", "duplicate": "yellow", "held": "yellow", "rejected": "red"}.get(r.status, "")
        ok = r.control_total_ok
        check = "—" if ok is None else ("✓" if ok else f"✗ {euros(r.control_total_diff_eur)}")
        table.add_row(
            plain(r.file_name),
            plain(r.partner or "?"),
            plain(r.status, style),
            *(
                plain(text)
                for text in (
                    str(r.rows_read),
                    str(r.rows_loaded),
                    str(r.rows_quarantined),
                    euros(r.engaged_amount_eur),
                    euros(r.control_total_eur),
                    check,
                )
            ),
        )
    return table

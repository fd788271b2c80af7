"""Feedback to a partner: the rejected rows of its current export, as it sent them, and why.

One line per rejected row: the row of the file (and its sheet), every cell as the partner
wrote it, in the partner's column order (the quarantine keeps them: ``quarantine_rows.raw_record``),
then the reason: the first rule the row breaks, explained in plain French (the rule's
``explanation`` in ``schemas.canonical.RULES``, stated there once), the column and value at
fault, the euros concerned (the row's amount when it parsed) and the row's other failures. A
second sheet sums the rows and euros per reason; its total is the export's quarantine. The
workbook's headers are French, as the partner's data is.

Written as xlsx (two sheets) or csv (the rows; the summary goes to the command's output). Every
cell goes through ``cdv_etl.publish.cells`` (as every file written for people): a partner's text
that looks like a formula is written as text, never run. An export without rejected rows gets a
workbook too, saying so: a file at the path asked for always describes the current export.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from cdv_etl.errors import CdvError
from schemas.canonical import RULES

FORMATS = ("xlsx", "csv")

ROW, SHEET = "Ligne du fichier", "Feuille"
REASON, COLUMN, VALUE, AMOUNT, OTHERS, RULE = (
    "Motif du rejet",
    "Colonne en cause",
    "Valeur en cause",
    "Montant concerné (€)",
    "Autres motifs",
    "Code de la règle",
)
REASON_COLUMNS = (REASON, COLUMN, VALUE, AMOUNT, OTHERS, RULE)
"""What the feedback adds beside the partner's cells."""
ROWS, UNREADABLE, TOTAL = "Lignes", "Lignes sans montant lisible", "Total"
SUMMARY_COLUMNS = (REASON, RULE, ROWS, AMOUNT, UNREADABLE)
ROWS_SHEET, SUMMARY_SHEET = "Lignes rejetées", "Synthèse par motif"
NO_REJECTION = "Aucune ligne rejetée dans cet export."


def explanation(rule: str, message: str) -> str:
    """The rule in plain French (``RULES``); a rule no longer known keeps the warehouse's message."""
    known = RULES.get(rule)
    return known.explanation if known else message


@dataclass(frozen=True)
class Failure:
    rule: str
    column: str | None
    value: str | None
    message: str

    def __str__(self) -> str:
        where = f" (colonne « {self.column} »" + (f", valeur « {self.value} »)" if self.value is not None else ")")
        return explanation(self.rule, self.message) + (where if self.column else "")


@dataclass(frozen=True)
class RejectedRow:
    source_row: int
    sheet: str | None
    cells: dict[str, str | None]
    """The partner's cells as read (text), by the partner's column names, in its order."""
    amount_eur: Decimal | None
    """The row's amount when it parsed."""
    failures: list[Failure]
    """Every rule the row breaks, in quarantine order: the first is the reason shown."""

    @property
    def reason(self) -> Failure:
        return self.failures[0]


@dataclass
class ReasonTotal:
    rule: str
    explanation: str
    rows: int = 0
    amount_eur: Decimal = Decimal("0.00")
    unreadable: int = 0
    """Rows of this reason whose amount did not parse (their euros are not in ``amount_eur``)."""


@dataclass(frozen=True)
class Feedback:
    """The rejected rows of a partner's current export."""

    partner: str
    partner_name: str
    file_id: int
    file_name: str
    extraction_date: date | None
    rows: list[RejectedRow] = field(default_factory=list)

    @property
    def source_columns(self) -> list[str]:
        """The partner's columns, in its order (every row of an export has the same)."""
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r.cells))
        return list(seen)

    @property
    def has_sheets(self) -> bool:
        return any(r.sheet is not None for r in self.rows)

    def per_reason(self) -> list[ReasonTotal]:
        """Rows and euros per reason (the first rule broken), most rows first."""
        totals: dict[str, ReasonTotal] = {}
        for r in self.rows:
            f = r.reason
            t = totals.setdefault(f.rule, ReasonTotal(f.rule, explanation(f.rule, f.message)))
            t.rows += 1
            if r.amount_eur is None:
                t.unreadable += 1
            else:
                t.amount_eur += r.amount_eur
        return sorted(totals.values(), key=lambda t: (-t.rows, RULES[t.rule].order if t.rule in RULES else 99))

    @property
    def amount_eur(self) -> Decimal:
        return sum((r.amount_eur for r in self.rows if r.amount_eur is not None), Decimal("0.00"))

    def header(self) -> list[str]:
        return [ROW, *([SHEET] if self.has_sheets else []), *self.source_columns, *REASON_COLUMNS]

    def table(self) -> list[list[Any]]:
        """The rows sheet's data rows, under ``header()``."""
        columns, sheets = self.source_columns, self.has_sheets  # once: each scans every row
        out = []
        for r in self.rows:
            f = r.reason
            others = " ; ".join(str(o) for o in r.failures[1:]) or None
            out.append(
                [
                    r.source_row,
                    *([r.sheet] if sheets else []),
                    *(r.cells.get(c) for c in columns),
                    explanation(f.rule, f.message),
                    f.column,
                    f.value,
                    r.amount_eur,
                    others,
                    f.rule,
                ]
            )
        return out

    def about(self) -> list[tuple[str, Any]]:
        """The summary sheet's heading: which export, when."""
        return [
            ("Partenaire", f"{self.partner_name} — {self.partner}"),
            ("Fichier", self.file_name),
            ("Date d'extraction", self.extraction_date),
            ("Lignes rejetées", len(self.rows)),
            ("Écrit le", datetime.now().replace(microsecond=0)),
        ]

    def summary_line(self) -> str:
        if not self.rows:
            return f"{self.file_name}: no rejected rows, nothing to send back"
        return f"{self.file_name}: {len(self.rows)} rejected row(s), {self.amount_eur:,.2f} € concerned"


_CURRENT_SQL = """
SELECT p.partner, p.name, c.file_id, f.file_name, f.extraction_date
FROM partners AS p
LEFT JOIN current_files AS c USING (partner)
LEFT JOIN files AS f USING (file_id)
WHERE p.partner = ?
"""

_ROWS_SQL = """
SELECT r.source_row, r.sheet, r.raw_record, t.amount_eur,
       list((q.rule, q.column_name, q.value, q.message) ORDER BY q.rule_order, q.column_name) AS failures
FROM quarantine_rows AS r
LEFT JOIN quarantine_records AS t USING (file_id, row_key)
JOIN quarantine_failures AS q USING (file_id, row_key)
WHERE r.file_id = ?
GROUP BY r.row_key, r.source_row, r.sheet, r.raw_record, t.amount_eur
ORDER BY r.row_key
"""


def partners_with_rejections(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The partners whose current export has rejected rows."""
    return [
        str(r[0])
        for r in con.execute(
            "SELECT DISTINCT c.partner FROM current_files AS c JOIN quarantine_rows AS q USING (file_id) ORDER BY 1"
        ).fetchall()
    ]


def feedback(con: duckdb.DuckDBPyConnection, partner: str) -> Feedback:
    """The rejected rows of ``partner``'s current export; a CdvError for an unknown partner or none."""
    found = con.execute(_CURRENT_SQL, [partner]).fetchone()
    if found is None:
        known = ", ".join(str(r[0]) for r in con.execute("SELECT partner FROM partners ORDER BY 1").fetchall())
        raise CdvError(f"unknown partner {partner!r}", f"known partners: {known}")
    code, name, file_id, file_name, extraction_date = found
    if file_id is None:
        raise CdvError(
            f"{partner} has no current export: no file of it is loaded",
            f"load one first (cdv-etl ingest FILE --partner {partner}); `cdv-etl files` lists the files",
        )
    rows = [
        RejectedRow(
            int(source_row),
            sheet,
            json.loads(raw) if raw else {},
            amount,
            [Failure(str(f[0]), f[1], f[2], str(f[3])) for f in failures],
        )
        for source_row, sheet, raw, amount, failures in con.execute(_ROWS_SQL, [file_id]).fetchall()
    ]
    return Feedback(str(code), str(name), int(file_id), str(file_name), extraction_date, rows)


# -- writing ------------------------------------------------------------------------------------


def format_for(path: Path, fmt: str | None) -> str:
    chosen = (fmt or path.suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        raise CdvError(
            f"unknown feedback format {chosen or path.name!r}",
            "use --format xlsx or csv (or a file name ending in .xlsx or .csv)",
        )
    return chosen


def write(fb: Feedback, out: Path, fmt: str | None = None) -> Path:
    """Write the feedback to ``out`` (replaced whole, atomically); the path written."""
    chosen = format_for(out, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if chosen == "csv":
            _write_csv(fb, tmp)
        else:
            _write_xlsx(fb, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _write_csv(fb: Feedback, path: Path) -> None:
    from cdv_etl.publish.cells import write_csv

    # UTF-8 with a byte order mark: Excel then reads the French text right when the file is opened.
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        write_csv(fh, fb.header(), [fb.table()])


def _write_xlsx(fb: Feedback, path: Path) -> None:
    from openpyxl import Workbook

    from cdv_etl.publish.export import DATE_FORMAT, EURO_FORMAT, TIMESTAMP_FORMAT, _Kind

    text, money, integer = _Kind("text"), _Kind("money", EURO_FORMAT), _Kind("integer")
    kinds_of = {ROW: integer, AMOUNT: money}
    wb = Workbook(write_only=True)
    cut: list[int] = []  # cells too long for Excel, cut (and saying so at their end)
    header = fb.header()
    ws = wb.create_sheet(ROWS_SHEET)
    ws.freeze_panes = "B2"
    _table(ws, header, [kinds_of.get(h, text) for h in header], fb.table() or [[NO_REJECTION]], cut)

    totals = fb.per_reason()
    rows: list[list[Any]] = [[t.explanation, t.rule, t.rows, t.amount_eur, t.unreadable] for t in totals]
    rows.append([TOTAL, None, len(fb.rows), fb.amount_eur, sum(t.unreadable for t in totals)])
    about = fb.about()
    if cut:
        about.append(
            ("Cellules raccourcies", f"{len(cut)} cellule(s) trop longues pour Excel : le fichier csv les garde")
        )
    info = wb.create_sheet(SUMMARY_SHEET)
    kinds = [text, text, integer, money, integer]
    heading = {
        date: _Kind("date", DATE_FORMAT),
        datetime: _Kind("timestamp", TIMESTAMP_FORMAT),
        int: integer,
        str: text,
    }
    _table(info, list(SUMMARY_COLUMNS), kinds, rows, cut, heading=[(k, v, heading[type(v)]) for k, v in about])
    wb.save(str(path))


def _table(
    ws: Any,
    header: list[str],
    kinds: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    cut: list[int],
    heading: Sequence[tuple[str, Any, Any]] = (),
) -> None:
    """``rows`` under a bold header, below ``heading``'s label/value lines: cells neutralised, widths fitted."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    from cdv_etl.publish.cells import is_formula_like
    from cdv_etl.publish.export import _cell_writer, _widths

    widths = _widths(header, kinds, [r for r in rows if len(r) == len(header)][:1000])
    if heading:
        widths[0] = max(widths[0], *(len(label) + 4.0 for label, _, _ in heading))
    for i, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    bold = Font(bold=True)

    def note(length: int, what: str) -> None:
        cut.append(length)

    for label, value, kind in heading:
        cell = WriteOnlyCell(ws, value=label)
        cell.font = bold
        ws.append([cell, _cell_writer(ws, kind, note)(value)])
    if heading:
        ws.append([])
    fill = PatternFill("solid", fgColor="E8EEF4")
    cells = []
    for column in header:
        cell = WriteOnlyCell(ws, value=column)
        cell.data_type = "s"  # a partner's column name is text, never a formula
        cell.quotePrefix = is_formula_like(column)
        cell.font = bold
        cell.fill = fill
        cells.append(cell)
    ws.append(cells)
    writers = [_cell_writer(ws, k, note) for k in kinds]
    for r in rows:
        ws.append([w(v) for w, v in zip(writers, r, strict=False)])

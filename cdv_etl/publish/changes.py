"""What changed between two exports of a partner: picking the exports, then ``changes_between``.

The comparison itself is SQL (``warehouse/views/050_history.sql``, where each kind of change
is defined); this module chooses which two exports to compare, from what a person types: a
file_id or a file name, or nothing (the partner's two latest exports), and sums the changes
per kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import duckdb

from cdv_etl.errors import CdvError

KINDS = ("added", "withdrawn", "revised", "newly_valid", "newly_quarantined")
"""The kinds of change ``changes_between`` tells apart (its ``change`` column), in the order shown.
The first three are the partner's doing; the last two an operation that only moved out of or
into quarantine."""

TABLE_COLUMNS = (
    "change",
    "operation_id",
    "changed_columns",
    "old_amount_eur",
    "new_amount_eur",
    "amount_delta_eur",
    "engaged_delta_eur",
    "quarantine_rules",
    "old_commune",
    "new_commune",
    "old_status",
    "new_status",
)
"""The columns worth a person's screen; csv and json output carry every column."""


@dataclass(frozen=True)
class Export:
    """One loaded export of a partner."""

    file_id: int
    partner: str
    file_name: str
    extraction_date: date | None

    def __str__(self) -> str:
        return f"file {self.file_id} ({self.file_name}, extracted {self.extraction_date})"


_EXPORTS_SQL = """
SELECT file_id, partner, file_name, extraction_date
FROM files
WHERE status = 'loaded' AND partner = ?
ORDER BY extraction_date NULLS FIRST, loaded_at, file_id
"""


def exports_of(con: duckdb.DuckDBPyConnection, partner: str) -> list[Export]:
    """The partner's loaded exports, oldest first (the order that makes one current)."""
    return [Export(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in con.execute(_EXPORTS_SQL, [partner]).fetchall()]


def known_partners(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [str(r[0]) for r in con.execute("SELECT partner FROM partners ORDER BY partner").fetchall()]


def _find(exports: list[Export], ref: str, partner: str) -> Export:
    """An export by file_id (digits) or file name (the latest one of that name)."""
    text = ref.strip()
    if text.isdigit():
        found = [e for e in exports if e.file_id == int(text)]
    else:
        found = [e for e in exports if e.file_name == text][-1:]
    if not found:
        listed = ", ".join(f"{e.file_id} ({e.file_name})" for e in exports) or "none"
        raise CdvError(
            f"{ref!r} is not a loaded export of {partner}",
            f"give a file_id or a file name; {partner}'s loaded exports: {listed} (see `cdv-etl files`)",
        )
    return found[0]


def partner_of(con: duckdb.DuckDBPyConnection, ref: str) -> str | None:
    """The partner of a loaded export given by file_id or file name (None when unknown)."""
    text = ref.strip()
    if text.isdigit():
        row = con.execute("SELECT partner FROM files WHERE status = 'loaded' AND file_id = ?", [int(text)]).fetchone()
    else:
        row = con.execute(
            "SELECT partner FROM files WHERE status = 'loaded' AND file_name = ? ORDER BY file_id DESC LIMIT 1", [text]
        ).fetchone()
    return str(row[0]) if row else None


def pick_exports(
    con: duckdb.DuckDBPyConnection, partner: str, from_ref: str | None = None, to_ref: str | None = None
) -> tuple[Export, Export]:
    """The two exports to compare. Defaults: ``to`` the current export, ``from`` the one before ``to``."""
    if partner not in known_partners(con):
        raise CdvError(f"unknown partner {partner!r}", f"known partners: {', '.join(known_partners(con))}")
    exports = exports_of(con, partner)
    if len(exports) < 2 and not (from_ref and to_ref):
        raise CdvError(
            f"{partner} has {len(exports)} loaded export(s): nothing to compare yet",
            "changes appear once a second export of the partner is loaded",
        )
    to = _find(exports, to_ref, partner) if to_ref else exports[-1]
    if from_ref:
        frm = _find(exports, from_ref, partner)
    else:
        position = exports.index(to)
        if position == 0:
            raise CdvError(f"{to} is {partner}'s first export: there is none before it", "give --from, or a later --to")
        frm = exports[position - 1]
    if frm == to:
        raise CdvError(f"--from and --to are the same export: {to}", "compare two different exports")
    return frm, to


def changes(con: duckdb.DuckDBPyConnection, frm: Export, to: Export) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every column of ``changes_between`` for the two exports, by kind then operation id."""
    cur = con.execute("SELECT * FROM changes_between(?, ?)", [frm.file_id, to.file_id])
    return [d[0] for d in cur.description or []], cur.fetchall()


@dataclass
class KindTotal:
    """The changes of one kind: how many operations, and their euros."""

    kind: str
    operations: int = 0
    old_amount_eur: Decimal = Decimal("0.00")
    new_amount_eur: Decimal = Decimal("0.00")
    engaged_delta_eur: Decimal = Decimal("0.00")

    def row(self) -> tuple[Any, ...]:
        return (self.kind, self.operations, self.old_amount_eur, self.new_amount_eur, self.engaged_delta_eur)


SUMMARY_COLUMNS = ("change", "operations", "old_amount_eur", "new_amount_eur", "engaged_delta_eur")


def summary(columns: list[str], rows: list[tuple[Any, ...]]) -> list[KindTotal]:
    """Per kind, in ``KINDS`` order: operations, old and new amounts (an unreadable amount counts 0)
    and the change of the engaged figures; every kind, even with no operation."""
    at = {c: columns.index(c) for c in ("change", "old_amount_eur", "new_amount_eur", "engaged_delta_eur")}
    totals = {k: KindTotal(k) for k in KINDS}
    for r in rows:
        t = totals[r[at["change"]]]
        t.operations += 1
        t.old_amount_eur += r[at["old_amount_eur"]] or 0
        t.new_amount_eur += r[at["new_amount_eur"]] or 0
        t.engaged_delta_eur += r[at["engaged_delta_eur"]]
    return list(totals.values())


def summary_line(totals: list[KindTotal]) -> str:
    """« 1 added, 1 withdrawn, 1 revised, 0 newly_valid, 0 newly_quarantined; engaged +900.25 € »"""
    counts = ", ".join(f"{t.operations} {t.kind}" for t in totals)
    engaged = sum((t.engaged_delta_eur for t in totals), Decimal("0.00"))
    return f"{counts}; engaged {engaged:+,.2f} €"

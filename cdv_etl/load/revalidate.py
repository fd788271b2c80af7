"""Revalidation: the loaded exports judged again against the current reference of ACV communes.

A reference change moves rows without the partners re-sending anything: the rows of a commune
that left the list move from ``engagement_rows`` to quarantine (rule ``commune_not_acv``), the
rows of a commune that joined it move out of quarantine when that was their only failure, and
a row quarantined for other reasons gains or loses its ``commune_not_acv`` failure. The rule is
the Pandera check of ``schemas/canonical.py``, run alone on the distinct INSEE codes of the
stored rows (a few thousand at most); the rows then move by code, in SQL.

Every file that has rows is revalidated (history and held exports too): any file that becomes
current later is already consistent with the reference. ``revalidate`` writes inside the
caller's transaction (the one that changed the reference) and keeps
each file's invariant: every row read is in exactly one of engagement_rows and
quarantine_rows, and the file's counts, amounts and ``financing_totals`` say so; otherwise it
raises ``ReconciliationError`` and the caller rolls back.

A row moving into quarantine keeps its source row and sheet, but the warehouse no longer has
the partner's cells for it: its ``raw_record`` holds the values as they were loaded (the
canonical fields, typed), and its failure's value is the INSEE code as loaded (normalised).
A row quarantined before migration 008 has no typed values (``quarantine_records``): it
stays where it is until a forced reload of its file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl

from cdv_etl.errors import ReconciliationError
from cdv_etl.load.loader import file_totals, sum_financing_totals
from cdv_etl.load.reference import reference_codes
from cdv_etl.validate.outputs import ENGAGEMENT_COLUMNS, QUARANTINE_RECORD_COLUMNS, message_sql, rule_column_name
from schemas.canonical import RULES, RuleContext, one_rule_failures

if TYPE_CHECKING:
    import duckdb

    from cdv_etl.specs import PartnerSpec

RULE = RULES["commune_not_acv"]
# SQL fragments, built once from the column constants.
_LOADED = ", ".join(ENGAGEMENT_COLUMNS[3:])
"""The loaded values of an engagement row (after file_id, row_key, source_row, sheet, partner)."""
_RECORD = ", ".join(QUARANTINE_RECORD_COLUMNS)
_RECORD_OF_LOADED = ", ".join("insee_code" if c == "insee_raw" else c for c in QUARANTINE_RECORD_COLUMNS)
"""A loaded row's values as ``quarantine_records`` columns: its INSEE cell is the code as loaded."""
_LOADED_AS_JSON = ", ".join(f"'{c}', CAST({c} AS VARCHAR)" for c in ENGAGEMENT_COLUMNS[3:])
"""The raw_record of a row moved into quarantine: its loaded values as text, as a partner's cells
are (and amounts exact: 100.00, not the JSON number 100.0)."""
_MESSAGE = message_sql("?", "value", "extraction_date")
_TEMP_TABLES = ("rv_columns", "rv_bad", "rv_out", "rv_in")


@dataclass
class FileMove:
    """What a revalidation moved in one file."""

    file_id: int
    partner: str | None
    file_name: str
    is_current: bool
    rows_to_quarantine: int
    eur_to_quarantine: Decimal
    rows_from_quarantine: int
    eur_from_quarantine: Decimal


@dataclass
class Moves:
    """What a revalidation moved, file by file (only files where rows moved)."""

    files: list[FileMove] = field(default_factory=list)

    @property
    def rows_to_quarantine(self) -> int:
        return sum(f.rows_to_quarantine for f in self.files)

    @property
    def eur_to_quarantine(self) -> Decimal:
        return sum((f.eur_to_quarantine for f in self.files), Decimal("0.00"))

    @property
    def rows_from_quarantine(self) -> int:
        return sum(f.rows_from_quarantine for f in self.files)

    @property
    def eur_from_quarantine(self) -> Decimal:
        return sum((f.eur_from_quarantine for f in self.files), Decimal("0.00"))

    COLUMNS = (
        "file_id",
        "partner",
        "file",
        "current",
        "to_quarantine",
        "to_quarantine_eur",
        "out_of_quarantine",
        "out_of_quarantine_eur",
    )
    """The columns of ``rows``: a table of what moved, one row per file, then the total."""

    def rows(self) -> list[tuple[Any, ...]]:
        lines: list[tuple[Any, ...]] = [
            (
                f.file_id,
                f.partner,
                f.file_name,
                f.is_current,
                f.rows_to_quarantine,
                f.eur_to_quarantine,
                f.rows_from_quarantine,
                f.eur_from_quarantine,
            )
            for f in self.files
        ]
        total = (
            "",
            "",
            "total",
            "",
            self.rows_to_quarantine,
            self.eur_to_quarantine,
            self.rows_from_quarantine,
            self.eur_from_quarantine,
        )
        return [*lines, total]

    def as_dict(self) -> list[dict[str, Any]]:
        return [{k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(f).items()} for f in self.files]

    @classmethod
    def from_dict(cls, files: list[dict[str, Any]]) -> Moves:
        return cls(
            [
                FileMove(**{k: Decimal(v) if k.startswith("eur_") else v for k, v in f.items()})  # type: ignore[arg-type]
                for f in files
            ]
        )


def _codes_not_acv(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The distinct INSEE codes of the stored rows that break ``commune_not_acv`` now."""
    codes = [
        r[0]
        for r in con.execute(
            """SELECT insee_code FROM financing_totals
               UNION SELECT insee_code FROM quarantine_records WHERE insee_code IS NOT NULL
               ORDER BY 1"""
        ).fetchall()
    ]
    frame = pl.DataFrame(
        {"row_key": range(len(codes)), RULE.column: codes, "insee_code": codes},
        schema={"row_key": pl.Int64, RULE.column: pl.String, "insee_code": pl.String},
    )
    # commune_not_acv reads the reference alone: the rest of the context is not consulted.
    ctx = RuleContext(
        communes=reference_codes(con),
        extraction_date=date.today(),
        statuses=frozenset(),
        has_date=False,
        has_year=False,
        names_instrument=False,
    )
    failing = one_rule_failures(RULE.id, frame, ctx).get_column("row_key")
    return frame.filter(pl.col("row_key").is_in(failing.implode())).select("insee_code")


def revalidate(con: duckdb.DuckDBPyConnection, specs: Mapping[str, PartnerSpec]) -> Moves:
    """Judge the stored rows of every file, whatever its status, against the current
    ``communes``; move what the rule now says, in the caller's transaction.

    ``specs`` name the partner's INSEE column in a new failure (as a load would); a partner
    without a spec gets NULL there.
    """
    con.execute("CREATE OR REPLACE TEMP TABLE rv_columns (partner VARCHAR, column_name VARCHAR)")
    rule_columns = [(p, rule_column_name(s, RULE)) for p, s in specs.items()]
    if rule_columns:
        con.executemany("INSERT INTO rv_columns VALUES (?, ?)", rule_columns)
    con.register("rv_bad_frame", _codes_not_acv(con).to_arrow())
    con.execute("CREATE OR REPLACE TEMP TABLE rv_bad AS SELECT insee_code FROM rv_bad_frame")
    con.unregister("rv_bad_frame")

    # Rows whose commune left the list: from engagement_rows to quarantine.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE rv_out AS
        SELECT e.* FROM engagement_rows AS e
        WHERE e.insee_code IN (SELECT insee_code FROM rv_bad)"""
    )
    con.execute(
        f"""INSERT INTO quarantine_rows (file_id, row_key, source_row, sheet, raw_record)
        SELECT file_id, row_key, source_row, sheet, json_object({_LOADED_AS_JSON}) FROM rv_out"""  # noqa: S608
    )
    con.execute(
        f"""INSERT INTO quarantine_records (file_id, row_key, {_RECORD})
        SELECT file_id, row_key, {_RECORD_OF_LOADED} FROM rv_out"""  # noqa: S608 - constant column lists
    )
    # Rows quarantined for other rules whose commune left the list gain the failure too.
    con.execute(
        f"""INSERT INTO quarantine_failures
        SELECT m.file_id, m.row_key, ?, ?, c.column_name, m.value, {_MESSAGE}
        FROM (
            SELECT file_id, row_key, insee_code AS value FROM rv_out
            UNION ALL
            SELECT q.file_id, q.row_key, q.insee_raw FROM quarantine_records AS q
            WHERE q.insee_code IN (SELECT insee_code FROM rv_bad)
              AND NOT EXISTS (SELECT 1 FROM quarantine_failures AS x
                              WHERE x.file_id = q.file_id AND x.row_key = q.row_key AND x.rule = ?)
              AND NOT EXISTS (SELECT 1 FROM rv_out AS o WHERE o.file_id = q.file_id AND o.row_key = q.row_key)
        ) AS m
        JOIN files AS f USING (file_id)
        LEFT JOIN rv_columns AS c USING (partner)""",  # noqa: S608 - constant SQL, values bound
        [RULE.id, RULE.order, RULE.message, RULE.id],
    )
    con.execute(
        "DELETE FROM engagement_rows AS e USING rv_out AS o WHERE e.file_id = o.file_id AND e.row_key = o.row_key"
    )

    # Rows whose commune joined the list lose the failure; those with no other leave quarantine.
    con.execute(
        """DELETE FROM quarantine_failures AS x USING quarantine_records AS q
        WHERE x.file_id = q.file_id AND x.row_key = q.row_key AND x.rule = ?
          AND q.insee_code IS NOT NULL AND q.insee_code NOT IN (SELECT insee_code FROM rv_bad)""",
        [RULE.id],
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE rv_in AS
        SELECT q.*, r.source_row, r.sheet, f.partner
        FROM quarantine_records AS q
        JOIN quarantine_rows AS r USING (file_id, row_key)
        JOIN files AS f USING (file_id)
        WHERE NOT EXISTS (SELECT 1 FROM quarantine_failures AS x
                          WHERE x.file_id = q.file_id AND x.row_key = q.row_key)"""
    )
    con.execute(
        f"""INSERT INTO engagement_rows (file_id, row_key, source_row, sheet, partner, {_LOADED})
        SELECT file_id, row_key, source_row, sheet, partner, {_LOADED} FROM rv_in"""  # noqa: S608
    )
    for table in ("quarantine_rows", "quarantine_records"):
        con.execute(
            f"DELETE FROM {table} AS t USING rv_in AS i WHERE t.file_id = i.file_id AND t.row_key = i.row_key"  # noqa: S608
        )

    moved = con.execute(
        """WITH m AS (
            SELECT file_id, count(*) AS rows_out, sum(amount_eur) AS eur_out, 0 AS rows_in, 0 AS eur_in
            FROM rv_out GROUP BY file_id
            UNION ALL
            SELECT file_id, 0, 0, count(*), sum(amount_eur) FROM rv_in GROUP BY file_id
        )
        SELECT m.file_id, f.partner, f.file_name, cur.file_id IS NOT NULL,
               sum(rows_out)::BIGINT, sum(eur_out)::DECIMAL(18, 2), sum(rows_in)::BIGINT, sum(eur_in)::DECIMAL(18, 2)
        FROM m JOIN files AS f USING (file_id) LEFT JOIN current_files AS cur USING (file_id)
        GROUP BY ALL ORDER BY m.file_id"""
    ).fetchall()
    moves = Moves([FileMove(*row) for row in moved])
    for f in moves.files:
        _reconcile(con, f.file_id)
    for temp in _TEMP_TABLES:
        con.execute(f"DROP TABLE {temp}")
    return moves


def _reconcile(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    """A file whose rows moved: its financing_totals and ledger counts again, and the loader's
    check that every row read is in exactly one place."""
    sum_financing_totals(con, file_id)
    loaded, quarantined, distinct, loaded_eur, engaged_eur = file_totals(con, file_id)
    row = con.execute("SELECT rows_read, file_name FROM files WHERE file_id = ?", [file_id]).fetchone()
    assert row is not None
    read, name = row
    if loaded + quarantined != read or distinct != read:
        raise ReconciliationError(
            f"{name}: {read} rows read but {loaded} loaded + {quarantined} quarantined ({distinct} distinct rows) "
            "after revalidating against the reference; the reference change was rolled back",
            "this is a bug in cdv-etl: please report it with the reference and the file",
        )
    con.execute(
        "UPDATE files SET rows_loaded = ?, rows_quarantined = ?, loaded_amount_eur = ?, engaged_amount_eur = ? "
        "WHERE file_id = ?",
        [loaded, quarantined, loaded_eur, engaged_eur, file_id],
    )

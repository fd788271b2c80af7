"""What validation hands to the loader: the rows to load, the quarantine, the amounts read.

Everything here runs on the reader connection (the hardened in-memory DuckDB that parsed
the partner's file); the loader receives the canonical records as the Parquet file the parse
wrote in the reader's private work folder (typed columns, nothing of the partner's file
format left), the failures and the quarantine as Arrow tables, and never reads a partner
file itself. It loads the records that broke no rule.

The rejected rows' canonical records are read from the Parquet file once, into a small table
(``stg_rejected``): the failures' values and the quarantine's typed records both come from it
(a scan of every record each, for a few percent of them, took ~0.6 s of CPU at 1M rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa

from cdv_etl.read import STAGING_TABLE
from cdv_etl.specs import SHEET_COLUMN, PartnerSpec
from cdv_etl.validate.parse import CANONICAL_TABLE
from schemas.canonical import RULES, Rule

_VALUE_CASE = (
    "CASE r.value_column "
    + " ".join(f"WHEN '{c}' THEN CAST(c.{c} AS VARCHAR)" for c in sorted({r.column for r in RULES.values()}))
    + " END"
)

ENGAGEMENT_COLUMNS = (
    "row_key",
    "source_row",
    "sheet",
    "operation_id",
    "insee_code",
    "commune_label",
    "axis",
    "category",
    "year",
    "engagement_date",
    "instrument",
    "instrument_label",
    "scheme",
    "project_label",
    "amount_eur",
    "status",
    "counts_as_engaged",
)
QUARANTINE_RECORD_COLUMNS = ("operation_id", "insee_raw", *ENGAGEMENT_COLUMNS[4:])
"""What ``quarantine_records`` keeps of a quarantined row: its typed values (a row whose commune
joins the reference moves to engagement_rows) and its INSEE cell as written (a failure's value)."""


@dataclass
class Outputs:
    """A validated file, ready to load."""

    rows: Path
    """Every canonical record (ENGAGEMENT_COLUMNS among others), as the parse wrote it: a
    Parquet file in the reader's private work folder. The loader takes those whose row_key
    is not in ``failures``. A file, not an Arrow stream: the warehouse scans it in parallel
    and in bounded memory (an Arrow stream is consumed by one thread and, at 5M rows, the
    insert it feeds grew the process by ~750 MiB whatever the memory limits); and written by
    the parse itself, so the valid rows are never copied a second time."""
    failures: pa.Table
    """Every failure: row_key, rule, rule_order, column_name, value, message."""
    quarantined: pa.Table
    """One row per rejected row: row_key, source_row, sheet, raw_record (JSON text)."""
    quarantine_records: pa.Table
    """One row per rejected row: row_key and its typed values (QUARANTINE_RECORD_COLUMNS), for
    ``quarantine_records``."""
    amount_read: Decimal
    """Sum of every amount read (loaded and quarantined): compared with a control total."""


def rule_column_name(spec: PartnerSpec, rule: Rule) -> str | None:
    """The partner's column(s) a failure of ``rule`` names (``quarantine.column``)."""
    f = spec.fields.get(rule.field)
    cols = f.source_columns if f else []
    return " | ".join("sheet" if c == SHEET_COLUMN else c for c in cols) or None


def message_sql(template: str, value: str, extraction_date: str) -> str:
    """SQL of a failure's message: the rule's template with ``{value}`` and ``{extraction_date}``
    replaced (each argument an SQL expression)."""
    return (
        f"replace(replace({template}, '{{value}}', coalesce({value}, '')), "
        f"'{{extraction_date}}', CAST({extraction_date} AS VARCHAR))"
    )


_MESSAGE = message_sql("r.template", _VALUE_CASE, "?::DATE")
"""A failure's message: its rule's template filled with the value and the export's date (bound)."""


def _rule_table(con: duckdb.DuckDBPyConnection, spec: PartnerSpec) -> None:
    rows = [(r.id, r.order, r.column, rule_column_name(spec, r), r.message) for r in RULES.values()]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stg_rules (rule VARCHAR, rule_order TINYINT, "
        "value_column VARCHAR, column_name VARCHAR, template VARCHAR)"
    )
    con.executemany("INSERT INTO stg_rules VALUES (?, ?, ?, ?, ?)", rows)


def build_outputs(
    con: duckdb.DuckDBPyConnection, spec: PartnerSpec, failures: pa.Table, extraction_date: object, canonical: Path
) -> Outputs:
    _rule_table(con, spec)
    con.execute("CREATE OR REPLACE TEMP TABLE stg_failures (row_key BIGINT, rule VARCHAR)")
    if len(failures):
        con.register("failures_frame", failures)
        con.execute("INSERT INTO stg_failures SELECT row_key, rule FROM failures_frame")
        con.unregister("failures_frame")
    # The rejected rows' records, read once from the Parquet file (one scan, for a few rows).
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE stg_rejected AS
            SELECT * FROM {CANONICAL_TABLE}
            WHERE row_key IN (SELECT row_key FROM stg_failures)"""  # noqa: S608 - constant SQL
    )
    failure_rows = con.execute(
        f"""SELECT f.row_key, f.rule, r.rule_order, r.column_name, {_VALUE_CASE} AS value,
                   {_MESSAGE} AS message
            FROM stg_failures AS f
            JOIN stg_rules AS r USING (rule)
            JOIN stg_rejected AS c USING (row_key)
            ORDER BY f.row_key, r.rule_order""",  # noqa: S608 - constant SQL, values bound
        [extraction_date],
    ).to_arrow_table()
    records = con.execute(
        f"SELECT row_key, {', '.join(QUARANTINE_RECORD_COLUMNS)} FROM stg_rejected ORDER BY row_key"  # noqa: S608
    ).to_arrow_table()
    quarantined = con.execute(
        f"""SELECT s._row_key AS row_key, s._source_row AS source_row, s._sheet AS sheet,
                   CAST(json_merge_patch(to_json(s),
                        '{{"_row_key": null, "_source_row": null, "_sheet": null}}') AS VARCHAR) AS raw_record
            FROM {STAGING_TABLE} AS s
            WHERE s._row_key IN (SELECT row_key FROM stg_failures)
            ORDER BY s._row_key"""  # noqa: S608 - constant SQL
    ).to_arrow_table()
    total = con.execute(
        f"SELECT coalesce(sum(amount_eur), 0) FROM {CANONICAL_TABLE}"  # noqa: S608 - constant SQL
    ).fetchone()
    assert total is not None
    con.execute("DROP TABLE stg_rejected")
    return Outputs(
        rows=canonical,
        failures=failure_rows,
        quarantined=quarantined,
        quarantine_records=records,
        amount_read=total[0],
    )

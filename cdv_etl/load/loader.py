"""Load stage: one file, one transaction.

The file's ledger row, its loaded rows and its quarantined rows commit together or not at
all, and only once the loader has checked that every row read ends in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdv_etl.errors import ReconciliationError
from cdv_etl.faults import checkpoint

if TYPE_CHECKING:
    import duckdb

    from cdv_etl.read import FileStat, RawExport
    from cdv_etl.specs import PartnerSpec
    from cdv_etl.validate.outputs import Outputs


@dataclass
class LoadResult:
    """What happened to one file; printed by the CLI, shown in Prefect artifacts."""

    file_name: str
    partner: str | None
    status: str  # loaded | duplicate | rejected
    file_id: int | None = None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    loaded_amount_eur: Decimal | None = None
    engaged_amount_eur: Decimal | None = None
    control_total_eur: Decimal | None = None
    control_total_diff_eur: Decimal | None = None
    extraction_date: date | None = None
    reason: str | None = None
    message: str = ""
    already_recorded: bool = False
    """True when nothing was written: these bytes were already in the ledger."""
    quarantine_by_rule: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadResult:
        """Back from the plain dict a Prefect task returned (amounts as strings)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for k in ("loaded_amount_eur", "engaged_amount_eur", "control_total_eur", "control_total_diff_eur"):
            if values.get(k) is not None:
                values[k] = Decimal(values[k])
        if isinstance(values.get("extraction_date"), str):
            values["extraction_date"] = date.fromisoformat(values["extraction_date"])
        return cls(**values)

    @property
    def control_total_ok(self) -> bool | None:
        if self.control_total_eur is None or self.control_total_diff_eur is None:
            return None
        return self.control_total_diff_eur == 0


def record_rejected(
    con: duckdb.DuckDBPyConnection,
    *,
    partner: str | None,
    path: Path,
    sha: str,
    size: int,
    reason: str,
    message: str,
    replace_file_id: int | None = None,
    stat: FileStat | None = None,
    forced: bool = True,
) -> int:
    """The ledger row of a file refused whole (nothing of it is loaded).

    ``replace_file_id``: the ledger row this file had, updated in place (``forced``: with --force).
    """
    con.execute("BEGIN TRANSACTION")
    try:
        if replace_file_id is not None:
            _delete_rows(con, replace_file_id)
            con.execute(
                "UPDATE files SET status = 'rejected', partner = ?, reason = ?, message = ?, rows_read = 0, "
                "rows_loaded = 0, rows_quarantined = 0, loaded_amount_eur = NULL, "
                "engaged_amount_eur = NULL, control_total_eur = NULL, "
                "control_total_diff_eur = NULL, loaded_at = current_timestamp, "
                "forced_reloads = forced_reloads + ? WHERE file_id = ?",
                [partner, reason, message, int(forced), replace_file_id],
            )
            file_id = replace_file_id
        else:
            row = con.execute(
                "INSERT INTO files (partner, file_name, sha256, size_bytes, status, reason, message)"
                " VALUES (?, ?, ?, ?, 'rejected', ?, ?) RETURNING file_id",
                [partner, path.name, sha, size, reason, message],
            ).fetchone()
            assert row is not None
            file_id = int(row[0])
        record_stat(con, file_id, stat)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return file_id


def record_duplicate(
    con: duckdb.DuckDBPyConnection,
    *,
    partner: str | None,
    path: Path,
    sha: str,
    size: int,
    original_id: int,
    original_name: str,
    stat: FileStat | None = None,
) -> int:
    message = f"same bytes as file {original_id} ({original_name}), already in the ledger; nothing loaded"
    con.execute("BEGIN TRANSACTION")
    try:
        row = con.execute(
            "INSERT INTO files (partner, file_name, sha256, size_bytes, status, reason, message, "
            "duplicate_of) VALUES (?, ?, ?, ?, 'duplicate', 'same_bytes', ?, ?) RETURNING file_id",
            [partner, path.name, sha, size, message, original_id],
        ).fetchone()
        assert row is not None
        record_stat(con, int(row[0]), stat)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return int(row[0])


def record_stat(con: duckdb.DuckDBPyConnection, file_id: int, stat: FileStat | None) -> None:
    """Remember how the file looked on disk when hashed (``Pipeline.known_sha``'s quick check)."""
    if stat is None or not stat.settled:
        return
    con.execute(
        "UPDATE files SET stat_device = ?, stat_inode = ?, stat_mtime_ns = ?, stat_ctime_ns = ? WHERE file_id = ?",
        [stat.device, stat.inode, stat.mtime_ns, stat.ctime_ns, file_id],
    )


def _delete_rows(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    for table in (
        "engagement_rows",
        "financing_totals",
        "quarantine_rows",
        "quarantine_records",
        "quarantine_failures",
    ):
        con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])  # noqa: S608


def load_export(
    con: duckdb.DuckDBPyConnection,
    *,
    spec: PartnerSpec,
    path: Path,
    sha: str,
    size: int,
    extraction_date: date,
    raw: RawExport,
    outputs: Outputs,
    replace_file_id: int | None = None,
    stat: FileStat | None = None,
    forced: bool = True,
) -> LoadResult:
    """Write one validated file: ledger row, loaded rows, quarantine — in one transaction.

    ``replace_file_id``: the ledger row this file had, updated in place (``forced``: with --force).
    """
    from cdv_etl.validate.outputs import ENGAGEMENT_COLUMNS, QUARANTINE_RECORD_COLUMNS

    con.register("out_failures", outputs.failures)
    con.register("out_quarantined", outputs.quarantined)
    con.execute("BEGIN TRANSACTION")
    try:
        if replace_file_id is not None:
            _delete_rows(con, replace_file_id)
            con.execute(
                "UPDATE files SET status = 'loaded', reason = NULL, message = NULL, "
                "partner = ?, extraction_date = ?, loaded_at = current_timestamp, "
                "forced_reloads = forced_reloads + ? WHERE file_id = ?",
                [spec.partner, extraction_date, int(forced), replace_file_id],
            )
            file_id = replace_file_id
        else:
            row = con.execute(
                "INSERT INTO files (partner, file_name, sha256, size_bytes, extraction_date, status)"
                " VALUES (?, ?, ?, ?, ?, 'loaded') RETURNING file_id",
                [spec.partner, path.name, sha, size, extraction_date],
            ).fetchone()
            assert row is not None
            file_id = int(row[0])
        checkpoint("load.ledger")

        con.execute(
            "INSERT INTO quarantine_failures SELECT ?, row_key, rule, rule_order, column_name, value, "
            "message FROM out_failures",
            [file_id],
        )
        con.execute(
            "INSERT INTO quarantine_rows SELECT ?, row_key, source_row, sheet, raw_record FROM out_quarantined",
            [file_id],
        )
        # The quarantined rows' typed values too: a reference change revalidates them.
        con.execute(
            f"""INSERT INTO quarantine_records (file_id, row_key, {", ".join(QUARANTINE_RECORD_COLUMNS)})
            SELECT ?, row_key, {", ".join(QUARANTINE_RECORD_COLUMNS)} FROM read_parquet(?)
            WHERE row_key IN (SELECT row_key FROM out_quarantined)""",  # noqa: S608 - constant column list
            [file_id, str(outputs.rows)],
        )
        checkpoint("load.quarantine")
        con.execute(
            f"""INSERT INTO engagement_rows
            SELECT ?, row_key, source_row, sheet, ?, {", ".join(ENGAGEMENT_COLUMNS[3:])}
            FROM read_parquet(?)
            WHERE row_key NOT IN (SELECT row_key FROM out_failures)""",  # noqa: S608 - constant column list
            [file_id, spec.partner, str(outputs.rows)],
        )
        con.execute(
            """INSERT INTO financing_totals
            SELECT file_id, partner, axis, year, insee_code, instrument, counts_as_engaged,
                   sum(amount_eur), count(*)
            FROM engagement_rows WHERE file_id = ? GROUP BY ALL""",
            [file_id],
        )
        checkpoint("load.rows")

        # Every row read lands in exactly one place: counted, and counted once by row key (a
        # join that duplicated one row and lost another would keep the counts).
        totals = con.execute(
            """SELECT
                 (SELECT count(*) FROM engagement_rows WHERE file_id = $1),
                 (SELECT count(*) FROM quarantine_rows WHERE file_id = $1),
                 (SELECT count(DISTINCT row_key) FROM (
                      SELECT row_key FROM engagement_rows WHERE file_id = $1
                      UNION ALL SELECT row_key FROM quarantine_rows WHERE file_id = $1)),
                 (SELECT sum(amount_eur) FROM engagement_rows WHERE file_id = $1),
                 (SELECT sum(amount_eur) FILTER (WHERE counts_as_engaged)
                    FROM engagement_rows WHERE file_id = $1)""",
            [file_id],
        ).fetchone()
        assert totals is not None
        loaded, quarantined, distinct_keys = int(totals[0]), int(totals[1]), int(totals[2])
        loaded_eur = totals[3] if totals[3] is not None else Decimal("0.00")
        engaged_eur = totals[4] if totals[4] is not None else Decimal("0.00")
        if loaded + quarantined != raw.rows_read or distinct_keys != raw.rows_read:
            raise ReconciliationError(
                f"{path.name}: {raw.rows_read} rows read but {loaded} loaded + {quarantined} "
                f"quarantined ({distinct_keys} distinct rows); the load was rolled back",
                "this is a bug in cdv-etl: please report it with the file",
            )
        diff = None
        if raw.control_total is not None:
            diff = (raw.control_total - outputs.amount_read).quantize(Decimal("0.01"))
        message = _message(raw, diff)
        con.execute(
            """UPDATE files SET rows_read = ?, rows_loaded = ?, rows_quarantined = ?,
                 loaded_amount_eur = ?, engaged_amount_eur = ?, control_total_eur = ?,
                 control_total_diff_eur = ?, message = ? WHERE file_id = ?""",
            [raw.rows_read, loaded, quarantined, loaded_eur, engaged_eur, raw.control_total, diff, message, file_id],
        )
        by_rule = dict(
            con.execute(
                """SELECT rule, count(*) FROM (
                 SELECT file_id, row_key, arg_min(rule, rule_order) AS rule
                 FROM quarantine_failures WHERE file_id = ? GROUP BY ALL)
               GROUP BY rule ORDER BY rule""",
                [file_id],
            ).fetchall()
        )
        record_stat(con, file_id, stat)
        checkpoint("load.reconciled")
        con.execute("COMMIT")
        checkpoint("load.committed")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("out_failures", "out_quarantined"):
            con.unregister(name)
    return LoadResult(
        file_name=path.name,
        partner=spec.partner,
        status="loaded",
        file_id=file_id,
        rows_read=raw.rows_read,
        rows_loaded=loaded,
        rows_quarantined=quarantined,
        loaded_amount_eur=loaded_eur,
        engaged_amount_eur=engaged_eur,
        control_total_eur=raw.control_total,
        control_total_diff_eur=diff,
        extraction_date=extraction_date,
        message=message,
        quarantine_by_rule={str(k): int(v) for k, v in by_rule.items()},
    )


def _message(raw: RawExport, diff: Decimal | None) -> str:
    if raw.control_total is None:
        return "loaded"
    if diff == 0:
        return f"loaded; control total {raw.control_total} matches the amounts read"
    return (
        f"loaded; control total {raw.control_total} differs from the sum of the amounts "
        f"read by {diff} €: ask the partner which is right"
    )

"""Load stage: one file, one transaction.

The file's ledger row, its loaded rows and its quarantined rows commit together or not at
all, and only once the loader has checked that every row read ends in exactly one place.
The file id comes from its claim (``cdv_etl.load.claims``), and the transaction inserts only,
its ledger row last and whole: loads of different files by several writers never conflict.

Each export is its partner's full stock. One that would become current is compared with the
partner's current export first: when it withdraws more than the partner's threshold of the
current operations or engaged euros, it is written all the same but held (``held``: in
history, not current) until a person accepts it (``accept_export``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdv_etl.errors import CdvError, ReconciliationError
from cdv_etl.faults import checkpoint
from cdv_etl.load.claims import Claim, held_by
from cdv_etl.load.transactions import in_transaction
from cdv_etl.publish.tables import euros

if TYPE_CHECKING:
    import duckdb

    from cdv_etl.read import FileStat, RawExport
    from cdv_etl.specs import PartnerSpec
    from cdv_etl.validate.outputs import Outputs


NEEDS_ATTENTION = frozenset({"rejected", "held"})
"""A file's statuses that leave the figures as they were and wait for someone: the command exits 1,
and a Prefect run with such a file does not end green (Completed) but Failed, naming the files."""

STOCK_SHRANK = "stock_shrank"
"""The reason of a held export."""


@dataclass
class LoadResult:
    """What happened to one file; printed by the CLI, shown in Prefect artifacts."""

    file_name: str
    partner: str | None
    status: str  # loaded | duplicate | rejected | held
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
    became_current: bool | None = None
    """For a file written (loaded or held): whether it is now its partner's current export."""
    compared_file_id: int | None = None
    """The partner's current export this one was compared with (None: its first, or an older one)."""
    withdrawn_operations: int | None = None
    withdrawn_absent: int | None = None
    withdrawn_quarantined: int | None = None
    withdrawn_eur: Decimal | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadResult:
        """Back from the plain dict a Prefect task returned (amounts as strings)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for k in (
            "loaded_amount_eur",
            "engaged_amount_eur",
            "control_total_eur",
            "control_total_diff_eur",
            "withdrawn_eur",
        ):
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


_FILE_COLUMNS = (
    "file_id",
    "partner",
    "file_name",
    "sha256",
    "size_bytes",
    "extraction_date",
    "status",
    "reason",
    "message",
    "rows_read",
    "rows_loaded",
    "rows_quarantined",
    "loaded_amount_eur",
    "engaged_amount_eur",
    "control_total_eur",
    "control_total_diff_eur",
    "duplicate_of",
    "forced_reloads",
    "stat_device",
    "stat_inode",
    "stat_mtime_ns",
    "stat_ctime_ns",
    "compared_file_id",
    "withdrawn_operations",
    "withdrawn_absent",
    "withdrawn_quarantined",
    "withdrawn_eur",
)
"""The ledger columns a load writes (``loaded_at`` is the transaction's time, ``accepted_at`` an acceptance's)."""
_INSERT_FILE = f"INSERT INTO files ({', '.join(_FILE_COLUMNS)}) VALUES ({', '.join('?' * len(_FILE_COLUMNS))})"  # noqa: S608
_COUNTS = {"rows_read": 0, "rows_loaded": 0, "rows_quarantined": 0}


def _insert_files_row(
    con: duckdb.DuckDBPyConnection, file_id: int, *, reloads: int, stat: FileStat | None, **columns: object
) -> None:
    """The file's ledger row, written once and whole, last in its transaction: on a lake an UPDATE of
    ``files`` would conflict with every other writer's insert. ``stat``: how the file looked on disk
    when hashed (``Pipeline.known_sha``'s quick check), kept when it had settled."""
    settled = stat if stat is not None and stat.settled else None
    values: dict[str, object] = {
        **_COUNTS,
        **columns,
        "file_id": file_id,
        "forced_reloads": reloads,
        "stat_device": settled.device if settled else None,
        "stat_inode": settled.inode if settled else None,
        "stat_mtime_ns": settled.mtime_ns if settled else None,
        "stat_ctime_ns": settled.ctime_ns if settled else None,
    }
    assert set(values) <= set(_FILE_COLUMNS), sorted(set(values) - set(_FILE_COLUMNS))
    con.execute(_INSERT_FILE, [values.get(c) for c in _FILE_COLUMNS])


def _drop_old_row(con: duckdb.DuckDBPyConnection, file_id: int, forced: bool) -> int:
    """A ledger row written again in place (--force, or a spec fixed): its rows and its ledger row
    deleted, in the caller's transaction; the forced reloads it counts from now (one more when ``forced``)."""
    row = con.execute("SELECT forced_reloads FROM files WHERE file_id = ?", [file_id]).fetchone()
    _delete_rows(con, file_id)
    con.execute("DELETE FROM files WHERE file_id = ?", [file_id])
    return (int(row[0]) if row else 0) + int(forced)


class ReferenceChanged(CdvError):
    """The reference of ACV communes changed (another writer) after the file was validated against it."""


class ClaimLost(CdvError):
    """A load whose claim another writer took over (its lease had expired): nothing was written."""


def _check_claim(con: duckdb.DuckDBPyConnection, claim: Claim, name: str) -> None:
    holder = held_by(con, claim)
    if holder != claim.by:
        raise ClaimLost(
            f"{name}: the claim of file {claim.file_id} was taken over by {holder or 'another writer'} "
            "(it was older than CDV_CLAIM_TIMEOUT); nothing of this run was written",
            "ingest the file again once that run is done; raise CDV_CLAIM_TIMEOUT above the longest load",
        )


def write_rejected(
    con: duckdb.DuckDBPyConnection,
    claim: Claim,
    *,
    partner: str | None,
    path: Path,
    sha: str,
    size: int,
    reason: str,
    message: str,
    stat: FileStat | None = None,
    forced: bool = True,
) -> None:
    """The ledger row of a file refused whole (nothing of it is loaded), in the caller's transaction.

    A row written again in place (``claim.replaces``) loses its rows (``forced``: with --force)."""
    reloads = _drop_old_row(con, claim.file_id, forced) if claim.replaces else 0
    _insert_files_row(
        con,
        claim.file_id,
        reloads=reloads,
        stat=stat,
        partner=partner,
        file_name=path.name,
        sha256=sha,
        size_bytes=size,
        status="rejected",
        reason=reason,
        message=message,
    )


def record_rejected(con: duckdb.DuckDBPyConnection, claim: Claim, **rejection: Any) -> int:
    """``write_rejected`` for a claimed file, in its own transaction (retried on a conflict)."""

    def unit(c: duckdb.DuckDBPyConnection) -> None:
        _check_claim(c, claim, rejection["path"].name)
        write_rejected(c, claim, **rejection)

    in_transaction(con, unit, what=f"rejection of {rejection['path'].name}")
    return claim.file_id


def write_duplicate(
    con: duckdb.DuckDBPyConnection,
    claim: Claim,
    *,
    partner: str | None,
    path: Path,
    sha: str,
    size: int,
    original_id: int,
    original_name: str,
    stat: FileStat | None = None,
) -> None:
    """The ledger row of a file with the bytes of a loaded one, in the caller's (claim) transaction."""
    _insert_files_row(
        con,
        claim.file_id,
        reloads=0,
        stat=stat,
        partner=partner,
        file_name=path.name,
        sha256=sha,
        size_bytes=size,
        status="duplicate",
        reason="same_bytes",
        message=f"same bytes as file {original_id} ({original_name}), already in the ledger; nothing loaded",
        duplicate_of=original_id,
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


def sum_financing_totals(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    """The file's ``financing_totals`` (the views' pre-aggregated lines) again, from its engagement rows."""
    con.execute("DELETE FROM financing_totals WHERE file_id = ?", [file_id])
    _insert_financing_totals(con, file_id)


def _insert_financing_totals(con: duckdb.DuckDBPyConnection, file_id: int) -> None:
    """The ``financing_totals`` of a file that has none yet (its load inserts only)."""
    con.execute(
        """INSERT INTO financing_totals
        SELECT file_id, partner, axis, year, insee_code, instrument, counts_as_engaged,
               sum(amount_eur), count(*)
        FROM engagement_rows WHERE file_id = ? GROUP BY ALL""",
        [file_id],
    )


_FILE_KEYS = (
    "SELECT row_key FROM engagement_rows WHERE file_id = $1 "
    "UNION ALL SELECT row_key FROM quarantine_rows WHERE file_id = $1"
)
DENSE_KEYS = 8
"""Row keys spanning at most this many values a row are counted in a bitmap of their range (a CSV's
are 0…n-1); sparser ones (a workbook's: its sheet's number in the high 32 bits) by a hash table."""


def file_totals(con: duckdb.DuckDBPyConnection, file_id: int) -> tuple[int, int, int, Decimal, Decimal]:
    """(rows loaded, rows quarantined, distinct row keys of both, loaded €, engaged €) of a file.

    Every row read must land in exactly one place: counted, and counted once by row key (a join
    that duplicated one row and lost another would keep the counts). The load and a reference
    change's revalidation both check it against the rows read. The distinct keys are the bits
    set in a bitmap of their range when they are dense (0.05 s of CPU at 1M rows, against 0.4 s
    for ``count(DISTINCT)``)."""
    totals = con.execute(
        """WITH e AS (SELECT count(*) AS n, min(row_key) AS lo, max(row_key) AS hi,
                             coalesce(sum(amount_eur), 0) AS eur,
                             coalesce(sum(amount_eur) FILTER (WHERE counts_as_engaged), 0) AS engaged
                      FROM engagement_rows WHERE file_id = $1),
                q AS (SELECT count(*) AS n, min(row_key) AS lo, max(row_key) AS hi
                      FROM quarantine_rows WHERE file_id = $1)
           SELECT e.n, q.n, least(e.lo, q.lo), greatest(e.hi, q.hi), e.eur, e.engaged FROM e, q""",
        [file_id],
    ).fetchone()
    assert totals is not None
    loaded, quarantined, lo, hi = int(totals[0]), int(totals[1]), totals[2], totals[3]
    if lo is None:
        distinct = 0
    elif hi - lo < DENSE_KEYS * (loaded + quarantined):
        row = con.execute(
            f"SELECT bit_count(bitstring_agg(row_key, $2, $3)) FROM ({_FILE_KEYS})",  # noqa: S608 - constant SQL
            [file_id, lo, hi],
        ).fetchone()
        distinct = int(row[0]) if row else 0
    else:
        row = con.execute(
            f"SELECT count(DISTINCT row_key) FROM ({_FILE_KEYS})",  # noqa: S608 - constant SQL
            [file_id],
        ).fetchone()
        distinct = int(row[0]) if row else 0
    return loaded, quarantined, distinct, Decimal(totals[4]), Decimal(totals[5])


def load_export(
    con: duckdb.DuckDBPyConnection,
    *,
    claim: Claim,
    spec: PartnerSpec,
    path: Path,
    sha: str,
    size: int,
    extraction_date: date,
    raw: RawExport,
    outputs: Outputs,
    stat: FileStat | None = None,
    forced: bool = True,
    reference_load_id: int | None = None,
) -> LoadResult:
    """Write one validated, claimed file: its quarantine, its rows, then its ledger row — in one
    transaction that only inserts, so that loads of other files never conflict with it; retried
    whole when another writer's commit conflicts with it all the same (a reference change, a
    forced reload).

    ``claim.replaces``: the ledger row written again in place, its old rows deleted first
    (``forced``: with --force); that transaction conflicts with any concurrent load, and is retried.
    ``reference_load_id``: the reference the file was validated against; ``ReferenceChanged`` (nothing
    written) when another is current by then.
    """
    con.register("out_failures", outputs.failures)
    con.register("out_quarantined", outputs.quarantined)
    con.register("out_records", outputs.quarantine_records)
    try:
        result = in_transaction(
            con,
            lambda c: _load(
                c,
                claim=claim,
                spec=spec,
                path=path,
                sha=sha,
                size=size,
                extraction_date=extraction_date,
                raw=raw,
                outputs=outputs,
                stat=stat,
                forced=forced,
                reference_load_id=reference_load_id,
            ),
            what=f"load of {path.name}",
        )
    finally:
        for name in ("out_failures", "out_quarantined", "out_records"):
            con.unregister(name)
    checkpoint("load.committed")
    return result


def _load(
    con: duckdb.DuckDBPyConnection,
    *,
    claim: Claim,
    spec: PartnerSpec,
    path: Path,
    sha: str,
    size: int,
    extraction_date: date,
    raw: RawExport,
    outputs: Outputs,
    stat: FileStat | None,
    forced: bool,
    reference_load_id: int | None,
) -> LoadResult:
    """``load_export``'s transaction (its caller begins and commits it)."""
    from cdv_etl.load.reference import current_reference
    from cdv_etl.validate.outputs import ENGAGEMENT_COLUMNS, QUARANTINE_RECORD_COLUMNS

    if reference_load_id is not None and current_reference(con) != reference_load_id:
        raise ReferenceChanged(
            f"{path.name}: the reference of ACV communes changed while the file was validated; nothing was written",
            "ingest the file again: it is validated against the new reference",
        )
    file_id = claim.file_id
    compared = _stock_before(con, spec.partner, extraction_date, file_id if claim.replaces else None)
    reloads = _drop_old_row(con, file_id, forced) if claim.replaces else 0
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
        SELECT ?, row_key, {", ".join(QUARANTINE_RECORD_COLUMNS)} FROM out_records""",  # noqa: S608 - constant column list
        [file_id],
    )
    checkpoint("load.quarantine")
    con.execute(
        f"""INSERT INTO engagement_rows
        SELECT ?, row_key, source_row, sheet, ?, {", ".join(ENGAGEMENT_COLUMNS[3:])}
        FROM read_parquet(?)
        WHERE row_key NOT IN (SELECT row_key FROM out_failures)""",  # noqa: S608 - constant column list
        [file_id, spec.partner, str(outputs.rows)],
    )
    _insert_financing_totals(con, file_id)
    checkpoint("load.rows")

    loaded, quarantined, distinct_keys, loaded_eur, engaged_eur = file_totals(con, file_id)
    if loaded + quarantined != raw.rows_read or distinct_keys != raw.rows_read:
        raise ReconciliationError(
            f"{path.name}: {raw.rows_read} rows read but {loaded} loaded + {quarantined} "
            f"quarantined ({distinct_keys} distinct rows); the load was rolled back",
            "this is a bug in cdv-etl: please report it with the file",
        )
    checkpoint("load.reconciled")
    diff = None
    if raw.control_total is not None:
        diff = (raw.control_total - outputs.amount_read).quantize(Decimal("0.01"))
    current = _current_file(con, spec.partner)  # the file's own row is not written yet
    became_current = _takes_over(current, extraction_date)
    shrink = _withdrawn(con, file_id, outputs.rows) if compared is not None and became_current else None
    held = shrink is not None and shrink.over(spec.hold_threshold_pct)
    if held:
        assert compared is not None and shrink is not None
        head = _held_message(file_id, compared, shrink, spec.hold_threshold_pct)
        became_current = False
    elif became_current:
        head = "loaded"
    else:
        assert current is not None
        head = (
            f"loaded into history only, not current: this export is dated {extraction_date.isoformat()}, "
            f"before the partner's current export, file {current[0]} ({current[1]}, "
            f"extracted {current[2].isoformat()})"
        )
    con.execute("DROP TABLE IF EXISTS temp.stock_before")
    message = head + _control_note(raw.control_total, diff)
    by_rule = dict(
        con.execute(
            """SELECT rule, count(*) FROM (
             SELECT file_id, row_key, arg_min(rule, rule_order) AS rule
             FROM quarantine_failures WHERE file_id = ? GROUP BY ALL)
           GROUP BY rule ORDER BY rule""",
            [file_id],
        ).fetchall()
    )
    _check_claim(con, claim, path.name)
    _insert_files_row(
        con,
        file_id,
        reloads=reloads,
        stat=stat,
        partner=spec.partner,
        file_name=path.name,
        sha256=sha,
        size_bytes=size,
        extraction_date=extraction_date,
        status="held" if held else "loaded",
        reason=STOCK_SHRANK if held else None,
        message=message,
        rows_read=raw.rows_read,
        rows_loaded=loaded,
        rows_quarantined=quarantined,
        loaded_amount_eur=loaded_eur,
        engaged_amount_eur=engaged_eur,
        control_total_eur=raw.control_total,
        control_total_diff_eur=diff,
        compared_file_id=compared[0] if shrink is not None and compared is not None else None,
        withdrawn_operations=shrink.operations if shrink else None,
        withdrawn_absent=shrink.absent if shrink else None,
        withdrawn_quarantined=shrink.quarantined if shrink else None,
        withdrawn_eur=shrink.eur if shrink else None,
    )
    checkpoint("load.ledger")
    return LoadResult(
        file_name=path.name,
        partner=spec.partner,
        status="held" if held else "loaded",
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
        became_current=became_current,
        compared_file_id=compared[0] if shrink is not None and compared is not None else None,
        withdrawn_operations=shrink.operations if shrink else None,
        withdrawn_absent=shrink.absent if shrink else None,
        withdrawn_quarantined=shrink.quarantined if shrink else None,
        withdrawn_eur=shrink.eur if shrink else None,
    )


def _control_note(control_total: Decimal | None, diff: Decimal | None) -> str:
    if control_total is None:
        return ""
    if diff == 0:
        return f"; control total {control_total} matches the amounts read"
    return (
        f"; control total {control_total} differs from the sum of the amounts read by {diff} €: "
        "ask the partner which is right"
    )


# -- the stock rule ----------------------------------------------------------------------------
CurrentFile = tuple[int, str, date]
"""A partner's current export: (file_id, file_name, extraction_date)."""


def _current_file(con: duckdb.DuckDBPyConnection, partner: str) -> CurrentFile | None:
    row = con.execute(
        "SELECT c.file_id, f.file_name, c.extraction_date FROM current_files AS c JOIN files AS f USING (file_id) "
        "WHERE c.partner = ?",
        [partner],
    ).fetchone()
    return (int(row[0]), str(row[1]), row[2]) if row else None


def _takes_over(current: CurrentFile | None, extraction_date: date) -> bool:
    """Whether an export extracted on ``extraction_date`` becomes current over ``current``: the view
    ``current_files`` ranks by extraction date, then load time, and a file being loaded is the latest."""
    return current is None or extraction_date >= current[2]


def _stock_before(
    con: duckdb.DuckDBPyConnection, partner: str, extraction_date: date, replace_file_id: int | None
) -> CurrentFile | None:
    """The partner's current export, when the file being loaded may take its place: its
    operations and their engaged euros kept in ``stock_before`` (a file reloaded with --force
    may be that export: its rows are about to be replaced). None for a partner's first export,
    or for an export older than the current one (history only: nothing to protect)."""
    current = _current_file(con, partner)
    if current is None or (current[0] != replace_file_id and not _takes_over(current, extraction_date)):
        return None
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stock_before AS SELECT operation_id, "
        "coalesce(sum(amount_eur) FILTER (WHERE counts_as_engaged), 0) AS engaged_eur "
        "FROM engagement_rows WHERE file_id = ? GROUP BY operation_id",
        [current[0]],
    )
    return current


@dataclass(frozen=True)
class Withdrawal:
    """What a new export withdraws from the current one: its operations in none of the new
    export's loaded rows (absent from the file, or in it but quarantined), and their euros."""

    operations: int
    absent: int
    quarantined: int
    eur: Decimal
    current_operations: int
    current_eur: Decimal

    def over(self, threshold_pct: Decimal) -> bool:
        """More than ``threshold_pct`` % of the current operations, or of its engaged euros."""
        return (
            self.operations * 100 > threshold_pct * self.current_operations
            or self.eur * 100 > threshold_pct * self.current_eur
        )


def _pct(part: Decimal | int, whole: Decimal | int) -> str:
    return f"{Decimal(100) * part / whole:.1f} %" if whole else "0.0 %"


def _withdrawn(con: duckdb.DuckDBPyConnection, file_id: int, canonical: Path) -> Withdrawal:
    """``stock_before`` against the new export ``file_id`` (its loaded rows, and every record of
    the file: ``canonical``, quarantined ones included)."""
    row = con.execute(
        """WITH loaded AS (SELECT DISTINCT operation_id FROM engagement_rows WHERE file_id = ?),
        in_file AS (SELECT DISTINCT operation_id FROM read_parquet(?) WHERE operation_id IS NOT NULL)
        SELECT count(*), coalesce(sum(b.engaged_eur), 0),
               count(*) FILTER (WHERE l.operation_id IS NULL),
               count(*) FILTER (WHERE l.operation_id IS NULL AND f.operation_id IS NULL),
               count(*) FILTER (WHERE l.operation_id IS NULL AND f.operation_id IS NOT NULL),
               coalesce(sum(b.engaged_eur) FILTER (WHERE l.operation_id IS NULL), 0)
        FROM stock_before AS b
        LEFT JOIN loaded AS l ON l.operation_id = b.operation_id
        LEFT JOIN in_file AS f ON f.operation_id = b.operation_id""",
        [file_id, str(canonical)],
    ).fetchone()
    assert row is not None
    return Withdrawal(
        operations=int(row[2]),
        absent=int(row[3]),
        quarantined=int(row[4]),
        eur=Decimal(row[5]),
        current_operations=int(row[0]),
        current_eur=Decimal(row[1]),
    )


def _held_message(file_id: int, current: CurrentFile, w: Withdrawal, threshold_pct: Decimal) -> str:
    return (
        f"held, not current: it would withdraw {w.operations} of the {w.current_operations} operations "
        f"({_pct(w.operations, w.current_operations)}: {w.absent} absent from this file, {w.quarantined} in it "
        f"but quarantined) and {euros(w.eur)} of the {euros(w.current_eur)} engaged "
        f"({_pct(w.eur, w.current_eur)}) of the current export, file {current[0]} ({current[1]}, extracted "
        f"{current[2].isoformat()}): over the partner's {threshold_pct} % threshold. The figures are unchanged. "
        f"Check the export with the partner; to make it current: cdv-etl accept {file_id}"
    )


# -- accepting a held export -------------------------------------------------------------------
@dataclass(frozen=True)
class PartnerFigures:
    """A partner's current export and its figures, as ``v_financing_by_partner`` gives them."""

    file_id: int | None
    file_name: str | None
    extraction_date: date | None
    operations: int
    engaged_eur: Decimal


@dataclass(frozen=True)
class AcceptResult:
    """A held export accepted: the partner's figures before and after."""

    file_id: int
    file_name: str
    partner: str
    before: PartnerFigures
    after: PartnerFigures
    message: str

    @property
    def became_current(self) -> bool:
        return self.after.file_id == self.file_id

    def table(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Before, after and the change: (columns, rows) for a readable table."""
        columns = ["", "file_id", "file_name", "extraction_date", "operations", "engaged_eur"]
        rows: list[tuple[Any, ...]] = [
            (label, f.file_id, f.file_name, f.extraction_date, f.operations, f.engaged_eur)
            for label, f in (("before", self.before), ("after", self.after))
        ]
        rows.append(
            (
                "change",
                "",
                "",
                "",
                self.after.operations - self.before.operations,
                self.after.engaged_eur - self.before.engaged_eur,
            )
        )
        return columns, rows


def _partner_figures(con: duckdb.DuckDBPyConnection, partner: str) -> PartnerFigures:
    row = con.execute(
        "SELECT p.file_id, f.file_name, p.extraction_date, p.operations, p.engaged_eur "
        "FROM v_financing_by_partner AS p LEFT JOIN files AS f USING (file_id) WHERE p.partner = ?",
        [partner],
    ).fetchone()
    if row is None:
        return PartnerFigures(None, None, None, 0, Decimal("0.00"))
    return PartnerFigures(row[0], row[1], row[2], int(row[3]), Decimal(row[4]))


def accept_export(con: duckdb.DuckDBPyConnection, file_id: int) -> AcceptResult:
    """Make a held export ``loaded``, in one transaction: it becomes current when its extraction
    date is its partner's latest. Raises CdvError (nothing changed) for an unknown id, or a file
    that is not held.

    Its rows need no second validation: every reference change revalidates every file that has
    rows, held ones included (``revalidate.revalidate``), so a held export is already judged
    against the current list of communes."""

    def unit(c: duckdb.DuckDBPyConnection) -> AcceptResult:
        row = c.execute(
            "SELECT partner, file_name, status, compared_file_id, withdrawn_operations, withdrawn_eur, "
            "control_total_eur, control_total_diff_eur FROM files WHERE file_id = ?",
            [file_id],
        ).fetchone()
        if row is None:
            raise CdvError(
                f"there is no file {file_id} in the ledger; nothing was changed",
                "list the held exports with `cdv-etl files` (status held) and accept one by its file_id",
            )
        partner, name, status = str(row[0]), str(row[1]), str(row[2])
        if status != "held":
            what = {
                "loaded": "it is already loaded",
                "rejected": "it was rejected whole and nothing of it is loaded: fix the file and ingest it again",
                "duplicate": "it has the bytes of an earlier file: nothing of it is loaded",
            }.get(status, status)
            raise CdvError(
                f"file {file_id} ({name}) is {status}, not held: there is nothing to accept ({what}); "
                "nothing was changed",
                "only a held export can be accepted: `cdv-etl files` lists them (status held)",
            )
        before = _partner_figures(c, partner)
        message = (
            f"loaded: accepted after being held — it withdrew {row[4]} operations and {euros(row[5])} engaged "
            f"of file {row[3]}" + _control_note(row[6], row[7])
        )
        c.execute(
            # From now on it is in the figures: loaded_at is when (financing_as_of reads it).
            "UPDATE files SET status = 'loaded', accepted_at = current_timestamp, loaded_at = current_timestamp, "
            "message = ? WHERE file_id = ?",
            [message, file_id],
        )
        after = _partner_figures(c, partner)
        return AcceptResult(file_id, name, partner, before, after, message)

    # An UPDATE of files: it conflicts with any other writer's insert into the ledger, and is retried.
    return in_transaction(con, unit, what=f"acceptance of file {file_id}")

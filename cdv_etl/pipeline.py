"""The data's way, end to end: read → validate → load → publish.

``Pipeline`` holds the warehouse connection for a run (one writer at a time) and ingests
files one after the other; the CLI and the Prefect flows both drive it.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cdv_etl.config import Settings
from cdv_etl.errors import BeingLoaded, CdvError, FileRejected, SpecError
from cdv_etl.faults import checkpoint
from cdv_etl.load.claims import SPEC_REJECTIONS, Claim, Decision, claim_new, claimant, decide, release, serialise
from cdv_etl.load.loader import (
    AcceptResult,
    LoadResult,
    ReferenceChanged,
    accept_export,
    load_export,
    record_rejected,
    write_duplicate,
    write_rejected,
)
from cdv_etl.load.reference import ReferenceResult, current_reference, load_reference, reference_codes
from cdv_etl.load.transactions import in_transaction
from cdv_etl.load.warehouse import connect, migrate, sync_partners, writer_lock
from cdv_etl.publish.snapshot import is_stale, publish
from cdv_etl.read import FileStat, RawExport, check_size, extraction_date, read_export, sha256_of
from cdv_etl.read.sandbox import reader_connection
from cdv_etl.specs import BrokenSpec, PartnerSpec, Specs, load_specs, recognise
from cdv_etl.validate.parse import build_canonical

if TYPE_CHECKING:
    from cdv_etl.validate.outputs import Outputs

_log = logging.getLogger("cdv_etl")

# CDV_MEMORY_LIMIT is what the whole run may use. Two DuckDB instances share it (the reader
# parses the file, the warehouse takes the validated rows from a Parquet file), and Python
# keeps the rest for the interpreter, pandas and pandera (~320 MiB at 250k-row chunks).
READER_SHARE = 0.4
WAREHOUSE_SHARE = 0.25
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def share_of(limit: str, share: float) -> str:
    """``share`` of a DuckDB memory size ("1GB", "512MiB"), as a DuckDB memory size."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", limit)
    if not m or m.group(2).lower() not in _UNITS | {"": 1}:
        return limit
    size = float(m.group(1)) * _UNITS.get(m.group(2).lower(), 1)
    return f"{max(int(size * share) // 1024**2, 64)}MiB"


VALIDATION_MODULES = ("schemas.raw", "cdv_etl.validate.rules", "cdv_etl.validate.outputs")
"""The validation stack (Pandera, Polars, pandas, PyArrow: ~1.6 s of imports), imported when a
file is to be read, not when this module is: a run with nothing new never needs it."""

_warm_up: threading.Thread | None = None


def warm_up_validation(spec: PartnerSpec) -> None:
    """Import the validation stack in a background thread, while this one hashes, decodes and
    reads the file (hashing and DuckDB release the GIL). Pandera's Polars backend registers
    its checks at its first validation: the spec's own header, checked there, does that too.
    A failure is not kept: the stages that need these modules import them again, and raise it."""
    global _warm_up
    if _warm_up is not None or all(m in sys.modules for m in VALIDATION_MODULES):
        return

    def work() -> None:
        with suppress(Exception):
            for name in VALIDATION_MODULES:
                importlib.import_module(name)
            sys.modules["schemas.raw"].missing_columns(spec, spec.required_columns)

    # Not a daemon: the interpreter never exits in the middle of an import.
    _warm_up = threading.Thread(target=work, name="cdv-warm-up", daemon=False)
    _warm_up.start()


def _warmed_up() -> None:
    """Wait for the warm-up: two threads importing the same modules could deadlock."""
    if _warm_up is not None:
        _warm_up.join()


Progress = Callable[[str], None]
"""Called with a short description of each step (for progress bars and artifacts)."""

REVALIDATIONS = 3
"""How many times a file is validated when other writers keep changing the reference meanwhile."""


def read_and_validate(
    reader: duckdb.DuckDBPyConnection,
    path: Path,
    spec: PartnerSpec,
    workdir: Path,
    *,
    communes: frozenset[str],
    max_file_mb: float,
    today: date,
    step: Progress = lambda _msg: None,
) -> tuple[RawExport, Outputs, date]:
    """Read and validate one file in the reader sandbox, or raise FileRejected.

    The ingest and the dry run (``cdv-etl spec check``) both go this way: what a dry run
    shows is what a load does.
    """
    check_size(path, max_file_mb)
    step(f"{path.name}: reading ({spec.partner})")
    raw = read_export(reader, path.resolve(), spec, workdir)
    checkpoint("read")
    # Imported here, not above: the file is read while they load (``warm_up_validation``).
    _warmed_up()
    from cdv_etl.validate.outputs import build_outputs
    from cdv_etl.validate.rules import find_failures
    from schemas.canonical import RuleContext
    from schemas.raw import missing_columns

    missing = missing_columns(spec, raw.columns)
    if missing:
        raise FileRejected(
            "missing_columns",
            f"{path.name}: required column(s) missing: "
            f"{', '.join(repr(c) for c in missing)} (found: "
            f"{', '.join(repr(c) for c in raw.columns)}); nothing was loaded",
            f"ask the partner for the usual columns, or update the mapping in schemas/partners/{spec.partner}.yaml",
        )
    extracted = extraction_date(path, spec, raw, today)
    step(f"{path.name}: validating {raw.rows_read} rows")
    canonical = build_canonical(reader, spec, workdir)
    ctx = RuleContext(
        communes=communes,
        extraction_date=extracted,
        statuses=frozenset(spec.status_counts()),
        has_date="engagement_date" in spec.fields,
        has_year="year" in spec.fields,
        names_instrument="instrument" in spec.fields,
    )
    failures = find_failures(canonical, ctx)
    return raw, build_outputs(reader, spec, failures, extracted, canonical), extracted


class Pipeline:
    """One run against the warehouse: opened once, files ingested one at a time."""

    def __init__(self, settings: Settings, con: duckdb.DuckDBPyConnection, specs: dict[str, PartnerSpec]) -> None:
        self.settings = settings
        self.con = con
        self.specs = specs if isinstance(specs, Specs) else Specs(specs)
        self.changed = False

    # -- reference ---------------------------------------------------------------------
    def load_reference(self, path: Path, *, vintage: str | date | None = None, force: bool = False) -> ReferenceResult:
        """Make ``path`` the current reference and revalidate the loaded exports against it
        (``cdv_etl.load.reference.load_reference``: refused when undated, or older unless ``force``)."""
        _warmed_up()  # its revalidation imports the validation stack too
        result = load_reference(self.con, path, self.specs, vintage=vintage, force=force)
        self.changed |= result.changed
        return result

    # -- exports -----------------------------------------------------------------------
    def spec_for(self, path: Path, partner: str | None) -> PartnerSpec | BrokenSpec | None:
        """The file's spec: named, or recognised from its name; a broken spec when that one is invalid."""
        if partner is not None:
            if partner in self.specs:
                return self.specs[partner]
            broken = self.specs.broken_for(partner=partner)
            if broken is None:
                raise SpecError(f"unknown partner {partner!r}", f"known partners: {', '.join(sorted(self.specs))}")
            return broken
        return recognise(path.name, self.specs) or self.specs.broken_for(file_name=path.name)

    def known_sha(self, stat: FileStat) -> str | None:
        """The hash of a ledger file that looked exactly like this on disk, if any.

        Same device, inode, size, modification and change times: the same bytes, recognised
        without reading them (a 5M-row export takes 0.27 s to hash). A copy, a rewrite or a
        touch changes one of them, and the file is hashed again.
        """
        row = self.con.execute(
            "SELECT sha256 FROM files WHERE stat_device = ? AND stat_inode = ? AND size_bytes = ? "
            "AND stat_mtime_ns = ? AND stat_ctime_ns = ? AND sha256 NOT LIKE 'not-hashed:%' "
            "ORDER BY file_id DESC LIMIT 1",
            [stat.device, stat.inode, stat.size, stat.mtime_ns, stat.ctime_ns],
        ).fetchone()
        return str(row[0]) if row else None

    def ingest(
        self,
        path: Path,
        *,
        partner: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
        today: date | None = None,
    ) -> LoadResult:
        """Ingest one file. Bad input ends in a ``rejected`` result, never an exception."""
        step = progress or (lambda _msg: None)
        path = Path(path)
        step(f"{path.name}: checking")
        spec = self.spec_for(path, partner)
        stat = FileStat.of(path)
        size = stat.size
        if size > self.settings.max_file_mb * 1024 * 1024:
            # Refused unread: not even hashed. The ledger key stands in for the hash, so the
            # same oversized file seen again is recognised without reading it.
            sha = f"not-hashed:{size}:{stat.mtime_ns // 1_000_000_000}"
        else:
            sha = self.known_sha(stat) or ""
            if not sha:  # bytes not seen as this file: likely to be read
                if isinstance(spec, PartnerSpec):
                    warm_up_validation(spec)
                sha = sha256_of(path)
        decision = self._decide(sha, path, spec, force)
        if decision.action == "already":  # nothing new: no write at all
            assert decision.file_id is not None
            return self._already(path, decision.file_id)
        if decision.action == "busy":
            raise self._being_loaded(path, decision)
        claim = self._claim(path, sha, stat, spec, force)
        if isinstance(claim, LoadResult):
            return claim
        assert isinstance(spec, PartnerSpec), "a file its spec refuses is recorded by its claim"
        try:
            return self._read_and_load(path, sha, stat, spec, claim, force, step, today or date.today())
        except BaseException:
            self._release(claim)
            raise

    def _decide(self, sha: str, path: Path, spec: PartnerSpec | BrokenSpec | None, force: bool) -> Decision:
        return decide(
            self.con,
            sha=sha,
            file_name=path.name,
            loadable=isinstance(spec, PartnerSpec),
            force=force,
            timeout_s=self.settings.claim_timeout_s,
        )

    def _claim(
        self, path: Path, sha: str, stat: FileStat, spec: PartnerSpec | BrokenSpec | None, force: bool
    ) -> Claim | LoadResult:
        """The claim transaction: the ledger's decision taken again, serialised with every other
        writer's (``cdv_etl.load.claims``), and its file id taken. A duplicate, or a file its spec
        refuses, is written whole here; a file to read is claimed (``Claim``): nothing else is
        written until its load."""
        rejection = self._spec_rejection(path, spec)
        partner = spec.partner if spec else None

        def unit(con: duckdb.DuckDBPyConnection) -> tuple[Decision, Claim | None]:
            serialise(con)
            d = self._decide(sha, path, spec, force)
            if d.action in ("already", "busy"):
                return d, None
            if d.action == "duplicate":
                assert d.file_id is not None and d.original_name is not None
                claim = claim_new(con, sha=sha, file_name=path.name, stale=())
                write_duplicate(
                    con,
                    claim,
                    partner=partner or d.original_partner,
                    path=path,
                    sha=sha,
                    size=stat.size,
                    original_id=d.file_id,
                    original_name=d.original_name,
                    stat=stat,
                )
                return d, claim
            if d.file_id is not None:
                claim = Claim(d.file_id, replaces=True, by=claimant())
            else:
                claim = claim_new(con, sha=sha, file_name=path.name, stale=d.stale)
            if rejection is not None:
                write_rejected(
                    con,
                    claim,
                    partner=partner,
                    path=path,
                    sha=sha,
                    size=stat.size,
                    reason=rejection.reason,
                    message=str(rejection),
                    stat=stat,
                    forced=force,
                )
            return d, claim

        decision, claim = in_transaction(self.con, unit, what=f"claim of {path.name}")
        if decision.action == "already":
            assert decision.file_id is not None
            return self._already(path, decision.file_id)
        if decision.action == "busy":
            raise self._being_loaded(path, decision)
        assert claim is not None
        self.changed = self.changed or decision.action == "duplicate" or rejection is not None
        if decision.action == "duplicate":
            return self._already(path, claim.file_id, already=False)
        if rejection is not None:
            return self._rejected(path, partner, claim.file_id, rejection)
        checkpoint("claimed")
        return claim

    def _being_loaded(self, path: Path, decision: Decision) -> BeingLoaded:
        assert decision.in_flight is not None
        return BeingLoaded(
            f"{path.name}: the same bytes are being loaded by another writer, as "
            f"{decision.in_flight.describe()}; nothing changed",
            "ingest it again once that load is done: it is then recorded as a duplicate",
        )

    def _spec_rejection(self, path: Path, spec: PartnerSpec | BrokenSpec | None) -> FileRejected | None:
        """Why the specs refuse the file unread, if they do."""
        if isinstance(spec, BrokenSpec):
            return FileRejected(
                "spec_invalid",
                f"{path.name}: not read, its partner's spec is invalid — {spec.error.message}",
                "fix the spec (cdv-etl specs lists the problems), then ingest the file again: no --force needed",
            )
        if spec is None:
            return FileRejected(
                "unknown_partner",
                f"{path.name}: no partner spec recognises this file name",
                f"pass --partner ({', '.join(sorted(self.specs))}) or add a spec under schemas/partners/",
            )
        return None

    def _release(self, claim: Claim) -> None:
        """A claimed file whose run failed gives its claim back: its bytes may be ingested again at once."""
        try:
            in_transaction(self.con, lambda con: release(con, claim), what=f"release of file {claim.file_id}'s claim")
        except Exception as exc:  # the failure itself goes up; the claim goes stale with this process
            _log.warning("could not give back the claim of file %s: %s", claim.file_id, exc)

    def _read_and_load(
        self,
        path: Path,
        sha: str,
        stat: FileStat,
        spec: PartnerSpec,
        claim: Claim,
        force: bool,
        step: Progress,
        today: date,
    ) -> LoadResult:
        """Read and validate a claimed file in the reader sandbox, then load it (or record its rejection).

        Validated again when another writer changed the reference meanwhile (its rows must be judged
        against the current list of communes)."""
        for _ in range(REVALIDATIONS - 1):
            with suppress(ReferenceChanged):
                return self._read_and_load_once(path, sha, stat, spec, claim, force, step, today)
            step(f"{path.name}: the reference changed meanwhile, validating again")
        return self._read_and_load_once(path, sha, stat, spec, claim, force, step, today)

    def _read_and_load_once(
        self,
        path: Path,
        sha: str,
        stat: FileStat,
        spec: PartnerSpec,
        claim: Claim,
        force: bool,
        step: Progress,
        today: date,
    ) -> LoadResult:
        reference = current_reference(self.con)  # before its codes: a change in between is seen at the load
        with tempfile.TemporaryDirectory(prefix="cdv-") as tmp:
            reader = reader_connection(
                path, Path(tmp), share_of(self.settings.memory_limit, READER_SHARE), excel=spec.format.type == "xlsx"
            )
            try:
                checked = self._read_validate(reader, path, spec, sha, stat, Path(tmp), claim, force, step, today)
            finally:
                # The reader's memory (the file's cells) is given back before the warehouse
                # takes the rows: at 5M rows the two together went past 1 GiB.
                reader.close()
            if isinstance(checked, LoadResult):
                return checked
            raw, outputs, extracted = checked
            checkpoint("validated")
            step(f"{path.name}: loading")
            result = load_export(
                self.con,
                claim=claim,
                spec=spec,
                path=path,
                sha=sha,
                size=stat.size,
                extraction_date=extracted,
                raw=raw,
                outputs=outputs,
                stat=stat,
                forced=force,
                reference_load_id=reference,
            )
            self.changed = True
            return result

    def _read_validate(
        self,
        reader: duckdb.DuckDBPyConnection,
        path: Path,
        spec: PartnerSpec,
        sha: str,
        stat: FileStat,
        workdir: Path,
        claim: Claim,
        forced: bool,
        step: Progress,
        today: date,
    ) -> LoadResult | tuple[RawExport, Outputs, date]:
        """Read and validate in the reader sandbox: a rejection, or what the loader needs."""
        try:
            return read_and_validate(
                reader,
                path,
                spec,
                workdir,
                communes=reference_codes(self.con),
                max_file_mb=self.settings.max_file_mb,
                today=today,
                step=step,
            )
        except FileRejected as exc:
            record_rejected(
                self.con,
                claim,
                partner=spec.partner,
                path=path,
                sha=sha,
                size=stat.size,
                reason=exc.reason,
                message=str(exc),
                stat=stat,
                forced=forced,
            )
            self.changed = True
            return self._rejected(path, spec.partner, claim.file_id, exc)

    def _already(self, path: Path, file_id: int, already: bool = True) -> LoadResult:
        row = self.con.execute(
            "SELECT partner, status, rows_read, rows_loaded, rows_quarantined, "
            "loaded_amount_eur, engaged_amount_eur, control_total_eur, control_total_diff_eur, "
            "extraction_date, reason, message, duplicate_of FROM files WHERE file_id = ?",
            [file_id],
        ).fetchone()
        assert row is not None
        status = "duplicate" if already and row[1] == "loaded" else str(row[1])
        if not already:
            message = str(row[11])
        elif row[1] == "held":
            message = (
                f"already held as file {file_id}; nothing changed (the current figures stay as they are): "
                f"check the export with the partner; to make it current: cdv-etl accept {file_id}"
            )
        elif row[1] == "rejected" and row[10] in SPEC_REJECTIONS:
            message = (
                f"already rejected as file {file_id} ({row[10]}); nothing changed "
                "(add or fix its partner's spec, or pass --partner, then ingest it again)"
            )
        else:
            message = (
                f"already ingested as file {file_id} ({row[1]}); nothing changed "
                "(use --force to re-ingest after a spec fix)"
            )
        return LoadResult(
            file_name=path.name,
            partner=row[0],
            status=status,
            file_id=file_id,
            rows_read=row[2],
            rows_loaded=row[3],
            rows_quarantined=row[4],
            loaded_amount_eur=row[5],
            engaged_amount_eur=row[6],
            control_total_eur=row[7],
            control_total_diff_eur=row[8],
            extraction_date=row[9],
            reason=row[10],
            message=message,
            already_recorded=already,
        )

    def _rejected(self, path: Path, partner: str | None, file_id: int, exc: FileRejected) -> LoadResult:
        message = str(exc)
        return LoadResult(path.name, partner, "rejected", file_id=file_id, reason=exc.reason, message=message)

    # -- held exports ------------------------------------------------------------------
    def accept(self, file_id: int) -> AcceptResult:
        """Make a held export loaded (current when it is its partner's latest): ``accept_export``."""
        result = accept_export(self.con, file_id)
        self.changed = True
        return result

    # -- publish -----------------------------------------------------------------------
    def publish(self) -> Path | None:
        return publish(self.con, self.settings.warehouse, self.settings.published_path)


@contextmanager
def open_pipeline(
    settings: Settings, *, need_reference: bool = True, publish_on_exit: bool = True
) -> Iterator[Pipeline]:
    """Open the warehouse for writing (waiting for the lock), migrate it, sync the specs.

    On leaving, a run that changed something publishes the read-only copy for analysts
    (unless ``publish_on_exit`` is False: a nightly run publishes once, at its end).

    A DuckLake takes several writers at once: no lock is taken (the claims serialise what must
    be, ``cdv_etl.load.claims``), and nothing is published (readers attach the lake itself).
    """
    specs = load_specs(settings.specs_dir)
    lake = settings.lake is not None
    with nullcontext() if lake else writer_lock(settings.warehouse, settings.lock_timeout_s):
        con = connect(
            settings.backend,
            timeout_s=settings.lock_timeout_s,
            memory_limit=share_of(settings.memory_limit, WAREHOUSE_SHARE),
        )
        # A run that writes publishes, and publishing checkpoints. A commit over 1 MB (a load's
        # rows and quarantine: 13 MB at 1M rows) checkpoints at once instead, and DuckDB then
        # skips its WAL: the rows are written once, into the warehouse file, not into the WAL
        # and again by the publish's CHECKPOINT. Committed is still durable (the checkpoint
        # ends before COMMIT returns); a crash during it leaves the warehouse as it was.
        con.execute("SET checkpoint_threshold = '1MB'")
        try:
            yield from _run(settings, con, specs, need_reference, publish_on_exit and not lake)
        finally:
            con.close()


def _run(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    specs: dict[str, PartnerSpec],
    need_reference: bool,
    publish_on_exit: bool,
) -> Iterator[Pipeline]:
    upgraded = bool(migrate(con))
    sync_partners(con, specs)
    pipe = Pipeline(settings, con, specs)
    pipe.changed = upgraded  # new views or tables reach the analysts' copy at once
    if need_reference:
        count = con.execute("SELECT count(*) FROM communes").fetchone()
        if not count or count[0] == 0:
            raise CdvError(
                f"the warehouse {settings.backend.display} has no ACV reference communes yet: "
                "every row would be quarantined",
                "load the ANCT list first: cdv-etl reference load FILE "
                "(or `cdv-etl reference load --sample` for the bundled sample)",
            )
    yield pipe
    if publish_on_exit and (pipe.changed or is_stale(con, settings.published_path)):
        pipe.publish()


def accept_held(settings: Settings, file_id: int) -> AcceptResult:
    """``cdv-etl accept`` and the ``accept-export`` flow: accept a held export, then publish."""
    with open_pipeline(settings, need_reference=False) as pipe:
        return pipe.accept(file_id)


def ingest_files(
    settings: Settings,
    paths: Sequence[Path],
    *,
    partner: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> list[LoadResult]:
    with open_pipeline(settings) as pipe:
        return [pipe.ingest(p, partner=partner, force=force, progress=progress) for p in paths]

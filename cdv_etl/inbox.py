"""An inbox run, end to end: a new ANCT reference first, then each export, each file moved to
``archive/<partner>/`` or ``rejected/``, the publish, the HTML report, the feedback workbooks
of the partners whose rows were rejected, and a summary.

No Prefect here: the command line runs it as it is. The nightly flow passes the same steps
wrapped as Prefect tasks (``Steps``), so the order and the rules of a run are written once.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.backend import DuckLake, parse_warehouse
from cdv_etl.load.loader import NEEDS_ATTENTION, LoadResult
from cdv_etl.load.reference import ReferenceResult
from cdv_etl.load.warehouse import writer_lock

if TYPE_CHECKING:
    from cdv_etl.pipeline import Progress

# The pipeline (pandas, pandera, the readers) is imported by the steps that use it: a night
# with nothing new never loads it.

REFERENCE_FILE = re.compile(r"acv_communes.*\.(geojson|json|csv)$", re.IGNORECASE)
"""Files of the inbox that are a new ANCT reference rather than a partner export."""

LEFT_IN_INBOX = "left in the inbox"
"""Where a file whose ingest raised stays (``moved_to`` in plain data)."""

NEXT_STEP = {
    "rejected": "fix the file with its partner (or fix its partner spec), then ingest it again",
    "held": "check what it withdraws with the partner, then make it current with `cdv-etl accept FILE_ID` "
    "(its file id is shown beside its name) or the accept-export deployment",
    "failed": "fix the cause named, then run the nightly again (the file is still in the inbox)",
}
"""What to do about a file that needs attention: one of NEEDS_ATTENTION, or failed (its ingest raised)."""

RunProgress = Callable[[int, int, str], None]
"""Called with (files done, files in all, what is happening): a progress bar, a progress artifact."""


# -- the steps: each one unit of work, opening the warehouse itself (the run's lock is re-entrant) --
def ingest_file(
    settings: Settings, path: Path, partner: str | None = None, force: bool = False, progress: Progress | None = None
) -> LoadResult:
    """Read, validate and load one export (one transaction); bad input ends 'rejected'."""
    from cdv_etl.pipeline import open_pipeline

    with open_pipeline(settings, publish_on_exit=False) as pipe:
        return pipe.ingest(path, partner=partner, force=force, progress=progress)


def load_reference(settings: Settings, path: Path, vintage: str | None = None, force: bool = False) -> ReferenceResult:
    """Load a new vintage of the ANCT list of ACV communes and revalidate the loaded exports against
    it; refused (ReferenceRefused, nothing changed) when undated, or older than the current one
    unless ``force``. Its ``vintage`` is given, or the date in its name."""
    from cdv_etl.pipeline import open_pipeline

    with open_pipeline(settings, need_reference=False, publish_on_exit=False) as pipe:
        return pipe.load_reference(path, vintage=vintage, force=force)


def publish(settings: Settings) -> Path:
    """Replace the analysts' read-only copy of the warehouse, atomically."""
    from cdv_etl.pipeline import open_pipeline

    with open_pipeline(settings, need_reference=False, publish_on_exit=False) as pipe:
        published = pipe.publish()
    if published is None:  # ``run_inbox`` publishes a DuckDB file only
        raise CdvError(
            f"the lake {settings.backend} has no published copy: its readers attach it (nothing is copied)",
            "read the lake with cdv-etl sql, report or export",
        )
    return published


def _free_name(target: Path) -> Path:
    if not target.exists():
        return target
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
    return target.with_name(f"{target.stem}.{stamp}{target.suffix}")


def move_file(path: Path, folder: Path, reason: str | None = None) -> Path:
    """Move a processed file to ``folder`` (never overwriting); a reason file goes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder / path.name)
    shutil.move(str(path), target)
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target


class ReferenceStep(Protocol):
    def __call__(
        self, settings: Settings, path: Path, vintage: str | None = None, force: bool = False
    ) -> ReferenceResult: ...


class IngestStep(Protocol):
    def __call__(
        self,
        settings: Settings,
        path: Path,
        partner: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> LoadResult: ...


def in_threads(
    work: Callable[[list[Path]], list[FileOutcome]], groups: list[list[Path]], workers: int
) -> list[list[FileOutcome]]:
    """Run ``work`` on each group in a pool of ``workers`` threads (each in a copy of the caller's
    context, so a Prefect run's logger and artifacts work there too); the results in the groups' order."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cdv-writer") as pool:
        futures = [pool.submit(contextvars.copy_context().run, work, g) for g in groups]
        return [f.result() for f in futures]


FanOut = Callable[[Callable[[list[Path]], list["FileOutcome"]], list[list[Path]], int], list[list["FileOutcome"]]]
"""Runs a function on each group of exports, ``workers`` at a time; the results in the groups' order."""


@dataclass(frozen=True)
class Steps:
    """The units of work of a run: these plain functions, or the flow's Prefect tasks around them."""

    reference: ReferenceStep = load_reference
    ingest: IngestStep = ingest_file
    move: Callable[[Path, Path, str | None], Path] = move_file
    publish: Callable[[Settings], Path] = publish
    fan_out: FanOut = in_threads
    """How a lake's partner groups run side by side: threads here, the flow's task runner in Prefect."""


# -- the results --------------------------------------------------------------------------------
def result_dict(r: LoadResult) -> dict[str, Any]:
    """A load result as plain data (amounts and dates as text): for artifacts and flow results."""
    d = dataclasses.asdict(r)
    d["control_total_ok"] = r.control_total_ok
    for k, v in d.items():
        if isinstance(v, Decimal):
            d[k] = str(v)
        elif hasattr(v, "isoformat"):
            d[k] = v.isoformat()
    return d


@dataclass(frozen=True)
class FileOutcome:
    """One export of the run: its load result and where the file went, or why it stayed."""

    file_name: str
    result: LoadResult | None
    """None when the ingest raised (a crash, not a rejection): see ``error``."""
    moved_to: Path | None
    """None when the file was left in the inbox."""
    error: str | None = None

    @property
    def status(self) -> str:
        """A load status (loaded, duplicate, held, rejected), or failed (the ingest raised)."""
        return self.result.status if self.result else "failed"

    @property
    def line(self) -> str:
        """What became of it, in a few words: « x.csv: loaded, moved to archive/… »."""
        where = f"moved to {self.moved_to}" if self.moved_to else LEFT_IN_INBOX
        return f"{self.file_name}: {self.status}, {where}"

    @property
    def needs_attention(self) -> bool:
        """Rejected or held (it changed no figure), or failed: someone must act."""
        return self.status in NEEDS_ATTENTION or self.result is None

    @property
    def ledger_tag(self) -> str:
        """« (file 12) », its id in the ledger (``cdv-etl files``), or nothing when it has none."""
        return f" (file {self.result.file_id})" if self.result and self.result.file_id else ""

    @property
    def reason(self) -> str:
        """Its message on one line: the load's (why it was rejected or held), or the ingest's error."""
        text = self.result.message if self.result else self.error
        return " ".join((text or "").split())

    def as_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {"file_name": self.file_name, "status": "failed", "message": self.error, "moved_to": LEFT_IN_INBOX}
        return {**result_dict(self.result), "moved_to": str(self.moved_to)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileOutcome:
        if d["status"] == "failed":
            return cls(d["file_name"], None, None, d["message"])
        return cls(d["file_name"], LoadResult.from_dict(d), Path(d["moved_to"]))


@dataclass(frozen=True)
class InboxRun:
    """What a run did: the references, each export, the published copy and the report."""

    references: list[ReferenceResult]
    files: list[FileOutcome]
    published: Path | DuckLake
    """What analysts read: the published copy of a DuckDB file, or the lake itself."""
    report: Path | None
    """The HTML report written by this run; None when nothing was published."""
    feedback: dict[str, Path] = field(default_factory=dict)
    """Partner → the feedback workbook written beside the report (``write_feedback``)."""
    counts: Counter[str] = field(init=False)
    """Exports per status (loaded, duplicate, held, rejected, failed)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", Counter(f.status for f in self.files))

    @property
    def results(self) -> list[LoadResult]:
        """The load results of the exports processed (not those that failed)."""
        return [f.result for f in self.files if f.result]

    @property
    def failures(self) -> list[FileOutcome]:
        return [f for f in self.files if f.result is None]

    @property
    def attention(self) -> list[FileOutcome]:
        """The exports someone must look at (``FileOutcome.needs_attention``)."""
        return [f for f in self.files if f.needs_attention]

    def summary_line(self) -> str:
        c = self.counts
        return (
            f"{len(self.references)} reference(s), {c['loaded']} file(s) loaded, {c['duplicate']} duplicate, "
            + (f"{c['held']} held, " if c["held"] else "")
            + f"{c['rejected']} rejected, {c['failed']} failed"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data: what the nightly flow returns."""
        return {
            "references": [r.as_dict() for r in self.references],
            "files": [f.as_dict() for f in self.files],
            "published": self.published.display if isinstance(self.published, DuckLake) else str(self.published),
            "report": str(self.report) if self.report else None,
            "feedback": {p: str(path) for p, path in self.feedback.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InboxRun:
        return cls(
            [ReferenceResult.from_dict(r) for r in d["references"]],
            [FileOutcome.from_dict(f) for f in d["files"]],
            _read_target(d["published"]),
            Path(d["report"]) if d["report"] else None,
            {p: Path(path) for p, path in d.get("feedback", {}).items()},
        )


def _read_target(text: str) -> Path | DuckLake:
    """``InboxRun.published`` back from its plain data (a lake's as shown: its password masked)."""
    if text.startswith("ducklake:"):
        lake = parse_warehouse(text)
        assert isinstance(lake, DuckLake)
        return lake
    return Path(text)


class NeedsAttention(CdvError):
    """Exports that were rejected or held, or failed: each with its reason, then what to do.

    The message of a Prefect run that does not end green. ``run``: the nightly run they belong
    to (what the nightly flow fails with when no ingest raised, so that a caller in the same
    process, the command line, still gets the run's results)."""

    def __init__(self, files: list[FileOutcome], *, of: int, run: InboxRun | None = None) -> None:
        lines = [f"{f.file_name}{f.ledger_tag} — {f.status}: {f.reason}" for f in files]
        if of > 1:
            others = "; the others went through" if len(files) < of else ""
            head = f"{len(files)} of {of} exports need attention (they changed no figure{others}):"
            lines = [head, *(f"- {line}" for line in lines)]
        super().__init__("\n".join(lines), "; ".join(NEXT_STEP[s] for s in sorted({f.status for f in files})))
        self.run = run

    @classmethod
    def of_run(cls, run: InboxRun) -> NeedsAttention:
        return cls(run.attention, of=len(run.files), run=run)


class InboxFailed(CdvError):
    """Some exports could not be processed (their ingest raised); ``run`` says what was done."""

    def __init__(self, run: InboxRun) -> None:
        details = "; ".join(f"{f.file_name}: {f.error}" for f in run.failures)
        super().__init__(
            f"{len(run.failures)} file(s) could not be processed and were left in the inbox: {details}",
            "fix the cause named above and run the nightly again; the other files were processed and moved",
        )
        self.run = run


# -- the run ------------------------------------------------------------------------------------
def inbox_files(inbox: Path) -> tuple[list[Path], list[Path]]:
    """(reference files, exports) waiting in the inbox, oldest first; hidden files skipped."""
    if not inbox.is_dir():
        return [], []
    files = sorted(
        (
            p
            for p in inbox.iterdir()
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".reason.txt")
        ),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    refs = [p for p in files if REFERENCE_FILE.search(p.name)]
    return refs, [p for p in files if p not in refs]


def published_is_stale(settings: Settings) -> bool:
    """Whether the analysts' copy lags the warehouse (a run killed before publishing)."""
    import duckdb

    from cdv_etl.publish.snapshot import is_stale

    if not settings.warehouse.exists():
        return True
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return is_stale(con, settings.published_path)
    finally:
        con.close()


def reports_dir(settings: Settings) -> Path:
    """Where the steering committee's HTML reports go: ``CDV_REPORTS``, or ``reports/`` beside the warehouse."""
    return settings.reports or settings.warehouse.parent / "reports"


def write_report(published: Path | DuckLake, folder: Path) -> Path | None:
    """The steering committee's HTML report of the published copy (or the lake): a dated file and
    ``latest.html``."""
    from cdv_etl.publish.reader import readable
    from cdv_etl.publish.report import build_report

    if not readable(published):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    html = build_report(published)
    path = folder / f"report-{datetime.now():%Y-%m-%d_%H%M%S}.html"
    path.write_text(html, encoding="utf-8")
    (folder / "latest.html").write_text(html, encoding="utf-8")
    return path


def write_feedback(published: Path | DuckLake, folder: Path, partners: set[str] | None) -> dict[str, Path]:
    """A feedback workbook (``cdv_etl.publish.feedback``) for each of ``partners`` (None: every
    partner) whose current export has rejected rows, in ``folder``: ``rejets_<partner>_<when>.xlsx``."""
    from cdv_etl.publish import feedback as fb
    from cdv_etl.publish.reader import read_only, readable

    if not readable(published):
        return {}
    stamp = f"{datetime.now():%Y-%m-%d_%H%M%S}"
    with read_only(published) as con:
        found = [fb.feedback(con, p) for p in fb.partners_with_rejections(con) if partners is None or p in partners]
    return {f.partner: fb.write(f, folder / f"rejets_{f.partner}_{stamp}.xlsx") for f in found}


def _ignore(done: int, total: int, message: str) -> None:
    pass


def _skip(step: ReferenceResult | FileOutcome) -> None:
    pass


def run_inbox(
    settings: Settings,
    *,
    steps: Steps = Steps(),
    progress: RunProgress = _ignore,
    finished: Callable[[ReferenceResult | FileOutcome], None] = _skip,
) -> InboxRun:
    """Run the inbox once: on a DuckDB file holding the writer lock throughout, on a DuckLake
    loading several partners' exports at once (``Settings.writers``).

    A new ANCT reference first (a reference that fails to load stops the run: the exports would
    be judged against the old one). Then each export, oldest first: a rejected file goes to
    ``rejected/`` with ``<file>.reason.txt`` beside it, a loaded, held or duplicate one to
    ``archive/<partner>/`` (a held export is in the ledger, rows and all: ``cdv-etl accept``
    takes it from there, not from the file); a file whose ingest raised stays in the inbox, and
    the run goes on, then raises ``InboxFailed`` at the end (after publishing what was done).
    On a lake, the exports of different partners load at the same time, each file in its own
    transaction, and one partner's files one after the other, oldest first (each is judged against
    the partner's current export); ``files`` keeps the inbox's order whatever order they finish in.
    ``finished`` is called with each reference's and each export's outcome as soon as it is
    known. When a file was processed or the published copy lags, the warehouse is published (a
    lake has no copy: readers attach it) and the report written, with a feedback workbook beside it
    for each partner with a file loaded this run (every partner, after a new reference) whose
    current export has rejected rows; a night with nothing new changes nothing.
    """
    s = settings
    lake = s.lake is not None
    with nullcontext() if lake else writer_lock(s.warehouse, s.lock_timeout_s):
        refs, exports = inbox_files(s.inbox)
        total = len(refs) + len(exports)
        groups = partner_groups(exports, s) if s.writers > 1 and len(exports) > 1 else [exports]
        at_once = f", {min(s.writers, len(groups))} partners at a time" if len(groups) > 1 else ""
        progress(0, total, f"inbox {s.inbox}: {len(refs)} reference file(s), {len(exports)} export(s){at_once}")
        references: list[ReferenceResult] = []
        for ref in refs:
            progress(len(references), total, f"reference {ref.name}")
            loaded = steps.reference(s, ref)
            references.append(loaded)
            finished(loaded)
            moved = steps.move(ref, s.archive_dir / "reference", None)
            progress(len(references), total, f"{loaded.summary()}; moved to {moved}")
        done = [len(refs)]
        counting = threading.Lock()
        reported: set[int] = set()

        def one(path: Path) -> FileOutcome:  # a file that crashes fails alone
            with counting:
                at = done[0]
            outcome = process_export(s, path, steps, progress=partial(progress, at, total))
            tell(outcome)
            return outcome

        def tell(outcome: FileOutcome) -> None:
            with counting:
                reported.add(id(outcome))
                done[0] += 1
                finished(outcome)
                progress(done[0], total, outcome.line)

        def group(paths: list[Path]) -> list[FileOutcome]:
            return [one(path) for path in paths]

        finishing = steps.fan_out(group, groups, s.writers) if len(groups) > 1 else [group(exports)]
        for outcome in (f for fs in finishing for f in fs if id(f) not in reported):  # loaded elsewhere (a pool)
            tell(outcome)
        outcomes = {path: f for g, fs in zip(groups, finishing, strict=True) for path, f in zip(g, fs, strict=True)}
        files = [outcomes[path] for path in exports]
        report, feedback = None, {}
        target = s.read_target()
        if total or (not lake and published_is_stale(s)):
            if not lake:
                progress(total, total, "publishing")
                target = steps.publish(s)
            progress(total, total, "writing the report")
            report = write_report(target, reports_dir(s))
            touched = {f.result.partner for f in files if f.result and f.result.status == "loaded"}
            renewed = any(r.changed for r in references)  # every current export judged again
            feedback = write_feedback(target, reports_dir(s), None if renewed else {p for p in touched if p})
    run = InboxRun(references, files, target, report, feedback)
    if run.failures:
        raise InboxFailed(run)
    return run


def process_export(
    settings: Settings, path: Path, steps: Steps = Steps(), progress: Progress | None = None
) -> FileOutcome:
    """Ingest one export of the inbox and move it (archive, or rejected with its reason). A file
    whose ingest raised fails alone, left in the inbox."""
    s = settings
    try:
        r = steps.ingest(s, path, progress=progress)
    except Exception as exc:
        return FileOutcome(path.name, None, None, f"{type(exc).__name__}: {exc}")
    if r.status == "rejected":
        moved = steps.move(path, s.rejected_dir, r.message)
    else:
        moved = steps.move(path, s.archive_dir / (r.partner or "unknown"), None)
    return FileOutcome(path.name, r, moved)


def partner_groups(exports: list[Path], settings: Settings) -> list[list[Path]]:
    """The exports by partner (as their specs recognise their names), in the inbox's order within
    each partner: the units a lake loads side by side. A file no spec claims is a group of its own
    (its ingest rejects it, saying why)."""
    from cdv_etl.errors import SpecError
    from cdv_etl.specs import load_specs, recognise

    specs = load_specs(settings.specs_dir)
    groups: dict[str, list[Path]] = {}
    for path in exports:
        try:
            spec = recognise(path.name, specs)
        except SpecError:
            spec = None
        groups.setdefault(spec.partner if spec else f"?{path.name}", []).append(path)
    return list(groups.values())


def existing_file(path: Path, what: str) -> Path:
    """``path``, when it is a file; otherwise a ``CdvError`` saying so (a path typed by hand in a form)."""
    if not path.is_file():
        found = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CdvError(
            f"{what} {path} {found} (on the machine that runs the flow)",
            "check the path (an absolute path on that machine, with the file's extension), then start the run again",
        )
    return path


def ingest_one(
    settings: Settings, path: Path, *, partner: str | None = None, force: bool = False, steps: Steps = Steps()
) -> tuple[LoadResult, Path]:
    """One export given by hand (left where it is), then publish: (its result, the published copy)."""
    existing_file(path, "the export")
    with writer_lock(settings.warehouse, settings.lock_timeout_s):
        result = steps.ingest(settings, path, partner, force)
        return result, steps.publish(settings)


def refresh_reference(
    settings: Settings,
    path: Path,
    *,
    vintage: str | None = None,
    force: bool = False,
    steps: Steps = Steps(),
) -> tuple[ReferenceResult, Path]:
    """A new vintage of the ANCT list of ACV communes, the loaded exports revalidated against it
    (the same rules as ``cdv-etl reference load``), then publish."""
    existing_file(path, "the ANCT reference")
    with writer_lock(settings.warehouse, settings.lock_timeout_s):
        result = steps.reference(settings, path, vintage, force)
        return result, steps.publish(settings)

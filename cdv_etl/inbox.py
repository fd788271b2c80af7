"""An inbox run, end to end: a new ANCT reference first, then each export, each file moved to
``archive/<partner>/`` or ``rejected/``, the publish, the HTML report and a summary.

No Prefect here: the command line runs it as it is. The nightly flow passes the same steps
wrapped as Prefect tasks (``Steps``), so the order and the rules of a run are written once.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.loader import LoadResult
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


def load_reference(settings: Settings, path: Path) -> ReferenceResult:
    """Load a new ANCT list of ACV communes (replaces the reference; financing stays)."""
    from cdv_etl.pipeline import open_pipeline

    with open_pipeline(settings, need_reference=False, publish_on_exit=False) as pipe:
        return pipe.load_reference(path)


def publish(settings: Settings) -> Path:
    """Replace the analysts' read-only copy of the warehouse, atomically."""
    from cdv_etl.pipeline import open_pipeline

    with open_pipeline(settings, need_reference=False, publish_on_exit=False) as pipe:
        return pipe.publish()


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


class IngestStep(Protocol):
    def __call__(
        self,
        settings: Settings,
        path: Path,
        partner: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> LoadResult: ...


@dataclass(frozen=True)
class Steps:
    """The units of work of a run: these plain functions, or the flow's Prefect tasks around them."""

    reference: Callable[[Settings, Path], ReferenceResult] = load_reference
    ingest: IngestStep = ingest_file
    move: Callable[[Path, Path, str | None], Path] = move_file
    publish: Callable[[Settings], Path] = publish


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
        """loaded, duplicate, held, rejected, or failed (the ingest raised)."""
        return self.result.status if self.result else "failed"

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
    published: Path
    report: Path | None
    """The HTML report written by this run; None when nothing was published."""
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
            "references": [dataclasses.asdict(r) for r in self.references],
            "files": [f.as_dict() for f in self.files],
            "published": str(self.published),
            "report": str(self.report) if self.report else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InboxRun:
        return cls(
            [ReferenceResult(**r) for r in d["references"]],
            [FileOutcome.from_dict(f) for f in d["files"]],
            Path(d["published"]),
            Path(d["report"]) if d["report"] else None,
        )


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
    """Where the steering committee's HTML reports go: ``reports/`` beside the warehouse."""
    return settings.warehouse.parent / "reports"


def write_report(published: Path, folder: Path) -> Path | None:
    """The steering committee's HTML report of the published copy: a dated file and ``latest.html``."""
    from cdv_etl.publish.report import build_report

    if not published.exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    html = build_report(published)
    path = folder / f"report-{datetime.now():%Y-%m-%d_%H%M%S}.html"
    path.write_text(html, encoding="utf-8")
    (folder / "latest.html").write_text(html, encoding="utf-8")
    return path


def _ignore(done: int, total: int, message: str) -> None:
    pass


def run_inbox(settings: Settings, *, steps: Steps = Steps(), progress: RunProgress = _ignore) -> InboxRun:
    """Run the inbox once, holding the writer lock throughout.

    A new ANCT reference first (a reference that fails to load stops the run: the exports would
    be judged against the old one). Then each export, oldest first: a rejected file goes to
    ``rejected/`` with ``<file>.reason.txt`` beside it, a loaded, held or duplicate one to
    ``archive/<partner>/`` (a held export is in the ledger, rows and all: ``cdv-etl accept``
    takes it from there, not from the file); a file whose ingest raised stays in the inbox, and the run goes on,
    then raises ``InboxFailed`` at the end (after publishing what was done). When a file was
    processed or the published copy lags, the warehouse is published and the report written;
    a night with nothing new changes nothing.
    """
    s = settings
    with writer_lock(s.warehouse, s.lock_timeout_s):
        refs, exports = inbox_files(s.inbox)
        total = len(refs) + len(exports)
        progress(0, total, f"inbox {s.inbox}: {len(refs)} reference file(s), {len(exports)} export(s)")
        references: list[ReferenceResult] = []
        for ref in refs:
            progress(len(references), total, f"reference {ref.name}")
            loaded = steps.reference(s, ref)
            references.append(loaded)
            moved = steps.move(ref, s.archive_dir / "reference", None)
            state = "loaded" if loaded.changed else "unchanged"
            progress(len(references), total, f"reference {ref.name}: {state}, moved to {moved}")
        files: list[FileOutcome] = []
        for path in exports:  # one at a time: one writer; a file that crashes fails alone
            done = len(refs) + len(files)
            try:
                r = steps.ingest(s, path, progress=partial(progress, done, total))
            except Exception as exc:
                files.append(FileOutcome(path.name, None, None, f"{type(exc).__name__}: {exc}"))
                progress(done + 1, total, f"{path.name}: failed, {LEFT_IN_INBOX}")
                continue
            if r.status == "rejected":
                moved = steps.move(path, s.rejected_dir, r.message)
            else:
                moved = steps.move(path, s.archive_dir / (r.partner or "unknown"), None)
            files.append(FileOutcome(path.name, r, moved))
            progress(done + 1, total, f"{path.name}: {r.status}, moved to {moved}")
        report = None
        if total or published_is_stale(s):
            progress(total, total, "publishing")
            published = steps.publish(s)
            progress(total, total, "writing the report")
            report = write_report(published, reports_dir(s))
        else:
            published = s.published_path
    run = InboxRun(references, files, published, report)
    if run.failures:
        raise InboxFailed(run)
    return run


def ingest_one(
    settings: Settings, path: Path, *, partner: str | None = None, force: bool = False, steps: Steps = Steps()
) -> tuple[LoadResult, Path]:
    """One export given by hand (left where it is), then publish: (its result, the published copy)."""
    with writer_lock(settings.warehouse, settings.lock_timeout_s):
        result = steps.ingest(settings, path, partner, force)
        return result, steps.publish(settings)


def refresh_reference(settings: Settings, path: Path, *, steps: Steps = Steps()) -> tuple[ReferenceResult, Path]:
    """A new ANCT list of ACV communes (loaded financing stays), then publish."""
    with writer_lock(settings.warehouse, settings.lock_timeout_s):
        result = steps.reference(settings, path)
        return result, steps.publish(settings)

"""The nightly run: the core's inbox run (``cdv_etl.inbox``) with each step a task, a progress
artifact (when there are files), the run's artifacts and the writers' concurrency slot; one log
line per file, and Failed when a file needs attention (``flows.outcome``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import State

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.inbox import InboxFailed, NeedsAttention, reports_dir, run_inbox
from flows import outcome, tasks
from flows.artifacts import link_feedback, link_report, publish_artifacts
from flows.report_server import report_url

WRITER_LIMIT = "cdv-warehouse-writer"
"""Prefect global concurrency limit (1 slot) held by every flow that writes the warehouse."""
WRITER_SLOTS = 1
"""One writer at a time: the DuckDB file has one writer (its lock is taken inside the slot too)."""


def flow_settings(
    inbox: str | None = None, warehouse: str | None = None, archive: str | None = None, rejected: str | None = None
) -> Settings:
    return Settings.from_env(warehouse or None).with_(
        inbox=Path(inbox) if inbox else None,
        archive=Path(archive) if archive else None,
        rejected=Path(rejected) if rejected else None,
    )


def ensure_writer_limit() -> str | None:
    """Create the writers' global concurrency limit when it is missing, or set it back to one active
    slot; whatever had to change is returned (the caller logs it). Every writing flow calls this, so a
    deployment made by ``prefect deploy --all`` holds the limit as one served by ``cdv-etl serve`` does."""
    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(WRITER_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=WRITER_LIMIT, limit=WRITER_SLOTS)
                )
            except ObjectAlreadyExists:  # another run created it at the same moment
                return None
            return f"created the global concurrency limit {WRITER_LIMIT!r} ({WRITER_SLOTS} slot)"
        if found.limit == WRITER_SLOTS and found.active:
            return None
        client.update_global_concurrency_limit(
            WRITER_LIMIT, GlobalConcurrencyLimitUpdate(limit=WRITER_SLOTS, active=True)
        )
        was = f"{found.limit} slots, {'active' if found.active else 'inactive'}"
        return f"the global concurrency limit {WRITER_LIMIT!r} was {was}: set back to {WRITER_SLOTS} active slot"


@contextmanager
def writer_slot(settings: Settings) -> Iterator[None]:
    """The writers' global concurrency slot on a DuckDB file (the core takes the warehouse's lock inside
    it). The limit is made first if it is missing, so the slot is never skipped (``strict``: no limit
    is an error). A DuckLake takes none: its writers run side by side."""
    if settings.lake is not None:  # several writers commit at once; the claims serialise what must be
        get_run_logger().info("a DuckLake: no writers' slot, up to %d partners' exports load at once", settings.writers)
        yield
        return
    changed = ensure_writer_limit()
    if changed:
        get_run_logger().warning("%s (one writer at a time on the warehouse)", changed)
    with concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=settings.lock_timeout_s, strict=True):
        yield


@flow(
    name="nightly",
    description="Ingest every new partner export of the inbox (a new ANCT reference first), "
    "archive or reject each file, publish the warehouse for analysts, and summarise the night.",
    validate_parameters=True,
)
def nightly(
    inbox: str | None = None, warehouse: str | None = None, archive: str | None = None, rejected: str | None = None
) -> dict[str, Any] | State[Any]:
    """The scheduled nightly run; Failed, naming the files, when an export was rejected or held or failed.

    Args:
        inbox: Folder where partners' exports arrive (default: CDV_INBOX, or ./inbox).
        warehouse: Warehouse file (default: CDV_WAREHOUSE, or warehouse/cdv.duckdb).
        archive: Where processed files go, by partner (default: archive/ beside the inbox).
        rejected: Where refused files go, with a reason file (default: rejected/ beside the inbox).
    """
    log = get_run_logger()
    s = flow_settings(inbox, warehouse, archive, rejected)
    shown = [-1]
    artifact: list[UUID] = []  # created at the first file: an empty night has no progress to show

    def progress(done: int, total: int, message: str) -> None:  # one update per file
        if done != shown[0]:
            if shown[0] < 0:
                log.info(message)  # what the inbox holds; then each file's line (``finished``)
            shown[0] = done
            if not total:
                return
            if not artifact:
                artifact.append(cast(UUID, create_progress_artifact(0.0, description="Fichiers de la nuit traités")))
            update_progress_artifact(artifact[0], 100 * done / total)

    steps = tasks.STEPS
    if s.lake is not None and s.fan_out == "pool":  # each partner's exports on a worker of the pool
        folders = {"inbox": str(s.inbox), "archive": str(s.archive_dir), "rejected": str(s.rejected_dir)}
        steps = replace(steps, fan_out=tasks.pool_fan_out({**folders, "warehouse": warehouse}))
    failed: InboxFailed | None = None
    with writer_slot(s):
        try:
            run = run_inbox(s, steps=steps, progress=progress, finished=partial(outcome.log_step, log))
        except InboxFailed as exc:
            run, failed = exc.run, exc
        except CdvError as exc:  # stopped before its files (a reference that does not load, a busy warehouse)
            return outcome.failed(log, exc)
    publish_artifacts(run.published, [f.as_dict() for f in run.files], prefix="nightly", title="Nuit")
    if run.report:
        url = report_url(run.report, reports_dir(Settings.from_env()))
        link_report(run.report, run.published, url=url, key="nightly-report")
    if run.feedback:
        urls = {p: report_url(path, reports_dir(Settings.from_env())) for p, path in run.feedback.items()}
        link_feedback(run.feedback, run.published, urls=urls, key="nightly-feedback")
    log.info("night done: %s", run.summary_line())
    if run.attention:  # its files' lines are logged: the state's message lists them again, with what to do
        return outcome.failed(log, NeedsAttention.of_run(run), data=failed, logged=True)
    return run.as_dict()

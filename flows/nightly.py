"""The nightly run: everything new in the inbox, one task per file, then publish."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.concurrency.sync import concurrency

from cdv_etl.config import Settings
from cdv_etl.load.warehouse import writer_lock
from flows import tasks
from flows.artifacts import attach_report, publish_artifacts

WRITER_LIMIT = "cdv-warehouse-writer"
"""Prefect global concurrency limit (1 slot) held by every flow that writes the warehouse."""

REFERENCE_FILE = re.compile(r"acv_communes.*\.(geojson|json|csv)$", re.IGNORECASE)
"""Files of the inbox that are a new ANCT reference rather than a partner export."""


def flow_settings(
    inbox: str | None = None, warehouse: str | None = None, archive: str | None = None, rejected: str | None = None
) -> Settings:
    return Settings.from_env().with_(
        inbox=Path(inbox) if inbox else None,
        warehouse=Path(warehouse) if warehouse else None,
        archive=Path(archive) if archive else None,
        rejected=Path(rejected) if rejected else None,
    )


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


@flow(
    name="nightly",
    description="Ingest every new partner export of the inbox (a new ANCT reference first), "
    "archive or reject each file, publish the warehouse for analysts, and summarise the night.",
    validate_parameters=True,
)
def nightly(
    inbox: str | None = None, warehouse: str | None = None, archive: str | None = None, rejected: str | None = None
) -> dict[str, Any]:
    """The scheduled nightly run.

    Args:
        inbox: Folder where partners' exports arrive (default: CDV_INBOX, or ./inbox).
        warehouse: Warehouse file (default: CDV_WAREHOUSE, or warehouse/cdv.duckdb).
        archive: Where processed files go, by partner (default: archive/ beside the inbox).
        rejected: Where refused files go, with a reason file (default: rejected/ beside the inbox).
    """
    log = get_run_logger()
    s = flow_settings(inbox, warehouse, archive, rejected)
    with (
        concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=s.lock_timeout_s, strict=False),
        writer_lock(s.warehouse, s.lock_timeout_s),
    ):
        refs, exports = inbox_files(s.inbox)
        log.info("inbox %s: %d reference file(s), %d export(s)", s.inbox, len(refs), len(exports))
        progress = cast(UUID, create_progress_artifact(0.0, description="Files of the night processed"))
        total = max(len(refs) + len(exports), 1)
        done = 0
        references: list[dict[str, Any]] = []
        for ref in refs:
            references.append(tasks.load_reference(s, ref))
            tasks.move_file(ref, s.archive_dir / "reference")
            done += 1
            update_progress_artifact(progress, 100 * done / total)
        results: list[dict[str, Any]] = []
        failures: list[str] = []
        for path in exports:  # one at a time: one writer; each file its own task, failing alone
            state = tasks.ingest_file(s, path, return_state=True)
            if state.is_failed():
                failures.append(f"{path.name}: {state.message}")
                results.append(
                    {
                        "file_name": path.name,
                        "status": "failed",
                        "message": str(state.message),
                        "moved_to": "left in the inbox",
                    }
                )
            else:
                r = state.result()
                if r["status"] == "rejected":
                    r["moved_to"] = tasks.move_file(path, s.rejected_dir, r["message"])
                else:
                    r["moved_to"] = tasks.move_file(path, s.archive_dir / (r.get("partner") or "unknown"))
                results.append(r)
            done += 1
            update_progress_artifact(progress, 100 * done / total)
        published = tasks.publish(s) if (refs or exports or tasks.published_is_stale(s)) else str(s.published_path)
    publish_artifacts(Path(published), results, prefix="nightly", title="Nightly run")
    report = attach_report(Path(published), s.warehouse.parent / "reports", key="nightly-report")
    summary = {
        "references": references,
        "files": results,
        "published": published,
        "report": str(report) if report else None,
    }
    loaded = sum(1 for r in results if r["status"] == "loaded" and not r.get("already_recorded"))
    log.info(
        "night done: %d file(s) loaded, %d duplicate, %d rejected, %d failed",
        loaded,
        sum(r["status"] == "duplicate" for r in results),
        sum(r["status"] == "rejected" for r in results),
        len(failures),
    )
    if failures:
        raise RuntimeError("some files could not be processed (left in the inbox): " + "; ".join(failures))
    return summary

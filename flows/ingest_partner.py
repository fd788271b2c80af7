"""One partner's exports of a night, on whichever worker of the pool takes them: what a nightly
run on a DuckLake hands out when its exports load across machines (``CDV_FAN_OUT=pool``).

The nightly run (``flows.nightly``) groups the inbox's exports by partner and starts one run of
this deployment per partner; each loads its files in order, oldest first, and moves them, as the
nightly itself does on one machine. Every worker must see the same inbox (a shared folder) and
point at the same lake (``CDV_WAREHOUSE``, ``CDV_DATA_PATH``): docs/scaling.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field

from cdv_etl.errors import CdvError
from cdv_etl.inbox import FileOutcome, existing_file, process_export
from flows import outcome, tasks
from flows.nightly import flow_settings


@flow(
    name="ingest-partner",
    description="Load one partner's exports of the night (a DuckLake's nightly run hands them out to the "
    "work pool's workers): each file in its own transaction, oldest first, then moved.",
    validate_parameters=True,
    persist_result=True,  # the nightly run reads its outcomes back (``flows.tasks.pool_fan_out``)
)
def ingest_partner(
    paths: list[str] = Field(description="The partner's exports in the inbox, oldest first."),  # noqa: B008
    inbox: str | None = Field(default=None, description="The inbox they are in (default: CDV_INBOX)."),
    warehouse: str | None = Field(default=None, description="The DuckLake (default: CDV_WAREHOUSE)."),
    archive: str | None = Field(default=None, description="Where processed files go (default: CDV_ARCHIVE)."),
    rejected: str | None = Field(default=None, description="Where refused files go (default: CDV_REJECTED)."),
) -> list[dict[str, Any]]:
    """Each file's outcome as plain data (``FileOutcome.as_dict``), in the order given."""
    log = get_run_logger()
    s = flow_settings(inbox, warehouse, archive, rejected)
    if s.lake is None:
        raise CdvError(
            f"ingest-partner loads into a DuckLake; {s.warehouse} is a DuckDB file, which has one writer",
            "run the nightly deployment: on a DuckDB file it loads every export itself, one at a time",
        )
    done = []
    for path in map(Path, paths):
        try:
            found = process_export(s, existing_file(path, "export"), tasks.STEPS)
        except CdvError as exc:  # not in the inbox (any more): this file fails, the others go on
            found = FileOutcome(path.name, None, None, str(exc))
        outcome.log_step(log, found)
        done.append(found.as_dict())
    return done

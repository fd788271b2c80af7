"""Deployments: served by ``cdv-etl serve`` to a Prefect server, or deployed with ``prefect deploy``
(see ``prefect.yaml``). The nightly run is scheduled at 02:00 Europe/Paris; the others run on demand."""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.schedules import Cron

from flows.ingest_export import ingest_export
from flows.nightly import WRITER_LIMIT, nightly
from flows.reference_refresh import reference_refresh

NIGHTLY_CRON = "0 2 * * *"
TIMEZONE = "Europe/Paris"


def deployments() -> list[Any]:
    tags = ["cdv-etl"]
    return [
        nightly.to_deployment(
            name="nightly",
            schedules=[Cron(NIGHTLY_CRON, timezone=TIMEZONE)],
            concurrency_limit=1,
            tags=tags,
            description="Every night at 02:00 (Europe/Paris): the inbox's new exports into the warehouse.",
        ),
        ingest_export.to_deployment(
            name="ingest-export",
            concurrency_limit=1,
            tags=tags,
            description="Started by hand: one export file (a late export, a re-run after a spec fix).",
        ),
        reference_refresh.to_deployment(
            name="reference-refresh",
            concurrency_limit=1,
            tags=tags,
            description="Started by hand: a new ANCT list of ACV communes.",
        ),
    ]


def ensure_writer_limit() -> None:
    """The global concurrency limit that every writing flow holds: one writer at a time."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(WRITER_LIMIT, 1)


def serve_all() -> None:
    ensure_writer_limit()
    serve(*deployments(), pause_on_shutdown=False)

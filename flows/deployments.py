"""Deployments: served by ``cdv-etl serve`` to a Prefect server, or deployed with ``prefect deploy``
(see ``prefect.yaml``). The nightly run is scheduled at 02:00 Europe/Paris; the others run on demand.
``cdv-etl serve`` also serves the reports folder over HTTP (``flows.report_server``)."""

from __future__ import annotations

import os
from typing import Any

from prefect import serve
from prefect.schedules import Cron

from cdv_etl.config import Settings
from cdv_etl.inbox import reports_dir
from flows import report_server
from flows.accept_export import accept_export
from flows.ingest_export import ingest_export
from flows.ingest_partner import ingest_partner
from flows.nightly import ensure_writer_limit, nightly
from flows.reference_refresh import reference_refresh

NIGHTLY_CRON = "0 2 * * *"
TIMEZONE = "Europe/Paris"
NIGHTLY_SLUG = "chaque nuit à 02:00 (Europe/Paris)"
"""What the UI shows for the schedule (Prefect shows a schedule's slug instead of its cron text)."""


def deployments() -> list[Any]:
    tags = ["cdv-etl"]
    return [
        nightly.to_deployment(
            name="nightly",
            schedules=[Cron(NIGHTLY_CRON, timezone=TIMEZONE, slug=NIGHTLY_SLUG)],
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
        ingest_partner.to_deployment(
            name="ingest-partner",
            tags=tags,
            description="Started by a DuckLake's nightly run (CDV_FAN_OUT=pool): one partner's exports of the night.",
        ),
        accept_export.to_deployment(
            name="accept-export",
            concurrency_limit=1,
            tags=tags,
            description="Started by hand: accept a held export (by its file_id), making it current.",
        ),
    ]


def serve_all() -> None:
    changed = ensure_writer_limit()
    if changed:
        print(changed, flush=True)
    folder = reports_dir(Settings.from_env())
    server = report_server.start_report_server(folder, report_server.reports_port())
    os.environ[report_server.URL_ENV] = report_server.base_url(server)  # inherited by the flow runs
    print(f"reports folder {folder} served on {report_server.base_url(server)}", flush=True)
    serve(*deployments(), pause_on_shutdown=False)

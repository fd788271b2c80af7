"""A new ANCT list of ACV communes: replaces the reference; loaded financing stays."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from cdv_etl.errors import CdvError
from cdv_etl.inbox import refresh_reference
from flows import outcome, tasks
from flows.nightly import flow_settings, writer_slot


@flow(
    name="reference-refresh",
    description="Load a new ANCT list of ACV communes (GeoJSON, or CSV with the "
    "same property names) and publish the warehouse.",
    validate_parameters=True,
)
def reference_refresh(
    path: str = Field(description="Path of the ANCT file (GeoJSON or CSV)."),
    warehouse: str | None = Field(default=None, description="Warehouse file (default: CDV_WAREHOUSE)."),
) -> dict[str, Any] | State[Any]:
    """Load a new ANCT reference; Failed, with the error and what to do, when it cannot be loaded."""
    log = get_run_logger()
    s = flow_settings(warehouse=warehouse)
    try:
        with writer_slot(s):
            result, _ = refresh_reference(s, Path(path), steps=tasks.STEPS)
    except CdvError as exc:
        return outcome.failed(log, exc)
    log.info(outcome.reference_line(result))
    create_markdown_artifact(
        f"# Reference {result.file_name}\n\n{result.communes} communes, {result.conventions} "
        f"conventions — {'loaded' if result.changed else 'unchanged (same file as the current reference)'}.",
        description="ANCT reference refresh",
    )
    return dataclasses.asdict(result)

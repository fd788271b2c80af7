"""A new ANCT list of ACV communes: replaces the reference; loaded financing stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from pydantic import Field

from cdv_etl.load.warehouse import writer_lock
from flows import tasks
from flows.nightly import WRITER_LIMIT, flow_settings


@flow(
    name="reference-refresh",
    description="Load a new ANCT list of ACV communes (GeoJSON, or CSV with the "
    "same property names) and publish the warehouse.",
    validate_parameters=True,
)
def reference_refresh(
    path: str = Field(description="Path of the ANCT file (GeoJSON or CSV)."),
    warehouse: str | None = Field(default=None, description="Warehouse file (default: CDV_WAREHOUSE)."),
) -> dict[str, Any]:
    """Load a new ANCT reference."""
    s = flow_settings(warehouse=warehouse)
    with (
        concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=s.lock_timeout_s, strict=False),
        writer_lock(s.warehouse, s.lock_timeout_s),
    ):
        result = tasks.load_reference(s, Path(path))
        tasks.publish(s)
    create_markdown_artifact(
        f"# Reference {result['file_name']}\n\n{result['communes']} communes, {result['conventions']} "
        f"conventions — {'loaded' if result['changed'] else 'unchanged (same file as the current reference)'}.",
        description="ANCT reference refresh",
    )
    return result

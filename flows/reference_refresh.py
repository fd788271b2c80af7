"""A new vintage of the ANCT list of ACV communes: the loaded exports are validated again against
it (rows move in or out of quarantine; the partners re-send nothing), then the warehouse is published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from cdv_etl.errors import CdvError
from cdv_etl.inbox import refresh_reference
from cdv_etl.load.reference import ReferenceResult
from cdv_etl.publish.tables import euros
from flows import outcome, tasks
from flows.nightly import flow_settings, writer_slot


def _markdown(result: ReferenceResult) -> str:
    """The artifact: the load's line, and the table of what moved."""
    lines = [f"# Reference {result.file_name}", "", result.summary()]
    if result.moves is not None and result.moves.files:
        lines += [
            "",
            "| file | partner | current | rows to quarantine | € to quarantine | rows out of quarantine "
            "| € out of quarantine |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {f.file_id} {f.file_name} | {f.partner} | {'yes' if f.is_current else 'no'} | {f.rows_to_quarantine} "
            f"| {euros(f.eur_to_quarantine)} | {f.rows_from_quarantine} | {euros(f.eur_from_quarantine)} |"
            for f in result.moves.files
        ]
    elif result.moves is not None:
        lines += ["", "No row moved: every loaded row keeps its place."]
    return "\n".join(lines)


@flow(
    name="reference-refresh",
    description="Load a new vintage of the ANCT list of ACV communes (GeoJSON, or CSV with the same "
    "property names), validate the loaded exports again against it, and publish the warehouse.",
    validate_parameters=True,
)
def reference_refresh(
    path: str = Field(description="Path of the ANCT file (GeoJSON or CSV)."),
    vintage: str | None = Field(
        default=None, description="The list's date, YYYY-MM or YYYY-MM-DD (default: the date in its file name)."
    ),
    force: bool = Field(default=False, description="Load it even when it is older than the current vintage."),
    warehouse: str | None = Field(default=None, description="Warehouse file (default: CDV_WAREHOUSE)."),
) -> dict[str, Any] | State[Any]:
    """Load a new ANCT reference: Failed, with the error and what to do, when it cannot be loaded
    (no date, older than the current vintage without ``force``, a file that does not read)."""
    log = get_run_logger()
    s = flow_settings(warehouse=warehouse)
    try:
        with writer_slot(s):
            result, _ = refresh_reference(s, Path(path), vintage=vintage, force=force, steps=tasks.STEPS)
    except CdvError as exc:
        return outcome.failed(log, exc)
    log.info(result.summary())
    create_markdown_artifact(_markdown(result), description="ANCT reference refresh")
    return result.as_dict()

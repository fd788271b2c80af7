"""A held export accepted from the Prefect UI: the same as ``cdv-etl accept FILE_ID``."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from cdv_etl.pipeline import accept_held
from flows.artifacts import md_table
from flows.nightly import flow_settings, writer_slot


@flow(
    name="accept-export",
    description="Accept a held partner export (one that would have withdrawn too much of the current one): "
    "it is loaded, current when it is the partner's latest, and the warehouse is published for analysts.",
    validate_parameters=True,
)
def accept_export(
    file_id: int = Field(
        description="The held export's file_id: `cdv-etl files` lists it with status held, "
        "and its ingest said `cdv-etl accept FILE_ID`."
    ),
    warehouse: str | None = Field(default=None, description="Warehouse file (default: CDV_WAREHOUSE)."),
) -> dict[str, Any]:
    """Accept one held export; an unknown id or a file that is not held fails the run, changing nothing."""
    s = flow_settings(warehouse=warehouse)
    with writer_slot(s):
        result = accept_held(s, file_id)
    columns, rows = result.table()
    create_markdown_artifact(
        f"# Export {result.file_id} accepté ({result.file_name})\n\n{result.message}\n\n" + md_table(columns, rows),
        description=f"{result.partner} : l'export courant et ses chiffres, avant et après",
    )
    return {
        "file_id": result.file_id,
        "partner": result.partner,
        "became_current": result.became_current,
        "operations": result.after.operations,
        "engaged_eur": str(result.after.engaged_eur),
    }

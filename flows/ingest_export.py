"""One export, started by hand from the Prefect UI: a late file, or a re-run after a fix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.states import State
from pydantic import Field, WithJsonSchema

from cdv_etl.errors import CdvError
from cdv_etl.inbox import FileOutcome, NeedsAttention, ingest_one, result_dict
from cdv_etl.specs import load_specs
from flows import outcome, tasks
from flows.artifacts import publish_artifacts
from flows.nightly import flow_settings, writer_slot

PARTNERS = tuple(sorted(load_specs()))
"""The partners of the specs in schemas/partners: the choices of the form's `partner` field."""

if TYPE_CHECKING:
    PartnerChoice = str | None
else:  # one of PARTNERS, or None; its JSON schema one `enum` holding null (not an `anyOf` with a null
    # branch, which the UI shows as a "str | None" switch), so the UI renders a select, empty: None
    PartnerChoice = Annotated[Literal[PARTNERS] | None, WithJsonSchema({"enum": [None, *PARTNERS]})]


@flow(
    name="ingest-export",
    description="Ingest one partner export given by its path (the partner is "
    "recognised from the file name unless given), then publish the warehouse for analysts.",
    validate_parameters=True,
)
def ingest_export(
    path: str = Field(description="Path of the export file on the machine running the flow."),
    partner: PartnerChoice = Field(  # noqa: B008 (pydantic's Field, as the other parameters)
        default=None, description="Partner (one of the partner specs); empty: recognised from the file name."
    ),
    force: bool = Field(
        default=False, description="Re-ingest a file already loaded (after a spec fix), replacing its rows."
    ),
    warehouse: str | None = Field(default=None, description="Warehouse file (default: CDV_WAREHOUSE)."),
) -> dict[str, Any] | State[Any]:
    """Ingest one export file; Failed, with the reason and what to do, when it was rejected or held,
    or when the path is not a file."""
    log = get_run_logger()
    s = flow_settings(warehouse=warehouse)
    try:
        with writer_slot(s):
            result, published = ingest_one(s, Path(path), partner=partner or None, force=force, steps=tasks.STEPS)
    except CdvError as exc:
        return outcome.failed(log, exc)
    done = FileOutcome(result.file_name, result, None)  # a hand-started ingest leaves the file where it is
    log.log(*outcome.file_line(done))
    plain = result_dict(result)
    publish_artifacts(published, [plain], prefix=None, title=f"Import de {Path(path).name}")
    if done.needs_attention:
        return outcome.failed(log, NeedsAttention([done], of=1), logged=True)
    return plain

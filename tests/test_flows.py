"""The Prefect flows end to end, in this process, on the session's real Prefect server (``conftest.prefect_served``).

The server is shared with the tests of the other pytest-xdist worker: a test reads back only the
runs, artifacts and limits it made (its runs' ids, its own tags and names), never the newest of a kind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import pytest
from analyst_helpers import al_export
from conftest import LOCK_TIMEOUT_S, sample_warehouse
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State
from prefect_server import PrefectServer

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.inbox import NEXT_STEP, FileOutcome, InboxRun, NeedsAttention
from cdv_etl.load.loader import NEEDS_ATTENTION, LoadResult
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.specs import load_specs
from flows.ingest_export import ingest_export
from flows.nightly import WRITER_LIMIT, WRITER_SLOTS, nightly
from flows.outcome import LEVEL, file_line
from flows.reference_refresh import reference_refresh


@pytest.fixture(scope="module")
def harness(prefect_served: tuple[PrefectServer, Path]) -> Iterator[None]:
    """The flows run in this process against the session's Prefect server (one server per session).
    Their writers' slot may be held by a run of the other worker's tests: they wait for it."""
    server, _ = prefect_served
    with pytest.MonkeyPatch.context() as env, temporary_settings(updates={PREFECT_API_URL: server.api}):
        env.setenv("CDV_LOCK_TIMEOUT", str(LOCK_TIMEOUT_S))
        yield


def latest_artifact(key: str, flow_run_id: UUID | str) -> object:
    """The latest artifact ``key`` of the flow run ``flow_run_id``: its data (a table's rows)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))])
            )
        )
    assert found, f"no artifact {key} of flow run {flow_run_id}"
    data = sorted(found, key=lambda a: a.created)[-1].data
    if isinstance(data, str) and data[:1] in "[{":  # table artifacts are stored as JSON text
        try:
            return json.loads(data)
        except json.JSONDecodeError:  # a markdown link: [text](url)
            return data
    return data


@pytest.mark.usefixtures("harness")
def test_ingest_export_and_reference_refresh_flows(tmp_path: Path) -> None:
    from cdv_etl.demo_data import generate_demo_exports

    wh = tmp_path / "cdv.duckdb"
    ref = reference_refresh(path=str(SAMPLE_REFERENCE), warehouse=str(wh))
    assert ref["communes"] == 36 and ref["changed"]
    exports = generate_demo_exports(tmp_path / "exports")
    result = ingest_export(path=str(exports[0]), warehouse=str(wh))
    assert result["status"] == "loaded" and result["partner"] == "bdt"
    assert exports[0].exists()  # a hand-started ingest does not move the file
    con = duckdb.connect(str(tmp_path / "cdv.published.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM financing").fetchone()[0] == result["rows_loaded"]
    again = ingest_export(path=str(exports[0]), warehouse=str(wh), force=True)
    assert again["file_id"] == result["file_id"] and again["status"] == "loaded"

    # Not a green Completed: Failed, its message the reason and what to do (no traceback), its artifacts made.
    notes = tmp_path / "notes_partenaire.csv"
    notes.write_text("bonjour;\n1;2\n", encoding="utf-8")  # matches no partner
    rejected = ingest_export(path=str(notes), warehouse=str(wh), return_state=True)
    assert (rejected.type, rejected.name) == (StateType.FAILED, "Failed")
    message = rejected.message or ""
    assert message.startswith("notes_partenaire.csv (file ") and " — rejected: notes_partenaire.csv: " in message
    assert "no partner spec recognises" in message and message.endswith(f"\n  → {NEXT_STEP['rejected']}")
    lines = [(level, m) for level, m in run_logs(rejected) if m.startswith("notes_partenaire.csv")]
    assert [level for level, _ in lines] == [logging.ERROR] and "no partner spec recognises" in lines[0][1]
    with get_client(sync_client=True) as client:
        run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[rejected.state_details.flow_run_id]))
        assert {a.type for a in client.read_artifacts(flow_run_filter=run_filter)} == {"table", "markdown"}

    # A held export (it withdraws too much of its partner's stock): Failed too, WARNING, the accept command.
    rows = [{"ref": f"AL{i}", "insee": "47001", "amount": "100,00", "day": "01/02/2021"} for i in range(10)]
    (tmp_path / "sep").mkdir()
    (tmp_path / "oct").mkdir()
    assert (
        ingest_export(path=str(al_export(tmp_path / "sep", "2024-09", rows)), warehouse=str(wh))["status"] == "loaded"
    )
    held = ingest_export(
        path=str(al_export(tmp_path / "oct", "2024-10", rows[:5])), warehouse=str(wh), return_state=True
    )
    assert (held.type, held.name) == (StateType.FAILED, "Failed")
    message = held.message or ""
    assert " — held: " in message and "would withdraw 5 of the 10 operations" in message, message
    assert message.endswith(f"\n  → {NEXT_STEP['held']}")
    lines = [(level, m) for level, m in run_logs(held) if m.startswith("AL_ACV_export_2024-10.csv")]
    assert [level for level, _ in lines] == [logging.WARNING] and "cdv-etl accept" in lines[0][1]

    missing = tmp_path / "late" / "AL_ACV_export_2026-11.csv"
    absent = ingest_export(path=str(missing), warehouse=str(wh), return_state=True)
    assert (absent.type, absent.name) == (StateType.FAILED, "Failed")
    error = CdvError(
        f"the export {missing} does not exist (on the machine that runs the flow)",
        "check the path (an absolute path on that machine, with the file's extension), then start the run again",
    )
    assert absent.message == str(error)  # what was wrong, then what to do
    assert (logging.ERROR, " ".join(str(error).split())) in run_logs(absent)


@pytest.mark.usefixtures("harness")
def test_a_writing_flow_makes_the_writers_limit_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployed with ``prefect deploy --all`` (no ``cdv-etl serve``), the writers' limit may be missing
    or changed: a writing flow creates it or sets it back, says so in its log, and holds it strictly.

    The flows here hold a limit of this test's own name: the session's ``cdv-warehouse-writer`` is
    held at the same time by the runs of the other worker's tests, which deleting or widening it
    would disturb (``test_prefect_server`` checks that `cdv-etl serve` makes that one)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    import flows.nightly

    assert WRITER_LIMIT == "cdv-warehouse-writer"
    name = f"{WRITER_LIMIT}-of-a-test"
    monkeypatch.setattr(flows.nightly, "WRITER_LIMIT", name)

    def limit() -> tuple[int, bool]:
        with get_client(sync_client=True) as client:
            found = client.read_global_concurrency_limit_by_name(name)
        return found.limit, found.active

    wh = str(tmp_path / "cdv.duckdb")
    with pytest.raises(ObjectNotFound):  # missing, as on a server the flows were deployed to by `prefect deploy`
        limit()
    made = reference_refresh(path=str(SAMPLE_REFERENCE), warehouse=wh, return_state=True)
    assert made.type == StateType.COMPLETED, made.message
    assert limit() == (WRITER_SLOTS, True)
    said = f"created the global concurrency limit {name!r} ({WRITER_SLOTS} slot) (one writer at a time"
    assert [level for level, m in run_logs(made) if m.startswith(said)] == [logging.WARNING]

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=3, active=False))
    reset = reference_refresh(path=str(SAMPLE_REFERENCE), warehouse=wh, return_state=True)
    assert reset.type == StateType.COMPLETED, reset.message
    assert limit() == (WRITER_SLOTS, True)
    said = f"the global concurrency limit {name!r} was 3 slots, inactive: set back to {WRITER_SLOTS} active"
    assert [level for level, m in run_logs(reset) if m.startswith(said)] == [logging.WARNING]

    quiet = reference_refresh(path=str(SAMPLE_REFERENCE), warehouse=wh, return_state=True)
    assert not [m for _, m in run_logs(quiet) if WRITER_LIMIT in m]  # nothing to change, nothing said


def test_a_held_rejected_or_failed_export_is_not_green_and_says_what_to_do() -> None:
    """One rule for the run's end: held and rejected (``NEEDS_ATTENTION``) and failed files need
    attention, each with its reason and the next step; loaded and duplicate files do not."""
    loaded = LoadResult(
        "BDT.xlsx",
        "bdt",
        "loaded",
        1,
        rows_read=1200,
        rows_loaded=1190,
        rows_quarantined=10,
        engaged_amount_eur=Decimal("1234567.5"),
    )
    held = LoadResult("AL_ACV_export_2026-12.csv", "action_logement", "held", 7, message="withdraws 40 %\n  → accept")
    dup = LoadResult("BDT copy.xlsx", "bdt", "duplicate", 8, message="same bytes as file 1 (BDT.xlsx)")
    files = [
        FileOutcome("BDT.xlsx", loaded, Path("archive/bdt/BDT.xlsx")),
        FileOutcome(held.file_name, held, Path("archive/action_logement") / held.file_name),
        FileOutcome("BDT copy.xlsx", dup, Path("archive/bdt/BDT copy.xlsx")),
        FileOutcome("x.csv", None, None, "CdvError: the warehouse is busy"),
    ]
    run = InboxRun([], files, Path("cdv.published.duckdb"), None)
    assert str(NeedsAttention.of_run(run)) == (
        "2 of 4 exports need attention (they changed no figure; the others went through):\n"
        "- AL_ACV_export_2026-12.csv (file 7) — held: withdraws 40 % → accept\n"
        "- x.csv — failed: CdvError: the warehouse is busy\n"
        f"  → {NEXT_STEP['failed']}; {NEXT_STEP['held']}"
    )
    clean = InboxRun([], [files[0], files[2]], Path("cdv.published.duckdb"), None)
    assert clean.attention == []
    assert set(LEVEL) == set(NEXT_STEP) == NEEDS_ATTENTION | {"failed"}
    assert [file_line(f)[0] for f in files] == [logging.INFO, logging.WARNING, logging.INFO, logging.ERROR]
    assert file_line(files[0])[1] == (
        "BDT.xlsx (bdt, file 1): loaded — 1\u202f200 rows read, 1\u202f190 loaded, 10 quarantined, "
        "1\u202f234\u202f567,50 € engaged, moved to archive/bdt/BDT.xlsx"
    )
    assert file_line(files[3])[1] == "x.csv: failed — CdvError: the warehouse is busy (left in the inbox)"


def run_logs(state: State[Any]) -> list[tuple[int, str]]:
    """(level, message) of the logs of the flow run that ended in ``state``, its tasks' included."""
    APILogWorker.drain_all()  # logs are sent in batches: send what waits, and wait for it
    run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return [(log.level, log.message) for log in client.read_logs(log_filter=run, sort=LogSort.TIMESTAMP_ASC)]


def test_flow_parameters_render_a_proper_form() -> None:
    """Typed, described parameters: what the Prefect UI turns into a form."""
    from prefect.utilities.callables import parameter_schema

    schema = json.loads(parameter_schema(ingest_export).model_dump_json())
    props = schema["properties"]
    assert schema["required"] == ["path"]
    assert props["path"]["type"] == "string" and "Path of the export" in props["path"]["description"]
    assert props["force"]["type"] == "boolean" and props["force"]["default"] is False
    assert "description" in props["partner"] and props["partner"]["default"] is None
    assert props["partner"]["enum"] == [None, *sorted(load_specs())]  # a select in the UI, from the specs
    assert "anyOf" not in props["partner"]  # the UI would show a "str | None" switch
    nightly_props = json.loads(parameter_schema(nightly).model_dump_json())["properties"]
    assert "inbox" in nightly_props and "Folder" in nightly_props["inbox"]["description"]


@pytest.mark.usefixtures("harness")
def test_command_line_nightly_with_prefect_api_url_runs_the_flow_on_that_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PREFECT_API_URL the run is the nightly flow on that server; a file that cannot be
    processed (here: no reference loaded yet) fails the flow run, stays in the inbox, exit 1.
    Each command runs under a tag of its own (Prefect's ``tags`` context: the runs it creates
    carry it), so the runs it made are told from those other tests make on the server meanwhile."""
    from prefect import tags
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from cdv_etl.cli import app
    from cdv_etl.demo_data import generate_demo_exports

    inbox, wh = tmp_path / "inbox", tmp_path / "cdv.duckdb"
    export = generate_demo_exports(inbox)[1]
    for p in inbox.iterdir():
        if p != export:
            p.unlink()
    api = str(PREFECT_API_URL.value())
    monkeypatch.setenv("PREFECT_API_URL", api)

    def top_level(tag: str) -> FlowRunFilter:
        return FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True), tags=FlowRunFilterTags(all_=[tag])
        )

    first, second = (f"cdv-test-{tmp_path.name}-{n}" for n in (1, 2))
    with tags(first):
        result = CliRunner().invoke(app, ["nightly", "--inbox", str(inbox), "-w", str(wh)])

    assert result.exit_code == 1, result.output
    stderr = " ".join(result.stderr.split())  # as printed, wrapped to the console's width
    assert f"running the nightly flow on the Prefect server {api}" in stderr
    assert f"{export.name}: CdvError: the warehouse" in stderr and "load the ANCT list first" in stderr
    assert list(inbox.iterdir()) == [export]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=top_level(first))
        assert [(client.read_flow(r.flow_id).name, r.state_type.value) for r in runs] == [("nightly", "FAILED")]
    files = latest_artifact("nightly-files", runs[0].id)
    assert [(r["fichier · partenaire"], r["statut"]) for r in files] == [  # type: ignore[union-attr]
        (f"{export.name}  \n?", "échec"),
        ("Total (chargés : 0)", ""),
    ]
    details = latest_artifact("nightly-file-details", runs[0].id)
    moved = [(r["fichier"], r["déplacé vers"]) for r in details]  # type: ignore[union-attr]
    assert moved == [(export.name, "laissé dans la boîte de dépôt")]

    # A rejected export: the flow run fails, naming it; the command still prints the files, exits 1.
    export.unlink()
    (inbox / "notes_partenaire.csv").write_text("bonjour;\n1;2\n", encoding="utf-8")  # matches no partner
    sample_warehouse(Settings(warehouse=wh))  # now with the reference
    with tags(second):
        result = CliRunner().invoke(app, ["nightly", "--inbox", str(inbox), "-w", str(wh)])
    assert result.exit_code == 1, result.output
    assert "notes_partenaire.csv" in result.stdout and "no partner spec recognises" in " ".join(result.stderr.split())
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=top_level(second))
        assert client.read_flow(run.flow_id).name == "nightly"
        assert run.state_type is StateType.FAILED and run.state is not None
        assert (run.state.message or "").startswith("notes_partenaire.csv (file ")


def test_the_nightly_schedule_shows_its_time_zone() -> None:
    """The UI shows a schedule's slug instead of its cron text: the same in prefect.yaml and serve."""
    import yaml
    from conftest import ROOT

    from flows.deployments import NIGHTLY_SLUG, deployments

    assert "Europe/Paris" in NIGHTLY_SLUG and "02:00" in NIGHTLY_SLUG
    served = {d.name: d for d in deployments()}
    assert served["nightly"].schedules[0].slug == NIGHTLY_SLUG
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    nightly_yaml = next(d for d in project["deployments"] if d["name"] == "nightly")
    assert nightly_yaml["schedules"][0]["slug"] == NIGHTLY_SLUG

"""The inbox run on a DuckLake (issue 12): several partners' exports load at once, each file in its
own transaction, and the lake ends as a serial run on a DuckDB file ends.

The run is a real ``cdv-etl nightly`` process (no Prefect server: the core runs it), then the
nightly flow on the session's Prefect server. Their loads are held by the fault hook's pause
(``CDV_FAULT_PAUSE``) at their last step before COMMIT: the test goes on only once two of them
wait there at the same moment, which a run loading one file at a time never reaches. No sleep
decides anything.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import sample_warehouse
from prefect_server import PrefectServer
from test_lake_writers import CLI, WAIT_S, committed_state, finished, wait_for

from cdv_etl import faults
from cdv_etl.config import Settings
from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.load.warehouse import connect
from cdv_etl.pipeline import ingest_files

PARTNERS = ("al", "anah", "epf")
"""Three partners' text exports of the demo (quick to read): two load at once, then the third."""
LEDGER = (
    "SELECT file_name, partner, status, rows_read, rows_loaded, rows_quarantined, loaded_amount_eur, "
    "engaged_amount_eur FROM files ORDER BY file_name"
)


@pytest.fixture
def lake_inbox(migrated_lake: Settings, tmp_path: Path) -> tuple[Settings, Path, list[Path]]:
    """A new lake (as ``cdv-etl init`` makes it, with no reference yet: a copy of the session's
    template), and an inbox holding the sample reference and three partners' demo exports."""
    exports = {p.name.split("_")[0].lower(): p for p in generate_demo_exports(tmp_path / "demo")}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for partner in PARTNERS:
        shutil.copy(exports[partner], inbox)
    shutil.copy(SAMPLE_REFERENCE, inbox)
    return migrated_lake, inbox, [exports[p] for p in PARTNERS]


_SERIAL_LEDGERS: dict[tuple[tuple[str, str], ...], list[tuple]] = {}
"""The serial ledgers this process has built, by their exports' names and bytes (SHA-256)."""


def serial_ledger(tmp_path: Path, exports: list[Path]) -> list[tuple]:
    """The ledger the same exports give when loaded one at a time into a DuckDB file: built once
    per process for the same names and bytes (the ledger holds no path nor id: nothing else differs)."""
    key = tuple((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in exports)
    if key not in _SERIAL_LEDGERS:
        serial = sample_warehouse(Settings(warehouse=tmp_path / "serial" / "cdv.duckdb", inbox=tmp_path / "none"))
        ingest_files(serial, exports)
        with connect(serial.backend, read_only=True) as con:
            _SERIAL_LEDGERS[key] = con.execute(LEDGER).fetchall()
    return _SERIAL_LEDGERS[key]


def two_waiting(reached: Path) -> Callable[[], bool]:
    """The barrier: two loads wait at the pause point at the same moment."""
    return lambda: reached.exists() and len(reached.read_text(encoding="utf-8").splitlines()) >= 2


def check_lake(settings: Settings, expected: list[tuple]) -> None:
    with connect(settings.backend, read_only=True) as con:
        assert con.execute(LEDGER).fetchall() == expected
        files, wrong = committed_state(con)
        assert wrong == [] and len(files) == len(PARTNERS)
        ids = sorted(r[0] for r in con.execute("SELECT file_id FROM files").fetchall())
        assert len(set(ids)) == len(PARTNERS)  # one id each, whatever order they were claimed in


def test_a_lake_nightly_loads_two_partners_at_once_and_ends_as_a_serial_run(
    lake_inbox: tuple[Settings, Path, list[Path]], tmp_path: Path
) -> None:
    """The command line's nightly (the core, no Prefect): two loads wait inside their transactions
    at once, nothing of them is visible, then all three files commit, as a serial run's would."""
    settings, inbox, exports = lake_inbox
    assert settings.lake is not None
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**os.environ, "DO_NOT_TRACK": "1", "TMPDIR": str(tmp_path)}
    env.pop("PREFECT_API_URL", None)  # the core's run, no Prefect server
    env |= {
        "CDV_WAREHOUSE": settings.lake.attach_target,
        "CDV_INBOX": str(inbox),
        "CDV_PARALLEL_FILES": "2",
        "CDV_FAULT_POINT": "load.ledger",
        "CDV_FAULT_PAUSE": str(pause),
    }
    run = subprocess.Popen(
        CLI + ["nightly"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    )
    reached = pause / "load.ledger.reached"
    wait_for("two loads inside their transactions at the same moment", two_waiting(reached), run)
    with connect(settings.backend, read_only=True) as con:  # neither is committed yet
        assert committed_state(con) == ([], [])
    (pause / "load.ledger.go").touch()
    rc, out = finished(run)
    assert rc == 0, out
    assert "a DuckLake: up to 2 partners' exports load at once" in out, out
    assert len(reached.read_text(encoding="utf-8").splitlines()) == 3  # the third file came after
    assert not list(inbox.iterdir())  # the reference and every export archived
    check_lake(settings, serial_ledger(tmp_path, exports))


def test_the_nightly_flow_loads_a_lakes_partners_on_prefects_task_runner(
    lake_inbox: tuple[Settings, Path, list[Path]],
    tmp_path: Path,
    prefect_served: tuple[PrefectServer, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The nightly flow on a lake: one ``partner-files`` task run per partner on Prefect's thread
    pool, two of them inside their load transactions at once; the run Completed, no writers' slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.nightly import nightly

    settings, inbox, exports = lake_inbox
    assert settings.lake is not None
    pause = tmp_path / "pause"
    pause.mkdir()
    monkeypatch.setenv("CDV_PARALLEL_FILES", "2")
    monkeypatch.setattr(faults, "_ARMED", "load.ledger")  # the hook, armed in this process
    monkeypatch.setattr(faults, "_PAUSE", pause)
    states: list[Any] = []
    server, _ = prefect_served
    with temporary_settings(updates={PREFECT_API_URL: server.api}):
        run = contextvars.copy_context().run  # the thread sees this server (Prefect's settings are a context)
        flow = threading.Thread(
            target=run,
            args=(
                lambda: states.append(
                    nightly(inbox=str(inbox), warehouse=settings.lake.attach_target, return_state=True)
                ),  # type: ignore[union-attr]
            ),
        )
        flow.start()
        try:
            wait_for(
                "two loads inside their transactions at the same moment", two_waiting(pause / "load.ledger.reached")
            )
        finally:
            (pause / "load.ledger.go").touch()
            flow.join(WAIT_S)
        [state] = states
        assert state.is_completed(), state.message
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )
    groups = {t.name: t.state_type for t in tasks if t.task_key.startswith("partner_files")}
    assert groups == {p.name: StateType.COMPLETED for p in exports}  # one per partner (one file each)
    assert not list(inbox.iterdir())
    check_lake(settings, serial_ledger(tmp_path, exports))

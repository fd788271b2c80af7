"""A DuckLake's nightly run across machines (issue 12): the project's ``prefect.yaml`` deployed to
a ``process`` work pool, two workers of that pool (as two hosts would run them, all pointing at
one lake), and the nightly run handing each partner's exports to the ``ingest-partner``
deployment (``CDV_FAN_OUT=pool``), on whichever worker is free.

The partners' loads are held by the fault hook's pause at their last step before COMMIT: the test
goes on once two wait there at the same moment, on the two workers' flow runs. No sleep decides
anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT
from prefect.workers.process import ProcessWorker
from prefect_server import PrefectServer
from test_lake_nightly import PARTNERS, check_lake, lake_inbox, serial_ledger, two_waiting
from test_lake_writers import WAIT_S, wait_for

from cdv_etl.config import Settings

__all__ = ["lake_inbox"]  # the fixture, shared with test_lake_nightly
POOL = "cdv-etl-pool-test"
SUFFIX = "-pool-test"
"""The test's deployments are the project's, renamed: the session's ``cdv-etl serve`` keeps its own."""
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL_WAIT_S = 600.0
"""The longest the test waits for the night's runs: five flow-run processes start on a machine that
may be busy. A guard against a hang, not a timing."""


def test_a_lake_nightly_hands_its_partners_to_two_workers_of_a_work_pool(
    lake_inbox: tuple[Settings, Path, list[Path]], tmp_path: Path, prefect_served: tuple[PrefectServer, Path]
) -> None:
    settings, inbox, exports = lake_inbox
    assert settings.lake is not None
    server, _ = prefect_served
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    for deployment in project["deployments"]:
        deployment["name"] += SUFFIX
        deployment["work_pool"]["name"] = POOL
        deployment.pop("schedules", None)
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(project, allow_unicode=True), encoding="utf-8")
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {
        "CDV_ETL_HOME": str(ROOT),
        "CDV_WAREHOUSE": settings.lake.attach_target,
        "CDV_FAN_OUT": "pool",
        "CDV_PARTNER_DEPLOYMENT": f"ingest-partner/ingest-partner{SUFFIX}",
        "CDV_FAULT_POINT": "load.ledger",
        "CDV_FAULT_PAUSE": str(pause),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "TMPDIR": str(tmp_path),
    }
    # The pool `prefect work-pool create POOL --type process` makes (its type's default job template),
    # made through the REST API: a process less than the command line (importing Prefect: ~3 s of CPU).
    template = ProcessWorker.get_default_base_job_template()
    server.request("POST", "/work_pools/", json={"name": POOL, "type": "process", "base_job_template": template})
    deployed = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml")],
        cwd=ROOT,
        env=server.env(**env),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    workers = [
        server.start_child(
            [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name", name, "--limit", "2"],
            cwd=tmp_path,
            log=tmp_path / f"{name}.log",
            **env,
        )
        for name in ("w1", "w2")
    ]
    try:
        nightly = server.run_deployment(f"nightly/nightly{SUFFIX}", {"inbox": str(inbox)})
        wait_for(
            "two partners' loads in their transactions at once", two_waiting(pause / "load.ledger.reached"), *workers
        )
        (pause / "load.ledger.go").touch()
        run = server.wait(nightly, timeout=POOL_WAIT_S)
    finally:
        (pause / "load.ledger.go").touch()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=WAIT_S)
    assert run["state_type"] == "COMPLETED", run
    partner_runs = server.request(
        "POST", "/flow_runs/filter", json={"deployments": {"name": {"any_": [f"ingest-partner{SUFFIX}"]}}}
    )
    assert len(partner_runs) == len(PARTNERS)  # one per partner: each has one export here
    assert {r["state_type"] for r in partner_runs} == {"COMPLETED"}
    ids = [nightly] + [r["id"] for r in partner_runs]
    logs = server.request("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": ids}}})
    ran_on = {m.split("'")[1] for m in (log["message"] for log in logs) if m.startswith("Worker '")}
    assert ran_on == {"w1", "w2"}, ran_on  # both workers took runs of the night
    assert not list(inbox.iterdir())
    check_lake(settings, serial_ledger(tmp_path, exports))

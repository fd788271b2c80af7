"""The command line: its commands run in this process (Typer's runner on ``cdv_etl.cli.app``,
exit code, standard output and error). The installed ``cdv-etl`` script runs in child processes
where the process is the point: two nightly runs and the lock between them (test_concurrency),
kill -9 (test_crash_safety), memory caps (test_hostile_files), imports at startup (test_startup)."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from analyst_helpers import run_cli as run
from conftest import ROOT

COMMANDS = [
    "init",
    "reference load",
    "ingest",
    "files",
    "accept",
    "quarantine",
    "sql",
    "publish",
    "nightly",
    "serve",
    "demo",
    "changes",
    "feedback",
    "docs",
    "export",
    "report",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, tmp_path: Path) -> None:
    out = run([*command.split(), "--help"], tmp_path).stdout
    assert "Usage" in out and len(out) > 200


def test_readme_documents_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in COMMANDS:
        assert f"cdv-etl {command}" in readme, command
    documented = set(re.findall(r"cdv-etl ([a-z]+)", readme))
    import typer.main

    from cdv_etl.cli import app

    group = typer.main.get_command(app)
    assert documented <= set(group.commands), documented - set(group.commands)  # type: ignore[attr-defined]


def test_demo_end_to_end_then_query(tmp_path: Path) -> None:
    """The demo as a person runs it (exit code 0, its figures printed); then the figures it printed
    asked again through the commands."""
    out = run(["demo", "--out", str(tmp_path / "demo")], tmp_path).stdout
    for title in (
        "Engaged by axis",
        "Engaged by partner",
        "Engaged by year",
        "Envelope consumption",
        "Quarantine",
        "cdv-etl sql",
    ):
        assert title in out
    wh = tmp_path / "demo" / "warehouse" / "cdv.duckdb"
    files = run(["files", "-w", str(wh), "--format", "json"], tmp_path).stdout
    ledger = json.loads(files)
    assert {r["partner"] for r in ledger} == {"bdt", "action_logement", "anah", "etat", "epf"}
    assert all(r["status"] == "loaded" and r["rows_quarantined"] > 0 for r in ledger)
    axis = run(
        ["sql", "-w", str(wh), "--format", "csv", "SELECT sum(engaged_eur) AS total FROM v_financing_by_axis"], tmp_path
    ).stdout
    total = Decimal(next(csv.DictReader(io.StringIO(axis)))["total"])
    assert total == sum(Decimal(r["engaged_amount_eur"]) for r in ledger)
    q = run(["quarantine", "-w", str(wh), "--format", "csv"], tmp_path).stdout
    rows = list(csv.DictReader(io.StringIO(q)))
    assert len(rows) == sum(r["rows_quarantined"] for r in ledger)
    assert all(r["rule"] and r["message"] and r["source_row"] for r in rows)


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    proc = run(["sql", "-w", str(tmp_path / "none.duckdb"), "SELECT 1"], tmp_path, ok=False)
    assert proc.returncode == 2 and "error:" in proc.stderr and "→" in proc.stderr
    proc = run(["ingest", "-w", str(tmp_path / "w.duckdb"), str(ROOT / "README.md")], tmp_path, ok=False)
    assert proc.returncode == 2 and "reference load" in proc.stderr


def test_rejected_file_exits_1_and_is_in_the_ledger(tmp_path: Path) -> None:
    wh = tmp_path / "w.duckdb"
    run(["reference", "load", "--sample", "-w", str(wh)], tmp_path)
    bad = tmp_path / "anah_acv_2024.csv"
    bad.write_bytes(b"\x00\x01garbage\xff" * 10)
    proc = run(["ingest", "-w", str(wh), str(bad)], tmp_path, ok=False)
    assert proc.returncode == 1 and "rejected" in proc.stdout and "anah_acv_2024.csv" in proc.stderr
    ledger = json.loads(run(["files", "-w", str(wh), "--format", "json"], tmp_path).stdout)
    assert [(r["file_name"], r["status"]) for r in ledger] == [("anah_acv_2024.csv", "rejected")]


def test_readme_flows_and_deployments_exist() -> None:
    import yaml

    from flows.deployments import deployments

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    served = {d.name: d for d in deployments()}
    for name in ("nightly", "ingest-export", "reference-refresh", "accept-export", "ingest-partner"):
        assert f"`{name}`" in readme, name
        assert name in served and served[name].flow_name == name
    cron = served["nightly"].schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("0 2 * * *", "Europe/Paris") and "0 2 * * *" in readme
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    assert {dep["name"] for dep in project["deployments"]} == set(served)  # a work pool gets what serve serves
    for dep in project["deployments"]:
        module, func = dep["entrypoint"].split(":")
        assert (ROOT / module).exists()
        src = (ROOT / module).read_text(encoding="utf-8")
        assert f"def {func}(" in src and f'name="{dep["name"]}"' in src
    for key in ("nightly-files", "nightly-quarantine", "nightly-summary", "cdv-warehouse-writer"):
        assert key in readme

"""A real Prefect server: `cdv-etl serve` serves the deployments, runs are started through the API.

The session's one server (``conftest.prefect_served``: a free port, its own PREFECT_HOME on the
embedded SQLite); the deployments are served by the project's own command, as in production.
Each test passes its own inbox and warehouse to the runs it starts, and reads back only what its
own runs made: the server is shared with the tests of the other pytest-xdist worker.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml
from analyst_helpers import al_export, fresh_settings, run_cli
from conftest import ANCT_REFERENCE, LOCK_TIMEOUT_S, ROOT, SPECIMENS, expected, needs_shared
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_server import PrefectServer
from test_flows import latest_artifact

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.inbox import NEXT_STEP, NeedsAttention
from cdv_etl.pipeline import open_pipeline
from cdv_etl.publish.tables import euros
from flows.accept_export import accept_export
from flows.artifacts import FILE_PARTNER, LOADED, QUARANTINED, READ, STATUS, STATUS_COL, count
from flows.nightly import nightly
from flows.report_server import URL_ENV


def number(shown: str) -> int:
    """A count as the artifacts show it (French thousands separator) back to an int."""
    return int(shown.replace("\u202f", ""))


def run_logs(server: PrefectServer, flow_run_id: str) -> list[tuple[int, str]]:
    """(level, message) of a run's logs, its tasks' included, oldest first: once the run's last
    line (the engine's « Finished in state … ») has reached the server (logs are sent in batches)."""

    def logs() -> list[dict]:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        return list(server.request("POST", "/logs/filter", json=body))

    wait_for(
        lambda: any(r["task_run_id"] is None and r["message"].startswith("Finished in state") for r in logs()),
        f"the last log line of flow run {flow_run_id}",
    )
    return [(r["level"], r["message"]) for r in logs()]


@contextmanager
def readme_automation(server: PrefectServer) -> Iterator[list[dict[str, str]]]:
    """The README's automation, created on ``server`` as `prefect automation create --from-file`
    does, its notification block a custom webhook to a local sink: yields the notifications
    received (subject, body); the automation is deleted at the end."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(# nightly-failed\.yaml\n.*?)```", text, re.DOTALL)
    assert found, "no nightly-failed.yaml in the README"
    spec = yaml.safe_load(found.group(1))
    received: list[dict[str, str]] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    with temporary_settings({PREFECT_API_URL: server.api}):
        block = CustomWebhookNotificationBlock(
            name="cdv-etl test sink",
            url=f"http://127.0.0.1:{sink.server_address[1]}/",
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
            allow_private_urls=True,
        )
        spec["actions"][0]["block_document_id"] = str(block.save("nightly-failed-sink", overwrite=True))
        with get_client(sync_client=True) as client:
            automation = client.create_automation(AutomationCore.model_validate(spec))
    try:
        yield received
    finally:
        server.request("DELETE", f"/automations/{automation}")
        sink.shutdown()
        sink.server_close()


@pytest.fixture
def served(
    prefect_served: tuple[PrefectServer, Path], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[PrefectServer, Path]:
    """The session's server, and a folder of this test's own for its inboxes and warehouses. A flow
    run in this process may wait for the writers' slot, held by a run of the other worker's tests."""
    server, work = prefect_served
    monkeypatch.setenv("CDV_LOCK_TIMEOUT", str(LOCK_TIMEOUT_S))
    own = work / request.node.name
    own.mkdir()
    return server, own


def test_deployments_are_served_with_schedule_and_limits(served: tuple[PrefectServer, Path]) -> None:
    server, _ = served
    dep = server.request("GET", "/deployments/name/nightly/nightly")
    schedules = [s["schedule"] for s in dep["schedules"]]
    assert schedules == [{"cron": "0 2 * * *", "timezone": "Europe/Paris", "day_or": True}]
    assert dep["concurrency_limit"] == 1 or dep.get("global_concurrency_limit", {}).get("limit") == 1
    limit = server.request("GET", "/v2/concurrency_limits/cdv-warehouse-writer")
    assert limit["limit"] == 1
    form = server.request("GET", "/deployments/name/ingest-export/ingest-export")["parameter_openapi_schema"]
    assert form["required"] == ["path"] and form["properties"]["force"]["type"] == "boolean"


@needs_shared
def test_nightly_deployment_over_the_specimens(
    served: tuple[PrefectServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The night over the shared specimens, once: served (`cdv-etl serve`), its state, logs,
    artifacts and the README's automation; then, in this process on the same inbox and
    warehouse, a night with nothing new, a duplicate under a report server, and a rejected
    export raised to the caller."""
    server, work = served
    inbox = work / "night1" / "inbox"
    inbox.mkdir(parents=True)
    for name in expected():
        shutil.copy(SPECIMENS / name, inbox)
    shutil.copy(ANCT_REFERENCE, inbox)
    (inbox / "virus.csv").write_bytes(b"MZ\x90\x00\x03" * 50)
    (inbox / "notes_partenaire.csv").write_text("bonjour;\n1;2\n", encoding="utf-8")  # matches no partner
    rejected = ("notes_partenaire.csv", "virus.csv")
    wh = work / "night1" / "cdv.duckdb"
    with readme_automation(server) as notifications:
        run_id = server.run_deployment("nightly/nightly", {"inbox": str(inbox), "warehouse": str(wh)})
        run = server.wait(run_id)
        # (any failed night notifies: the other worker's tests fail nights of their own meanwhile)
        ours = f"cdv-etl: nightly run {run['name']} ended "
        wait_for(lambda: any(n["subject"].startswith(ours) for n in notifications), "the failed night's notification")
    # not green: two exports were rejected; the state's message names them, their reason, what to do
    assert (run["state_type"], run["state_name"]) == ("FAILED", "Failed"), (work.parent / "serve.log").read_text(
        errors="replace"
    )[-4000:]
    message = run["state"]["message"]
    with duckdb.connect(str(wh), read_only=True) as live:  # closed: the nights below write this warehouse
        file_ids = {
            name: live.execute("SELECT file_id FROM files WHERE file_name = ?", [name]).fetchone()[0]
            for name in rejected
        }
    assert message.startswith(f"{len(rejected)} of {len(expected()) + len(rejected)} exports need attention"), message
    for name in rejected:
        assert f"\n- {name} (file {file_ids[name]}) — rejected: {name}: no partner spec recognises " in message
    assert message.endswith(f"\n  → {NEXT_STEP['rejected']}") and "Traceback" not in message
    # the README's automation: this night's message, by a webhook block, once
    [notification] = [n for n in notifications if n["subject"].startswith(ours)]
    assert notification["subject"] == f"cdv-etl: nightly run {run['name']} ended Failed"
    assert notification["body"].startswith(message + "\n")

    # one line per file: INFO with its counts, ERROR with its reason
    logs = run_logs(server, run_id)
    for name, exp in expected().items():
        line = next(m for _, m in logs if m.startswith(f"{Path(name).name} ({exp['partner']}, file "))
        assert (logging.INFO, line) in logs
        assert f": loaded — {count(exp['data_rows'])} rows read, {count(exp['loaded_rows'])} loaded, " in line
        assert f"{euros(Decimal(exp['engaged_amount_eur']))} engaged, moved to " in line
    for name in rejected:
        lines = [(level, m) for level, m in logs if m.startswith(name)]
        assert [level for level, _ in lines] == [logging.ERROR] and f": rejected — {name}: " in lines[0][1]

    assert list(inbox.iterdir()) == []
    for name, exp in expected().items():
        assert (work / "night1" / "archive" / exp["partner"] / Path(name).name).exists()
    assert (work / "night1" / "archive" / "reference" / ANCT_REFERENCE.name).exists()
    for name in rejected:
        assert (work / "night1" / "rejected" / name).exists()
        reason = (work / "night1" / "rejected" / f"{name}.reason.txt").read_text(encoding="utf-8")
        assert reason.startswith(f"{name}: ") and "no partner spec recognises" in reason

    published = wh.with_name("cdv.published.duckdb")
    con = duckdb.connect(str(published), read_only=True)
    for name, exp in expected().items():
        got = con.execute(
            "SELECT rows_read, rows_loaded, rows_quarantined, engaged_amount_eur FROM file_loads WHERE file_name = ?",
            [Path(name).name],
        ).fetchone()
        assert got == (
            exp["data_rows"],
            exp["loaded_rows"],
            exp["quarantined_rows"],
            Decimal(exp["engaged_amount_eur"]),
        )
        by_axis_year = dict(
            con.execute(
                "SELECT axis || '|' || year, sum(amount_eur) FROM financing f JOIN file_loads l USING (file_id) "
                "WHERE l.file_name = ? AND counts_as_engaged GROUP BY ALL",
                [Path(name).name],
            ).fetchall()
        )
        assert by_axis_year == {k: Decimal(v) for k, v in exp["by_axis_year"].items()}
    engaged_all = sum(Decimal(e["engaged_amount_eur"]) for e in expected().values())
    assert con.execute("SELECT sum(engaged_eur) FROM v_financing_by_partner").fetchone()[0] == engaged_all

    arts = {a["key"]: a for a in server.artifacts(run_id) if a.get("key")}
    assert {"nightly-files", "nightly-quarantine", "nightly-summary"} <= set(arts)
    assert any(a["type"] == "progress" for a in server.artifacts(run_id))

    # The files table: the essentials in French, French numbers, a total row; the rest in a second table.
    files = json.loads(arts["nightly-files"]["data"])
    assert list(files[0]) == [
        "fichier · partenaire",
        "statut",
        "lignes lues",
        "chargées",
        "en quarantaine",
        "engagé",
    ]
    row = next(r for r in files if r[FILE_PARTNER].startswith("anah_acv_2026.csv"))
    anah = expected()["anah/anah_acv_2026.csv"]
    assert (number(row[READ]), number(row[LOADED]), number(row[QUARANTINED])) == (
        anah["data_rows"],
        anah["loaded_rows"],
        anah["quarantined_rows"],
    )
    by_file = {r[FILE_PARTNER]: r for r in files}
    bdt = expected()["bdt/BDT_ACV_engagements_20261115.xlsx"]
    row = by_file["BDT_ACV_engagements_20261115.xlsx  \nbdt"]  # the partner under the file name
    assert (row["statut"], row["lignes lues"], row["chargées"], row["en quarantaine"], row["engagé"]) == (
        "chargé",
        count(bdt["data_rows"]),
        count(bdt["loaded_rows"]),
        count(bdt["quarantined_rows"]),
        euros(Decimal(bdt["engaged_amount_eur"])),
    )
    for name in rejected:
        assert by_file[f"{name}  \n?"]["statut"] == "rejeté"
    total_row = files[-1]
    assert total_row["fichier · partenaire"] == f"Total (chargés : {len(expected())})"
    assert total_row["lignes lues"] == count(sum(e["data_rows"] for e in expected().values()))
    assert total_row["chargées"] == count(sum(e["loaded_rows"] for e in expected().values()))
    assert total_row["engagé"] == euros(engaged_all)
    assert "\u202f" in total_row["lignes lues"]  # French thousands separator

    details = {r["fichier"]: r for r in json.loads(arts["nightly-file-details"]["data"])}
    assert list(details["notes_partenaire.csv"]) == [
        "fichier",
        "total de contrôle",
        "contrôle",
        "rapprochement",
        "déplacé vers",
        "message",
    ]
    total, engaged, not_engaged, quarantined, diff = con.execute(
        "SELECT control_total_eur, engaged_amount_eur, not_engaged_amount_eur, quarantined_amount_eur, "
        "control_total_diff_eur FROM v_control_totals WHERE file_name = ?",
        ["BDT_ACV_engagements_20261115.xlsx"],
    ).fetchone()
    assert total == engaged + not_engaged + quarantined + diff and total == Decimal("1032906237.00")  # its footer TOTAL
    d = details["BDT_ACV_engagements_20261115.xlsx"]
    assert (d["total de contrôle"], d["contrôle"]) == (euros(total), "ok")
    assert d["rapprochement"] == (  # one part a line
        f"{euros(total)} =  \n{euros(engaged)} engagés +  \n{euros(not_engaged)} non engagés +  \n"
        f"{euros(quarantined)} en quarantaine"
    )
    assert d["déplacé vers"] == f"{work / 'night1' / 'archive' / 'bdt'}/  \nBDT_ACV_engagements_20261115.xlsx"
    for name in rejected:
        message = details[name]["message"]
        assert "no partner spec recognises" in message.replace("  \n", " ")
        assert all(len(line) <= 50 or " " not in line for line in message.split("  \n"))

    quarantine = json.loads(arts["nightly-quarantine"]["data"])
    assert sum(number(r[QUARANTINED]) for r in quarantine) == sum(e["quarantined_rows"] for e in expected().values())
    by_rule = {r["règle"]: r["en quarantaine"] for r in quarantine if r["partenaire"] == "anah"}
    assert by_rule == {"commune_not_acv": "49", "unknown_status": "26", "year_date_mismatch": "39"}

    # The summary: French headings and headers, French numbers, a total line.
    summary_md = arts["nightly-summary"]["data"]
    assert "## Engagé par axe" in summary_md and "## Consommation des enveloppes" in summary_md
    assert "| axe | libellé | engagé | opérations | part |" in summary_md
    assert "short_label" not in summary_md and "engaged_eur" not in summary_md and "share_pct" not in summary_md
    assert f"**Total engagé : {euros(engaged_all)}**" in summary_md
    loaded = len(expected())
    assert f"Fichiers : {loaded + len(rejected)} (chargé : {loaded}, rejeté : {len(rejected)})." in summary_md
    al = Decimal(expected()["action_logement/AL_ACV_export_2026-10.csv"]["engaged_amount_eur"])
    assert f"| action_logement | Action Logement | {euros(al)} |" in summary_md
    assert re.search(r"\| \d+,\d\u202f% \|", summary_md)  # share of an axis: 12,3 %

    # This warehouse is not the one `cdv-etl serve` serves the reports of: the report's key
    # figures and where its file is, no link.
    reports = work / "night1" / "reports"
    [report] = reports.glob("report-*.html")
    report_md = arts["nightly-report"]["data"]
    assert f"`{report}`" in report_md and "file://" not in report_md and "http://" not in report_md
    assert f"**Total engagé : {euros(engaged_all)}**" in report_md
    # A feedback workbook for each partner with rejected rows (every specimen has some), beside the report.
    feedback = {p.name.removeprefix("rejets_").rsplit("_", 2)[0]: p for p in reports.glob("rejets_*.xlsx")}
    assert sorted(feedback) == sorted({e["partner"] for e in expected().values()})
    feedback_md = arts["nightly-feedback"]["data"]
    for path in feedback.values():
        assert f"`{path}`" in feedback_md
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/svg+xml") >= 4 and "http://" not in html.replace("http://www.w3.org", "")

    with temporary_settings(updates={PREFECT_API_URL: server.api}):  # the flows in this process, on this server
        # A night with nothing new is cheap, changes nothing, and says so (no progress bar at 0 %).
        state = nightly(inbox=str(inbox), warehouse=str(wh), return_state=True)
        assert (state.type, state.name) == (StateType.COMPLETED, "Completed")  # a clean night is green
        assert state.result()["files"] == []
        quiet = state.state_details.flow_run_id
        kinds = [a["type"] for a in server.artifacts(str(quiet))]
        assert sorted(kinds) == ["markdown", "table", "table"], kinds  # files, quarantine, summary
        assert latest_artifact("nightly-files", quiet) == [
            {
                "fichier · partenaire": "rien de nouveau",
                "statut": "—",
                "lignes lues": "0",
                "chargées": "0",
                "en quarantaine": "0",
            }
        ]
        assert "Fichiers : rien de nouveau." in str(latest_artifact("nightly-summary", quiet))

        # Under `cdv-etl serve` (CDV_REPORTS_URL, the reports folder of CDV_WAREHOUSE) the report is a link there.
        monkeypatch.setenv(URL_ENV, "http://127.0.0.1:4201/")
        monkeypatch.setenv("CDV_WAREHOUSE", str(wh))
        specimen = next(iter(expected()))
        shutil.copy(SPECIMENS / specimen, inbox)
        state = nightly(inbox=str(inbox), warehouse=str(wh), return_state=True)
        third = state.result()
        assert [f["status"] for f in third["files"]] == ["duplicate"]
        duplicate = state.state_details.flow_run_id
        assert latest_artifact("nightly-files", duplicate)[0]["statut"] == "doublon"  # type: ignore[index]
        link = str(latest_artifact("nightly-report", duplicate))
        assert f"(http://127.0.0.1:4201/{Path(third['report']).name})" in link, link
        assert Path(third["report"]).parent == reports

        # A night that rejects an export, called in this process: the caller gets NeedsAttention, with the run.
        (inbox / "notes_partenaire_2.csv").write_text("bonjour;\n3;4\n", encoding="utf-8")  # matches no partner
        with pytest.raises(NeedsAttention) as caught:
            nightly(inbox=str(inbox), warehouse=str(wh))
        assert caught.value.run is not None
        assert [f.file_name for f in caught.value.run.attention] == ["notes_partenaire_2.csv"]
        assert caught.value.run.as_dict()["published"] == str(published)
    assert (work / "night1" / "rejected" / "notes_partenaire_2.csv").exists()
    assert con.execute("SELECT count(*) FROM file_loads").fetchone()[0] == 7  # 5 loaded + 2 rejected
    con.close()


# An analyst asking `cdv-etl sql` again and again (a breath between questions, so as not to take
# a core from the runs), one line per answer in ``progress``, until told to stop (and at least
# five answers): started before the runs, stopped after them. The analyst is one process of its
# own that runs the command line's app for each question (each opens and closes the published
# copy, as a `cdv-etl sql` process does), so that no question waits for an interpreter to start.
ANALYST = """
import os, sys, time
from typer.testing import CliRunner
from cdv_etl.cli import app
wh, progress, stop = sys.argv[1:4]
ok = fail = 0
while not os.path.exists(stop) or ok + fail < 5:
    r = CliRunner().invoke(app, ["sql", "-w", wh, "--format", "csv", "SELECT count(*) FROM financing"])
    ok, fail = (ok + 1, fail) if r.exit_code == 0 else (ok, fail + 1)
    if r.exit_code:
        print(r.stdout, r.stderr, repr(r.exception), file=sys.stderr)
    with open(progress, "a") as fh:
        fh.write(f"{r.exit_code}\\n")
    time.sleep(0.5)
print(ok, fail)
"""


def test_two_nightly_runs_a_ui_ingest_and_adhoc_sql_at_the_same_time(served: tuple[PrefectServer, Path]) -> None:
    """One writer at a time, readers served, nothing loaded twice: two nights over one inbox (one
    waits for the other, then finds nothing new) and an ingest of a late export, started at once,
    while an analyst asks `cdv-etl sql` throughout."""
    server, work = served
    base = work / "night2"
    wh = base / "cdv.duckdb"
    run_cli(["reference", "load", "--sample", "-w", str(wh)], work)
    inbox = base / "inbox"
    exports = generate_demo_exports(inbox)
    late = base / "late" / exports[2].name  # the Anah export arrives by hand
    late.parent.mkdir()
    exports[2].rename(late)

    progress, stop = base / "answers.txt", base / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(wh), str(progress), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def answered() -> int:
        return len(progress.read_text().splitlines()) if progress.exists() else 0

    try:
        wait_for(lambda: answered() >= 1, "the analyst's first answer")
        nights = [server.run_deployment("nightly/nightly", {"inbox": str(inbox), "warehouse": str(wh)}) for _ in "ab"]
        runs = [
            *nights,
            server.run_deployment("ingest-export/ingest-export", {"path": str(late), "warehouse": str(wh)}),
        ]
        finished = [server.wait(r) for r in runs]
        seen = answered()
        wait_for(lambda: answered() > seen, "an answer after the runs")
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=600)
    assert [f["state_type"] for f in finished] == ["COMPLETED", "COMPLETED", "COMPLETED"]
    ok, fail = map(int, out.split())
    assert fail == 0 and ok >= 5, err
    con = duckdb.connect(str(wh.with_name("cdv.published.duckdb")), read_only=True)
    ledger = con.execute("SELECT file_name, status FROM file_loads ORDER BY file_name").fetchall()
    assert sorted(n for n, _ in ledger) == sorted(p.name for p in exports)  # each file loaded once
    assert len(ledger) == 5 and {s for _, s in ledger} == {"loaded"}
    assert (
        con.execute("SELECT count(*) FROM financing").fetchone()[0]
        == con.execute("SELECT sum(rows_loaded) FROM file_loads").fetchone()[0]
    )
    assert (
        con.execute(
            "SELECT count(*) FROM (SELECT file_id, row_key FROM engagement_rows GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        == 0
    )
    con.close()
    assert list(inbox.iterdir()) == []
    per_run = [
        json.loads(next(a for a in server.artifacts(r) if a.get("key") == "nightly-files")["data"]) for r in nights
    ]
    processed = sorted(len([f for f in files if f.get(STATUS_COL) == STATUS["loaded"]]) for files in per_run)
    assert processed == [0, len(exports) - 1], per_run  # one waited for the other, then found nothing new


def test_accept_export_from_the_ui(served: tuple[PrefectServer, Path]) -> None:
    """The form's one field, the file id; a file that is not held fails the run and says why."""
    server, work = served
    form = server.request("GET", "/deployments/name/accept-export/accept-export")["parameter_openapi_schema"]
    assert form["required"] == ["file_id"] and "held" in form["properties"]["file_id"]["description"]
    s = fresh_settings(work)
    rows = [{"ref": f"AL{i}", "insee": "47001", "amount": "100,00", "day": "01/02/2021"} for i in range(10)]
    (work / "oct").mkdir()
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(work, "2024-09", rows)).status == "loaded"
        held = pipe.ingest(al_export(work / "oct", "2024-10", rows[:5]))
    assert held.status == "held"
    params = {"file_id": held.file_id, "warehouse": str(s.warehouse)}
    accepted = server.wait(server.run_deployment("accept-export/accept-export", params))
    assert accepted["state_type"] == "COMPLETED"
    with temporary_settings(updates={PREFECT_API_URL: server.api}):  # the same flow, in this process
        again = accept_export(**params, return_state=True)  # type: ignore[arg-type]
    assert again.type is StateType.FAILED and "is loaded, not held" in (again.message or "")
    con = duckdb.connect(str(s.published_path), read_only=True)
    assert con.execute("SELECT file_id, operations FROM v_financing_by_partner WHERE operations > 0").fetchall() == [
        (held.file_id, 5)
    ]
    con.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
    """Until ``condition()`` holds (polled); a generous limit only against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.1)

"""A real browser on a real Prefect server: an operator starts `ingest-export` from the UI.

Headless Chromium (Debian's, driven by Playwright: no browser download) opens the server's UI,
goes to the `ingest-export` deployment, chooses Run → Custom run, types the export's path into
the parameters form and submits. The run is served by `cdv-etl serve`, as in production; the
test checks the run the UI created, the file's rows in the published warehouse, and that the
page never asked anything of a host other than the local server. A screenshot of the finished
run's page is kept in test-artifacts/.

The server is the session's one (``conftest.prefect_served``). It listens on a free port, not
4200: `start_server` points PREFECT_UI_API_URL at its own API, or the UI would show "Can't
connect to Server API".
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, SERVED_WAREHOUSE, skip_or_fail
from prefect_server import PrefectServer

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE

pytestmark = [SERVED_WAREHOUSE, pytest.mark.prefect_server]  # its runs write the served warehouse

SCREENSHOT = ROOT / "test-artifacts" / "prefect-ui-run.png"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
RUN_TIMEOUT_S = 600
UI_TIMEOUT_MS = 60_000


def _need_browser() -> None:
    if not CHROMIUM.exists():
        skip_or_fail(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) to run the Prefect UI test"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright Python package is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def ui_served(request: pytest.FixtureRequest) -> tuple[PrefectServer, Path]:
    """The session's Prefect server and `cdv-etl serve`; the served warehouse holding the sample
    reference (this test's runs, and the report test's night, name no warehouse: the served default)."""
    _need_browser()
    server, work = request.getfixturevalue("prefect_served")
    run = server.wait(
        server.run_deployment("reference-refresh/reference-refresh", {"path": str(SAMPLE_REFERENCE)}),
        timeout=RUN_TIMEOUT_S,
    )
    assert run["state_type"] == "COMPLETED", _serve_log(work)
    return server, work


def _serve_log(work: Path) -> str:
    return (work / "serve.log").read_text(errors="replace")[-4000:]


def test_ingest_export_started_from_the_ui(ui_served: tuple[PrefectServer, Path], tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    server, work = ui_served
    export = next(p for p in generate_demo_exports(tmp_path / "exports") if p.name.startswith("AL_"))
    typed_path = str(export.resolve())
    dep_id = server.deployment_id("ingest-export/ingest-export")
    requested: list[tuple[str, str]] = []  # (method, url) of every request of the browser
    created: list[int] = []  # the status of each answer to the form's create_flow_run
    create = f"/deployments/{dep_id}/create_flow_run"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.on("request", lambda r: requested.append((r.method, r.url)))
            context.on(
                "response",
                lambda r: (
                    created.append(r.status)
                    if r.request.method == "POST" and urlsplit(r.url).path.endswith(create)
                    else None
                ),
            )
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page = context.new_page()
            page.on("websocket", lambda ws: requested.append(("WEBSOCKET", ws.url)))

            # The deployment's page: Run → Custom run opens the parameters form.
            page.goto(f"{server.url}/deployments/deployment/{dep_id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_role("link", name="Custom run", exact=True).click()
            page.wait_for_url(re.compile(rf"/deployments/deployment/{dep_id}/run\b"))

            # The form's fields are `p-label` blocks whose <label> is not tied to the control
            # (for= names no element), so a field is found by its block holding the label text.
            def field(label: str) -> Any:
                block = page.locator(".p-label").filter(has=page.locator("label").get_by_text(label, exact=True))
                return block.get_by_role("textbox")

            run_name_box = field("Run Name")
            expect(run_name_box).to_have_count(1)
            expect(run_name_box).not_to_have_value("")
            run_name = run_name_box.input_value()
            path_box = field("path")
            expect(path_box).to_have_count(1)
            path_box.click()
            path_box.fill(typed_path)
            expect(path_box).to_have_value(typed_path)
            # The run the form creates: its id as the server answered the browser's request (other
            # tests start runs of this deployment meanwhile: the newest run need not be this one). A
            # busy server's 503 is retried by the UI, as by Prefect's client: the run is the 2xx answer.
            with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(create) and r.ok) as made:
                page.get_by_role("button", name="Submit", exact=True).click()
            run_id = made.value.json()["id"]

            # The UI goes back to the deployment with a toast "<run> scheduled to start now" and
            # a "View run" button. (Prefect's UI mounts its toast container twice, hence .first;
            # the toast fades after 5 s, sooner than a busy machine may show it: then the run's page
            # by its address.)
            try:
                page.get_by_role("button", name="View run").first.click(timeout=4000)
            except PlaywrightTimeout:
                page.goto(f"{server.url}/runs/flow-run/{run_id}")
            page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
            assert page.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] == run_id
            expect(page.get_by_text(run_name, exact=True).first).to_be_visible()

            run = server.wait(run_id, timeout=RUN_TIMEOUT_S)
            assert run["state_type"] == "COMPLETED", _serve_log(work)

            # The finished run's page, reloaded: state badge and logs, then the screenshot.
            page.reload()
            expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
            expect(page.get_by_text(f"ingest {export.name}").first).to_be_visible()
            page.wait_for_timeout(1500)  # let the run graph (a canvas) draw
            text = page.locator("body").inner_text()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            shutil.copy(SCREENSHOT, tmp_path / SCREENSHOT.name)
        except Exception:
            with contextlib.suppress(Exception):  # what the page showed when the test failed
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                browser.contexts[0].pages[-1].screenshot(path=str(SCREENSHOT.with_name("prefect-ui-failure.png")))
            raise
        finally:
            browser.close()

    # The run the UI created: this deployment, the typed path, the form's run name.
    run = server.request("GET", f"/flow_runs/{run_id}")
    assert run["deployment_id"] == dep_id
    assert run["name"] == run_name
    assert run["parameters"]["path"] == typed_path
    assert {k: v for k, v in run["parameters"].items() if v not in (None, False)} == {"path": typed_path}
    assert run["state_type"] == "COMPLETED"
    assert "Completed" in text and run_name in text and "Can't connect to Server API" not in text

    # The file's rows are in the published warehouse.
    published = work / "wh" / "cdv.published.duckdb"
    con = duckdb.connect(str(published), read_only=True)
    try:
        got = con.execute("SELECT status, rows_loaded FROM file_loads WHERE file_name = ?", [export.name]).fetchone()
        in_financing = con.execute(
            "SELECT count(*) FROM financing JOIN file_loads USING (file_id) WHERE file_name = ?", [export.name]
        ).fetchone()
    finally:
        con.close()
    assert got is not None, f"{export.name} not in file_loads: {_serve_log(work)}"
    status, rows_loaded = got
    assert status == "loaded"
    assert in_financing is not None and rows_loaded == in_financing[0] > 0

    # The browser created exactly one run, and everything it fetched came from the local server.
    assert len([s for s in created if s < 300]) == 1 and {s for s in created if s >= 300} <= {503}, created
    foreign = sorted(
        {
            u
            for _, u in requested
            if urlsplit(u).scheme not in {"data", "blob", "about"} and urlsplit(u).hostname not in LOCAL_HOSTS
        }
    )
    assert requested and not foreign, foreign

"""A real browser on a real Prefect server: the nightly run's artifacts, read at 1400 px, and its report link.

The session's one server (``conftest.prefect_served``): `cdv-etl serve` serves the deployments
and the served warehouse's reports folder (on a free port, through CDV_REPORTS_PORT). The
nightly deployment runs once over an inbox holding the sample ANCT reference and one demo
export per partner. Headless Chromium (Debian's, driven by Playwright) then opens the run's
Artifacts tab, checks the files table fits 1400 px without a horizontal scroll, clicks the
report link and checks the steering committee's report opens. It also looks at the nightly
deployment's schedule (its time zone) and at the `ingest-export` form (the partner is a
choice list). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SERVED_WAREHOUSE
from prefect_server import PrefectServer
from test_prefect_ui import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, _need_browser

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.specs import load_specs
from flows.artifacts import REPORT_TITLE
from flows.deployments import NIGHTLY_SLUG

pytestmark = [SERVED_WAREHOUSE, pytest.mark.prefect_server]  # its night writes the served warehouse

SHOTS = ROOT / "test-artifacts"
RUN_TIMEOUT_S = 300
REPORT_HEADING = "Action Cœur de Ville — financements des partenaires"
"""The report's <title> and <h1> (cdv_etl/publish/report.py)."""


@pytest.fixture(scope="module")
def night(request: pytest.FixtureRequest) -> tuple[PrefectServer, Path, str, int]:
    """The session's Prefect server and `cdv-etl serve`, and one nightly run of the served
    deployment over an inbox of this test's own into the served warehouse (the one whose
    reports folder `serve` serves), completed. The exports are dated 2025-03-15: other runs on
    the served warehouse (the UI test's, today's demo export) are never the same file."""
    _need_browser()
    server, work = request.getfixturevalue("prefect_served")
    assert server.reports_port is not None
    inbox = work / "ui-report" / "inbox"
    generate_demo_exports(inbox, today=date(2025, 3, 15))
    shutil.copy(SAMPLE_REFERENCE, inbox / SAMPLE_REFERENCE.name)
    run_id = server.run_deployment("nightly/nightly", {"inbox": str(inbox)})
    run = server.wait(run_id, timeout=RUN_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", _serve_log(work)
    return server, work, run_id, server.reports_port


def _serve_log(work: Path) -> str:
    return (work / "serve.log").read_text(errors="replace")[-4000:]


def _widest_overflow(locator: Any) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of the element or of its ancestor that overflows the most."""
    return tuple(  # type: ignore[return-value]
        locator.evaluate(
            """el => {
                let worst = [0, 0];
                for (let e = el; e; e = e.parentElement) {
                    if (e.scrollWidth - e.clientWidth > worst[0] - worst[1]) worst = [e.scrollWidth, e.clientWidth];
                }
                return worst;
            }"""
        )
    )


def test_nightly_artifacts_at_1400px_and_the_report_link_opens(
    night: tuple[PrefectServer, Path, str, int], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    server, work, run_id, port = night
    artifacts = {a["key"]: a for a in server.artifacts(run_id) if a["key"]}
    link = artifacts["nightly-report"]
    report = sorted((work / "wh" / "reports").glob("report-*.html"))[-1]
    assert link["type"] == "markdown" and f"(http://127.0.0.1:{port}/{report.name})" in link["data"], link
    SHOTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page = context.new_page()

            run_page = f"{server.url}/runs/flow-run/{run_id}"

            def artifacts_tab(first: bool = False) -> None:
                """The run's Artifacts tab: the run's page, or back to it from an artifact's page in the
                UI's own history (the page is not loaded again)."""
                if first:
                    page.goto(run_page)
                else:
                    page.go_back()
                    page.wait_for_url(re.compile(re.escape(run_page)))
                page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
                expect(page.get_by_role("link", name=re.compile("nightly-files"))).to_be_visible()

            # The run's Artifacts tab, then the files table's page: the table whole at 1400 px, in French.
            artifacts_tab(first=True)
            page.screenshot(path=str(SHOTS / "prefect-ui-artifacts-1400.png"), full_page=True)
            page.get_by_role("link", name=re.compile("nightly-files")).click()
            table = page.locator("table").filter(has_text="lignes lues").first
            expect(table).to_be_visible()
            headers = [h.strip() for h in table.locator("th").all_inner_texts()]
            assert headers == ["fichier · partenaire", "statut", "lignes lues", "chargées", "en quarantaine", "engagé"]
            expect(table.get_by_text("chargé", exact=True).first).to_be_visible()
            expect(table.get_by_text(re.compile(r"^Total \(chargés : 5\)$"))).to_be_visible()
            expect(table.get_by_text(re.compile(r"^\d{1,3}(\s\d{3})*,\d\d\s€$")).first).to_be_visible()
            page.wait_for_timeout(500)  # let the layout settle before measuring and the screenshot
            page.screenshot(path=str(SHOTS / "prefect-ui-files-1400.png"), full_page=True)
            scroll, client = _widest_overflow(table)
            assert scroll <= client, f"the files table scrolls: {scroll} px in {client} px"
            assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")

            # The second table and the summary, for the record (screenshots).
            for key in ("nightly-file-details", "nightly-summary"):
                artifacts_tab()
                page.get_by_role("link", name=re.compile(key)).click()
                expect(page.locator("table").first).to_be_visible()
                page.wait_for_timeout(500)
                page.screenshot(path=str(SHOTS / f"prefect-ui-{key.removeprefix('nightly-')}-1400.png"), full_page=True)

            # The report artifact's page: its link, clicked, opens the report from the report server.
            artifacts_tab()
            page.get_by_role("link", name=re.compile("nightly-report")).click()
            anchor = page.get_by_role("link", name=re.compile(re.escape(REPORT_TITLE)))
            expect(anchor).to_be_visible()
            page.screenshot(path=str(SHOTS / "prefect-ui-report-artifact.png"))
            if anchor.get_attribute("target") == "_blank":  # the UI opens links in a new tab
                with context.expect_page() as opened:
                    anchor.click()
                report_page = opened.value
            else:
                anchor.click()
                report_page = page
            report_page.wait_for_load_state()
            assert report_page.url == f"http://127.0.0.1:{port}/{report.name}"
            expect(report_page).to_have_title(REPORT_HEADING)
            expect(report_page.get_by_role("heading", name=REPORT_HEADING, level=1)).to_be_visible()
            report_page.screenshot(path=str(SHOTS / "prefect-ui-report-opened.png"))

            # The schedule shows its time zone; the ingest form's partner is a choice list.
            page.goto(f"{server.url}/deployments/deployment/{server.deployment_id('nightly/nightly')}")
            expect(page.get_by_text(NIGHTLY_SLUG).first).to_be_visible()
            page.screenshot(path=str(SHOTS / "prefect-ui-schedule.png"))
            page.goto(f"{server.url}/deployments/deployment/{server.deployment_id('ingest-export/ingest-export')}/run")
            block = page.locator(".p-label").filter(has=page.locator("label").get_by_text(re.compile(r"^partner\b")))
            expect(block).to_have_count(1)
            expect(block.get_by_text("str", exact=True)).to_have_count(0)  # no "str | None" switch
            select = block.locator(".p-select-button__control")  # Prefect's select: a button opening a list
            select.click()
            select.press("ArrowDown")  # the list opens on a key once the button has the focus
            options = page.get_by_role("option")
            expect(options.first).to_be_visible()
            page.screenshot(path=str(SHOTS / "prefect-ui-partner-select.png"))
            shown = {t.strip() for t in options.all_inner_texts()}
            assert set(load_specs()) <= shown, shown
        except Exception:
            with contextlib.suppress(Exception):  # what the page showed when the test failed
                browser.contexts[0].pages[-1].screenshot(path=str(SHOTS / "prefect-ui-report-failure.png"))
            raise
        finally:
            browser.close()

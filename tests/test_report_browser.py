"""The report as people see it: headless Chromium at a wide screen (1400 px) and a phone (390 px).

The warehouse is real: two rounds of the demo exports (so there are changes and a quarantine
trend to show), then, when the shared data is here, the real ANCT reference (244 communes,
16 overseas) and the partners' specimens on top (BDT's control total of 1 032 906 237,00 €).
Screenshots are kept in ``test-artifacts/report-1400.png`` and ``report-390.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from analyst_helpers import accepting_held, demo_warehouse
from conftest import ANCT_REFERENCE, CHROMIUM, CHROMIUM_ARGS, ROOT, SPECIMENS, expected, one_worker, skip_or_fail

from cdv_etl.pipeline import ingest_files, open_pipeline
from cdv_etl.publish.report import build_report

pytestmark = one_worker(__name__)

ARTIFACTS = ROOT / "test-artifacts"
WIDTHS = (1400, 390)

# Everything a person could find wrong in the layout, measured in the page itself.
LAYOUT_JS = """() => {
  const scroller = el => { for (let p = el.parentElement; p; p = p.parentElement) {
      if (p.classList.contains('scroll')) return p; } return null; };
  const cells = [...document.querySelectorAll('td, th')];
  const clipped = cells.filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.slice(0, 60));
  const unwrapped = [...document.querySelectorAll('table')].filter(t => !scroller(t)).length;
  const page = document.scrollingElement;
  const wider = [...document.querySelectorAll('body *')].filter(e => !scroller(e))
      .filter(e => e.getBoundingClientRect().right > innerWidth + 1).map(e => e.tagName + '.' + e.className);
  const kpis = [...document.querySelectorAll('.kpi .value')].map(e => ({
      text: e.textContent,
      lines: Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)),
      cut: e.scrollWidth > e.clientWidth + 1 }));
  const charts = [...document.querySelectorAll('figure.chart img')].map(i => ({
      alt: i.alt, src: i.currentSrc.slice(0, 30), w: i.getBoundingClientRect().width,
      h: i.getBoundingClientRect().height, natural: i.naturalWidth, complete: i.complete,
      fits: i.getBoundingClientRect().right <= i.closest('section').getBoundingClientRect().right + 0.5 }));
  return {scrollWidth: page.scrollWidth, innerWidth, clipped, unwrapped, wider, kpis, charts,
          narrowChosen: charts.filter(c => c.w > 0).length,
          map: !!document.querySelector('#carte figure.chart img[alt^="Carte des"]')};
}"""

CHART_SOURCES_JS = "() => [...document.querySelectorAll('figure.chart img')].map(i => i.currentSrc)"


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) for the report test")
    work = tmp_path_factory.mktemp("report-browser")
    settings = demo_warehouse(work, loads=2)  # the session's copy, when test_report or test_duckdb_cli built it
    if (SPECIMENS / "expected.json").exists() and ANCT_REFERENCE.exists():
        with open_pipeline(settings) as pipe:
            pipe.load_reference(ANCT_REFERENCE)
        results = accepting_held(settings, ingest_files(settings, [SPECIMENS / name for name in expected()]))
        assert all(r.status == "loaded" for r in results), [(r.file_name, r.message) for r in results]
    path = work / "report.html"
    path.write_text(build_report(settings.published_path, generated_at=datetime(2026, 11, 16, 6, 0)), "utf-8")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright Python package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_report_reads_well_at_each_width(report_file: Path, browser: Any, width: int) -> None:
    tab = browser.new_page(viewport={"width": width, "height": 900})
    requests: list[str] = []
    tab.on("request", lambda r: requests.append(r.url))
    try:
        tab.goto(report_file.as_uri(), wait_until="load")
        layout = tab.evaluate(LAYOUT_JS)
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"report-{width}.png"), full_page=True)
    finally:
        tab.close()
    assert layout["scrollWidth"] <= layout["innerWidth"], layout["wider"][:10]  # no horizontal overflow
    assert layout["wider"] == []
    assert layout["map"], "the map of the communes is missing"
    assert layout["unwrapped"] == 0  # every table scrolls inside its card
    assert layout["clipped"] == [], layout["clipped"][:10]  # no cell text cut
    for kpi in layout["kpis"]:
        assert kpi["lines"] == 1 and not kpi["cut"], kpi  # "166 525 619,16 €" on one line, € included
    assert len(layout["charts"]) >= 7
    for chart in layout["charts"]:
        assert chart["complete"] and chart["natural"] > 0 and chart["h"] > 50 and chart["fits"], chart
        assert chart["w"] >= min(300, width - 60), chart  # charts fill the column: readable
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests


def test_a_phone_gets_the_narrow_charts(report_file: Path, browser: Any) -> None:
    """The <picture> picks the chart drawn for a narrow column on a phone, the wide one on a screen."""
    drawn = {}
    for width in WIDTHS:
        tab = browser.new_page(viewport={"width": width, "height": 900})
        try:
            tab.goto(report_file.as_uri(), wait_until="load")
            drawn[width] = tab.evaluate(
                "() => [...document.querySelectorAll('figure.chart img')].map(i => i.currentSrc)"
            )
        finally:
            tab.close()
    assert len(drawn[390]) == len(drawn[1400]) >= 7
    assert all(a != b for a, b in zip(drawn[390], drawn[1400], strict=True))
    page = report_file.read_text(encoding="utf-8")
    assert all(src in page for src in drawn[390] + drawn[1400])

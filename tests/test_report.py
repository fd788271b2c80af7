"""The steering committee's report: self-contained HTML, rendered in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import demo_warehouse, run_cli
from conftest import ROOT

from cdv_etl.config import Settings
from cdv_etl.publish.report import build_report
from cdv_etl.publish.tables import euros

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
SHORT_AXES = (
    "Habitat",
    "Économie et commerce",
    "Mobilité",
    "Espace public et patrimoine",
    "Équipements et services publics",
)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two rounds of the five demo exports: figures, changes and rejected rows to show."""
    return demo_warehouse(tmp_path_factory.mktemp("report"), loads=2)


@pytest.fixture(scope="module")
def page(warehouse: Settings) -> str:
    return build_report(warehouse.published_path)


def test_report_shows_the_figures_of_the_views(page: str, warehouse: Settings) -> None:
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    total = con.execute("SELECT sum(engaged_eur) FROM v_financing_by_partner").fetchone()[0]
    assert isinstance(total, Decimal) and total > 0
    assert euros(total) in page  # the exact total, to the cent
    for (engaged,) in con.execute("SELECT engaged_eur FROM v_financing_by_axis").fetchall():
        assert euros(engaged) in page
    for name in (
        "Banque des Territoires",
        "Action Logement",
        "Anah",
        "État",
        "Établissements publics fonciers",
        *SHORT_AXES,
    ):
        assert name in page, name
    top = con.execute(
        "SELECT convention_id FROM v_financing_by_convention ORDER BY engaged_eur DESC LIMIT 1"
    ).fetchone()[0]
    assert top in page
    for h2 in (
        "par axe",
        "par partenaire",
        "par année",
        "Matrice axe × partenaire",
        "enveloppes",
        "les plus et les moins financées",
        "Évolutions",
        "Qualité des données",
    ):
        assert h2 in page, h2
    rules = {r for (r,) in con.execute("SELECT DISTINCT rule FROM v_quarantine_summary WHERE is_current").fetchall()}
    assert rules and all(f"<code>{r}</code>" in page for r in rules)


def test_report_refers_to_nothing_outside_itself(page: str) -> None:
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert sources and all(s.startswith("data:") for s in sources), [s[:40] for s in sources]
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # and the page forbids itself any other source


def test_report_renders_in_headless_chromium(page: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); the browser test needs it")
    from playwright.sync_api import sync_playwright

    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    screenshot = tmp_path / "report.png"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(html_file.as_uri(), wait_until="load")
            charts = tab.evaluate("""() => [...document.querySelectorAll('figure.chart img, figure.chart svg')]
                .map(e => { const r = e.getBoundingClientRect();
                            return {w: r.width, h: r.height, natural: e.naturalWidth ?? r.width,
                                    complete: e.complete ?? true}; })""")
            title = tab.title()
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert "Action Cœur de Ville" in title
    assert len(charts) >= 4, charts
    for c in charts:
        assert c["complete"] and c["natural"] > 0 and c["w"] > 100 and c["h"] > 50, c
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    assert screenshot.stat().st_size > 50_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, ARTIFACTS / "report.png")


def test_report_command(warehouse: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    run_cli(["report", "-o", str(out), "-w", str(warehouse.warehouse)], tmp_path)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.count('<figure class="chart">') >= 4


def test_report_of_an_empty_warehouse(tmp_path: Path) -> None:
    from analyst_helpers import fresh_settings

    s = fresh_settings(tmp_path)
    text = build_report(s.published_path)
    assert "aucun export chargé" in text and "Aucune donnée" in text and euros(Decimal("0.00")) in text


def test_same_data_same_page(warehouse: Settings) -> None:
    from datetime import datetime

    when = datetime(2026, 1, 15, 9, 30)
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    first = build_report(con, generated_at=when)
    con.close()
    assert build_report(warehouse.published_path, generated_at=when) == first
    assert "15/01/2026 09:30" in first and str(warehouse.published_path) in first

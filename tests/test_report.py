"""The steering committee's report: self-contained HTML, rendered in a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import demo_warehouse, run_cli
from conftest import ANCT_REFERENCE, ROOT, needs_shared, one_worker

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.reference import SAMPLE_REFERENCE, read_reference
from cdv_etl.publish.report import METROPOLE, _int, build_report, reconciliation
from cdv_etl.publish.tables import euros

pytestmark = one_worker(__name__)

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


GENERATED_AT = datetime(2026, 1, 15, 9, 30)


@pytest.fixture(scope="module")
def page(warehouse: Settings) -> str:
    """The report of the published copy (opened by its path), dated GENERATED_AT."""
    return build_report(warehouse.published_path, generated_at=GENERATED_AT)


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
    sources = re.findall(r'(?:src|srcset|href)\s*=\s*"([^"]*)"', page)
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


def test_same_data_same_page(page: str, warehouse: Settings) -> None:
    """Built again, from an open connection this time, at the same date: the same page."""
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    first = build_report(con, generated_at=GENERATED_AT)
    con.close()
    assert page == first
    assert "15/01/2026 09:30" in first and str(warehouse.published_path) in first


def test_the_map_places_each_commune_where_the_reference_does(page: str, warehouse: Settings) -> None:
    import csv

    with SAMPLE_REFERENCE.open(encoding="utf-8") as fh:
        reference = {
            r["insee_com"]: (float(r["longitude"]), float(r["latitude"]), int(r["pop"])) for r in csv.DictReader(fh)
        }
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    rows = con.execute(
        "SELECT insee_code, longitude, latitude, population, territory, engaged_eur, eur_per_inhabitant "
        "FROM v_commune_map"
    ).fetchall()
    assert {r[0]: (r[1], r[2], r[3]) for r in rows} == reference
    territories = {r[0]: r[4] for r in rows}
    assert (
        territories["97105"] == "Guadeloupe" and territories["97302"] == "Guyane" and territories["2A004"] == METROPOLE
    )
    for _, _, _, population, _, engaged, per_head in rows:
        assert per_head == (engaged / population).quantize(Decimal("0.01"))
    assert '<section id="carte">' in page
    figure = re.search(r'<section id="carte"><h2>[^<]*</h2><figure class="chart">.*?</figure>', page)
    assert figure and 'alt="Carte des 36 communes Action Cœur de Ville, dont 2 outre-mer en encarts' in figure.group(0)
    for insee, *_, engaged, per_head in rows:  # the table under the map gives the same figures
        assert f"<td>{insee}</td>" in page and euros(engaged) in page and euros(per_head) in page


def _cells(*values: str) -> str:
    return "".join(f'<td class="num">{v}</td>' for v in values)


def test_since_the_previous_export_equals_a_direct_query(page: str, warehouse: Settings) -> None:
    """Operations added and withdrawn per partner and axis, computed here from the exports
    themselves (not from v_changes), are the report's figures."""
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    pairs = con.execute(
        """SELECT partner, file_id,
                  lag(file_id) OVER (PARTITION BY partner ORDER BY extraction_date, loaded_at, file_id)
           FROM files WHERE status = 'loaded' QUALIFY file_id IN (SELECT file_id FROM current_files)"""
    ).fetchall()
    assert len(pairs) == 5 and all(previous is not None for _, _, previous in pairs)
    names = dict(con.execute("SELECT axis, short_label FROM axes").fetchall())
    partner_names = {p: n.split(" (")[0] for p, n in con.execute("SELECT partner, name FROM partners").fetchall()}
    seen = 0
    for partner, current, previous in pairs:
        per_axis = con.execute(
            """WITH cur AS (SELECT operation_id, axis, amount_eur FROM engagement_rows WHERE file_id = $cur),
                    prev AS (SELECT operation_id, axis, amount_eur FROM engagement_rows WHERE file_id = $prev),
                    -- every operation id of an export, loaded or quarantined: a move in or out of
                    -- quarantine is no addition or withdrawal
                    cur_ids AS (SELECT operation_id FROM cur UNION
                                SELECT operation_id FROM quarantine_records WHERE file_id = $cur),
                    prev_ids AS (SELECT operation_id FROM prev UNION
                                 SELECT operation_id FROM quarantine_records WHERE file_id = $prev)
               SELECT axis, sum(added)::BIGINT, sum(added_eur), sum(withdrawn)::BIGINT, sum(withdrawn_eur) FROM (
                   SELECT axis, 1 AS added, amount_eur AS added_eur, 0 AS withdrawn, 0 AS withdrawn_eur
                   FROM cur WHERE operation_id NOT IN (SELECT operation_id FROM prev_ids WHERE operation_id NOT NULL)
                   UNION ALL
                   SELECT axis, 0, 0, 1, amount_eur
                   FROM prev WHERE operation_id NOT IN (SELECT operation_id FROM cur_ids WHERE operation_id NOT NULL))
               GROUP BY axis ORDER BY axis""",
            {"cur": current, "prev": previous},
        ).fetchall()
        for axis, added, added_eur, withdrawn, withdrawn_eur in per_axis:
            row = (
                f"<td>{html.escape(partner_names[partner])}</td><td>{html.escape(names[axis])}</td>"
                + _cells(_int(added), euros(added_eur))
                + _cells(_int(withdrawn), euros(withdrawn_eur))
            )
            assert row in page, (partner, axis)
            seen += 1
    assert seen >= 5
    trend = con.execute(
        """SELECT partner, rows_quarantined, rows_read, lead(rows_quarantined) OVER w, lead(rows_read) OVER w
           FROM files WHERE status = 'loaded'
           WINDOW w AS (PARTITION BY partner ORDER BY extraction_date DESC, loaded_at DESC, file_id DESC)
           QUALIFY file_id IN (SELECT file_id FROM current_files)"""
    ).fetchall()
    for _, quarantined, read, before, read_before in trend:
        assert f"{_int(before)} / {_int(read_before)}<br>" in page and f"{_int(quarantined)} / {_int(read)}<br>" in page


def test_each_control_total_splits_exactly_into_its_parts(page: str, warehouse: Settings) -> None:
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    rows = con.execute(
        "SELECT file_id, control_total_eur, engaged_amount_eur, not_engaged_amount_eur, quarantined_amount_eur, "
        "control_total_diff_eur, is_current FROM v_control_totals"
    ).fetchall()
    assert len(rows) == 2  # the two BDT exports, whose sheet ends with a TOTAL row
    for file_id, control, engaged, not_engaged, quarantined, diff, is_current in rows:
        assert engaged + not_engaged + quarantined + diff == control  # to the cent, Decimal
        raw = con.execute(
            "SELECT raw_record ->> '$.\"Montant engagé (€)\"' FROM quarantine_rows WHERE file_id = ?", [file_id]
        ).fetchall()
        readable = [Decimal(v) for (v,) in raw if v is not None and re.fullmatch(r"-?\d+(\.\d+)?", v)]
        assert quarantined == sum(readable, Decimal("0.00")) and quarantined > 0  # what the quarantine holds
        if is_current:
            assert all(euros(v) in page for v in (control, engaged, not_engaged, quarantined))
            assert "le total de contrôle" in page


@needs_shared
def test_the_anct_points_become_the_communes_positions() -> None:
    import json

    features = json.loads(ANCT_REFERENCE.read_text(encoding="utf-8"))["features"]
    ref = read_reference(ANCT_REFERENCE).set_index("insee_code")
    for f in features:
        code = str(f["properties"]["insee_com"]).upper().zfill(5)
        assert (ref.at[code, "longitude"], ref.at[code, "latitude"]) == tuple(f["geometry"]["coordinates"]), code
    assert ref["longitude"].notna().all() and ref["population"].notna().all() and len(ref) == 244


def test_a_position_that_is_not_degrees_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text(
        "insee_com,id_acv,lib_com,insee_dep,pop,longitude,latitude\n"
        "80001,ACV001,Abbeville,80,22595,1.8322,50.1086\n"
        "34003,ACV002,Agde,34,29103,3.4838,nord\n",
        encoding="utf-8",
    )
    with pytest.raises(CdvError, match=r"latitude 'nord' of commune 34003 \(feature 2\)"):
        read_reference(path)
    path.write_text(path.read_text(encoding="utf-8").replace("nord", "143.3"), encoding="utf-8")
    with pytest.raises(CdvError, match=r"latitude '143.3' of commune 34003 .* within ±90"):
        read_reference(path)


def test_a_control_total_that_does_not_match_names_the_difference() -> None:
    row = {
        "control_total_eur": Decimal("1032906237.00"),
        "engaged_amount_eur": Decimal("996547905.86"),
        "not_engaged_amount_eur": Decimal("0.00"),
        "quarantined_amount_eur": Decimal("36359831.14"),
        "control_total_diff_eur": Decimal("-1500.00"),  # the TOTAL row is 1 500 € short of the rows
        "rows_quarantined": 43,
    }
    text = reconciliation(row)
    assert "✓" not in text and "de moins" in text and euros(Decimal("1500.00")) in text
    assert euros(Decimal("1032907737.00")) in text  # what the rows add up to
    row["control_total_diff_eur"] = Decimal("0.00")
    row["quarantined_amount_eur"] = Decimal("36358331.14")
    assert "✓" in reconciliation(row) and "lu dans les 43 lignes en quarantaine" in reconciliation(row)

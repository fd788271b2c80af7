"""Feedback to partners: the rejected rows of a partner's current export, as it sent them, and why."""

from __future__ import annotations

import csv
import os
import shutil
import urllib.request
from decimal import Decimal
from pathlib import Path

import duckdb
import openpyxl
import pytest
from analyst_helpers import AL_HEADER, al_export, epf_export, fresh_settings, run_cli
from conftest import ANCT_REFERENCE, SPECIMENS, needs_shared

from cdv_etl.config import Settings
from cdv_etl.inbox import InboxRun, reports_dir, run_inbox
from cdv_etl.pipeline import open_pipeline
from cdv_etl.publish.feedback import NO_REJECTION, REASON_COLUMNS, ROWS_SHEET, SUMMARY_COLUMNS, SUMMARY_SHEET
from schemas.canonical import RULES

FORMULA = '=HYPERLINK("http://evil.example","clic")'
SEPTEMBER = [
    {"ref": "A1", "insee": "47001", "amount": "100,00", "day": "01/02/2021"},
    {"ref": "S1", "insee": "99999", "amount": "7,00", "day": "01/02/2021"},  # rejected in September only
]
OCTOBER = [
    {"ref": "A1", "insee": "47001", "amount": "100,00", "day": "01/02/2021"},  # line 2: loaded
    {"ref": "A2", "insee": "99999", "amount": "1 234,56", "day": "01/02/2021", "commune": FORMULA},  # line 3
    {"ref": "A3", "insee": "62498", "amount": "beaucoup", "day": "01/02/2021"},  # line 4
    {"ref": "A4", "insee": "99999", "amount": "-50,00", "day": "01/02/2021"},  # line 5: two rules
]


def cells(row: dict[str, str]) -> list[str]:
    """The cells of ``row`` as ``al_export`` writes them, in Action Logement's column order."""
    return [
        row["ref"],
        row["insee"],
        row.get("commune", "Commune"),
        "Construction neuve",
        "Prêt",
        "10",
        row["amount"],
        row["day"],
    ]


def explained(rule: str) -> str:
    return RULES[rule].explanation


@pytest.fixture
def october(tmp_path: Path) -> Settings:
    s = fresh_settings(tmp_path)
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(tmp_path, "2024-09", SEPTEMBER)).rows_quarantined == 1
        assert pipe.ingest(al_export(tmp_path, "2024-10", OCTOBER)).rows_quarantined == 3
    return s


def sheet_rows(ws: openpyxl.worksheet.worksheet.Worksheet) -> list[list[object]]:
    return [list(r) for r in ws.iter_rows(values_only=True)]


def test_the_workbook_shows_each_rejected_row_as_sent_and_why(october: Settings, tmp_path: Path) -> None:
    out = tmp_path / "rejets_action_logement.xlsx"
    printed = run_cli(
        ["feedback", "--partner", "action_logement", "-o", str(out), "-w", str(october.warehouse)], tmp_path
    ).stdout
    assert "AL_ACV_export_2024-10.csv: 3 rejected row(s), 1,184.56 € concerned" in printed
    wb = openpyxl.load_workbook(out)
    assert wb.sheetnames == [ROWS_SHEET, SUMMARY_SHEET]
    ws = wb[ROWS_SHEET]
    rows = sheet_rows(ws)
    assert rows[0] == ["Ligne du fichier", *AL_HEADER, *REASON_COLUMNS]  # no sheet: a CSV has none
    assert [r[:-6] for r in rows[1:]] == [
        [3, *cells(OCTOBER[1])],
        [4, *cells(OCTOBER[2])],
        [5, *cells(OCTOBER[3])],
    ]  # every cell as sent, in the partner's order; September's rejected row is not in the current export
    reasons = [[r[-6], r[-5], r[-4], None if r[-3] is None else Decimal(str(r[-3])), r[-2], r[-1]] for r in rows[1:]]
    assert reasons == [
        [explained("commune_not_acv"), "Code commune", "99999", Decimal("1234.56"), None, "commune_not_acv"],
        [explained("amount_unparseable"), "Montant engagé", "beaucoup", None, None, "amount_unparseable"],
        [
            explained("commune_not_acv"),
            "Code commune",
            "99999",
            Decimal("-50.00"),
            f"{explained('amount_not_positive')} (colonne « Montant engagé », valeur « -50,00 »)",
            "commune_not_acv",
        ],
    ]
    assert explained("commune_not_acv") == "code commune absent de la liste Action Cœur de Ville"
    # The partner's formula is its text in the workbook, never a formula Excel would run.
    formula = ws.cell(row=2, column=1 + AL_HEADER.index("Nom commune") + 1)
    assert formula.value == FORMULA and formula.data_type == "s" and formula.quotePrefix
    assert ws.cell(row=2, column=len(rows[0]) - 2).number_format == '#,##0.00 "€"'
    widths = [ws.column_dimensions[openpyxl.utils.get_column_letter(i)].width for i in range(1, len(rows[0]) + 1)]
    assert all(8 <= w <= 60 for w in widths)
    assert widths[1 + len(AL_HEADER)] > len(explained("commune_not_acv"))  # the explanation reads whole
    assert widths[0] > len("Ligne du fichier") and widths[1 + AL_HEADER.index("Nom commune")] > len(FORMULA)

    summary = sheet_rows(wb[SUMMARY_SHEET])
    header_at = summary.index(list(SUMMARY_COLUMNS))
    about = {r[0]: r[1] for r in summary[:header_at] if r[0]}
    assert about["Fichier"] == "AL_ACV_export_2024-10.csv" and about["Lignes rejetées"] == 3
    assert about["Partenaire"] == "Action Logement — action_logement"
    table = [[r[0], r[1], r[2], Decimal(str(r[3])), r[4]] for r in summary[header_at + 1 :]]
    assert table == [
        [explained("commune_not_acv"), "commune_not_acv", 2, Decimal("1184.56"), 0],
        [explained("amount_unparseable"), "amount_unparseable", 1, Decimal("0"), 1],
        ["Total", None, 3, Decimal("1184.56"), 1],
    ]
    # The totals are the warehouse's quarantine of the current export.
    con = duckdb.connect(str(october.published_path), read_only=True)
    (quarantined,) = con.execute(
        "SELECT rows_quarantined FROM file_loads WHERE is_current AND partner = 'action_logement'"
    ).fetchone()
    by_rule = dict(
        con.execute("SELECT rule, count(*) FROM quarantine WHERE is_current GROUP BY rule").fetchall()  # first rule
    )
    assert quarantined == 3 and by_rule == {"commune_not_acv": 2, "amount_unparseable": 1}


def test_the_csv_variant_has_the_same_rows_neutralised(october: Settings, tmp_path: Path) -> None:
    out = tmp_path / "rejets.csv"
    run_cli(["feedback", "-p", "action_logement", "-o", str(out), "-w", str(october.warehouse)], tmp_path)
    with out.open(encoding="utf-8-sig", newline="") as fh:  # Excel reads the French text right
        rows = list(csv.reader(fh))
    assert rows[0] == ["Ligne du fichier", *AL_HEADER, *REASON_COLUMNS]
    assert [r[0] for r in rows[1:]] == ["3", "4", "5"]
    assert rows[1][1 + AL_HEADER.index("Nom commune")] == "'" + FORMULA  # shown as text, never run
    assert rows[3][1 + AL_HEADER.index("Montant engagé")] == "'-50,00"
    assert [(r[-6], r[-3], r[-1]) for r in rows[1:]] == [
        (explained("commune_not_acv"), "1234.56", "commune_not_acv"),
        (explained("amount_unparseable"), "", "amount_unparseable"),
        (explained("commune_not_acv"), "-50.00", "commune_not_acv"),
    ]


def test_unknown_partner_no_export_bad_format_and_no_rejection(october: Settings, tmp_path: Path) -> None:
    wh = str(october.warehouse)
    unknown = run_cli(["feedback", "-p", "nobody", "-o", str(tmp_path / "x.xlsx"), "-w", wh], tmp_path, ok=False)
    assert (
        unknown.returncode == 2 and "unknown partner 'nobody'" in unknown.stderr and "action_logement" in unknown.stderr
    )
    none = run_cli(["feedback", "-p", "anah", "-w", wh], tmp_path, ok=False)
    assert none.returncode == 2 and "anah has no current export" in none.stderr and "cdv-etl ingest" in none.stderr
    bad = run_cli(["feedback", "-p", "action_logement", "-o", str(tmp_path / "x.pdf"), "-w", wh], tmp_path, ok=False)
    assert bad.returncode == 2 and "unknown feedback format 'pdf'" in bad.stderr
    assert (
        not (tmp_path / "x.xlsx").exists()
        and not (tmp_path / "x.pdf").exists()
        and not (tmp_path / "rejets_anah.xlsx").exists()
    )

    # An export without rejected rows: a workbook that says so (a stale list never stays behind).
    with open_pipeline(october) as pipe:
        assert pipe.ingest(al_export(tmp_path, "2024-11", OCTOBER[:1])).rows_quarantined == 0
    out = tmp_path / "rejets_action_logement.xlsx"
    shutil.copyfile(tmp_path / "AL_ACV_export_2024-10.csv", out)  # an old file at the path asked for
    printed = run_cli(["feedback", "-p", "action_logement", "-w", wh], tmp_path).stdout  # default name, in cwd
    assert "AL_ACV_export_2024-11.csv: no rejected rows, nothing to send back" in printed
    wb = openpyxl.load_workbook(out)
    assert sheet_rows(wb[ROWS_SHEET])[1] == [NO_REJECTION] + [None] * len(REASON_COLUMNS)
    assert sheet_rows(wb[SUMMARY_SHEET])[-1] == ["Total", None, 0, 0, 0]


@needs_shared
def test_a_specimen_workbook_sums_to_the_warehouse_quarantine(tmp_path: Path) -> None:
    s = fresh_settings(tmp_path)
    with open_pipeline(s, need_reference=False) as pipe:
        pipe.load_reference(ANCT_REFERENCE)
        assert pipe.ingest(SPECIMENS / "bdt" / "BDT_ACV_engagements_20261115.xlsx").rows_quarantined == 43
    out = tmp_path / "rejets_bdt.xlsx"
    run_cli(["feedback", "-p", "bdt", "-o", str(out), "-w", str(s.warehouse)], tmp_path)
    wb = openpyxl.load_workbook(out)
    rows = sheet_rows(wb[ROWS_SHEET])
    assert rows[0][:3] == ["Ligne du fichier", "Feuille", "N° engagement"] and len(rows) == 1 + 43
    assert {r[1] for r in rows[1:]} == {"Engagements"}
    summary = sheet_rows(wb[SUMMARY_SHEET])
    total = summary[-1]
    con = duckdb.connect(str(s.published_path), read_only=True)
    # The control total's quarantined part is computed apart: control total − unexplained − loaded.
    quarantined_eur, quarantined_rows = con.execute(
        "SELECT quarantined_amount_eur, rows_quarantined FROM v_control_totals WHERE is_current"
    ).fetchone()
    assert (total[0], total[2], Decimal(str(total[3]))) == ("Total", quarantined_rows, quarantined_eur)
    by_rule = dict(con.execute("SELECT rule, count(*) FROM quarantine WHERE is_current GROUP BY rule").fetchall())
    header_at = summary.index(list(SUMMARY_COLUMNS))
    assert {r[1]: r[2] for r in summary[header_at + 1 : -1]} == by_rule
    assert [r[0] for r in summary[header_at + 1 : -1]] == [explained(r[1]) for r in summary[header_at + 1 : -1]]


def test_the_nightly_run_writes_a_workbook_per_partner_with_rejections_and_links_it(tmp_path: Path) -> None:
    from cdv_etl.publish.tables import euros
    from flows.artifacts import feedback_markdown
    from flows.report_server import URL_ENV, base_url, report_url, start_report_server

    s = fresh_settings(tmp_path)
    s.inbox.mkdir(parents=True)
    al_export(s.inbox, "2024-10", OCTOBER)
    epf_export(s.inbox, "2024-10", [("EPF1", "47001", "habitat", "2023-05-02", "12,5")])  # nothing rejected
    run = run_inbox(s)
    assert dict(run.counts) == {"loaded": 2} and run.report is not None
    assert list(run.feedback) == ["action_logement"]
    workbook = run.feedback["action_logement"]
    assert workbook.parent == run.report.parent == reports_dir(s) and workbook.name.startswith(
        "rejets_action_logement_"
    )
    rows = sheet_rows(openpyxl.load_workbook(workbook)[ROWS_SHEET])
    assert [(r[0], r[-1]) for r in rows[1:]] == [
        (3, "commune_not_acv"),
        (4, "amount_unparseable"),
        (5, "commune_not_acv"),
    ]
    assert InboxRun.from_dict(run.as_dict()) == run  # the flow's result carries the paths

    # The report server serves the workbook: the run's link opens it.
    server = start_report_server(reports_dir(s), 0)
    try:
        os.environ[URL_ENV] = base_url(server)
        try:
            url = report_url(workbook, reports_dir(s))
        finally:
            del os.environ[URL_ENV]
        assert url is not None and url.endswith("/" + workbook.name)
        with urllib.request.urlopen(url) as answer:
            assert answer.status == 200 and answer.read() == workbook.read_bytes()
    finally:
        server.shutdown()
        server.server_close()
    markdown = feedback_markdown(run.feedback, run.published, {"action_logement": url})
    assert f"| action_logement | 3 | {euros(Decimal('1184.56'))} | [{workbook.name}]({url}) |" in markdown
    assert f"`{workbook}`" in feedback_markdown(run.feedback, run.published, {})  # no server: where it is

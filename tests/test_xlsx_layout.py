"""Workbook layouts at the edges: nothing a partner put in a sheet is dropped without a word.

Each workbook is written with openpyxl as a spreadsheet program would, then ingested into a
real warehouse: it loads with every row accounted for, or is refused with a clear reason.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from cdv_etl.pipeline import Pipeline

BDT_HEADER = [
    "N° engagement",
    "Code INSEE",
    "Commune",
    "Nature d'intervention",
    "Thématique",
    "Intitulé du projet",
    "Date d'engagement",
    "Montant engagé (€)",
]
ETAT_HEADER = ["Dispositif", "Commune (INSEE)", "Objet", "Axe ACV", "Montant attribué"]


def bdt_row(i: int) -> list[Any]:
    return [f"BDT-2024-{i:05d}", "47001", "Agen", "Prêt", "Habitat", f"Projet {i}", date(2024, 3, 1), 100.0 * i]


def write_bdt(folder: Path, header: list[Any], rows: list[list[Any]], footer: list[Any] | None = None) -> Path:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Engagements"
    ws["A1"] = "Banque des Territoires — Programme Action Cœur de Ville"
    for c, v in enumerate(header, start=1):
        ws.cell(row=4, column=c, value=v)
    for r, values in enumerate(rows, start=5):
        for c, v in enumerate(values, start=1):
            ws.cell(row=r, column=c, value=v)
    if footer:
        for c, v in enumerate(footer, start=1):
            ws.cell(row=5 + len(rows) + 1, column=c, value=v)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "BDT_ACV_engagements_20261115.xlsx"
    wb.save(path)
    return path


def test_cells_right_of_the_header_are_kept_with_their_rows(pipe: Pipeline, tmp_path: Path) -> None:
    """A note typed two columns right of the table, a row holding only such a note, and the
    control total one column further right than the header: all read, none cut."""
    rows = [bdt_row(1) + [None, "vérifié"], bdt_row(2), [None] * 9 + ["ligne annotée"], bdt_row(3)]
    path = write_bdt(tmp_path, BDT_HEADER, rows, footer=["TOTAL"] + [None] * 7 + [None, 600.0])
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_quarantined) == ("loaded", 4, 3, 1), r.message
    assert r.control_total_eur == 600 and r.control_total_ok
    note = pipe.con.execute("SELECT raw_record->>'column_10' FROM quarantine WHERE file_id = ?", [r.file_id]).fetchone()
    assert note == ("ligne annotée",)


def test_footer_label_with_surrounding_blanks_is_still_the_footer(pipe: Pipeline, tmp_path: Path) -> None:
    path = write_bdt(tmp_path, BDT_HEADER, [bdt_row(1), bdt_row(2)], footer=["TOTAL\t"] + [None] * 6 + [300.0])
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded) == ("loaded", 2, 2), r.message
    assert r.control_total_eur == 300 and r.control_total_ok


def test_a_blank_header_cell_gets_a_name(pipe: Pipeline, tmp_path: Path) -> None:
    path = write_bdt(tmp_path, BDT_HEADER + ["   ", "Remarque"], [bdt_row(1) + ["x", "y"]])
    r = pipe.ingest(path)
    assert (r.status, r.rows_loaded) == ("loaded", 1), r.message


def test_headers_that_differ_only_in_case_are_refused_clearly(pipe: Pipeline, tmp_path: Path) -> None:
    path = write_bdt(tmp_path, BDT_HEADER + ["Remarque", "REMARQUE"], [bdt_row(1) + ["x", "y"]])
    r = pipe.ingest(path)
    assert (r.status, r.reason) == ("rejected", "duplicate_columns"), r.message
    assert r.message.startswith(path.name + ":") and "'REMARQUE'" in r.message


def test_a_column_named_like_an_internal_one_is_refused_clearly(pipe: Pipeline, tmp_path: Path) -> None:
    path = write_bdt(tmp_path, BDT_HEADER + ["_source_row"], [bdt_row(1) + ["7"]])
    r = pipe.ingest(path)
    assert (r.status, r.reason) == ("rejected", "duplicate_columns"), r.message
    assert "_source_row" in r.message


def test_a_sheet_without_its_header_row_is_refused_not_skipped(pipe: Pipeline, tmp_path: Path) -> None:
    """État: one sheet per year. A sheet whose header slipped one row down would lose its rows
    silently if skipped; it refuses the workbook, naming the sheet."""
    wb = Workbook()
    first = wb.active
    assert first is not None
    first.title = "2023"
    second = wb.create_sheet("2024")
    for ws, header_row in ((first, 2), (second, 3)):
        ws["A1"] = "Crédits de l'État — Action Cœur de Ville"
        for c, v in enumerate(ETAT_HEADER, start=1):
            ws.cell(row=header_row, column=c, value=v)
        ws.append(["DSIL", "Agen (47001)", "Halle", "Axe 2 - Commerce", 1000.0])
    path = tmp_path / "Etat_credits_ACV.xlsx"
    wb.save(path)
    r = pipe.ingest(path)
    assert (r.status, r.reason) == ("rejected", "no_header"), r.message
    assert "sheet '2024'" in r.message


def test_an_empty_sheet_among_the_years_is_skipped(pipe: Pipeline, tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "2023"
    ws["A1"] = "Crédits de l'État — Action Cœur de Ville"
    for c, v in enumerate(ETAT_HEADER, start=1):
        ws.cell(row=2, column=c, value=v)
    ws.append(["DSIL", "Agen (47001)", "Halle", "Axe 2 - Commerce", 1000.0])
    wb.create_sheet("2024")  # nothing in it yet
    path = tmp_path / "Etat_credits_ACV.xlsx"
    wb.save(path)
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded) == ("loaded", 1, 1), r.message


def test_a_blank_row_under_the_header_changes_nothing(pipe: Pipeline, tmp_path: Path) -> None:
    """read_xlsx names columns after the first row of the range it reads (cell references when
    that row is blank): the reader goes by position, and the rows keep their spreadsheet numbers."""
    path = write_bdt(tmp_path, BDT_HEADER, [[None] * 8, bdt_row(1), bdt_row(2)])
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded) == ("loaded", 2, 2), r.message
    rows = pipe.con.execute(
        "SELECT source_row FROM engagement_rows WHERE file_id = ? ORDER BY 1", [r.file_id]
    ).fetchall()
    assert rows == [(6,), (7,)]


def test_a_workbook_with_a_header_and_no_rows_is_refused_as_empty(pipe: Pipeline, tmp_path: Path) -> None:
    path = write_bdt(tmp_path, BDT_HEADER, [])
    r = pipe.ingest(path)
    assert (r.status, r.reason) == ("rejected", "no_data"), r.message


def test_a_placeholder_dimension_does_not_hide_cells(pipe: Pipeline, tmp_path: Path) -> None:
    """Streaming writers may declare the sheet's extent as "A1": the reader then looks at every
    column rather than trust it (the rows it read go further down than declared)."""
    import io
    import re
    import zipfile

    outside = bdt_row(1)
    outside[1] = "99999"  # quarantined: its raw record shows every cell of the row
    path = write_bdt(tmp_path, BDT_HEADER, [outside + [None, "vérifié"], bdt_row(2)])
    with zipfile.ZipFile(path) as zf:
        parts = {i.filename: zf.read(i) for i in zf.infolist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet], n = re.subn(rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1"/>', parts[sheet])
    assert n == 1
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_quarantined) == ("loaded", 2, 1, 1), r.message
    note = pipe.con.execute("SELECT raw_record->>'column_10' FROM quarantine WHERE file_id = ?", [r.file_id]).fetchone()
    assert note == ("vérifié",)


def _rewrite_sheet(path: Path, edit: Any) -> None:
    """Rewrite the first sheet's XML part of ``path`` through ``edit`` (bytes → bytes)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        parts = {i.filename: zf.read(i) for i in zf.infolist()}
    parts["xl/worksheets/sheet1.xml"] = edit(parts["xl/worksheets/sheet1.xml"])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)


def test_a_row_far_below_the_others_is_read(pipe: Pipeline, tmp_path: Path) -> None:
    """The cells are read to the sheet's last row, found in its XML: a row typed 5,000 rows
    under the table (and under a dimension that forgot it) is read, not cut at the table's end."""
    path = write_bdt(tmp_path, BDT_HEADER, [bdt_row(1), bdt_row(2)])
    _rewrite_sheet(
        path,
        lambda xml: xml.replace(
            b"</sheetData>",
            b'<row r="5007"><c r="A5007" t="inlineStr"><is><t>BDT-2024-09999</t></is></c></row></sheetData>',
        ),
    )
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_quarantined) == ("loaded", 3, 2, 1), r.message
    row = pipe.con.execute("SELECT source_row FROM quarantine WHERE file_id = ?", [r.file_id]).fetchone()
    assert row == (5007,)


def test_rows_without_their_numbers_are_all_read(pipe: Pipeline, tmp_path: Path) -> None:
    """Rows and cells under the header that carry no ``r`` (it is optional in the format: each
    such row follows the one before): the sheet is read to its end rather than to the last
    number it holds (the header's, row 4)."""
    import re

    path = write_bdt(tmp_path, BDT_HEADER, [bdt_row(1), bdt_row(2), bdt_row(3)])
    _rewrite_sheet(path, lambda xml: re.sub(rb'(<(?:row|c))\s+r="[A-Z]*[5-7]"', rb"\1", xml))
    r = pipe.ingest(path)
    assert (r.status, r.rows_read, r.rows_loaded) == ("loaded", 3, 3), r.message

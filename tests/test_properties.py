"""Reconciliation under property tests: for every partner format, random files mixing valid
and invalid rows, each ingested into a fresh warehouse with the bundled sample reference.

The generator knows which rows it made invalid (a duplicated id makes every copy invalid), so
for every file: rows_read = rows_loaded + rows_quarantined = rows generated; the loaded
operation ids are exactly the valid rows' ids; the quarantined rows are exactly the invalid
rows (by the line or cell a person sees); and the loaded amounts add up, to the cent, to the
Decimal sum of the valid rows' amounts as generated. Amounts are generated as integer cents
and written the partner's way: French "1 234,56 €" (space or no-break space), k€ with one
decimal, dot decimals, or numbers in workbook cells (floats whose repr is the exact decimal).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import sample_warehouse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from cdv_etl.config import Settings
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.pipeline import open_pipeline

TODAY = date(2026, 11, 20)  # the day of the (simulated) ingestion: fixes every extraction date
START = date(2018, 1, 1)
EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _communes() -> list[tuple[str, str]]:
    with SAMPLE_REFERENCE.open(encoding="utf-8-sig", newline="") as fh:
        return [
            (
                r["insee_com"].strip().zfill(5) if r["insee_com"].strip().isdigit() else r["insee_com"].strip(),
                r["lib_com"].strip(),
            )
            for r in csv.DictReader(fh)
        ]


COMMUNES = _communes()
NOT_ACV = ["75056", "69123", "99999", "2A999"]  # Paris, Lyon, no commune, no Corsican commune


@dataclass
class Row:
    op: str  # the operation id the row carries ("" = none)
    cells: list[Any]
    cents: int | None  # the amount as generated, when it parses
    defect: str | None  # why the generator made the row invalid (None: valid unless its id repeats)
    where: Any = None  # the line, or (sheet, row), a person sees


@dataclass
class Generated:
    name: str
    data: bytes
    rows: list[Row]

    def valid(self) -> list[Row]:
        counts = Counter(r.op for r in self.rows)
        return [r for r in self.rows if r.defect is None and r.op and counts[r.op] == 1]

    def invalid(self) -> list[Row]:
        ok = {id(r) for r in self.valid()}
        return [r for r in self.rows if id(r) not in ok]


Draw = Callable[[st.SearchStrategy[Any]], Any]
CENTS = st.integers(min_value=1, max_value=10**11)  # 0.01 € to 1 G€


def maybe(defects: list[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from(defects))


def french(cents: int, sep: str, suffix: str = "") -> str:
    units, c = divmod(cents, 100)
    return f"{units:,}".replace(",", sep) + f",{c:02d}{suffix}"


def dotted(cents: int, draw: Draw) -> str:
    units, c = divmod(cents, 100)
    if c == 0 and draw(st.booleans()):
        return str(units)
    text = f"{units}.{c:02d}"
    return text[:-1] if text.endswith("0") and draw(st.booleans()) else text


def as_float(cents: int) -> float:
    value = float(Decimal(cents) / 100)
    assert Decimal(repr(value)) == Decimal(cents) / 100  # exactly representable after repr
    return value


def dates(draw: Draw, defect: str | None, extracted: date) -> date:
    if defect == "date_before_programme":
        return draw(st.dates(date(2005, 1, 1), START - timedelta(days=1)))
    if defect == "date_after_extraction":
        return draw(st.dates(extracted + timedelta(days=1), date(2031, 12, 31)))
    return draw(st.dates(START, extracted))


def commune(draw: Draw, defect: str | None) -> str:
    if defect == "commune_not_acv":
        return draw(st.sampled_from(NOT_ACV))
    if defect == "commune_missing":
        return ""
    code = draw(st.sampled_from(COMMUNES))[0]
    if code.startswith("0") and draw(st.booleans()):
        code = code.lstrip("0")  # a spreadsheet lost the leading zero
    return draw(st.sampled_from([code, f" {code} "]))


def duplicate(draw: Draw, rows: list[Row], row: Row) -> None:
    """Give the row the id of an earlier one: both become invalid."""
    if rows:
        row.op = draw(st.sampled_from(rows)).op
    else:
        row.defect = None  # nothing to copy: an ordinary row


def csv_bytes(header: list[str], rows: list[Row], delimiter: str, encoding: str, newline: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator=newline).writerows([header, *(r.cells for r in rows)])
    for i, r in enumerate(rows):
        r.where = i + 2  # line 1 is the header
    return buf.getvalue().encode(encoding)


# -- Action Logement: Windows-1252, ";", CRLF, French numbers, dd/mm/yyyy --------------------------

AL_EXTRACTED = date(2026, 10, 31)  # AL_ACV_export_2026-10.csv: the end of the month
AL_DEFECTS = [
    "commune_not_acv",
    "commune_missing",
    "amount_missing",
    "amount_unparseable",
    "amount_negative",
    "amount_zero",
    "date_before_programme",
    "date_after_extraction",
    "date_unparseable",
    "date_missing",
    "operation_id_missing",
    "unknown_instrument",
    "duplicate",
]


def action_logement(draw: Draw, n: int) -> Generated:
    rows: list[Row] = []
    for i in range(n):
        defect = draw(maybe(AL_DEFECTS))
        cents = draw(CENTS)
        amount = french(cents, draw(st.sampled_from([" ", "\u00a0", ""])), draw(st.sampled_from(["", " €", "€"])))
        day = dates(draw, defect, AL_EXTRACTED)
        when = f"{day:%d/%m/%Y}"
        product = draw(st.sampled_from(["Prêt", "Subvention", "PRÊT", " subvention "]))
        row = Row(f"AL{i:06d}", [], cents, defect)
        if defect == "amount_missing":
            amount, row.cents = "", None
        elif defect == "amount_unparseable":
            amount, row.cents = draw(st.sampled_from(["#VALEUR!", "à préciser", "12,34,56", "1.234,56"])), None
        elif defect == "amount_negative":
            amount, row.cents = "-" + amount, -cents
        elif defect == "amount_zero":
            amount, row.cents = draw(st.sampled_from(["0,00", "0", "0,00 €"])), 0
        elif defect == "date_unparseable":
            when = draw(st.sampled_from(["31/02/2024", f"{day:%Y-%m-%d}", "13/13/2023", "bientôt"]))
        elif defect == "date_missing":
            when = ""
        elif defect == "operation_id_missing":
            row.op = ""
        elif defect == "unknown_instrument":
            product = "Garantie"
        elif defect == "duplicate":
            duplicate(draw, rows, row)
        code = commune(draw, defect)
        row.cells = [row.op, code, "Commune", "Construction neuve", product, "12", amount, when]
        rows.append(row)
    header = [
        "Référence opération",
        "Code commune",
        "Nom commune",
        "Type d'opération",
        "Produit",
        "Nb logements",
        "Montant engagé",
        "Date décision CE",
    ]
    return Generated("AL_ACV_export_2026-10.csv", csv_bytes(header, rows, ";", "cp1252", "\r\n"), rows)


# -- Anah: UTF-8 with BOM, ",", dot decimals, ISO dates, a year and a status -------------------------

ANAH_EXTRACTED = TODAY  # anah_acv_2026.csv: the end of 2026, but never after the day of ingestion
ANAH_DEFECTS = [
    "commune_not_acv",
    "commune_missing",
    "amount_missing",
    "amount_unparseable",
    "amount_negative",
    "amount_zero",
    "date_before_programme",
    "date_after_extraction",
    "date_unparseable",
    "year_mismatch",
    "year_missing",
    "unknown_status",
    "operation_id_missing",
    "duplicate",
]


def anah(draw: Draw, n: int) -> Generated:
    rows: list[Row] = []
    for i in range(n):
        defect = draw(maybe(ANAH_DEFECTS))
        cents = draw(CENTS)
        amount = dotted(cents, draw)
        day = dates(draw, defect, ANAH_EXTRACTED)
        when, year = day.isoformat(), str(day.year)
        status = draw(st.sampled_from(["engagé", "annulé", "Engagé", "ANNULÉ"]))
        row = Row(f"ANAH-{i:07d}", [], cents, defect)
        if defect == "amount_missing":
            amount, row.cents = "", None
        elif defect == "amount_unparseable":
            amount, row.cents = draw(st.sampled_from(["1 234,56", "n/a", "12.34.56"])), None
        elif defect == "amount_negative":
            amount, row.cents = "-" + amount, -cents
        elif defect == "amount_zero":
            amount, row.cents = draw(st.sampled_from(["0", "0.00", "0.0"])), 0
        elif defect == "date_unparseable":
            when = draw(st.sampled_from([f"{day:%d/%m/%Y}", "2024-02-30", "hier"]))
        elif defect == "year_mismatch":
            year = str(day.year - draw(st.integers(1, 3)))
        elif defect == "year_missing":
            year = draw(st.sampled_from(["", "n/c"]))
        elif defect == "unknown_status":
            status = draw(st.sampled_from(["en attente", "soldé", ""]))
        elif defect == "operation_id_missing":
            row.op = ""
        elif defect == "duplicate":
            duplicate(draw, rows, row)
        row.cells = [row.op, commune(draw, defect), year, "Propriétaire occupant", "2", amount, when, status]
        rows.append(row)
    header = [
        "numero_dossier",
        "code_insee",
        "annee_engagement",
        "type_intervention",
        "nb_logements",
        "montant_aide",
        "date_engagement",
        "statut",
    ]
    return Generated("anah_acv_2026.csv", csv_bytes(header, rows, ",", "utf-8-sig", "\n"), rows)


# -- EPF: UTF-8, tab-separated, ISO dates, amounts in k€ with one comma decimal ---------------------

EPF_EXTRACTED = TODAY  # received
EPF_DEFECTS = [
    "commune_not_acv",
    "commune_missing",
    "amount_missing",
    "amount_unparseable",
    "amount_negative",
    "amount_zero",
    "date_before_programme",
    "date_after_extraction",
    "date_unparseable",
    "unknown_category",
    "operation_id_missing",
    "duplicate",
]


def epf(draw: Draw, n: int) -> Generated:
    rows: list[Row] = []
    for i in range(n):
        defect = draw(maybe(EPF_DEFECTS))
        sep = draw(st.sampled_from(["", " ", "\u00a0"]))
        if draw(st.booleans()):  # the notice's one decimal: tenths of k€, i.e. hundreds of euros
            tenths = draw(st.integers(1, 10**7))
            cents = tenths * 10_000
            whole, tenth = divmod(tenths, 10)
            amount = f"{whole:,}".replace(",", sep) + f",{tenth}"
        else:  # k€ to the euro cent: up to five decimals (12,34567 k€ = 12 345,67 €)
            cents = draw(CENTS)
            whole, rest = divmod(cents, 100_000)
            amount = f"{whole:,}".replace(",", sep) + f",{rest:05d}".rstrip("0").rstrip(",")
        day = dates(draw, defect, EPF_EXTRACTED)
        when = day.isoformat()
        vocation = draw(st.sampled_from(["habitat", "économie", "équipement public", "Habitat", " ÉCONOMIE "]))
        row = Row(f"EPF{i:05d}", [], cents, defect)
        if defect == "amount_missing":
            amount, row.cents = "", None
        elif defect == "amount_unparseable":
            amount, row.cents = draw(st.sampled_from(["n.c.", "12,3,4", "#N/A"])), None
        elif defect == "amount_negative":
            amount, row.cents = "-" + amount, -cents
        elif defect == "amount_zero":
            amount, row.cents = draw(st.sampled_from(["0", "0,0"])), 0
        elif defect == "date_unparseable":
            when = draw(st.sampled_from([f"{day:%d/%m/%Y}", "2023-13-01", "?"]))
        elif defect == "unknown_category":
            vocation = draw(st.sampled_from(["logistique", "", "habitat social"]))
        elif defect == "operation_id_missing":
            row.op = ""
        elif defect == "duplicate":
            duplicate(draw, rows, row)
        row.cells = [row.op, commune(draw, defect), "Commune", vocation, when, amount, "1200"]
        rows.append(row)
    header = ["id_intervention", "insee", "commune", "vocation", "date_acte", "montant_keur", "surface_m2"]
    return Generated("epf_interventions_acv.tsv", csv_bytes(header, rows, "\t", "utf-8", "\n"), rows)


# -- Banque des Territoires: one sheet, title rows, header on row 4, a TOTAL footer -----------------

BDT_EXTRACTED = date(2026, 11, 15)  # BDT_ACV_engagements_20261115.xlsx
BDT_DEFECTS = [
    "commune_not_acv",
    "commune_missing",
    "amount_missing",
    "amount_unparseable",
    "amount_negative",
    "amount_zero",
    "date_before_programme",
    "date_after_extraction",
    "date_unparseable",
    "date_missing",
    "unknown_category",
    "unknown_instrument",
    "operation_id_missing",
    "duplicate",
]
BDT_THEMES = [
    "Habitat",
    "Commerce / développement économique",
    "Mobilité et connexions",
    "Espaces publics et patrimoine",
    "Équipements et services publics",
    "habitat",
    " MOBILITÉ ET CONNEXIONS ",
]


def bdt(draw: Draw, n: int) -> Generated:
    rows: list[Row] = []
    for i in range(n):
        defect = draw(maybe(BDT_DEFECTS))
        cents = draw(CENTS)
        amount: Any = draw(st.sampled_from([as_float(cents), f"{Decimal(cents) / 100}"]))
        day = dates(draw, defect, BDT_EXTRACTED)
        when: Any = draw(
            st.sampled_from([day, datetime(day.year, day.month, day.day), day.isoformat(), f"{day:%d/%m/%Y}"])
        )
        theme = draw(st.sampled_from(BDT_THEMES))
        nature = draw(st.sampled_from(["Prêt", "Fonds propres", "Ingénierie", "PRÊT"]))
        row = Row(f"BDT-{day.year}-{i:05d}", [], cents, defect)
        if defect == "amount_missing":
            amount, row.cents = None, None
        elif defect == "amount_unparseable":
            amount, row.cents = draw(st.sampled_from(["n/a", "1 234,56", "#REF!"])), None
        elif defect == "amount_negative":
            amount, row.cents = -as_float(cents), -cents
        elif defect == "amount_zero":
            amount, row.cents = 0.0, 0
        elif defect == "date_unparseable":
            when = draw(st.sampled_from(["bientôt", "2024-02-30", "31/02/2024"]))
        elif defect == "date_missing":
            when = None
        elif defect == "unknown_category":
            theme = draw(st.sampled_from(["Divers", "Culture"]))
        elif defect == "unknown_instrument":
            nature = "Subvention"
        elif defect == "operation_id_missing":
            row.op = ""
        elif defect == "duplicate":
            duplicate(draw, rows, row)
        code: Any = commune(draw, defect)
        if code.strip().isdigit() and draw(st.booleans()):
            code = int(code)  # typed as a number
        row.cells = [row.op or None, code or None, "Commune", nature, theme, f"Projet {i}", when, amount]
        rows.append(row)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Engagements"
    ws["A1"] = "Banque des Territoires — Programme Action Cœur de Ville"
    ws["A2"] = "Extraction du 15/11/2026 — montants en euros"
    for c, v in enumerate(
        [
            "N° engagement",
            "Code INSEE",
            "Commune",
            "Nature d'intervention",
            "Thématique",
            "Intitulé du projet",
            "Date d'engagement",
            "Montant engagé (€)",
        ],
        start=1,
    ):
        ws.cell(row=4, column=c, value=v)
    for i, row in enumerate(rows):
        row.where = ("Engagements", 5 + i)
        for c, v in enumerate(row.cells, start=1):
            ws.cell(row=5 + i, column=c, value=v)
    total = sum((Decimal(r.cents) / 100 for r in rows if r.cents is not None), Decimal(0))
    ws.cell(row=5 + n + 1, column=1, value="TOTAL")
    ws.cell(row=5 + n + 1, column=8, value=as_float(int(total * 100)) if total else 0.0)
    buf = io.BytesIO()
    wb.save(buf)
    return Generated("BDT_ACV_engagements_20261115.xlsx", buf.getvalue(), rows)


# -- État: one sheet per year, a title row, header on row 2, no id and no date ---------------------

ETAT_DEFECTS = [
    "commune_not_acv",
    "commune_missing",
    "amount_missing",
    "amount_unparseable",
    "amount_negative",
    "amount_zero",
    "unknown_axis",
    "year_out_of_programme",
    "duplicate",
]
ETAT_AXES = [
    "Axe 1 - Habitat",
    "Axe 2 - Développement économique et commercial",
    "Axe 3 - Accessibilité, mobilité et connexions",
    "Axe 4 - Espace public et patrimoine",
    "Axe 5 - Équipements et services publics",
    " Axe 4 : patrimoine",
    "Axe3-Mobilité",
]
ETAT_SCHEMES = ["DSIL", "DETR", "FNADT", "FISAC", "Fonds friches"]


def etat(draw: Draw, n: int) -> Generated:
    rows: list[Row] = []
    for i in range(n):
        defect = draw(maybe(ETAT_DEFECTS))
        cents = draw(CENTS)
        year = draw(st.integers(2018, TODAY.year))
        scheme = draw(st.sampled_from(ETAT_SCHEMES))
        code, name = draw(st.sampled_from(COMMUNES))
        label = f"{name} ({code})"
        objet = f"Opération {i}"
        axis = draw(st.sampled_from(ETAT_AXES))
        amount: Any = as_float(cents)
        row = Row("", [], cents, defect)
        if defect == "commune_not_acv":
            label = f"Paris ({draw(st.sampled_from(NOT_ACV))})"
        elif defect == "commune_missing":
            label = "Gonesse"  # the code in brackets forgotten
        elif defect == "amount_missing":
            amount, row.cents = None, None
        elif defect == "amount_unparseable":
            amount, row.cents = "n/c", None
        elif defect == "amount_negative":
            amount, row.cents = -as_float(cents), -cents
        elif defect == "amount_zero":
            amount, row.cents = 0.0, 0
        elif defect == "unknown_axis":
            axis = draw(st.sampled_from(["Axe 7 - Autre", "Divers", "Axe 0"]))
        elif defect == "year_out_of_programme":
            year = draw(st.sampled_from([2016, 2017, TODAY.year + 1]))
        elif defect == "duplicate" and rows:
            twin = draw(st.sampled_from(rows))
            year, scheme, label, objet = twin.where[0], twin.cells[0], twin.cells[2], twin.cells[4]
        elif defect == "duplicate":
            row.defect = None  # nothing to copy: an ordinary row
        row.cells = [scheme, code[:2], label, f"Commune de {name}", objet, axis, amount]
        row.where = (year, None)
        row.op = f"{year} | {scheme} | {label} | {objet}"  # the spec joins sheet, scheme, commune, object
        rows.append(row)
    wb = Workbook()
    default = wb.active
    assert default is not None
    wb.remove(default)
    for year in sorted({r.where[0] for r in rows}):
        ws = wb.create_sheet(str(year))
        ws["A1"] = "Crédits de l'État mobilisés au titre d'Action Cœur de Ville"
        ws.merge_cells("A1:G1")
        for c, v in enumerate(
            ["Dispositif", "Département", "Commune (INSEE)", "Bénéficiaire", "Objet", "Axe ACV", "Montant attribué"],
            start=1,
        ):
            ws.cell(row=2, column=c, value=v)
        for k, row in enumerate(r for r in rows if r.where[0] == year):
            row.where = (str(year), 3 + k)
            for c, v in enumerate(row.cells, start=1):
                ws.cell(row=3 + k, column=c, value=v)
    buf = io.BytesIO()
    wb.save(buf)
    return Generated("Etat_credits_ACV.xlsx", buf.getvalue(), rows)


# -- the property ------------------------------------------------------------------------------


def check(generated: Generated) -> None:
    with tempfile.TemporaryDirectory(prefix="cdv-prop-") as tmp:
        path = Path(tmp) / generated.name
        path.write_bytes(generated.data)
        s = sample_warehouse(Settings(warehouse=Path(tmp) / "wh" / "cdv.duckdb", lock_timeout_s=5))
        with open_pipeline(s, publish_on_exit=False) as pipe:
            r = pipe.ingest(path, today=TODAY)
            n, valid, invalid = len(generated.rows), generated.valid(), generated.invalid()
            assert r.status == "loaded", r.message
            assert (r.rows_read, r.rows_loaded, r.rows_quarantined) == (n, len(valid), len(invalid)), (
                r.message,
                [(x.op, x.defect) for x in invalid],
            )
            assert r.rows_read == r.rows_loaded + r.rows_quarantined
            loaded = pipe.con.execute(
                "SELECT operation_id, amount_eur FROM engagement_rows WHERE file_id = ?", [r.file_id]
            ).fetchall()
            assert Counter(op for op, _ in loaded) == Counter(x.op for x in valid)
            expected = {x.op: Decimal(x.cents) / 100 for x in valid if x.cents is not None}
            assert dict(loaded) == expected
            total = sum(expected.values(), Decimal("0.00"))
            assert sum((a for _, a in loaded), Decimal("0.00")) == total == r.loaded_amount_eur
            where = pipe.con.execute(
                "SELECT sheet, source_row FROM quarantine_rows WHERE file_id = ?", [r.file_id]
            ).fetchall()
            assert sorted(where) == sorted((None, x.where) if isinstance(x.where, int) else x.where for x in invalid)
            if r.control_total_eur is not None:
                assert r.control_total_diff_eur == 0, r.message


FORMATS: dict[str, Callable[[Draw, int], Generated]] = {
    "action_logement_csv_cp1252": action_logement,
    "anah_csv_utf8_bom": anah,
    "epf_tsv_keur": epf,
    "bdt_xlsx": bdt,
    "etat_xlsx_one_sheet_per_year": etat,
}


@pytest.mark.parametrize("fmt", FORMATS)
@EXAMPLES
@given(data=st.data())
def test_every_row_is_accounted_for_and_amounts_reconcile(fmt: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=60), label="rows")
    check(FORMATS[fmt](data.draw, n))

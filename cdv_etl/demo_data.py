"""Demo partner exports for ``cdv-etl demo``: five realistic files, one per partner.

Each file follows its partner's spec (``schemas/partners/*.yaml``) and notice to the letter:
file name, encoding, delimiter, title rows, number and date formats. Each also carries a few
deliberate, realistic mistakes (about 4 % of all rows, at most one per row) that the
programme's rules quarantine; ``_MISTAKES`` lists them by the rule that catches them.
Everything is drawn from ``random.Random``: the same seed and the same day give the same files.
"""

from __future__ import annotations

import csv
import math
import random
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from cdv_etl.load.reference import SAMPLE_REFERENCE
from schemas.canonical import PROGRAMME_START

# The deliberate mistakes of each file, named by the rule that quarantines them. Each one is
# put on its own row; a duplicated operation id makes two rows share one id, and both rows
# are quarantined.
_MISTAKES: dict[str, tuple[str, ...]] = {
    "bdt": (
        "commune_not_acv",
        "amount_missing",
        "amount_not_positive",
        "date_before_programme",
        "unknown_category",
        "duplicate_operation_id",
    ),
    "action_logement": (
        "commune_not_acv",
        "amount_missing",
        "amount_unparseable",
        "amount_unparseable",
        "amount_not_positive",
        "date_after_extraction",
    ),
    "anah": (
        "commune_not_acv",
        "amount_missing",
        "amount_unparseable",
        "amount_not_positive",
        "unknown_status",
        "year_date_mismatch",
    ),
    "etat": ("commune_not_acv", "commune_missing", "amount_missing", "amount_not_positive", "unknown_category"),
    "epf": ("commune_not_acv", "amount_unparseable"),
}

_UNPARSEABLE = ("#VALEUR!", "à préciser")
_NBSP = "\u00a0"


@dataclass(frozen=True)
class _Commune:
    insee: str
    name: str
    department: str


# Communes that are not in the programme (99999 is no commune at all).
_OUTSIDERS = (
    _Commune("75056", "Paris", "75"),
    _Commune("69123", "Lyon", "69"),
    _Commune("99999", "Commune inconnue", "99"),
)


@dataclass(frozen=True)
class _Context:
    """What every partner's generator draws from."""

    communes: list[_Commune]
    outsiders: list[_Commune]
    today: date


def generate_demo_exports(
    out_dir: Path, *, reference_csv: Path = SAMPLE_REFERENCE, seed: int = 2026, today: date | None = None
) -> list[Path]:
    """Write one export per partner into out_dir (created if needed); return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    communes = _read_communes(reference_csv)
    codes = {c.insee for c in communes}
    ctx = _Context(communes, [c for c in _OUTSIDERS if c.insee not in codes], today or date.today())
    writers = (
        ("bdt", _write_bdt),
        ("action_logement", _write_action_logement),
        ("anah", _write_anah),
        ("etat", _write_etat),
        ("epf", _write_epf),
    )
    # One generator per partner, seeded from the seed and the partner: files are independent.
    return [write(out_dir, ctx, random.Random(f"{seed}:{partner}")) for partner, write in writers]


# -- shared helpers --------------------------------------------------------------------------


def _read_communes(path: Path) -> list[_Commune]:
    """The reference communes (ANCT property names), codes regaining lost leading zeros."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)

    def code(text: str, width: int) -> str:
        text = text.strip().upper()
        return text.zfill(width) if text.isdigit() else text

    return [
        _Commune(code(r.insee_com, 5), r.lib_com.strip(), code(r.insee_dep, 2)) for r in frame.itertuples(index=False)
    ]


def _plan(rng: random.Random, n_rows: int, kinds: tuple[str, ...]) -> dict[int, str]:
    """Which row carries which deliberate mistake: distinct rows, one mistake each."""
    return dict(zip(rng.sample(range(n_rows), len(kinds)), kinds, strict=True))


def _amount(rng: random.Random, low: float, high: float) -> float:
    """A log-uniform amount in euros between low and high, to the cent (small ones are commoner)."""
    return round(math.exp(rng.uniform(math.log(low), math.log(high))), 2)


def _day(rng: random.Random, start: date, end: date) -> date:
    """A day between start and end, both included."""
    return start + timedelta(days=rng.randint(0, (end - start).days))


def _french_number(rng: random.Random, value: float) -> str:
    """1 234 567,89 with a space or a no-break space between thousands, sometimes with ' €'."""
    text = f"{value:,.2f}".replace(",", "_").replace(".", ",").replace("_", rng.choice((" ", _NBSP)))
    return text + " €" if rng.random() < 0.15 else text


def _de(name: str) -> str:
    """The French 'de' before a commune's name: d'Agen, du Creusot, de Troyes."""
    if name.startswith("Le "):
        return "du " + name[3:]
    if name.startswith("Les "):
        return "des " + name[4:]
    if name[0] in "AEÉÈIOUYH":
        return "d'" + name
    return "de " + name


def _put_row(ws: Worksheet, row: int, values: list[Any]) -> None:
    for col, value in enumerate(values, start=1):
        if value is not None:
            ws.cell(row=row, column=col, value=value)


def _last_day_of_previous_month(today: date) -> date:
    return today.replace(day=1) - timedelta(days=1)


class _StampedZip(zipfile.ZipFile):
    """A zip whose members all carry one timestamp (openpyxl would stamp the current time)."""

    def __init__(self, path: Path, stamp: datetime) -> None:
        super().__init__(path, "w", zipfile.ZIP_DEFLATED)
        self.stamp = stamp

    def writestr(self, zinfo_or_arcname: Any, data: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(zinfo_or_arcname, str):
            zinfo_or_arcname = zipfile.ZipInfo(zinfo_or_arcname, self.stamp.timetuple()[:6])
            zinfo_or_arcname.compress_type = self.compression
            zinfo_or_arcname.external_attr = 0o600 << 16
        super().writestr(zinfo_or_arcname, data, *args, **kwargs)

    def write(self, filename: Any, arcname: Any = None, *args: Any, **kwargs: Any) -> None:
        """openpyxl writes each sheet from a temporary file: take its bytes, not its mtime."""
        self.writestr(str(arcname or filename), Path(filename).read_bytes())


def _save_workbook(wb: Workbook, path: Path, day: date) -> None:
    """Save a workbook dated ``day``: the same workbook and day give the same bytes (and sha256)."""
    stamp = datetime(day.year, day.month, day.day)
    wb.properties.created = wb.properties.modified = stamp
    ExcelWriter(wb, _StampedZip(path, stamp)).save()  # writes and closes the archive


# -- Banque des Territoires ------------------------------------------------------------------

_BDT_PROJECTS = {
    "Habitat": (
        "Réhabilitation d'un îlot dégradé",
        "Étude pré-opérationnelle OPAH-RU",
        "Restructuration d'immeubles vacants",
    ),
    "Commerce / développement économique": (
        "Foncière de redynamisation commerciale",
        "Requalification de cellules commerciales",
        "Halle gourmande du centre-ville",
    ),
    "Mobilité et connexions": ("Pôle d'échanges multimodal", "Plan de mobilité du centre-ville", "Parking relais"),
    "Espaces publics et patrimoine": (
        "Requalification de la place centrale",
        "Restauration d'un monument historique",
        "Aménagement des berges",
    ),
    "Équipements et services publics": (
        "Maison de santé pluriprofessionnelle",
        "Médiathèque",
        "Maison France Services",
    ),
}
# Nature d'intervention: (label, weight, lowest, highest amount in euros).
_BDT_NATURES = (
    ("Prêt", 5, 200_000, 2_000_000),
    ("Fonds propres", 3, 100_000, 2_000_000),
    ("Ingénierie", 2, 30_000, 250_000),
)
_BDT_HEADER = [
    "N° engagement",
    "Code INSEE",
    "Commune",
    "Nature d'intervention",
    "Thématique",
    "Intitulé du projet",
    "Date d'engagement",
    "Montant engagé (€)",
]


def _write_bdt(out_dir: Path, ctx: _Context, rng: random.Random, n_rows: int = 120) -> Path:
    """BDT_ACV_engagements_YYYYMMDD.xlsx: title rows, header on row 4, a TOTAL footer row."""
    plan = _plan(rng, n_rows, _MISTAKES["bdt"])
    rows: list[list[Any]] = []
    for i in range(n_rows):
        kind = plan.get(i)
        commune = rng.choice(ctx.outsiders if kind == "commune_not_acv" else ctx.communes)
        nature, _, low, high = rng.choices(_BDT_NATURES, weights=[n[1] for n in _BDT_NATURES])[0]
        theme = rng.choice(list(_BDT_PROJECTS))
        project = f"{rng.choice(_BDT_PROJECTS[theme])} ({commune.name})"
        day = _day(rng, PROGRAMME_START, ctx.today)
        amount: float | None = _amount(rng, low, high)
        if kind == "amount_missing":
            amount = None
        elif kind == "amount_not_positive":
            amount = -_amount(rng, low, high)
        elif kind == "date_before_programme":
            day = _day(rng, date(2015, 1, 1), PROGRAMME_START - timedelta(days=1))
        elif kind == "unknown_category":
            theme = "Divers"
        # Codes typed as numbers lose their leading zero (1004 for 01004): the pipeline copes.
        code: str | int = int(commune.insee) if commune.insee.isdigit() and rng.random() < 0.3 else commune.insee
        rows.append([f"BDT-{day.year}-{i + 1:05d}", code, commune.name, nature, theme, project, day, amount])
    # The same engagement exported twice: a copy of a clean row, both rows sharing its number.
    for i, kind in plan.items():
        if kind == "duplicate_operation_id":
            rows[i] = list(rows[rng.choice([j for j in range(n_rows) if j not in plan])])

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Engagements"
    ws["A1"] = "Banque des Territoires — Programme Action Cœur de Ville"
    ws["A1"].font = Font(bold=True, size=13)
    ws["A2"] = f"Extraction du {ctx.today:%d/%m/%Y} — montants en euros"
    _put_row(ws, 4, _BDT_HEADER)
    for cell in ws[4]:
        cell.font = Font(bold=True)
    for r, values in enumerate(rows, start=5):
        _put_row(ws, r, values)
        ws.cell(row=r, column=7).number_format = "DD/MM/YYYY"
        ws.cell(row=r, column=8).number_format = "#,##0.00"
    total = sum((Decimal(str(v[7])) for v in rows if v[7] is not None), Decimal(0))
    footer = 5 + n_rows + 1  # after one blank row
    ws.cell(row=footer, column=1, value="TOTAL").font = Font(bold=True)
    ws.cell(row=footer, column=8, value=round(float(total), 2)).number_format = "#,##0.00"
    for col, width in zip("ABCDEFGH", (16, 11, 24, 16, 36, 58, 16, 18), strict=True):
        ws.column_dimensions[col].width = width
    path = out_dir / f"BDT_ACV_engagements_{ctx.today:%Y%m%d}.xlsx"
    _save_workbook(wb, path, ctx.today)
    return path


# -- Action Logement -------------------------------------------------------------------------

_AL_TYPES = ("Construction neuve", "Démolition-reconstruction", "Acquisition-amélioration", "Réhabilitation lourde")
_AL_HEADER = [
    "Référence opération",
    "Code commune",
    "Nom commune",
    "Type d'opération",
    "Produit",
    "Nb logements",
    "Montant engagé",
    "Date décision CE",
]


def _write_action_logement(out_dir: Path, ctx: _Context, rng: random.Random, n_rows: int = 150) -> Path:
    """AL_ACV_export_YYYY-MM.csv for last month: Windows-1252, ';', CRLF, French numbers."""
    extracted = _last_day_of_previous_month(ctx.today)
    plan = _plan(rng, n_rows, _MISTAKES["action_logement"])
    rows = [_AL_HEADER]
    for i in range(n_rows):
        kind = plan.get(i)
        commune = rng.choice(ctx.outsiders if kind == "commune_not_acv" else ctx.communes)
        day = _day(rng, PROGRAMME_START, extracted)
        amount = _french_number(rng, _amount(rng, 40_000, 1_100_000))
        if kind == "amount_missing":
            amount = ""
        elif kind == "amount_unparseable":
            amount = rng.choice(_UNPARSEABLE)
        elif kind == "amount_not_positive":
            amount = _french_number(rng, -_amount(rng, 40_000, 400_000))
        elif kind == "date_after_extraction":
            day = extracted + timedelta(days=rng.randint(1, 45))
        product = rng.choices(("Prêt", "Subvention"), weights=(2, 1))[0]
        rows.append(
            [
                f"AL{day.year}{i + 1:06d}",
                commune.insee,
                commune.name,
                rng.choice(_AL_TYPES),
                product,
                str(rng.randint(4, 80)),
                amount,
                f"{day:%d/%m/%Y}",
            ]
        )
    path = out_dir / f"AL_ACV_export_{extracted:%Y-%m}.csv"
    with path.open("w", encoding="cp1252", newline="") as fh:
        csv.writer(fh, delimiter=";", lineterminator="\r\n").writerows(rows)
    return path


# -- Anah ------------------------------------------------------------------------------------

# type_intervention: (label, lowest, highest grant in euros).
_ANAH_TYPES = (
    ("Propriétaire occupant", 3_000, 40_000),
    ("Propriétaire bailleur", 5_000, 80_000),
    ("Copropriété dégradée", 20_000, 300_000),
    ("RHI-THIRORI", 20_000, 300_000),
)
_ANAH_HEADER = [
    "numero_dossier",
    "code_insee",
    "annee_engagement",
    "type_intervention",
    "nb_logements",
    "montant_aide",
    "date_engagement",
    "statut",
]


def _write_anah(out_dir: Path, ctx: _Context, rng: random.Random, n_rows: int = 200) -> Path:
    """anah_acv_YYYY.csv: UTF-8 with BOM, ',', dot decimals, ISO dates, a status per grant."""
    plan = _plan(rng, n_rows, _MISTAKES["anah"])
    rows = [_ANAH_HEADER]
    for i in range(n_rows):
        kind = plan.get(i)
        commune = rng.choice(ctx.outsiders if kind == "commune_not_acv" else ctx.communes)
        label, low, high = rng.choice(_ANAH_TYPES)
        day = _day(rng, PROGRAMME_START, ctx.today)
        year = day.year
        amount = f"{_amount(rng, low, high):.2f}"
        status = "annulé" if rng.random() < 0.04 else "engagé"  # a withdrawn grant is valid
        if kind == "amount_missing":
            amount = ""
        elif kind == "amount_unparseable":
            amount = rng.choice(_UNPARSEABLE)
        elif kind == "amount_not_positive":
            amount = f"{-_amount(rng, low, high):.2f}"
        elif kind == "unknown_status":
            status = "en attente"
        elif kind == "year_date_mismatch":
            year = day.year - 1  # the year of programming, not of the commitment
        many = label in ("Copropriété dégradée", "RHI-THIRORI")
        rows.append(
            [
                f"ANAH-{commune.insee}-{i + 1:07d}",
                commune.insee,
                str(year),
                label,
                str(rng.randint(4, 40) if many else rng.randint(1, 6)),
                amount,
                day.isoformat(),
                status,
            ]
        )
    path = out_dir / f"anah_acv_{ctx.today.year}.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        csv.writer(fh, delimiter=",", lineterminator="\n").writerows(rows)
    return path


# -- État ------------------------------------------------------------------------------------

_ETAT_AXES = {
    2: "Axe 2 - Développement économique et commercial",
    3: "Axe 3 - Accessibilité, mobilité et connexions",
    4: "Axe 4 - Espace public et patrimoine",
    5: "Axe 5 - Équipements et services publics",
}
# Dispositif: (axes it funds, lowest, highest award in euros, first year).
_ETAT_SCHEMES = {
    "DSIL": ((3, 4, 5), 100_000, 1_500_000, 2019),
    "DETR": ((3, 4, 5), 30_000, 800_000, 2019),
    "FNADT": ((2, 4, 5), 50_000, 1_000_000, 2019),
    "FISAC": ((2,), 30_000, 400_000, 2019),
    "Fonds friches": ((2, 4), 200_000, 1_500_000, 2021),
}
_ETAT_HEADER = ["Dispositif", "Département", "Commune (INSEE)", "Bénéficiaire", "Objet", "Axe ACV", "Montant attribué"]


def _write_etat(out_dir: Path, ctx: _Context, rng: random.Random) -> Path:
    """Etat_credits_ACV.xlsx: one sheet per year of award, a merged title, header on row 2."""
    years = list(range(2019, max(ctx.today.year, 2020)))
    sizes = [rng.randint(13, 17) for _ in years]
    plan = _plan(rng, sum(sizes), _MISTAKES["etat"])
    wb = Workbook()
    default = wb.active
    assert default is not None
    wb.remove(default)
    index = 0
    for year, size in zip(years, sizes, strict=True):
        ws = wb.create_sheet(str(year))
        ws["A1"] = "Crédits de l'État mobilisés au titre d'Action Cœur de Ville"
        ws["A1"].font = Font(bold=True, size=13)
        ws.merge_cells("A1:G1")
        _put_row(ws, 2, _ETAT_HEADER)
        for cell in ws[2]:
            cell.font = Font(bold=True)
        schemes = [s for s, (_, _, _, first) in _ETAT_SCHEMES.items() if first <= year]
        for n in range(1, size + 1):
            kind = plan.get(index)
            index += 1
            commune = rng.choice(ctx.outsiders if kind == "commune_not_acv" else ctx.communes)
            scheme = rng.choice(schemes)
            axes, low, high, _ = _ETAT_SCHEMES[scheme]
            axis = _ETAT_AXES[rng.choice(axes)]
            amount: float | None = _amount(rng, low, high)
            label = f"{commune.name} ({commune.insee})"
            department = commune.department
            if kind == "commune_missing":
                label, department = "Gonesse", "95"  # the code in brackets forgotten
            elif kind == "amount_missing":
                amount = None
            elif kind == "amount_not_positive":
                amount = -_amount(rng, low, high)
            elif kind == "unknown_category":
                axis = "Axe 7 - Autre"
            beneficiary = f"Commune {_de(label.split(' (')[0])}"
            _put_row(ws, n + 2, [scheme, department, label, beneficiary, f"Opération {year}-{n}", axis, amount])
            ws.cell(row=n + 2, column=7).number_format = "#,##0.00"
        for col, width in zip("ABCDEFG", (14, 12, 30, 34, 18, 46, 18), strict=True):
            ws.column_dimensions[col].width = width
    path = out_dir / "Etat_credits_ACV.xlsx"
    _save_workbook(wb, path, ctx.today)
    return path


# -- Établissement public foncier ------------------------------------------------------------

_EPF_HEADER = ["id_intervention", "insee", "commune", "vocation", "date_acte", "montant_keur", "surface_m2"]


def _write_epf(out_dir: Path, ctx: _Context, rng: random.Random, n_rows: int = 40) -> Path:
    """epf_interventions_acv.tsv: UTF-8, tab-separated, amounts in k€ with one comma decimal."""
    plan = _plan(rng, n_rows, _MISTAKES["epf"])
    rows = [_EPF_HEADER]
    for i in range(n_rows):
        kind = plan.get(i)
        commune = rng.choice(ctx.outsiders if kind == "commune_not_acv" else ctx.communes)
        vocation = rng.choices(("habitat", "économie", "équipement public"), weights=(5, 3, 2))[0]
        amount = f"{_amount(rng, 100, 3_000):.1f}".replace(".", ",")
        if kind == "amount_unparseable":
            amount = rng.choice(_UNPARSEABLE)
        rows.append(
            [
                f"EPF{i + 1:05d}",
                commune.insee,
                commune.name,
                vocation,
                _day(rng, PROGRAMME_START, ctx.today).isoformat(),
                amount,
                str(rng.randint(300, 20_000)),
            ]
        )
    path = out_dir / "epf_interventions_acv.tsv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(rows)
    return path

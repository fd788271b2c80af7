"""Large partner exports in the partners' real formats, for the benchmarks.

Two partners, the two formats the nightly run reads most:

* Action Logement, ``AL_ACV_export_2026-10.csv``: Windows-1252, ``;``-separated, CRLF, no
  quotes, French numbers (space or no-break space between thousands, comma decimals,
  sometimes a trailing `` €``), dates ``dd/mm/yyyy`` — byte for byte the layout of the
  partner's specimen (``shared/data/partner_exports/action_logement``).
* Banque des Territoires, ``BDT_ACV_engagements_20261115.xlsx``: sheet ``Engagements``, two
  title rows and a blank row, the header on row 4, inline-string cells, dates as date cells,
  amounts as numbers, a blank row and a ``TOTAL`` row whose last cell is the control total —
  the structure of the partner's specimen.

Rows are drawn with numpy and formatted with pyarrow compute kernels, a chunk of rows at a
time: no Python loop per row, so 5M CSV rows take seconds. The workbook's sheet XML is
written the same way, straight into the zip (an XLSX is a zip of XML parts), with inline
strings as in the specimen (here 1M rows take ~8 s; openpyxl, even in write-only mode, builds
every cell as a Python object). Workbooks stop at 1M rows: Excel caps a sheet at 1,048,576
rows, so no partner can send a bigger one.

Each file carries a small share of the mistakes partners make (rates close to the
specimens'), planned exactly so that the number of rows a correct pipeline quarantines is
known in advance: it is written to ``manifest.json`` beside the files and the harness checks
the pipeline against it. The same seed gives the same bytes (hence the same SHA-256).

    python -m bench.generate --sizes 10k,100k,1M,5M [--out bench/data]
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "bench" / "data"
REFERENCE = ROOT / "cdv_etl" / "sample" / "acv_communes_sample_2024-04.csv"

GENERATOR_VERSION = 3
SEED = 2026
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000, "5M": 5_000_000}
XLSX_MAX_ROWS = 1_000_000
"""Largest workbook generated (Excel's own limit is 1,048,576 rows per sheet)."""
CHUNK = 500_000

AL_EXTRACTION = date(2026, 10, 31)
AL_LATER_MONTH = "2026-11"
LATER_AL = "action_logement_later"
"""The month of the second Action Logement export (the six-export scale-out benchmark)."""
ANAH_NAME = "anah_acv_2026.csv"
EPF_NAME = "epf_interventions_acv.tsv"
ETAT_NAME = "Etat_credits_ACV.xlsx"
LATEST_DATE = date(2026, 10, 31)
"""The latest engagement date of the exports extracted on the day they arrive (EPF) or dated by
their year only (Anah): a date after the run's day would be quarantined, so none is drawn."""
BDT_EXTRACTION = date(2026, 11, 15)
BDT_NAME = "BDT_ACV_engagements_20261115.xlsx"
PROGRAMME_START = date(2018, 1, 1)

# Share of rows carrying each mistake, named by the rule that quarantines it (close to the
# specimens: AL 2.6 % of rows quarantined, BDT 3.6 %). A duplicated operation id is put on
# a row that copies the id of another, clean row: both rows are quarantined.
AL_MISTAKES = {
    "commune_not_acv": 0.0116,
    "amount_unparseable": 0.0060,
    "amount_missing": 0.0012,
    "amount_not_positive": 0.0032,
    "date_after_extraction": 0.0040,
    "duplicate_operation_id": 0.0002,
}
BDT_MISTAKES = {
    "commune_not_acv": 0.0067,
    "amount_missing": 0.0075,
    "amount_not_positive": 0.0010,
    "date_before_programme": 0.0040,
    "date_after_extraction": 0.0027,
    "unknown_category": 0.0050,
    "duplicate_operation_id": 0.0050,
}

# Communes outside the programme (99999 is no commune at all).
OUTSIDERS = (("75056", "Paris"), ("69123", "Lyon"), ("99999", "Commune inconnue"), ("13055", "Marseille"))
UNPARSEABLE = ("à préciser", "#VALEUR!", "N/A", "#VALEUR! €", "à préciser €")
NBSP = "\u00a0"

AL_HEADER = [
    "Référence opération",
    "Code commune",
    "Nom commune",
    "Type d'opération",
    "Produit",
    "Nb logements",
    "Montant engagé",
    "Date décision CE",
]
AL_TYPES = ("Construction neuve", "Démolition-reconstruction", "Acquisition-amélioration", "Réhabilitation lourde")

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
BDT_THEMES = (
    "Habitat",
    "Commerce / développement économique",
    "Mobilité et connexions",
    "Espaces publics et patrimoine",
    "Équipements et services publics",
)
# Labels partners type for the same theme: matched ignoring case and surrounding spaces.
BDT_THEME_VARIANTS = ("HABITAT", " Mobilité et connexions ", "espaces publics et patrimoine")
BDT_UNKNOWN_THEMES = ("Divers", "Culture", "Autre")
# Nature d'intervention: (label, weight, lowest, highest amount in euros).
BDT_NATURES = (
    ("Prêt", 5, 200_000, 2_000_000),
    ("Fonds propres", 3, 100_000, 2_000_000),
    ("Ingénierie", 2, 30_000, 250_000),
)


@dataclass
class Generated:
    """One generated file, as recorded in the manifest."""

    partner: str
    size: str
    rows: int
    path: str
    bytes: int
    expected_quarantined: int
    mistakes: dict[str, int] = field(default_factory=dict)
    control_total_eur: str | None = None
    seconds: float = 0.0
    generator_version: int = GENERATOR_VERSION
    seed: int = SEED


def parse_size(text: str) -> int:
    text = text.strip()
    if text in SIZES:
        return SIZES[text]
    mult = {"k": 1_000, "K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def size_label(n: int) -> str:
    for label, value in SIZES.items():
        if value == n:
            return label
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# -- shared helpers ----------------------------------------------------------------------------


def _communes() -> tuple[list[str], list[str]]:
    ref = pd.read_csv(REFERENCE, dtype=str, keep_default_na=False)
    codes = [c.strip().upper().zfill(5) if c.strip().isdigit() else c.strip().upper() for c in ref["insee_com"]]
    return codes, [n.strip() for n in ref["lib_com"]]


def _plan(rng: np.random.Generator, n: int, rates: dict[str, float]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Which rows carry which mistake (one per row), and the clean rows whose ids are copied.

    Returns (kind per row: -1 for clean, else the index of the kind in ``rates``;
    row copied by each duplicate row, aligned with the duplicates in row order; counts).
    """
    counts = {k: max(1, round(r * n)) for k, r in rates.items()}
    total = sum(counts.values())
    kinds = np.full(n, -1, dtype=np.int8)
    chosen = rng.choice(n, size=total, replace=False)
    start = 0
    for i, k in enumerate(rates):
        kinds[chosen[start : start + counts[k]]] = i
        start += counts[k]
    copied = np.empty(0, dtype=np.int64)
    if "duplicate_operation_id" in rates:
        clean = np.flatnonzero(kinds == -1)
        copied = rng.choice(clean, size=counts["duplicate_operation_id"], replace=False)
        copied = copied.astype(np.int64)
        # The copied rows are quarantined too: count them with the duplicates.
    return kinds, copied, counts


def _log_uniform_cents(
    rng: np.random.Generator, low: np.ndarray | float, high: np.ndarray | float, size: int
) -> np.ndarray:
    u = rng.random(size)
    return np.round(np.exp(np.log(low) + u * (np.log(high) - np.log(low))) * 100).astype(np.int64)


def _month_end(month: str) -> date:
    year, m = (int(x) for x in month.split("-"))
    return date(year + m // 12, m % 12 + 1, 1) - timedelta(days=1)


def _days(rng: np.random.Generator, start: date, end: date, size: int) -> np.ndarray:
    span = (end - start).days + 1
    return np.datetime64(start, "D") + rng.integers(0, span, size=size).astype("timedelta64[D]")


def _s(values: np.ndarray | pa.Array) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _pick(options: tuple[str, ...] | list[str], index: np.ndarray) -> pa.Array:
    """options[index], as an arrow string array (dictionary decode, no Python loop)."""
    return pa.DictionaryArray.from_arrays(
        pa.array(index.astype(np.int32)), pa.array(list(options), pa.string())
    ).dictionary_decode()


def _french_numbers(cents: np.ndarray, nbsp: np.ndarray, euro: np.ndarray) -> pa.Array:
    """1 234 567,89 (space or no-break space between thousands), sometimes with ' €'."""
    neg = cents < 0
    a = np.abs(cents)
    whole, dec = a // 100, a % 100
    m, t, u = whole // 1_000_000, (whole // 1_000) % 1_000, whole % 1_000
    sep = _pick([" ", NBSP], nbsp.astype(np.int8))
    t3 = pc.utf8_lpad(_s(t), 3, "0")
    u3 = pc.utf8_lpad(_s(u), 3, "0")
    millions = pc.binary_join_element_wise(_s(m), t3, u3, sep)
    thousands = pc.binary_join_element_wise(_s(t), u3, sep)
    whole_txt = pc.if_else(pa.array(m > 0), millions, pc.if_else(pa.array(t > 0), thousands, _s(u)))
    text = pc.binary_join_element_wise(whole_txt, pc.utf8_lpad(_s(dec), 2, "0"), ",")
    text = pc.if_else(pa.array(neg), pc.binary_join_element_wise("-", text, ""), text)
    return pc.if_else(pa.array(euro), pc.binary_join_element_wise(text, " €", ""), text)


def _concat_bytes(lines: pa.Array) -> bytes:
    """The UTF-8 bytes of all the strings of an arrow string array, end to end."""
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    return data.to_pybytes()[offsets[0] : offsets[-1]]


# -- Action Logement CSV -----------------------------------------------------------------------


def generate_al_csv(n: int, out_dir: Path, seed: int = SEED, month: str = "2026-10") -> Generated:
    """``AL_ACV_export_<month>.csv`` with ``n`` data rows, in the partner's exact layout.

    A later month (``AL_LATER_MONTH``) is the same stock a month on: the same operations with the
    same ids (so it withdraws nothing and becomes current), about 1 % of them with a revised
    amount, and the dates after the extraction moved past the later extraction date, so that it
    quarantines the same rows as the first.
    """
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"AL_ACV_export_{month}.csv"
    extraction = _month_end(month)
    rng = np.random.default_rng([seed, 1, n])
    codes, names = _communes()
    kinds_list = list(AL_MISTAKES)
    kinds, copied, counts = _plan(rng, n, AL_MISTAKES)
    kind_of = {k: i for i, k in enumerate(kinds_list)}
    dup_rows = np.flatnonzero(kinds == kind_of["duplicate_operation_id"])

    # Whole-file columns that later chunks depend on (the ids copied by duplicates).
    days = _days(rng, PROGRAMME_START, AL_EXTRACTION, n)
    future = kinds == kind_of["date_after_extraction"]
    late = rng.integers(1, 46, size=int(future.sum())).astype("timedelta64[D]")
    days[future] = np.datetime64(AL_EXTRACTION, "D") + late
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    days[future] = np.datetime64(extraction, "D") + late  # a later month's: still after its extraction
    width = max(6, len(str(n)))
    seq = np.arange(1, n + 1)
    id_year, id_seq = years.copy(), seq.copy()
    id_year[dup_rows], id_seq[dup_rows] = years[copied], seq[copied]

    commune_idx = rng.integers(0, len(codes), size=n)
    outsider = kinds == kind_of["commune_not_acv"]
    outsider_idx = rng.integers(0, len(OUTSIDERS), size=n)
    all_codes = codes + [c for c, _ in OUTSIDERS]
    all_names = names + [nm for _, nm in OUTSIDERS]
    commune_idx = np.where(outsider, len(codes) + outsider_idx, commune_idx)

    cents = _log_uniform_cents(rng, 85_000, 1_270_000, n)  # the specimen's spread
    negative = kinds == kind_of["amount_not_positive"]
    cents[negative] = -_log_uniform_cents(rng, 40_000, 400_000, int(negative.sum()))
    nbsp = rng.random(n) < 0.5
    euro = rng.random(n) < 0.18
    product = (rng.random(n) < 1 / 3).astype(np.int8)  # 2 loans for 1 grant
    op_type = rng.integers(0, len(AL_TYPES), size=n)
    dwellings = rng.integers(4, 81, size=n)
    bad_amount = rng.integers(0, len(UNPARSEABLE), size=n)
    if extraction != AL_EXTRACTION:  # drawn last: the rows before are those of the first month
        revised = (rng.random(n) < 0.01) & (kinds == -1)
        cents[revised] = cents[revised] * 103 // 100

    with path.open("wb") as fh:
        fh.write((";".join(AL_HEADER) + "\r\n").encode("cp1252"))
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            sl = slice(lo, hi)
            ids = pc.binary_join_element_wise("AL", _s(id_year[sl]), pc.utf8_lpad(_s(id_seq[sl]), width, "0"), "")
            amount = _french_numbers(cents[sl], nbsp[sl], euro[sl])
            k = kinds[sl]
            amount = pc.if_else(
                pa.array(k == kind_of["amount_unparseable"]), _pick(UNPARSEABLE, bad_amount[sl]), amount
            )
            amount = pc.if_else(pa.array(k == kind_of["amount_missing"]), "", amount)
            day_txt = pc.strftime(pc.cast(pa.array(days[sl]), pa.timestamp("s")), format="%d/%m/%Y")
            line = pc.binary_join_element_wise(
                ids,
                _pick(all_codes, commune_idx[sl]),
                _pick(all_names, commune_idx[sl]),
                _pick(AL_TYPES, op_type[sl]),
                _pick(("Prêt", "Subvention"), product[sl]),
                _s(dwellings[sl]),
                amount,
                day_txt,
                ";",
            )
            line = pc.binary_join_element_wise(line, "\r\n", "")
            fh.write(_concat_bytes(line).decode("utf-8").encode("cp1252"))
    quarantined = sum(counts.values()) + len(np.unique(copied))
    return Generated(
        "action_logement",
        size_label(n),
        n,
        str(path),
        path.stat().st_size,
        quarantined,
        counts,
        None,
        round(time.perf_counter() - t0, 2),
    )


# -- Banque des Territoires XLSX ---------------------------------------------------------------

_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "application/vnd.openxmlformats-officedocument"
_CONTENT_TYPES = (
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    f'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" />'
    '<Default Extension="xml" ContentType="application/xml" />'
    f'<Override PartName="/xl/workbook.xml" ContentType="{_CT}.spreadsheetml.sheet.main+xml" />'
    f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_CT}.spreadsheetml.worksheet+xml" />'
    f'<Override PartName="/xl/styles.xml" ContentType="{_CT}.spreadsheetml.styles+xml" />'
    '<Override PartName="/docProps/core.xml" '
    'ContentType="application/vnd.openxmlformats-package.core-properties+xml" />'
    f'<Override PartName="/docProps/app.xml" ContentType="{_CT}.extended-properties+xml" />'
    "</Types>"
)
_ROOT_RELS = (
    f'<Relationships xmlns="{_PKG}">'
    f'<Relationship Type="{_REL}/officeDocument" Target="xl/workbook.xml" Id="rId1" />'
    f'<Relationship Type="{_PKG}/metadata/core-properties" Target="docProps/core.xml" Id="rId2" />'
    f'<Relationship Type="{_REL}/extended-properties" Target="docProps/app.xml" Id="rId3" />'
    "</Relationships>"
)
_WORKBOOK = (
    f'<workbook xmlns:r="{_REL}" xmlns="{_NS}"><workbookPr /><bookViews><workbookView activeTab="0" />'
    '</bookViews><sheets><sheet name="Engagements" sheetId="1" state="visible" r:id="rId1" /></sheets>'
    '<calcPr calcId="124519" fullCalcOnLoad="1" /></workbook>'
)
_WORKBOOK_RELS = (
    f'<Relationships xmlns="{_PKG}">'
    f'<Relationship Type="{_REL}/worksheet" Target="/xl/worksheets/sheet1.xml" Id="rId1" />'
    f'<Relationship Type="{_REL}/styles" Target="styles.xml" Id="rId2" /></Relationships>'
)
# Style 1: a date cell shown DD/MM/YYYY; style 2: an amount shown #,##0.00.
_STYLES = (
    f'<styleSheet xmlns="{_NS}"><numFmts count="1"><numFmt numFmtId="165" formatCode="DD/MM/YYYY" />'
    '</numFmts><fonts count="1"><font><name val="Calibri" /><family val="2" /><sz val="11" /></font>'
    '</fonts><fills count="2"><fill><patternFill /></fill><fill><patternFill patternType="gray125" />'
    '</fill></fills><borders count="1"><border><left /><right /><top /><bottom /><diagonal /></border>'
    '</borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" />'
    '</cellStyleXfs><cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0" />'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" applyNumberFormat="1" xfId="0" />'
    '<xf numFmtId="4" fontId="0" fillId="0" borderId="0" applyNumberFormat="1" xfId="0" /></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0" /></cellStyles></styleSheet>'
)
_APP = (
    '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">'
    "<Application>Microsoft Excel</Application></Properties>"
)
_CORE = (
    '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><dc:creator>Banque des Territoires</dc:creator>'
    '<dcterms:created xsi:type="dcterms:W3CDTF">2026-11-15T06:00:00Z</dcterms:created>'
    '<dcterms:modified xsi:type="dcterms:W3CDTF">2026-11-15T06:00:00Z</dcterms:modified>'
    "</cp:coreProperties>"
)


def _xml_escape(a: pa.Array) -> pa.Array:
    a = pc.replace_substring(a, "&", "&amp;")
    a = pc.replace_substring(a, "<", "&lt;")
    return pc.replace_substring(a, ">", "&gt;")


def _inline(col: str, rownum: pa.Array, text: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(f'<c r="{col}', rownum, '" t="inlineStr"><is><t>', text, "</t></is></c>", "")


def _inline_row(r: int, values: list[str]) -> str:
    cells = "".join(f'<c r="{chr(65 + i)}{r}" t="inlineStr"><is><t>{v}</t></is></c>' for i, v in enumerate(values) if v)
    return f'<row r="{r}">{cells}</row>'


def generate_bdt_xlsx(n: int, out_dir: Path, seed: int = SEED) -> Generated:
    """``BDT_ACV_engagements_20261115.xlsx`` with ``n`` engagement rows (n ≤ 1M)."""
    if n > XLSX_MAX_ROWS:
        raise ValueError(f"{n} rows: workbooks stop at {XLSX_MAX_ROWS} rows (Excel's sheet limit)")
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / BDT_NAME
    rng = np.random.default_rng([seed, 2, n])
    codes, names = _communes()
    kinds_list = list(BDT_MISTAKES)
    kinds, copied, counts = _plan(rng, n, BDT_MISTAKES)
    kind_of = {k: i for i, k in enumerate(kinds_list)}
    dup_rows = np.flatnonzero(kinds == kind_of["duplicate_operation_id"])

    days = _days(rng, PROGRAMME_START, BDT_EXTRACTION, n)
    before = kinds == kind_of["date_before_programme"]
    days[before] = _days(rng, date(2015, 1, 1), date(2017, 12, 31), int(before.sum()))
    after = kinds == kind_of["date_after_extraction"]
    late = rng.integers(1, 60, size=int(after.sum())).astype("timedelta64[D]")
    days[after] = np.datetime64(BDT_EXTRACTION, "D") + late
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    serial = (days - np.datetime64("1899-12-30", "D")).astype(np.int64)
    width = max(5, len(str(n)))
    seq = np.arange(1, n + 1)
    id_year, id_seq = years.copy(), seq.copy()
    id_year[dup_rows], id_seq[dup_rows] = years[copied], seq[copied]

    commune_idx = rng.integers(0, len(codes), size=n)
    outsider = kinds == kind_of["commune_not_acv"]
    all_codes = codes + [c for c, _ in OUTSIDERS]
    all_names = names + [nm for _, nm in OUTSIDERS]
    commune_idx = np.where(outsider, len(codes) + rng.integers(0, len(OUTSIDERS), size=n), commune_idx)
    # Codes typed as numbers lose their leading zero (3310 for 03310): about 5 % of cells.
    digits = np.array([c.isdigit() for c in all_codes])
    as_number = digits[commune_idx] & (rng.random(n) < 0.05)
    code_num = np.array([int(c) if c.isdigit() else 0 for c in all_codes], dtype=np.int64)

    weights = np.array([w for _, w, _, _ in BDT_NATURES], dtype=float)
    nature = rng.choice(len(BDT_NATURES), size=n, p=weights / weights.sum())
    low = np.array([lo for _, _, lo, _ in BDT_NATURES], dtype=float)[nature]
    high = np.array([hi for _, _, _, hi in BDT_NATURES], dtype=float)[nature]
    cents = _log_uniform_cents(rng, low, high, n)
    negative = kinds == kind_of["amount_not_positive"]
    cents[negative] = -cents[negative]
    missing = kinds == kind_of["amount_missing"]
    cents[missing] = 0
    control_total = int(cents.sum())

    theme = rng.integers(0, len(BDT_THEMES), size=n)
    themes = list(BDT_THEMES) + list(BDT_THEME_VARIANTS) + list(BDT_UNKNOWN_THEMES)
    variant = rng.random(n) < 0.01
    theme = np.where(variant, len(BDT_THEMES) + rng.integers(0, len(BDT_THEME_VARIANTS), size=n), theme)
    unknown = kinds == kind_of["unknown_category"]
    theme = np.where(
        unknown, len(BDT_THEMES) + len(BDT_THEME_VARIANTS) + rng.integers(0, len(BDT_UNKNOWN_THEMES), size=n), theme
    )

    esc_names = [nm.replace("&", "&amp;").replace("<", "&lt;") for nm in all_names]
    esc_themes = [t.replace("&", "&amp;").replace("<", "&lt;") for t in themes]
    natures = [nat for nat, _, _, _ in BDT_NATURES]
    last = 4 + n + 2  # blank row, then TOTAL
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:

        def put(name: str, text: str) -> None:
            info = zipfile.ZipInfo(name, (2026, 11, 15, 6, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)

        put("[Content_Types].xml", _CONTENT_TYPES)
        put("_rels/.rels", _ROOT_RELS)
        put("docProps/app.xml", _APP)
        put("docProps/core.xml", _CORE)
        put("xl/workbook.xml", _WORKBOOK)
        put("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        put("xl/styles.xml", _STYLES)
        info = zipfile.ZipInfo("xl/worksheets/sheet1.xml", (2026, 11, 15, 6, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as sheet:
            head = (
                f'<worksheet xmlns:r="{_REL}" xmlns="{_NS}"><dimension ref="A1:H{last}" />'
                '<sheetViews><sheetView workbookViewId="0" /></sheetViews>'
                '<sheetFormatPr defaultRowHeight="15" /><cols><col min="1" max="1" width="16" customWidth="1" />'
                '<col min="5" max="6" width="40" customWidth="1" /></cols><sheetData>'
                + _inline_row(1, ["Banque des Territoires — Programme Action Cœur de Ville"])
                + _inline_row(2, [f"Extraction du {BDT_EXTRACTION:%d/%m/%Y} — montants en euros"])
                + _inline_row(4, BDT_HEADER)
            )
            sheet.write(head.encode("utf-8"))
            for lo in range(0, n, CHUNK):
                hi = min(n, lo + CHUNK)
                sl = slice(lo, hi)
                r = _s(np.arange(lo, hi) + 5)
                ids = pc.binary_join_element_wise(
                    "BDT-", _s(id_year[sl]), "-", pc.utf8_lpad(_s(id_seq[sl]), width, "0"), ""
                )
                code_cell = pc.if_else(
                    pa.array(as_number[sl]),
                    pc.binary_join_element_wise(
                        '<c r="B', r, '" t="n"><v>', _s(code_num[commune_idx[sl]]), "</v></c>", ""
                    ),
                    _inline("B", r, _pick(all_codes, commune_idx[sl])),
                )
                commune = _pick(esc_names, commune_idx[sl])
                project = pc.binary_join_element_wise("Projet ", commune, " n°", _s(seq[sl]), "")
                c = cents[sl]
                whole = _s(np.abs(c) // 100)
                amount_txt = pc.binary_join_element_wise(
                    pc.if_else(pa.array(c < 0), "-", ""), whole, ".", pc.utf8_lpad(_s(np.abs(c) % 100), 2, "0"), ""
                )
                amount_cell = pc.if_else(
                    pa.array(missing[sl]),
                    "",
                    pc.binary_join_element_wise('<c r="H', r, '" s="2" t="n"><v>', amount_txt, "</v></c>", ""),
                )
                row = pc.binary_join_element_wise(
                    '<row r="',
                    r,
                    '">',
                    _inline("A", r, ids),
                    code_cell,
                    _inline("C", r, commune),
                    _inline("D", r, _pick(natures, nature[sl])),
                    _inline("E", r, _pick(esc_themes, theme[sl])),
                    _inline("F", r, project),
                    '<c r="G',
                    r,
                    '" s="1" t="n"><v>',
                    _s(serial[sl]),
                    "</v></c>",
                    amount_cell,
                    "</row>",
                    "",
                )
                sheet.write(_concat_bytes(row))
            total_txt = f"{'-' if control_total < 0 else ''}{abs(control_total) // 100}.{abs(control_total) % 100:02d}"
            tail = (
                f'<row r="{last}"><c r="A{last}" t="inlineStr"><is><t>TOTAL</t></is></c>'
                f'<c r="H{last}" s="2" t="n"><v>{total_txt}</v></c></row></sheetData>'
                '<pageMargins left="0.75" right="0.75" top="1" bottom="1" header="0.5" footer="0.5" />'
                "</worksheet>"
            )
            sheet.write(tail.encode("utf-8"))
    quarantined = sum(counts.values()) + len(np.unique(copied))
    return Generated(
        "bdt",
        size_label(n),
        n,
        str(path),
        path.stat().st_size,
        quarantined,
        counts,
        total_txt,
        round(time.perf_counter() - t0, 2),
    )


# -- Anah CSV ----------------------------------------------------------------------------------

ANAH_HEADER = [
    "numero_dossier",
    "code_insee",
    "annee_engagement",
    "type_intervention",
    "nb_logements",
    "montant_aide",
    "date_engagement",
    "statut",
]
ANAH_TYPES = ("Propriétaire occupant", "Propriétaire bailleur", "Copropriété dégradée", "RHI-THIRORI")
# Close to the specimen: 0.6 % outside the programme, 0.3 % unknown status, 0.5 % year ≠ date.
ANAH_MISTAKES = {
    "commune_not_acv": 0.0061,
    "unknown_status": 0.0033,
    "year_date_mismatch": 0.0049,
    "amount_not_positive": 0.0010,
}
ANAH_UNKNOWN_STATUSES = ("en attente", "à instruire", "suspendu")


def _dot_decimals(cents: np.ndarray) -> pa.Array:
    """1234.50: dot decimals, no thousands separator (``-`` before a negative)."""
    a = np.abs(cents)
    text = pc.binary_join_element_wise(_s(a // 100), pc.utf8_lpad(_s(a % 100), 2, "0"), ".")
    return pc.if_else(pa.array(cents < 0), pc.binary_join_element_wise("-", text, ""), text)


def _iso(days: np.ndarray) -> pa.Array:
    return pc.strftime(pc.cast(pa.array(days), pa.timestamp("s")), format="%Y-%m-%d")


def generate_anah_csv(n: int, out_dir: Path, seed: int = SEED) -> Generated:
    """``anah_acv_2026.csv``: UTF-8 with a byte-order mark, ``,``, dot decimals, ISO dates, a status
    per grant (5 % ``annulé``: loaded, not engaged) — the specimen's layout."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ANAH_NAME
    rng = np.random.default_rng([seed, 3, n])
    codes, _ = _communes()
    kinds, _, counts = _plan(rng, n, ANAH_MISTAKES)
    kind_of = {k: i for i, k in enumerate(ANAH_MISTAKES)}

    days = _days(rng, PROGRAMME_START, LATEST_DATE, n)
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    mismatch = kinds == kind_of["year_date_mismatch"]
    stated = years.copy()
    stated[mismatch] = np.where(years[mismatch] > PROGRAMME_START.year, years[mismatch] - 1, years[mismatch] + 1)
    all_codes = codes + [c for c, _ in OUTSIDERS]
    commune_idx = rng.integers(0, len(codes), size=n)
    outsider = kinds == kind_of["commune_not_acv"]
    commune_idx = np.where(outsider, len(codes) + rng.integers(0, len(OUTSIDERS), size=n), commune_idx)
    cents = _log_uniform_cents(rng, 3_000, 300_000, n)
    negative = kinds == kind_of["amount_not_positive"]
    cents[negative] = -cents[negative]
    statuses = ["engagé", "annulé", *ANAH_UNKNOWN_STATUSES]
    status = (rng.random(n) < 0.05).astype(np.int64)
    unknown = kinds == kind_of["unknown_status"]
    status[unknown] = 2 + rng.integers(0, len(ANAH_UNKNOWN_STATUSES), size=int(unknown.sum()))
    scheme = rng.integers(0, len(ANAH_TYPES), size=n)
    dwellings = rng.integers(1, 13, size=n)
    seq = np.arange(1, n + 1)
    width = max(7, len(str(n)))

    with path.open("wb") as fh:
        fh.write(("\ufeff" + ",".join(ANAH_HEADER) + "\n").encode("utf-8"))
        for lo in range(0, n, CHUNK):
            sl = slice(lo, min(n, lo + CHUNK))
            code = _pick(all_codes, commune_idx[sl])
            line = pc.binary_join_element_wise(
                pc.binary_join_element_wise("ANAH", code, pc.utf8_lpad(_s(seq[sl]), width, "0"), "-"),
                code,
                _s(stated[sl]),
                _pick(ANAH_TYPES, scheme[sl]),
                _s(dwellings[sl]),
                _dot_decimals(cents[sl]),
                _iso(days[sl]),
                _pick(statuses, status[sl]),
                ",",
            )
            fh.write(_concat_bytes(pc.binary_join_element_wise(line, "\n", "")))
    return Generated(
        "anah",
        size_label(n),
        n,
        str(path),
        path.stat().st_size,
        sum(counts.values()),
        counts,
        None,
        round(time.perf_counter() - t0, 2),
    )


# -- EPF TSV -----------------------------------------------------------------------------------

EPF_HEADER = ["id_intervention", "insee", "commune", "vocation", "date_acte", "montant_keur", "surface_m2"]
EPF_VOCATIONS = ("habitat", "économie", "équipement public")
EPF_UNKNOWN_VOCATIONS = ("loisirs", "à définir")
EPF_MISTAKES = {
    "commune_not_acv": 0.0067,
    "amount_missing": 0.0200,
    "unknown_category": 0.0050,
    "date_before_programme": 0.0030,
    "duplicate_operation_id": 0.0010,
}


def generate_epf_tsv(n: int, out_dir: Path, seed: int = SEED) -> Generated:
    """``epf_interventions_acv.tsv``: UTF-8, tab-separated, ISO dates, amounts in k€ with one comma
    decimal — the specimen's layout. Its extraction date is the day it arrives: no date after
    ``LATEST_DATE`` is drawn, so its quarantine does not depend on the day of the run."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EPF_NAME
    rng = np.random.default_rng([seed, 4, n])
    codes, names = _communes()
    kinds, copied, counts = _plan(rng, n, EPF_MISTAKES)
    kind_of = {k: i for i, k in enumerate(EPF_MISTAKES)}
    days = _days(rng, PROGRAMME_START, LATEST_DATE, n)
    before = kinds == kind_of["date_before_programme"]
    days[before] = _days(rng, date(2014, 1, 1), date(2017, 12, 31), int(before.sum()))
    seq = np.arange(1, n + 1)
    seq[np.flatnonzero(kinds == kind_of["duplicate_operation_id"])] = seq[copied]
    all_codes = codes + [c for c, _ in OUTSIDERS]
    all_names = names + [nm for _, nm in OUTSIDERS]
    commune_idx = rng.integers(0, len(codes), size=n)
    outsider = kinds == kind_of["commune_not_acv"]
    commune_idx = np.where(outsider, len(codes) + rng.integers(0, len(OUTSIDERS), size=n), commune_idx)
    vocations = [*EPF_VOCATIONS, *EPF_UNKNOWN_VOCATIONS]
    vocation = rng.integers(0, len(EPF_VOCATIONS), size=n)
    unknown = kinds == kind_of["unknown_category"]
    vocation[unknown] = len(EPF_VOCATIONS) + rng.integers(0, len(EPF_UNKNOWN_VOCATIONS), size=int(unknown.sum()))
    tenths = np.round(_log_uniform_cents(rng, 1.5, 250, n) / 10).astype(np.int64)  # k€ in tenths: 15,0 to 2 500,0
    missing = kinds == kind_of["amount_missing"]
    surface = rng.integers(200, 20_000, size=n)
    width = max(5, len(str(n)))

    with path.open("wb") as fh:
        fh.write(("\t".join(EPF_HEADER) + "\n").encode("utf-8"))
        for lo in range(0, n, CHUNK):
            sl = slice(lo, min(n, lo + CHUNK))
            amount = pc.binary_join_element_wise(_s(tenths[sl] // 10), _s(tenths[sl] % 10), ",")
            line = pc.binary_join_element_wise(
                pc.binary_join_element_wise("EPF", pc.utf8_lpad(_s(seq[sl]), width, "0"), ""),
                _pick(all_codes, commune_idx[sl]),
                _pick(all_names, commune_idx[sl]),
                _pick(vocations, vocation[sl]),
                _iso(days[sl]),
                pc.if_else(pa.array(missing[sl]), "", amount),
                _s(surface[sl]),
                "\t",
            )
            fh.write(_concat_bytes(pc.binary_join_element_wise(line, "\n", "")))
    quarantined = sum(counts.values()) + len(np.unique(copied))
    return Generated(
        "epf",
        size_label(n),
        n,
        str(path),
        path.stat().st_size,
        quarantined,
        counts,
        None,
        round(time.perf_counter() - t0, 2),
    )


# -- État XLSX ---------------------------------------------------------------------------------

ETAT_YEARS = tuple(range(2019, 2026))
"""One sheet per year of award, as in the specimen."""
ETAT_HEADER = [
    "Dispositif",
    "Département",
    "Commune (INSEE)",
    "Bénéficiaire",
    "Objet",
    "Axe ACV",
    "Montant attribué",
]
ETAT_SCHEMES = ("FNADT", "Fonds friches", "FISAC", "DSIL", "DETR")
ETAT_AXES = (
    "Axe 1 - Réhabilitation-restructuration de l'habitat",
    "Axe 2 - Développement économique et commercial",
    "Axe 3 - Accessibilité, mobilité et connexions",
    "Axe 4 - Espace public et patrimoine",
    "Axe 5 - Équipements et services publics",
)
ETAT_UNKNOWN_AXES = ("Axe 7 - Autre", "Hors axe")
ETAT_MISTAKES = {
    "commune_missing": 0.0078,
    "commune_not_acv": 0.0050,
    "unknown_category": 0.0112,
    "amount_missing": 0.0030,
}


def _etat_parts(years: tuple[int, ...]) -> dict[str, str]:
    """The workbook's fixed parts for one sheet per year."""
    sheets = "".join(
        f'<sheet name="{y}" sheetId="{i}" state="visible" r:id="rId{i}" />' for i, y in enumerate(years, 1)
    )
    rels = "".join(
        f'<Relationship Type="{_REL}/worksheet" Target="/xl/worksheets/sheet{i}.xml" Id="rId{i}" />'
        for i in range(1, len(years) + 1)
    )
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_CT}.spreadsheetml.worksheet+xml" />'
        for i in range(2, len(years) + 1)
    )
    k = len(years) + 1
    return {
        "[Content_Types].xml": _CONTENT_TYPES.replace("</Types>", overrides + "</Types>"),
        "_rels/.rels": _ROOT_RELS,
        "docProps/app.xml": _APP,
        "docProps/core.xml": _CORE.replace("Banque des Territoires", "DGCL"),
        "xl/workbook.xml": _WORKBOOK.replace(
            '<sheet name="Engagements" sheetId="1" state="visible" r:id="rId1" />', sheets
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{_PKG}">{rels}'
            f'<Relationship Type="{_REL}/styles" Target="styles.xml" Id="rId{k}" /></Relationships>'
        ),
        "xl/styles.xml": _STYLES,
    }


def generate_etat_xlsx(n: int, out_dir: Path, seed: int = SEED) -> Generated:
    """``Etat_credits_ACV.xlsx`` with ``n`` awards over one sheet per year (2019-2025): a merged
    title on row 1, the header on row 2, inline strings, amounts as numbers; no operation id (an
    award is known by its year, scheme, commune and object) and no date — the specimen's layout."""
    if n > XLSX_MAX_ROWS:
        raise ValueError(f"{n} rows: workbooks stop at {XLSX_MAX_ROWS} rows (Excel's sheet limit)")
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ETAT_NAME
    rng = np.random.default_rng([seed, 5, n])
    codes, names = _communes()
    kinds, _, counts = _plan(rng, n, ETAT_MISTAKES)
    kind_of = {k: i for i, k in enumerate(ETAT_MISTAKES)}
    all_codes = codes + [c for c, _ in OUTSIDERS]
    all_names = [nm.replace("&", "&amp;").replace("<", "&lt;") for nm in names + [nm for _, nm in OUTSIDERS]]
    commune_idx = rng.integers(0, len(codes), size=n)
    outsider = kinds == kind_of["commune_not_acv"]
    commune_idx = np.where(outsider, len(codes) + rng.integers(0, len(OUTSIDERS), size=n), commune_idx)
    departments = [c[:3] if c.startswith("97") else c[:2] for c in all_codes]
    labels = [f"{nm} ({c})" for nm, c in zip(all_names, all_codes, strict=True)]
    axes = [*ETAT_AXES, *ETAT_UNKNOWN_AXES]
    axis = rng.integers(1, len(ETAT_AXES), size=n)  # axes 2-5, as in the specimen; axis 1 rarely
    axis[rng.random(n) < 0.05] = 0
    unknown = kinds == kind_of["unknown_category"]
    axis[unknown] = len(ETAT_AXES) + rng.integers(0, len(ETAT_UNKNOWN_AXES), size=int(unknown.sum()))
    scheme = rng.integers(0, len(ETAT_SCHEMES), size=n)
    cents = _log_uniform_cents(rng, 15_000, 1_500_000, n)
    no_code = kinds == kind_of["commune_missing"]
    missing = kinds == kind_of["amount_missing"]
    per_sheet = np.array_split(np.arange(n), len(ETAT_YEARS))

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, text in _etat_parts(ETAT_YEARS).items():
            info = zipfile.ZipInfo(name, (2026, 11, 20, 6, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
        for i, (year, rows) in enumerate(zip(ETAT_YEARS, per_sheet, strict=True), 1):
            last = len(rows) + 2
            info = zipfile.ZipInfo(f"xl/worksheets/sheet{i}.xml", (2026, 11, 20, 6, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as sheet:
                sheet.write(
                    (
                        f'<worksheet xmlns:r="{_REL}" xmlns="{_NS}"><dimension ref="A1:G{last}" />'
                        '<sheetViews><sheetView workbookViewId="0" /></sheetViews>'
                        '<sheetFormatPr defaultRowHeight="15" /><sheetData>'
                        + _inline_row(1, ["Crédits de l'État mobilisés au titre d'Action Cœur de Ville"])
                        + _inline_row(2, ETAT_HEADER)
                    ).encode("utf-8")
                )
                for lo in range(0, len(rows), CHUNK):
                    idx = rows[lo : lo + CHUNK]
                    r = _s(np.arange(lo, lo + len(idx)) + 3)
                    c = commune_idx[idx]
                    commune = pc.if_else(pa.array(no_code[idx]), _pick(all_names, c), _pick(labels, c))
                    amount_cell = pc.if_else(
                        pa.array(missing[idx]),
                        "",
                        pc.binary_join_element_wise(
                            '<c r="G', r, '" t="n"><v>', _dot_decimals(cents[idx]), "</v></c>", ""
                        ),
                    )
                    objet = pc.binary_join_element_wise(f"Opération {year}-", _s(np.arange(lo, lo + len(idx)) + 1), "")
                    row = pc.binary_join_element_wise(
                        '<row r="',
                        r,
                        '">',
                        _inline("A", r, _pick(ETAT_SCHEMES, scheme[idx])),
                        _inline("B", r, _pick(departments, c)),
                        _inline("C", r, commune),
                        _inline("D", r, pc.binary_join_element_wise("Commune de ", _pick(all_names, c), "")),
                        _inline("E", r, objet),
                        _inline("F", r, _pick(axes, axis[idx])),
                        amount_cell,
                        "</row>",
                        "",
                    )
                    sheet.write(_concat_bytes(row))
                sheet.write(
                    b'</sheetData><mergeCells count="1"><mergeCell ref="A1:G1" /></mergeCells>'
                    b'<pageMargins left="0.75" right="0.75" top="1" bottom="1" header="0.5" footer="0.5" />'
                    b"</worksheet>"
                )
    return Generated(
        "etat",
        size_label(n),
        n,
        str(path),
        path.stat().st_size,
        sum(counts.values()),
        counts,
        None,
        round(time.perf_counter() - t0, 2),
    )


# -- cache -------------------------------------------------------------------------------------


def manifest_path(data_dir: Path) -> Path:
    return data_dir / "manifest.json"


def load_manifest(data_dir: Path) -> dict[str, dict]:
    p = manifest_path(data_dir)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


GENERATORS: dict[str, Callable[[int, Path, int], Generated]] = {
    "action_logement": generate_al_csv,
    "bdt": generate_bdt_xlsx,
    "anah": generate_anah_csv,
    "epf": generate_epf_tsv,
    "etat": generate_etat_xlsx,
    LATER_AL: partial(generate_al_csv, month=AL_LATER_MONTH),
}
"""Each file the benchmarks use, by its key in the manifest: the partner, or ``LATER_AL`` for the
second Action Logement export (a partner's later month)."""
SIX_EXPORTS = ("action_logement", "bdt", "anah", "etat", "epf", LATER_AL)
"""The scale-out benchmark's exports, in the order they arrive (the later Action Logement month last)."""
XLSX_KINDS = frozenset({"bdt", "etat"})


def ensure(partner: str, n: int, data_dir: Path = DATA_DIR, seed: int = SEED) -> dict:
    """The manifest entry of this file (``partner``: a key of ``GENERATORS``), generating it unless an
    identical one is on disk."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key = f"{partner}/{size_label(n)}"
    manifest = load_manifest(data_dir)
    entry = manifest.get(key)
    if (
        entry
        and entry.get("generator_version") == GENERATOR_VERSION
        and entry.get("seed") == seed
        and Path(entry["path"]).exists()
        and Path(entry["path"]).stat().st_size == entry["bytes"]
    ):
        return entry
    gen = GENERATORS[partner](n, data_dir / size_label(n), seed)
    manifest = load_manifest(data_dir)  # re-read: another size may have been added meanwhile
    manifest[key] = asdict(gen)
    manifest_path(data_dir).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return manifest[key]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10k,100k,1M,5M")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--partners", default="action_logement,bdt")
    ap.add_argument("--json", action="store_true", help="print the manifest entries as JSON")
    args = ap.parse_args(argv)
    done = []
    for label in args.sizes.split(","):
        n = parse_size(label)
        for partner in args.partners.split(","):
            if partner in XLSX_KINDS and n > XLSX_MAX_ROWS:
                continue
            entry = ensure(partner, n, args.out)
            done.append(entry)
            if not args.json:
                print(
                    f"{entry['partner']:>16} {entry['size']:>5}: {entry['bytes'] / 1e6:8.1f} MB, "
                    f"{entry['expected_quarantined']} rows to quarantine ({entry['seconds']} s) "
                    f"{entry['path']}"
                )
    if args.json:
        print(json.dumps(done))


if __name__ == "__main__":
    main()

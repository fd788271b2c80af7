"""The ANCT reference: real quirks of real data, dated vintages, and the loaded exports validated
again against each new list (rows move in and out of quarantine), on real DuckDB files."""

from __future__ import annotations

import csv
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import run_cli
from conftest import ANCT_REFERENCE, needs_shared, sample_warehouse, table_snapshot

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError, ReconciliationError
from cdv_etl.inbox import refresh_reference, run_inbox
from cdv_etl.load.reference import (
    INSEE_REGIONS,
    SAMPLE_REFERENCE,
    ReferenceRefused,
    ReferenceResult,
    read_reference,
    vintage_of,
)
from cdv_etl.pipeline import Pipeline, open_pipeline

AL_HEADER = (
    "Référence opération;Code commune;Nom commune;Type d'opération;Produit;Nb logements;Montant engagé;Date décision CE"
)


def al_export(folder: Path, month: str, rows: list[tuple[str, str, str]]) -> Path:
    """An Action Logement export of ``month`` (YYYY-MM): (operation id, INSEE code, amount) rows."""
    path = folder / f"AL_ACV_export_{month}.csv"
    lines = [AL_HEADER] + [
        f"{op};{insee};X;Construction neuve;Prêt;3;{amount};01/02/2020" for op, insee, amount in rows
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return path


def sample_communes() -> list[dict[str, str]]:
    with SAMPLE_REFERENCE.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def vintage_file(folder: Path, name: str, *, drop: frozenset[str] = frozenset(), add: tuple[str, ...] = ()) -> Path:
    """The sample reference as a CSV named ``name``, without the INSEE codes ``drop``, with the
    communes ``add`` (INSEE codes of Ile-de-France, each its own convention)."""
    rows = [r for r in sample_communes() if r["insee_com"] not in drop]
    for i, code in enumerate(add):
        rows.append({**rows[0], "insee_com": code, "id_acv": f"ACV9{i:02d}", "lib_com": f"Commune {code}",
                     "insee_dep": code[:2], "insee_reg": "11", "lib_reg": "Île-de-France"})  # fmt: skip
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def placed(pipe: Pipeline, file_id: int) -> dict[str, str]:
    """Where each operation of a file is: 'loaded', or its quarantine rules."""
    where = dict(
        pipe.con.execute("SELECT operation_id, 'loaded' FROM engagement_rows WHERE file_id = ?", [file_id]).fetchall()
    )
    for row_key, rules in pipe.con.execute(
        "SELECT row_key, string_agg(rule, ',' ORDER BY rule) FROM quarantine_failures WHERE file_id = ? GROUP BY 1",
        [file_id],
    ).fetchall():
        op = pipe.con.execute(
            "SELECT operation_id FROM quarantine_records WHERE file_id = ? AND row_key = ?", [file_id, row_key]
        ).fetchone()
        assert op is not None
        where[op[0]] = rules
    return where


def ledger(pipe: Pipeline, file_id: int) -> tuple:
    return pipe.con.execute(
        "SELECT rows_read, rows_loaded, rows_quarantined, loaded_amount_eur, engaged_amount_eur FROM files "
        "WHERE file_id = ?",
        [file_id],
    ).fetchone()


# -- reading ------------------------------------------------------------------------------------
def test_sample_reference_is_small_real_clean_and_dated() -> None:
    ref = read_reference(SAMPLE_REFERENCE)
    assert 24 <= len(ref) <= 60
    assert ref["insee_code"].str.len().eq(5).all()
    assert set(ref.loc[ref["convention_id"] == "ACV113", "name"]) == {"Lens", "Liévin"}
    assert vintage_of(SAMPLE_REFERENCE) == date(2024, 4, 1)


def test_csv_with_numbers_that_lost_their_zeros(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text(
        "insee_com;id_acv;lib_com;insee_dep;insee_reg;lib_reg;pop\n"
        "1004;ACV008;Ambérieu-en-Bugey;1;84;Auvergne-Rhône-Alpes;14854\n"
        "2A004;ACV004;Ajaccio;2A;94;Corse;73822\n"
        "97105;ACV023;Basse-Terre;971;1;Guadeloupe;9779\n",
        encoding="utf-8",
    )
    ref = read_reference(path)
    assert list(ref["insee_code"]) == ["01004", "2A004", "97105"]
    assert list(ref["department"]) == ["01", "2A", "971"]
    assert list(ref["region_code"]) == ["84", "94", "01"]


@needs_shared
def test_regions_named_from_the_insee_code_when_the_list_has_no_lib_reg(tmp_path: Path) -> None:
    """The 2018 list has insee_reg and no lib_reg: the names come from the 18 INSEE regions."""
    doc = json.loads(ANCT_REFERENCE.read_text(encoding="utf-8"))
    named = {str(f["properties"]["insee_com"]).zfill(5): f["properties"].pop("lib_reg") for f in doc["features"]}
    old = tmp_path / "acv_communes_2018-11.geojson"
    old.write_text(json.dumps(doc), encoding="utf-8")
    ref = read_reference(old)
    assert dict(zip(ref["insee_code"], ref["region"], strict=True)) == named
    assert ref["region"].notna().all() and set(ref["region"]) == set(INSEE_REGIONS.values())


def test_an_unknown_region_code_without_a_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acv_communes_2018-11.csv"
    path.write_text("insee_com,id_acv,lib_com,insee_dep,insee_reg\n80001,ACV001,Abbeville,80,99\n", encoding="utf-8")
    with pytest.raises(CdvError, match="insee_reg '99' of commune 80001 .* not one of the 18 INSEE region codes"):
        read_reference(path)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("acv_communes_2025-01.csv", "insee_com,id_acv,lib_com,insee_dep\n123456,ACV1,X,12\n", "invalid INSEE code"),
        ("acv_communes_2025-01.csv", "insee_com,id_acv,lib_com,insee_dep\n", "has no communes"),
        ("acv_communes_2025-01.geojson", '{"type": "FeatureCollection", "features": []}', "has no communes"),
        ("acv_communes_2025-01.geojson", '{"type": "Feature"}', "not a GeoJSON FeatureCollection"),
        (
            "acv_communes_2025-01.csv",
            "insee_com,id_acv,lib_com,insee_dep\n80001,ACV1,Abbeville,80\n34003,ACV2,Agde,34\n80001,ACV1,Abbeville,80\n",
            r"INSEE code 80001 appears twice \(features 1 and 3\)",
        ),
        ("acv_communes_2025-01.xlsx", "not read", "unknown reference format '.xlsx'"),
        ("acv_communes_2025-01.txt", "not read", "unknown reference format '.txt'"),
        ("acv_communes_2025-01.csv", "insee_com,lib_com\n80001,Abbeville\n", "columns missing: id_acv, insee_dep"),
    ],
)
def test_a_bad_reference_is_refused_whole_and_nothing_changes(
    pipe: Pipeline, tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    before = table_snapshot(pipe.con)
    with pytest.raises(CdvError, match=problem) as caught:
        pipe.load_reference(path)
    assert name in caught.value.message and "not loaded" in caught.value.message and caught.value.hint
    assert table_snapshot(pipe.con) == before


# -- vintages -----------------------------------------------------------------------------------
def test_the_vintage_comes_from_the_option_or_the_file_name() -> None:
    assert vintage_of(Path("acv_communes_2024-04.geojson")) == date(2024, 4, 1)
    assert vintage_of(Path("acv_communes_2024-04-15.csv")) == date(2024, 4, 15)
    assert vintage_of(Path("acv_communes_2024-04.geojson"), "2018-11") == date(2018, 11, 1)
    assert vintage_of(Path("liste.csv"), "2019-03-07") == date(2019, 3, 7)
    for path, given, problem in [
        (Path("liste_acv.geojson"), None, "has no date"),
        (Path("liste.csv"), "mars 2024", "not a date YYYY-MM"),
        (Path("acv_communes_2024-13.csv"), None, "not a real date"),
    ]:
        with pytest.raises(ReferenceRefused, match=problem) as caught:
            vintage_of(path, given)
        assert "--vintage YYYY-MM" in caught.value.hint


def test_a_reference_without_a_date_is_refused_and_nothing_changes(pipe: Pipeline, tmp_path: Path) -> None:
    path = vintage_file(tmp_path, "liste_acv.csv")
    before = table_snapshot(pipe.con)
    with pytest.raises(ReferenceRefused, match="liste_acv.csv: the reference has no date"):
        pipe.load_reference(path)
    assert table_snapshot(pipe.con) == before
    r = pipe.load_reference(path, vintage="2025-01")
    assert (r.changed, r.vintage, r.previous_vintage) == (True, date(2025, 1, 1), date(2024, 4, 1))


def test_an_older_vintage_is_refused_unless_forced_and_every_vintage_is_kept(pipe: Pipeline, tmp_path: Path) -> None:
    newer = pipe.load_reference(vintage_file(tmp_path, "acv_communes_2025-01.csv", add=("75056",)))
    assert (newer.communes_added, newer.communes_removed) == (1, 0)
    older = vintage_file(tmp_path, "acv_communes_2018-11.csv", drop=frozenset({"80001", "34003"}))
    before = table_snapshot(pipe.con)
    with pytest.raises(
        ReferenceRefused, match=r"vintage 2018-11-01 is older than the current reference's \(2025-01-01"
    ):
        pipe.load_reference(older)
    assert table_snapshot(pipe.con) == before
    forced = pipe.load_reference(older, force=True)
    assert (forced.forced, forced.communes_added, forced.communes_removed) == (True, 0, 3)
    assert pipe.con.execute(
        "SELECT file_name, vintage, forced, communes, communes_added, communes_removed FROM reference_loads "
        "ORDER BY reference_load_id"
    ).fetchall() == [
        (SAMPLE_REFERENCE.name, date(2024, 4, 1), False, 36, 36, 0),
        ("acv_communes_2025-01.csv", date(2025, 1, 1), False, 37, 1, 0),
        ("acv_communes_2018-11.csv", date(2018, 11, 1), True, 34, 0, 3),
    ]
    kept = pipe.con.execute("SELECT reference_load_id, count(*) FROM reference_communes GROUP BY 1 ORDER BY 1")
    assert kept.fetchall() == [(1, 36), (2, 37), (3, 34)]
    current = pipe.con.execute("SELECT DISTINCT reference_load_id FROM communes").fetchall()
    assert current == [(3,)] and pipe.con.execute("SELECT count(*) FROM communes").fetchone() == (34,)


# -- revalidation -------------------------------------------------------------------------------
def test_a_reference_change_moves_rows_in_and_out_of_quarantine(pipe: Pipeline, tmp_path: Path) -> None:
    """Paris (75056) joins the list, Abbeville (80001) leaves it: Abbeville's rows go to quarantine,
    Paris's come out of it (the bad amount's row keeps its other failure), and going back to the
    first vintage gives the first state back."""
    export = al_export(
        tmp_path,
        "2024-10",
        [
            ("A1", "80001", "100,00"),
            ("A2", "80001", "20,50"),
            ("P1", "75056", "7,00"),
            ("P2", "75056", "-3,00"),
            ("G1", "47001", "1 000,00"),
        ],  # fmt: skip
    )
    fid = pipe.ingest(export).file_id
    assert fid is not None
    start = placed(pipe, fid)
    assert start == {
        "A1": "loaded",
        "A2": "loaded",
        "P1": "commune_not_acv",
        "P2": "amount_not_positive,commune_not_acv",
        "G1": "loaded",
    }
    assert ledger(pipe, fid) == (5, 3, 2, Decimal("1120.50"), Decimal("1120.50"))
    first_rows = table_snapshot(pipe.con)["engagement_rows"]

    r = pipe.load_reference(
        vintage_file(tmp_path, "acv_communes_2025-01.csv", drop=frozenset({"80001"}), add=("75056",))
    )
    assert placed(pipe, fid) == {
        "A1": "commune_not_acv",
        "A2": "commune_not_acv",
        "P1": "loaded",
        "P2": "amount_not_positive",
        "G1": "loaded",
    }
    assert ledger(pipe, fid) == (5, 2, 3, Decimal("1007.00"), Decimal("1007.00"))
    assert r.moves is not None and [(f.file_id, f.is_current) for f in r.moves.files] == [(fid, True)]
    assert (r.moves.rows_to_quarantine, r.moves.eur_to_quarantine) == (2, Decimal("120.50"))
    assert (r.moves.rows_from_quarantine, r.moves.eur_from_quarantine) == (1, Decimal("7.00"))
    assert pipe.con.execute(
        "SELECT rows_to_quarantine, eur_to_quarantine, rows_from_quarantine, eur_from_quarantine "
        "FROM reference_loads ORDER BY reference_load_id DESC LIMIT 1"
    ).fetchone() == (2, Decimal("120.50"), 1, Decimal("7.00"))
    assert pipe.con.execute(
        "SELECT file_id, rows_to_quarantine, rows_from_quarantine FROM reference_moves"
    ).fetchall() == [(fid, 2, 1)]
    # The failure reads as a load writes it; the row keeps its source row, its raw_record the loaded values.
    assert pipe.con.execute(
        "SELECT source_row, \"column\", value, message, raw_record->>'operation_id', raw_record->>'amount_eur' "
        "FROM quarantine WHERE rule = 'commune_not_acv' ORDER BY source_row"
    ).fetchall() == [
        (2, "Code commune", "80001", "INSEE code '80001' is not a commune of the ACV reference", "A1", "100.00"),
        (3, "Code commune", "80001", "INSEE code '80001' is not a commune of the ACV reference", "A2", "20.50"),
    ]
    assert pipe.con.execute("SELECT sum(amount_eur), sum(lines) FROM financing_totals").fetchone() == (
        Decimal("1007.00"),
        2,
    )
    assert pipe.con.execute("SELECT sum(engaged_eur) FROM v_financing_by_commune").fetchone() == (Decimal("1007.00"),)

    pipe.load_reference(SAMPLE_REFERENCE, force=True)
    assert placed(pipe, fid) == start
    assert ledger(pipe, fid) == (5, 3, 2, Decimal("1120.50"), Decimal("1120.50"))
    assert table_snapshot(pipe.con)["engagement_rows"] == first_rows


def test_every_file_with_rows_is_revalidated_not_only_the_current_ones(pipe: Pipeline, tmp_path: Path) -> None:
    october = pipe.ingest(al_export(tmp_path, "2024-10", [("A1", "80001", "10,00"), ("G1", "47001", "5,00")])).file_id
    november = pipe.ingest(al_export(tmp_path, "2024-11", [("G1", "47001", "5,00")])).file_id
    pipe.accept(november)  # it withdraws A1, half of October's stock: held, then accepted
    r = pipe.load_reference(vintage_file(tmp_path, "acv_communes_2025-01.csv", drop=frozenset({"80001"})))
    assert r.moves is not None
    assert [(f.file_id, f.is_current, f.rows_to_quarantine) for f in r.moves.files] == [(october, False, 1)]
    assert ledger(pipe, october) == (2, 1, 1, Decimal("5.00"), Decimal("5.00"))
    assert ledger(pipe, november) == (1, 1, 0, Decimal("5.00"), Decimal("5.00"))


def test_a_revalidation_that_does_not_reconcile_leaves_everything_as_it_was(pipe: Pipeline, tmp_path: Path) -> None:
    fid = pipe.ingest(al_export(tmp_path, "2024-10", [("A1", "80001", "10,00")])).file_id
    pipe.con.execute("UPDATE files SET rows_read = 2 WHERE file_id = ?", [fid])  # a ledger that lost count
    before = table_snapshot(pipe.con)
    with pytest.raises(ReconciliationError, match="1 loaded|0 loaded"):
        pipe.load_reference(vintage_file(tmp_path, "acv_communes_2025-01.csv", drop=frozenset({"80001"})))
    assert table_snapshot(pipe.con) == before


@needs_shared
def test_newer_vintage_updates_reference_and_keeps_financing(pipe: Pipeline, tmp_path: Path) -> None:
    pipe.ingest(al_export(tmp_path, "2024-10", [("AL1", "47001", "10,00")]))
    doc = json.loads(ANCT_REFERENCE.read_text(encoding="utf-8"))
    newer = tmp_path / "acv_communes_2025-01.geojson"
    for f in doc["features"]:
        if f["properties"]["insee_com"] == 47001:
            f["properties"]["lib_com"] = "Agen (nouveau nom)"
    newer.write_text(json.dumps(doc), encoding="utf-8")
    r = pipe.load_reference(newer)
    assert (r.communes, r.conventions, r.changed) == (244, 230, True)
    assert pipe.con.execute("SELECT count(*) FROM reference_loads").fetchone()[0] == 2
    assert pipe.con.execute("SELECT commune, amount_eur FROM financing").fetchall() == [
        ("Agen (nouveau nom)", Decimal("10.00"))
    ]
    assert pipe.load_reference(newer).changed is False


# -- the command and the inbox ------------------------------------------------------------------


def test_the_command_prints_what_moved_and_refuses_an_older_vintage(settings: Settings, tmp_path: Path) -> None:
    with open_pipeline(sample_warehouse(settings)) as pipe:
        export = al_export(tmp_path, "2024-10", [("A1", "80001", "1 234,50"), ("G1", "47001", "5,00")])
        fid = pipe.ingest(export).file_id
    wh = str(settings.warehouse)
    newer = vintage_file(tmp_path, "liste.csv", drop=frozenset({"80001"}))
    done = run_cli(["reference", "load", str(newer), "--vintage", "2025-01", "-w", wh], tmp_path, ok=False)
    assert done.returncode == 0, done.stderr
    assert "vintage 2025-01-01 (was 2024-04-01)" in done.stdout and "(+0 −1)" in done.stdout
    moved = next(line for line in done.stdout.splitlines() if "AL_ACV_export_2024-10.csv" in line)
    assert str(fid) in moved and "1 234,50 €" in moved.replace("\u202f", " ")
    back = run_cli(["reference", "load", "--sample", "-w", wh], tmp_path, ok=False)
    assert back.returncode == 1
    assert "older than the current reference's (2025-01-01, liste.csv); nothing was changed" in back.stderr
    assert "--force" in back.stderr
    undated = run_cli(["reference", "load", str(newer), "-w", wh], tmp_path, ok=False)
    assert undated.returncode == 1 and "has no date" in undated.stderr
    bad = run_cli(["reference", "load", str(tmp_path / "acv_communes_2026-01.xlsx"), "-w", wh], tmp_path, ok=False)
    assert bad.returncode == 2 and "unknown reference format '.xlsx'" in bad.stderr


def test_the_nightly_inbox_refuses_an_undated_reference_before_any_export(settings: Settings, tmp_path: Path) -> None:
    """The inbox loads a reference first, by the same rules: undated, it stops the run; nothing changed."""
    sample_warehouse(settings)
    settings.inbox.mkdir(parents=True)
    vintage_file(settings.inbox, "acv_communes_liste.csv", drop=frozenset({"80001"}))
    al_export(settings.inbox, "2024-10", [("A1", "80001", "10,00")])
    with pytest.raises(ReferenceRefused, match="acv_communes_liste.csv: the reference has no date"):
        run_inbox(settings)
    assert sorted(p.name for p in settings.inbox.iterdir()) == ["AL_ACV_export_2024-10.csv", "acv_communes_liste.csv"]
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM reference_loads").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM files").fetchone() == (0,)
    finally:
        con.close()


def test_the_reference_refresh_flow_core_applies_the_same_rules(settings: Settings, tmp_path: Path) -> None:
    """What the Prefect flow `reference-refresh` runs (its steps as tasks aside): vintage and force
    passed through, the older vintage refused, and its artifact's table of what moved."""
    from flows.reference_refresh import _markdown

    with open_pipeline(sample_warehouse(settings)) as pipe:
        fid = pipe.ingest(al_export(tmp_path, "2024-10", [("A1", "80001", "10,00")])).file_id
    newer = vintage_file(tmp_path, "liste.csv", drop=frozenset({"80001"}))
    result, published = refresh_reference(settings, newer, vintage="2025-01")
    assert result.vintage == date(2025, 1, 1) and published == settings.published_path
    row = f"| {fid} AL_ACV_export_2024-10.csv | action_logement | yes | 1 | 10,00 € | 0 | 0,00 € |"
    assert row in _markdown(result).replace("\u202f", " ")
    with pytest.raises(ReferenceRefused, match="older than the current reference's"):
        refresh_reference(settings, SAMPLE_REFERENCE)
    back, _ = refresh_reference(settings, SAMPLE_REFERENCE, force=True)
    assert back.forced and back.moves is not None and back.moves.rows_from_quarantine == 1
    assert ReferenceResult.from_dict(back.as_dict()) == back

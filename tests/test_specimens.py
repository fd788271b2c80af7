"""Golden cases: the partners' real-format specimens against expected.json, to the cent."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import ANCT_REFERENCE, SPECIMENS, expected, needs_shared, one_worker, table_snapshot

from cdv_etl.config import Settings
from cdv_etl.pipeline import Pipeline, open_pipeline

pytestmark = [needs_shared, pytest.mark.shared, one_worker(__name__)]

# expected.json's kinds of mistakes (indicative names) → the rules of schemas/canonical.py
KIND_TO_RULE = {
    "commune_not_acv": "commune_not_acv",
    "missing_commune_code": "commune_missing",
    "date_out_of_programme": "date_before_programme",
    "date_in_future": "date_after_extraction",
    "duplicate_key": "duplicate_operation_id",
    "missing_amount": "amount_missing",
    "bad_amount": "amount_unparseable",
    "non_positive_amount": "amount_not_positive",
    "unknown_category": "unknown_category",
    "unknown_status": "unknown_status",
    "year_date_mismatch": "year_date_mismatch",
}


@pytest.fixture(scope="module", params=["file", "lake"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, dict]]:
    """The specimens loaded into a DuckDB file, then into a DuckLake (its catalog in PostgreSQL):
    every golden case below holds on both."""
    tmp = tmp_path_factory.mktemp("specimens")
    settings = Settings(warehouse=tmp / "cdv.duckdb", lock_timeout_s=5)
    if request.param == "lake":  # a copy of the session's migrated lake (conftest.LakeTemplates)
        settings = settings.with_(lake=request.getfixturevalue("lake_templates").clone("migrated", tmp))
    with open_pipeline(settings, need_reference=False) as pipe:
        pipe.load_reference(ANCT_REFERENCE)
        results = {name: pipe.ingest(SPECIMENS / name) for name in expected()}
        yield pipe, results


@pytest.mark.parametrize("name", sorted(expected()) if (SPECIMENS / "expected.json").exists() else [])
def test_counts_and_amounts_match_expected(loaded: tuple[Pipeline, dict], name: str) -> None:
    pipe, results = loaded
    exp, r = expected()[name], results[name]
    assert (r.status, r.partner) == ("loaded", exp["partner"]), r.message
    assert r.rows_read == exp["data_rows"]
    assert r.rows_loaded == exp["loaded_rows"]
    assert r.rows_quarantined == exp["quarantined_rows"]
    assert r.loaded_amount_eur == Decimal(exp["loaded_amount_eur"])
    assert r.engaged_amount_eur == Decimal(exp["engaged_amount_eur"])
    want_rules = {KIND_TO_RULE[k]: v for k, v in exp["quarantine_reasons"].items()}
    assert r.quarantine_by_rule == want_rules


@pytest.mark.parametrize("name", sorted(expected()) if (SPECIMENS / "expected.json").exists() else [])
def test_engaged_by_axis_year_and_instrument(loaded: tuple[Pipeline, dict], name: str) -> None:
    pipe, results = loaded
    exp, fid = expected()[name], results[name].file_id
    rows = pipe.con.execute(
        "SELECT axis || '|' || year, sum(amount_eur) FROM financing "
        "WHERE file_id = ? AND counts_as_engaged GROUP BY ALL",
        [fid],
    ).fetchall()
    assert dict(rows) == {k: Decimal(v) for k, v in exp["by_axis_year"].items()}
    if exp["by_instrument"]:
        rows = pipe.con.execute(
            "SELECT instrument_label, sum(amount_eur) FROM financing "
            "WHERE file_id = ? AND counts_as_engaged GROUP BY ALL",
            [fid],
        ).fetchall()
        assert dict(rows) == {k: Decimal(v) for k, v in exp["by_instrument"].items()}


def test_views_add_up_to_the_files(loaded: tuple[Pipeline, dict]) -> None:
    pipe, _ = loaded
    total = sum(Decimal(e["engaged_amount_eur"]) for e in expected().values())
    by_axis = pipe.con.execute("SELECT sum(engaged_eur), sum(share_pct) FROM v_financing_by_axis").fetchone()
    assert by_axis[0] == total
    assert abs(by_axis[1] - 100) <= Decimal("0.05")
    for view in (
        "v_financing_by_partner",
        "v_financing_by_year",
        "v_financing_axis_partner_year",
        "v_financing_by_convention",
        "v_financing_by_commune",
    ):
        assert pipe.con.execute(f"SELECT sum(engaged_eur) FROM {view}").fetchone()[0] == total, view
    env = dict(
        pipe.con.execute(
            "SELECT partner || ':' || coalesce(envelope, '-'), used_pct FROM v_envelope_consumption"
        ).fetchall()
    )
    assert set(env) == {"bdt:equity", "bdt:loans", "action_logement:total", "anah:total", "etat:-", "epf:-"}
    assert env["etat:-"] is None
    bdt = expected()["bdt/BDT_ACV_engagements_20261115.xlsx"]["by_instrument"]
    equity = Decimal(bdt["Fonds propres"]) + Decimal(bdt["Ingénierie"])
    assert env["bdt:equity"] == round(100 * equity / Decimal(1_000_000_000), 2)


def test_quarantine_names_file_row_rule_column_and_value(loaded: tuple[Pipeline, dict]) -> None:
    pipe, results = loaded
    fid = results["action_logement/AL_ACV_export_2026-10.csv"].file_id
    rows = pipe.con.execute(
        "SELECT source_row, rule, \"column\", value, raw_record->>'Montant engagé' FROM quarantine "
        "WHERE file_id = ? AND rule = 'amount_unparseable' ORDER BY source_row",
        [fid],
    ).fetchall()
    assert len(rows) == 18
    lines = (SPECIMENS / "action_logement/AL_ACV_export_2026-10.csv").read_bytes().decode("cp1252").split("\r\n")
    for source_row, _rule, column, value, raw in rows:
        assert column == "Montant engagé"
        assert value == raw
        assert lines[source_row - 1].split(";")[6] == value  # the CSV line a person sees
    # The BDT workbook: the spreadsheet row (header on row 4, data from row 5).
    fid = results["bdt/BDT_ACV_engagements_20261115.xlsx"].file_id
    dupes = pipe.con.execute(
        "SELECT source_row, value, raw_record->>'N° engagement' FROM quarantine "
        "WHERE file_id = ? AND rule = 'duplicate_operation_id'",
        [fid],
    ).fetchall()
    assert len(dupes) == 12 and len({v for _, v, _ in dupes}) == 6
    from python_calamine import CalamineWorkbook

    sheet = (
        CalamineWorkbook.from_path(str(SPECIMENS / "bdt/BDT_ACV_engagements_20261115.xlsx"))
        .get_sheet_by_name("Engagements")
        .to_python(skip_empty_area=False)
    )
    for row, value, raw in dupes:
        assert value == raw == sheet[row - 1][0]  # spreadsheet row `row` holds that id


def test_second_ingestion_changes_nothing(loaded: tuple[Pipeline, dict]) -> None:
    pipe, _ = loaded
    before = table_snapshot(pipe.con)
    again = [pipe.ingest(SPECIMENS / name) for name in expected()]
    assert {r.status for r in again} == {"duplicate"}
    assert all(r.already_recorded for r in again)
    assert table_snapshot(pipe.con) == before


def test_anah_withdrawn_grants_are_loaded_but_not_engaged(loaded: tuple[Pipeline, dict]) -> None:
    pipe, results = loaded
    fid = results["anah/anah_acv_2026.csv"].file_id
    n, amount = pipe.con.execute(
        "SELECT count(*), sum(amount_eur) FROM financing WHERE file_id = ? AND status = 'annulé'", [fid]
    ).fetchone()
    assert (
        n > 0
        and not pipe.con.execute(
            "SELECT bool_or(counts_as_engaged) FROM financing WHERE file_id = ? AND status = 'annulé'", [fid]
        ).fetchone()[0]
    )
    exp = expected()["anah/anah_acv_2026.csv"]
    assert Decimal(exp["loaded_amount_eur"]) - Decimal(exp["engaged_amount_eur"]) == amount


def test_real_anct_reference(loaded: tuple[Pipeline, dict]) -> None:
    pipe, _ = loaded
    con = pipe.con
    assert con.execute("SELECT count(*) FROM communes").fetchone()[0] == 244
    assert con.execute("SELECT count(*) FROM conventions").fetchone()[0] == 230
    assert con.execute("SELECT count(*) FROM communes WHERE length(insee_code) <> 5").fetchone()[0] == 0
    lens = con.execute("SELECT insee_code, name FROM communes WHERE convention_id = 'ACV113' ORDER BY 1").fetchall()
    assert lens == [("62498", "Lens"), ("62510", "Liévin")]
    quirks = dict(
        con.execute(
            "SELECT insee_code, department FROM communes WHERE insee_code IN ('01004', '2A004', '2B033', '97105')"
        ).fetchall()
    )
    assert quirks == {"01004": "01", "2A004": "2A", "2B033": "2B", "97105": "971"}


def test_specimens_are_not_copied_into_the_repo() -> None:
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    specimen_hashes = {hashlib.sha256((SPECIMENS / n).read_bytes()).hexdigest() for n in expected()}
    for name in filter(None, tracked.decode().split("\0")):
        path = root / name
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() not in specimen_hashes, name

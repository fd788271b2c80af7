"""History: the changes between two exports of a partner, and the figures as known on a day."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import al_export, anah_export, epf_export, fresh_settings, run_cli

from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.pipeline import open_pipeline
from cdv_etl.publish.changes import Export, changes, pick_exports, summary

SEPTEMBER = [
    {"ref": "AL1", "insee": "47001", "amount": "100,00", "day": "01/02/2020"},  # revised in October
    {"ref": "AL2", "insee": "62498", "amount": "200,00", "day": "01/02/2021"},  # withdrawn in October
    {"ref": "AL3", "insee": "62498", "amount": "300,00", "day": "01/02/2021"},  # unchanged
]
OCTOBER = [
    {"ref": "AL1", "insee": "47001", "amount": "1 150,25", "day": "01/02/2020"},
    {"ref": "AL3", "insee": "62498", "amount": "300,00", "day": "01/02/2021"},
    {"ref": "AL4", "insee": "62498", "amount": "50,00", "day": "01/02/2022"},  # new in October
]
CHANGE_SQL = (
    "SELECT change, operation_id, changed_columns, old_amount_eur, new_amount_eur, engaged_delta_eur, "
    "old_commune, new_commune FROM {} ORDER BY operation_id"
)


@pytest.fixture
def two_exports(tmp_path: Path) -> Settings:
    """Action Logement's September and October exports, loaded and published."""
    s = fresh_settings(tmp_path)
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(tmp_path, "2024-09", SEPTEMBER)).status == "loaded"
        october = pipe.ingest(al_export(tmp_path, "2024-10", OCTOBER))
        assert october.status == "held"  # AL2 withdrawn: 1 of 3 operations
        pipe.accept(october.file_id)
    return s


def test_a_revised_a_withdrawn_and_a_new_operation_are_exactly_the_changes(two_exports: Settings) -> None:
    con = duckdb.connect(str(two_exports.published_path), read_only=True)
    expected = [
        ("revised", "AL1", "amount_eur", Decimal("100.00"), Decimal("1150.25"), Decimal("1050.25"), "Agen", "Agen"),
        ("withdrawn", "AL2", None, Decimal("200.00"), None, Decimal("-200.00"), "Lens", None),
        ("added", "AL4", None, None, Decimal("50.00"), Decimal("50.00"), None, "Lens"),
    ]
    assert con.execute(CHANGE_SQL.format("v_changes")).fetchall() == expected
    ids = con.execute("SELECT file_id FROM file_loads ORDER BY extraction_date").fetchall()
    assert con.execute(CHANGE_SQL.format("changes_between(?, ?)"), [ids[0][0], ids[1][0]]).fetchall() == expected
    # The changes account for the whole difference of the engaged totals, to the cent.
    (delta,) = con.execute("SELECT sum(engaged_delta_eur) FROM v_changes").fetchone()
    before, after = (
        r[0] for r in con.execute("SELECT engaged_amount_eur FROM file_loads ORDER BY extraction_date").fetchall()
    )
    assert delta == after - before == Decimal("900.25")
    assert con.execute("SELECT DISTINCT from_file_name, to_file_name, to_is_current FROM v_changes").fetchall() == [
        ("AL_ACV_export_2024-09.csv", "AL_ACV_export_2024-10.csv", True)
    ]


def test_axis_commune_and_status_revisions_say_what_changed(tmp_path: Path) -> None:
    s = fresh_settings(tmp_path)
    with open_pipeline(s) as pipe:
        pipe.ingest(
            epf_export(
                tmp_path,
                "a",
                [
                    ("EPF1", "47001", "habitat", "2023-05-02", "12,5"),
                    ("EPF2", "62498", "habitat", "2023-05-02", "40,0"),
                ],
            ),
            today=date(2024, 9, 30),
        )
        pipe.ingest(
            epf_export(
                tmp_path,
                "b",
                [
                    ("EPF1", "47001", "économie", "2023-05-02", "12,5"),
                    ("EPF2", "47001", "habitat", "2023-05-02", "40,0"),
                ],
            ),
            today=date(2024, 10, 31),
        )
        pipe.ingest(anah_export(tmp_path, 2023, [("AN1", "47001", "5000.00", "2023-03-01", "engagé")]))
        pipe.ingest(anah_export(tmp_path, 2024, [("AN1", "47001", "5000.00", "2023-03-01", "annulé")]))
        rows = pipe.con.execute(
            "SELECT partner, operation_id, change, changed_columns, old_axis, new_axis, old_insee_code, "
            "new_insee_code, old_commune, new_commune, old_status, new_status, engaged_delta_eur "
            "FROM v_changes ORDER BY partner, operation_id"
        ).fetchall()
    assert rows == [
        (
            "anah",
            "AN1",
            "revised",
            "status, counts_as_engaged",
            1,
            1,
            "47001",
            "47001",
            "Agen",
            "Agen",
            "engagé",
            "annulé",
            Decimal("-5000.00"),
        ),
        ("epf", "EPF1", "revised", "axis", 1, 2, "47001", "47001", "Agen", "Agen", "engagé", "engagé", Decimal("0.00")),
        (
            "epf",
            "EPF2",
            "revised",
            "insee_code",
            1,
            1,
            "62498",
            "47001",
            "Lens",
            "Agen",
            "engagé",
            "engagé",
            Decimal("0.00"),
        ),
    ]


def test_pick_exports_defaults_to_the_two_latest_and_accepts_ids_or_names(
    two_exports: Settings, tmp_path: Path
) -> None:
    with open_pipeline(two_exports) as pipe:
        pipe.accept(pipe.ingest(al_export(tmp_path, "2024-11", OCTOBER[1:])).file_id)
    con = duckdb.connect(str(two_exports.published_path), read_only=True)
    frm, to = pick_exports(con, "action_logement")
    assert (frm.file_name, to.file_name) == ("AL_ACV_export_2024-10.csv", "AL_ACV_export_2024-11.csv")
    columns, rows = changes(con, frm, to)
    assert [(r[columns.index("change")], r[columns.index("operation_id")]) for r in rows] == [("withdrawn", "AL1")]
    frm, to = pick_exports(con, "action_logement", from_ref="AL_ACV_export_2024-09.csv", to_ref=str(to.file_id))
    assert frm.file_name == "AL_ACV_export_2024-09.csv"
    assert {r[columns.index("operation_id")] for r in changes(con, frm, to)[1]} == {"AL1", "AL2", "AL4"}
    frm, to = pick_exports(con, "action_logement", to_ref="AL_ACV_export_2024-10.csv")
    assert frm.file_name == "AL_ACV_export_2024-09.csv"
    with pytest.raises(CdvError, match="not a loaded export"):
        pick_exports(con, "action_logement", from_ref="999")
    with pytest.raises(CdvError, match="nothing to compare"):
        pick_exports(con, "anah")


def test_changes_command(two_exports: Settings, tmp_path: Path) -> None:
    wh = str(two_exports.warehouse)
    table = run_cli(["changes", "--partner", "action_logement", "-w", wh], tmp_path).stdout
    assert "1 added, 1 withdrawn, 1 revised" in table
    assert all(op in table for op in ("AL1", "AL2", "AL4")) and "AL3" not in table
    out = run_cli(
        [
            "changes",
            "--partner",
            "action_logement",
            "--from",
            "AL_ACV_export_2024-09.csv",
            "--to",
            "AL_ACV_export_2024-10.csv",
            "-w",
            wh,
            "--format",
            "json",
        ],
        tmp_path,
    ).stdout
    records = json.loads(out)
    assert {(r["change"], r["operation_id"], r["old_amount_eur"], r["new_amount_eur"]) for r in records} == {
        ("revised", "AL1", "100.00", "1150.25"),
        ("withdrawn", "AL2", "200.00", None),
        ("added", "AL4", None, "50.00"),
    }
    every = list(csv.DictReader(io.StringIO(run_cli(["changes", "-w", wh, "-f", "csv"], tmp_path).stdout)))
    assert sorted(r["operation_id"] for r in every) == ["AL1", "AL2", "AL4"]
    bad = run_cli(["changes", "--partner", "action_logement", "--from", "nope.csv", "-w", wh], tmp_path, ok=False)
    assert bad.returncode == 2 and "not a loaded export" in bad.stderr and "→" in bad.stderr


def test_financing_as_of_is_what_was_known_that_day(two_exports: Settings) -> None:
    # The two exports were loaded today; give them the load times of a monthly routine.
    with open_pipeline(two_exports) as pipe:
        pipe.con.execute(
            "UPDATE files SET loaded_at = TIMESTAMP '2024-10-02 09:00' WHERE file_name = 'AL_ACV_export_2024-09.csv'"
        )
        pipe.con.execute(
            "UPDATE files SET loaded_at = TIMESTAMP '2024-11-03 09:00' WHERE file_name = 'AL_ACV_export_2024-10.csv'"
        )
        pipe.publish()
    con = duckdb.connect(str(two_exports.published_path), read_only=True)

    def known(day: str, hindsight: bool = False) -> list[tuple[str, Decimal]]:
        return con.execute(
            "SELECT operation_id, amount_eur FROM financing_as_of(?, hindsight := ?) ORDER BY operation_id",
            [day, hindsight],
        ).fetchall()

    september = [("AL1", Decimal("100.00")), ("AL2", Decimal("200.00")), ("AL3", Decimal("300.00"))]
    october = [("AL1", Decimal("1150.25")), ("AL3", Decimal("300.00")), ("AL4", Decimal("50.00"))]
    assert known("2024-10-01") == []  # nothing loaded yet
    assert known("2024-10-02") == september  # loaded that morning
    assert known("2024-11-02") == september  # October's export not loaded yet
    assert known("2024-11-02", hindsight=True) == october  # ... but extracted by then
    assert known("2024-11-03") == october
    assert known("2024-10-15", hindsight=True) == september
    # Today, what was known is the current state.
    assert (
        con.execute(
            "SELECT * EXCLUDE (file_name, extraction_date) FROM financing_as_of(current_date) ORDER BY operation_id"
        ).fetchall()
        == con.execute("SELECT * FROM financing ORDER BY operation_id").fetchall()
    )
    cube = con.execute(
        "SELECT year, engaged_eur, operations FROM engaged_as_of(DATE '2024-11-02') ORDER BY year"
    ).fetchall()
    assert cube == [(2020, Decimal("100.00"), 1), (2021, Decimal("500.00"), 2)]


def test_as_of_from_the_command_line(two_exports: Settings, tmp_path: Path) -> None:
    out = run_cli(
        [
            "sql",
            "-w",
            str(two_exports.warehouse),
            "--format",
            "csv",
            "SELECT partner, sum(engaged_eur) AS engaged_eur FROM engaged_as_of(current_date) GROUP BY ALL",
        ],
        tmp_path,
    ).stdout
    assert list(csv.DictReader(io.StringIO(out))) == [{"partner": "action_logement", "engaged_eur": "1500.25"}]


# Two exports where operations move into and out of quarantine (99999 is no ACV commune).
BEFORE = [
    {"ref": "Q1", "insee": "99999", "amount": "200,00", "day": "01/02/2021"},  # quarantined, then valid
    {"ref": "Q2", "insee": "47001", "amount": "400,00", "day": "01/02/2021"},  # valid, then quarantined
    {"ref": "Q3", "insee": "47001", "amount": "abc", "day": "01/02/2021"},  # quarantined in both: no change
    {"ref": "Q4", "insee": "47001", "amount": "70,00", "day": "01/02/2021"},  # withdrawn
    {"ref": "Q5", "insee": "99999", "amount": "30,00", "day": "01/02/2021"},  # gone, never loaded: no change
    {"ref": "Q8", "insee": "62498", "amount": "300,00", "day": "01/02/2021"},  # unchanged
    {"ref": "Q9", "insee": "62498", "amount": "100,00", "day": "01/02/2021"},  # revised
    {"ref": "Q10", "insee": "47001", "amount": "90,00", "day": "01/02/2021"},  # its amount becomes unreadable
    {"ref": "Q11", "insee": "47001", "amount": "20,00", "day": "01/02/2021"},  # its id becomes repeated
]
AFTER = [
    {"ref": "Q1", "insee": "62498", "amount": "200,00", "day": "01/02/2021"},
    {"ref": "Q2", "insee": "99999", "amount": "450,00", "day": "01/02/2021"},
    {"ref": "Q3", "insee": "47001", "amount": "abc", "day": "01/02/2021"},
    {"ref": "Q6", "insee": "99999", "amount": "80,00", "day": "01/02/2021"},  # new, never loaded: no change
    {"ref": "Q7", "insee": "47001", "amount": "10,00", "day": "01/02/2021"},  # added
    {"ref": "Q8", "insee": "62498", "amount": "300,00", "day": "01/02/2021"},
    {"ref": "Q9", "insee": "62498", "amount": "150,00", "day": "01/02/2021"},
    {"ref": "Q10", "insee": "47001", "amount": "n/a", "day": "01/02/2021"},
    {"ref": "Q11", "insee": "47001", "amount": "20,00", "day": "01/02/2021"},
    {"ref": "Q11", "insee": "47001", "amount": "5,00", "day": "01/02/2021"},
]
MOVES_SQL = (
    "SELECT change, operation_id, old_amount_eur, new_amount_eur, amount_delta_eur, "
    "engaged_delta_eur, quarantine_rules FROM v_changes ORDER BY change, operation_id"
)


def _exports(s: Settings) -> tuple[duckdb.DuckDBPyConnection, Export, Export]:
    con = duckdb.connect(str(s.published_path), read_only=True)
    return (con, *pick_exports(con, "action_logement"))


def D(text: str) -> Decimal:
    return Decimal(text)


@pytest.fixture
def quarantine_moves(tmp_path: Path) -> Settings:
    s = fresh_settings(tmp_path)
    with open_pipeline(s) as pipe:
        assert pipe.ingest(al_export(tmp_path, "2024-09", BEFORE)).rows_quarantined == 3
        after = pipe.ingest(al_export(tmp_path, "2024-10", AFTER))
        # It withdraws Q2, Q4, Q10 and Q11 of the 6 loaded operations: held, then accepted.
        assert (after.status, after.rows_quarantined) == ("held", 6), after.message
        pipe.accept(after.file_id)
    return s


def test_moves_into_and_out_of_quarantine_are_not_additions_or_withdrawals(quarantine_moves: Settings) -> None:
    con = duckdb.connect(str(quarantine_moves.published_path), read_only=True)
    assert con.execute(MOVES_SQL).fetchall() == [
        ("added", "Q7", None, D("10.00"), None, D("10.00"), None),
        ("newly_quarantined", "Q10", D("90.00"), None, None, D("-90.00"), "amount_unparseable"),
        # the two rows of the repeated id: their amounts summed
        ("newly_quarantined", "Q11", D("20.00"), D("25.00"), D("5.00"), D("-20.00"), "duplicate_operation_id"),
        ("newly_quarantined", "Q2", D("400.00"), D("450.00"), D("50.00"), D("-400.00"), "commune_not_acv"),
        ("newly_valid", "Q1", D("200.00"), D("200.00"), D("0.00"), D("200.00"), "commune_not_acv"),
        ("revised", "Q9", D("100.00"), D("150.00"), D("50.00"), D("50.00"), None),
        ("withdrawn", "Q4", D("70.00"), None, None, D("-70.00"), None),
    ]  # Q3 (quarantined in both), Q5 and Q6 (quarantined, then gone or new) were never in the figures
    # The changes still account for the whole difference of the engaged totals, to the cent.
    (delta,) = con.execute("SELECT sum(engaged_delta_eur) FROM v_changes").fetchone()
    before, after = (
        r[0] for r in con.execute("SELECT engaged_amount_eur FROM file_loads ORDER BY extraction_date").fetchall()
    )
    assert (before, after) == (D("980.00"), D("660.00")) and delta == after - before
    # The quarantined side of a move is where the quarantine view has it.
    rows = con.execute(
        "SELECT c.operation_id, c.new_source_row, q.source_row, q.rule FROM v_changes AS c "
        "JOIN quarantine AS q ON q.file_id = c.to_file_id AND q.source_row = c.new_source_row "
        "WHERE c.change = 'newly_quarantined' ORDER BY c.operation_id"
    ).fetchall()
    assert [(r[0], r[3]) for r in rows] == [
        ("Q10", "amount_unparseable"),
        ("Q11", "duplicate_operation_id"),
        ("Q2", "commune_not_acv"),
    ]


def test_the_changes_command_sums_each_kind_in_euros(quarantine_moves: Settings, tmp_path: Path) -> None:
    wh = str(quarantine_moves.warehouse)
    out = run_cli(["changes", "--partner", "action_logement", "-w", wh], tmp_path).stdout
    assert "1 added, 1 withdrawn, 1 revised, 1 newly_valid, 3 newly_quarantined; engaged -320.00 €" in out
    per_kind = {t.kind: t.row()[1:] for t in summary(*changes(*_exports(quarantine_moves)))}
    assert per_kind == {
        "added": (1, D("0.00"), D("10.00"), D("10.00")),
        "withdrawn": (1, D("70.00"), D("0.00"), D("-70.00")),
        "revised": (1, D("100.00"), D("150.00"), D("50.00")),
        "newly_valid": (1, D("200.00"), D("200.00"), D("200.00")),
        "newly_quarantined": (3, D("510.00"), D("475.00"), D("-510.00")),  # Q10's new amount unreadable
    }
    assert "475,00 €" in out and "-510,00 €" in out
    assert all(op not in out for op in ("Q3", "Q5", "Q6", "Q8"))
    records = list(
        csv.DictReader(
            io.StringIO(run_cli(["changes", "-p", "action_logement", "-w", wh, "-f", "csv"], tmp_path).stdout)
        )
    )
    by_id = {r["operation_id"]: r for r in records}
    assert len(records) == 7 and by_id["Q1"]["change"] == "newly_valid"
    assert (by_id["Q2"]["old_amount_eur"], by_id["Q2"]["new_amount_eur"], by_id["Q2"]["engaged_delta_eur"]) == (
        "400.00",
        "450.00",
        "-400.00",
    )

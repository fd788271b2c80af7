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
from cdv_etl.publish.changes import changes, pick_exports

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

"""A stock export that shrinks is held, and dates are never moved: on real warehouses, through
the pipeline and the command line (``cdv-etl ingest``, ``files``, ``accept``)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from analyst_helpers import al_export, fresh_settings, run_cli
from conftest import ROOT
from test_new_partner import CSV_SPEC, partner_pipeline, write_csv

from cdv_etl.config import Settings
from cdv_etl.load.loader import LoadResult
from cdv_etl.pipeline import open_pipeline
from cdv_etl.specs import HOLD_THRESHOLD_PCT

FIGURES = (
    "v_financing_by_axis",
    "v_financing_by_partner",
    "v_financing_by_year",
    "v_financing_axis_partner_year",
    "v_financing_by_commune",
    "v_financing_by_convention",
    "v_envelope_consumption",
    "current_files",
)
"""What analysts read of the current exports: a held or rejected file changes none of it."""


def stock(n: int, amount: str = "100,00", insee: str = "47001", first: int = 1) -> list[dict[str, str]]:
    """``n`` Action Logement operations AL<first>… of ``amount`` each."""
    return [{"ref": f"AL{i}", "insee": insee, "amount": amount, "day": "01/02/2021"} for i in range(first, first + n)]


def export(folder: Path, month: str, rows: list[dict[str, str]]) -> Path:
    """An Action Logement export of ``month`` in a folder of its own (same name, other bytes)."""
    where = folder / f"x{month}-{len(rows)}-{len(list(folder.glob('x*')))}"
    where.mkdir()
    return al_export(where, month, rows)


def figures(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(settings.published_path), read_only=True)
    try:
        return {v: con.execute(f"SELECT * FROM {v} ORDER BY ALL").fetchall() for v in FIGURES}
    finally:
        con.close()


def ledger(settings: Settings) -> list[dict[str, Any]]:
    """Every column of ``file_loads`` in the published copy, by file."""
    con = duckdb.connect(str(settings.published_path), read_only=True)
    try:
        cur = con.execute("SELECT * FROM file_loads ORDER BY file_id")
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


@pytest.fixture
def september(tmp_path: Path) -> Settings:
    """Action Logement's September stock, current: 20 operations of 100 € (2 000 €)."""
    s = fresh_settings(tmp_path)
    s.inbox.mkdir(parents=True, exist_ok=True)
    with open_pipeline(s) as pipe:
        first = pipe.ingest(export(tmp_path, "2024-09", stock(20)))
    assert (first.status, first.became_current, first.compared_file_id) == ("loaded", True, None), first.message
    return s


def ingest(settings: Settings, path: Path, ok: bool = True) -> tuple[int, str, str]:
    """``cdv-etl ingest``: exit code, then standard output and error as one line each (the
    console wraps long messages)."""
    proc = run_cli(["ingest", "-w", str(settings.warehouse), str(path)], settings.inbox, ok=ok)
    return proc.returncode, one_line(proc.stdout), one_line(proc.stderr)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_an_export_that_withdraws_too_many_operations_is_held_and_changes_no_figure(
    september: Settings, tmp_path: Path
) -> None:
    before = figures(september)
    # 17 of the 20 operations stay: 2 are gone from the file, 1 is in it but quarantined (a
    # commune outside the programme); 3 new big ones keep the euros up (3 of 20 = 15 % > 10 %).
    rows = stock(17) + stock(1, insee="75056", first=18) + stock(3, amount="500,00", first=30)
    code, out, err = ingest(september, export(tmp_path, "2024-10", rows), ok=False)
    assert code == 1 and "held" in out
    assert "3 of the 20 operations (15.0 %: 2 absent from this file, 1 in it but quarantined)" in err
    assert one_line("300,00 € of the 2\u202f000,00 € engaged (15.0 %)") in err
    assert "file 1 (AL_ACV_export_2024-09.csv, extracted 2024-09-30)" in err
    assert f"cdv-etl accept 2 -w {september.warehouse}" in err
    assert figures(september) == before
    held = ledger(september)[1]
    assert (held["status"], held["reason"], held["is_current"], held["rows_loaded"], held["rows_quarantined"]) == (
        "held",
        "stock_shrank",
        False,
        20,
        1,
    )
    con = duckdb.connect(str(september.published_path), read_only=True)
    row = con.execute(
        "SELECT compared_file_id, withdrawn_operations, withdrawn_absent, withdrawn_quarantined, withdrawn_eur "
        "FROM file_loads WHERE file_id = 2"
    ).fetchone()
    # Written whole and reconciled, as a load: its rows are in history, not in the figures.
    history = con.execute("SELECT count(*), bool_or(is_current) FROM financing_history WHERE file_id = 2").fetchone()
    con.close()
    assert row == (1, 3, 2, 1, Decimal("300.00"))
    assert history == (20, False)
    # Ingested again, it is still held, and says so.
    code, _, err = ingest(september, Path(held_path(tmp_path, "2024-10")), ok=False)
    assert code == 1 and "already held as file 2" in err and "cdv-etl accept 2" in err


def test_the_bytes_of_a_held_export_under_another_name_are_a_duplicate_of_it(
    september: Settings, tmp_path: Path
) -> None:
    held_file = export(tmp_path, "2024-10", stock(5))
    with open_pipeline(september) as pipe:
        held = pipe.ingest(held_file)
        copy = tmp_path / "copy" / "AL_ACV_export_2024-10_bis.csv"
        copy.parent.mkdir()
        copy.write_bytes(held_file.read_bytes())
        again = pipe.ingest(copy)
    assert held.status == "held", held.message
    assert (again.status, again.rows_loaded) == ("duplicate", 0), again.message
    con = duckdb.connect(str(september.published_path), read_only=True)
    try:
        rows = con.execute("SELECT status, duplicate_of FROM file_loads WHERE file_id = ?", [again.file_id]).fetchone()
        stored = con.execute("SELECT count(*) FROM financing_history WHERE file_name LIKE '%_bis.csv'").fetchone()
    finally:
        con.close()
    assert rows == ("duplicate", held.file_id)
    assert stored == (0,)


def held_path(folder: Path, month: str) -> Path:
    return next(folder.glob(f"x{month}-*/AL_ACV_export_{month}.csv"))


def test_an_export_that_withdraws_too_many_euros_is_held(september: Settings, tmp_path: Path) -> None:
    # 1 operation of 20 withdrawn (5 %), but it was 1 100 € of 3 000 € (36.7 %).
    with open_pipeline(september) as pipe:
        big = pipe.ingest(export(tmp_path, "2024-10", stock(19) + stock(1, amount="1 100,00", first=20)))
        assert big.status == "loaded", big.message
        r = pipe.ingest(export(tmp_path, "2024-11", stock(19) + stock(1, first=21)))
    assert (r.status, r.became_current, r.withdrawn_operations, r.withdrawn_eur) == (
        "held",
        False,
        1,
        Decimal("1100.00"),
    )
    assert "1 of the 20 operations (5.0 %" in r.message and "(36.7 %)" in r.message


def test_an_export_under_the_threshold_becomes_current(september: Settings, tmp_path: Path) -> None:
    assert HOLD_THRESHOLD_PCT == 10
    code, out, _ = ingest(september, export(tmp_path, "2024-10", stock(18) + stock(5, first=40)))
    assert code == 0 and "loaded" in out  # 2 of 20 withdrawn: 10 %, not more
    current = ledger(september)[1]
    assert (current["status"], current["is_current"], current["withdrawn_operations"]) == ("loaded", True, 2)
    assert figures(september)["v_financing_by_partner"][0][2:4] == (Decimal("2300.00"), 23)


def test_a_partner_spec_sets_its_own_threshold(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for f in (ROOT / "schemas" / "partners").glob("*.yaml"):
        text = f.read_text(encoding="utf-8")
        if f.stem == "action_logement":
            text += "hold_threshold_pct: 50\n"
        (specs / f.name).write_text(text, encoding="utf-8")
    s = fresh_settings(tmp_path)
    s = Settings(warehouse=s.warehouse, specs_dir=specs, lock_timeout_s=5)
    with open_pipeline(s) as pipe:
        assert pipe.specs["action_logement"].hold_threshold_pct == Decimal(50)
        assert pipe.ingest(export(tmp_path, "2024-09", stock(10))).status == "loaded"
        half = pipe.ingest(export(tmp_path, "2024-10", stock(5)))  # 50 %: not more than 50 %
        assert (half.status, half.became_current) == ("loaded", True), half.message
        more = pipe.ingest(export(tmp_path, "2024-11", stock(2)))  # 60 % of 5
        assert more.status == "held" and "over the partner's 50 % threshold" in more.message


def test_accept_makes_a_held_export_current_and_prints_what_changed(september: Settings, tmp_path: Path) -> None:
    code, _, _ = ingest(september, export(tmp_path, "2024-10", stock(10, amount="150,00")), ok=False)
    assert code == 1
    before = figures(september)
    out = run_cli(["accept", "2", "-w", str(september.warehouse)], september.inbox).stdout
    assert "file 2 (AL_ACV_export_2024-10.csv) is now the current export of action_logement" in out
    table = [line for line in out.splitlines() if line.startswith("│")]
    assert [cells(line) for line in table] == [
        ["before", "1", "AL_ACV_export_2024-09.csv", "2024-09-30", "20", "2\u202f000,00 €"],
        ["after", "2", "AL_ACV_export_2024-10.csv", "2024-10-31", "10", "1\u202f500,00 €"],
        ["change", "", "", "", "-10", "-500,00 €"],
    ]
    after = figures(september)  # the published copy: accept publishes, like every write
    assert after != before
    assert after["v_financing_by_partner"][0][:5] == (
        "action_logement",
        "Action Logement",
        Decimal("1500.00"),
        10,
        2,
    )
    accepted = ledger(september)[1]
    assert (accepted["status"], accepted["is_current"], accepted["reason"]) == ("loaded", True, "stock_shrank")
    assert accepted["accepted_at"] and "accepted after being held" in accepted["message"]


def test_accept_refuses_an_unknown_or_not_held_file_and_changes_nothing(september: Settings) -> None:
    before = figures(september)
    unknown = run_cli(["accept", "99", "-w", str(september.warehouse)], september.inbox, ok=False)
    assert unknown.returncode == 2 and "no file 99 in the ledger" in unknown.stderr
    assert "cdv-etl files" in unknown.stderr
    loaded = run_cli(["accept", "1", "-w", str(september.warehouse)], september.inbox, ok=False)
    assert loaded.returncode == 2
    assert "file 1 (AL_ACV_export_2024-09.csv) is loaded, not held" in loaded.stderr
    assert "only a held export can be accepted" in loaded.stderr
    assert figures(september) == before and ledger(september)[0]["accepted_at"] is None


def test_a_held_export_accepted_when_a_later_one_is_current_goes_into_history(
    september: Settings, tmp_path: Path
) -> None:
    with open_pipeline(september) as pipe:
        assert pipe.ingest(export(tmp_path, "2024-10", stock(5))).status == "held"
        assert pipe.ingest(export(tmp_path, "2024-11", stock(20) + stock(1, first=50))).status == "loaded"
        r = pipe.accept(2)
    assert (r.became_current, r.after.file_id, r.after.operations) == (False, 3, 21)
    assert r.before == r.after
    assert [(f["file_id"], f["status"], f["is_current"]) for f in ledger(september)] == [
        (1, "loaded", False),
        (2, "loaded", False),
        (3, "loaded", True),
    ]


def test_files_shows_held_exports_and_why(september: Settings, tmp_path: Path) -> None:
    ingest(september, export(tmp_path, "2024-10", stock(3)), ok=False)
    out = run_cli(["files", "-w", str(september.warehouse), "--format", "csv"], september.inbox).stdout
    header, *rows = out.splitlines()
    assert header.split(",")[:5] == ["file_id", "partner", "file_name", "status", "reason"]
    assert rows[1].startswith("2,action_logement,AL_ACV_export_2024-10.csv,held,stock_shrank,")
    assert "it would withdraw 17 of the 20 operations" in rows[1] and "cdv-etl accept 2" in rows[1]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("│").split("│")]


# -- dates -----------------------------------------------------------------------------------------
def test_an_export_named_for_a_month_to_come_is_rejected_whole(september: Settings, tmp_path: Path) -> None:
    before = figures(september)
    path = export(tmp_path, "2027-01", stock(4))
    with open_pipeline(september) as pipe:
        r = pipe.ingest(path, today=date(2026, 12, 1))
    assert (r.status, r.reason) == ("rejected", "extraction_date_in_future")
    assert "the extraction date '2027-01' in the file name, which begins on 2027-01-01, is after today" in r.message
    assert "(2026-12-01)" in r.message and "ask the partner" in r.message
    assert figures(september) == before
    # The command line: exit 1, the date found and today's.
    code, _, err = ingest(september, export(tmp_path, "2099-01", stock(4)), ok=False)
    assert code == 1 and "'2099-01'" in err and f"({date.today().isoformat()})" in err


@pytest.mark.parametrize(
    ("today", "status", "extracted"),
    [
        (date(2024, 11, 30), "rejected", None),  # December not begun: in the future
        (date(2024, 12, 1), "loaded", date(2024, 12, 1)),  # the month under way: extracted today at the latest
        (date(2025, 1, 15), "loaded", date(2024, 12, 31)),  # a month gone: its last day
    ],
)
def test_a_month_stands_for_its_last_day_and_never_for_a_day_to_come(
    tmp_path: Path, today: date, status: str, extracted: date | None
) -> None:
    s = fresh_settings(tmp_path)
    with open_pipeline(s) as pipe:
        r = pipe.ingest(export(tmp_path, "2024-12", stock(2)), today=today)
    assert (r.status, r.extraction_date) == (status, extracted), r.message


def test_an_export_dated_by_a_column_after_today_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dep_test_aides.csv"
    write_csv(path, ["02/12/2026", "02/12/2026"])
    with partner_pipeline(tmp_path, "departement_test", CSV_SPEC) as pipe:
        r = pipe.ingest(path, today=date(2026, 12, 1))
        assert (r.status, r.reason) == ("rejected", "extraction_date_in_future")
        assert "'02/12/2026' in column \"Date d'extraction\" (row 2) is after today (2026-12-01)" in r.message
        again = pipe.ingest(path, today=date(2026, 12, 2), force=True)
        assert (again.status, again.extraction_date) == ("loaded", date(2026, 12, 2)), again.message
        assert pipe.con.execute("SELECT count(*) FROM financing").fetchone() == (2,)


def test_an_export_older_than_the_current_one_goes_into_history_and_says_so(
    september: Settings, tmp_path: Path
) -> None:
    before = figures(september)
    code, out, _ = ingest(september, export(tmp_path, "2024-08", stock(2)))
    assert code == 0
    assert (
        "loaded into history only, not current: this export is dated 2024-08-31, before the partner's current "
        "export, file 1 (AL_ACV_export_2024-09.csv, extracted 2024-09-30)"
    ) in out
    assert figures(september) == before
    older = ledger(september)[1]
    assert (older["status"], older["is_current"], older["compared_file_id"]) == ("loaded", False, None)


def test_a_first_export_is_never_held(tmp_path: Path) -> None:
    s = fresh_settings(tmp_path)
    with open_pipeline(s) as pipe:
        r: LoadResult = pipe.ingest(export(tmp_path, "2024-09", stock(1)))
    assert (r.status, r.became_current, r.withdrawn_operations) == ("loaded", True, None)


def test_migration_007_keeps_every_file_its_columns_and_the_id_sequence(tmp_path: Path) -> None:
    from cdv_etl.load.warehouse import applied_versions, migrate, migrations

    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    applied_versions(con)
    for m in migrations():
        if m.version < 7:  # a warehouse as it was before held exports
            con.execute(m.sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                [m.version, m.name, m.checksum],
            )
    con.execute(
        "INSERT INTO files (partner, file_name, sha256, size_bytes, extraction_date, status, rows_read, "
        "engaged_amount_eur, stat_inode) VALUES ('anah', 'a.csv', 's1', 10, DATE '2024-12-31', 'loaded', 3, 12.34, 7), "
        "('anah', 'b.csv', 's2', 20, NULL, 'rejected', 0, NULL, NULL)"
    )
    columns_before = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'files'"
    ).fetchall()
    rows_before = con.execute("SELECT * FROM files ORDER BY file_id").fetchall()
    assert "007_held_exports" in migrate(con)
    columns_after = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'files'"
    ).fetchall()
    assert columns_after[: len(columns_before)] == columns_before
    assert [c for c, _ in columns_after[len(columns_before) :]] == [
        "compared_file_id",
        "withdrawn_operations",
        "withdrawn_absent",
        "withdrawn_quarantined",
        "withdrawn_eur",
        "accepted_at",
    ]
    assert [
        r[: len(columns_before)] for r in con.execute("SELECT * FROM files ORDER BY file_id").fetchall()
    ] == rows_before
    assert con.execute("SELECT next_file_id FROM id_counters").fetchone() == (3,)  # ids go on (migration 009)
    con.execute(
        "INSERT INTO files (file_id, partner, file_name, sha256, size_bytes, status) "
        "VALUES (3, 'anah', 'c.csv', 's3', 1, 'held')"
    )
    with pytest.raises(duckdb.ConstraintException):
        con.execute(
            "INSERT INTO files (file_id, partner, file_name, sha256, size_bytes, status) "
            "VALUES (4, 'x', 'd', 's4', 1, 'odd')"
        )
    con.close()

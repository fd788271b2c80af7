"""The canonical models: each programme rule, on its own, quarantines what it should; and every
place that lists the rules (quarantine, report, README) derives from the models."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from cdv_etl.publish.report import rule_label
from cdv_etl.validate.rules import find_failures
from schemas.canonical import RULES, CanonicalRecord, RuleContext, record_failures, rules_markdown

README = Path(__file__).resolve().parent.parent / "README.md"

CTX = RuleContext(
    communes=frozenset({"47001", "62498"}),
    extraction_date=date(2024, 6, 30),
    statuses=frozenset({"engagé", "annulé"}),
    has_date=True,
    has_year=True,
    names_instrument=True,
)
GOOD = {
    "row_key": 1,
    "insee_raw": "47001",
    "insee_code": "47001",
    "category": "Logement",
    "axis": 1,
    "amount_raw": "10",
    "amount_eur": Decimal("10.00"),
    "date_raw": "2020-01-01",
    "engagement_date": date(2020, 1, 1),
    "year_raw": "2020",
    "year_given": 2020,
    "status": "engagé",
    "instrument_label": "Prêt",
    "instrument": "loan",
    "operation_id": "A",
}
SCHEMA = {name: column.dtype.type for name, column in CanonicalRecord.to_schema().columns.items()}


def frame(*rows: dict) -> pl.DataFrame:
    """Good rows (each its own id) with the changes given, row_key 0, 1, 2…"""
    return pl.DataFrame(
        [{**GOOD, "row_key": i, "operation_id": f"OP{i}", **r} for i, r in enumerate(rows)], schema=SCHEMA
    )


def failures(ctx: RuleContext = CTX, **changes: object) -> set[str]:
    return set(record_failures(frame(changes), ctx)["rule"])


def test_a_good_row_passes() -> None:
    assert failures() == set()


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"insee_code": None}, "commune_missing"),
        ({"insee_code": "75056"}, "commune_not_acv"),
        ({"axis": None}, "unknown_category"),
        ({"axis": 7}, "unknown_category"),
        ({"axis": 0}, "unknown_category"),
        ({"amount_raw": None, "amount_eur": None}, "amount_missing"),
        ({"amount_raw": "#VALEUR!", "amount_eur": None}, "amount_unparseable"),
        ({"amount_eur": Decimal("0.00")}, "amount_not_positive"),
        ({"amount_eur": Decimal("-0.05")}, "amount_not_positive"),
        ({"amount_eur": Decimal("1000000000.01")}, "amount_implausible"),
        ({"engagement_date": date(2017, 12, 31), "year_given": 2017}, "date_before_programme"),
        ({"engagement_date": date(2024, 7, 1), "year_given": 2024}, "date_after_extraction"),
        ({"engagement_date": None, "date_raw": "32/13/2020"}, "date_unparseable"),
        ({"engagement_date": None, "date_raw": None}, "date_missing"),
        ({"year_given": None, "year_raw": "n.c."}, "year_missing"),
        ({"year_given": 2021}, "year_date_mismatch"),
        ({"status": "en attente"}, "unknown_status"),
        ({"status": None}, "unknown_status"),
        ({"instrument": None}, "unknown_instrument"),
        ({"operation_id": None}, "operation_id_missing"),
    ],
)
def test_each_rule(changes: dict, rule: str) -> None:
    assert rule in RULES
    assert failures(**changes) == {rule}


@pytest.mark.parametrize(
    ("day", "rules"),
    [
        (date(2024, 6, 30), set()),  # the extraction date itself: loads
        (date(2018, 1, 1), set()),  # the programme's first day: loads
        (date(2017, 12, 31), {"date_before_programme"}),
        (date(2024, 7, 1), {"date_after_extraction"}),
    ],
)
def test_the_programme_window_includes_both_ends(day: date, rules: set[str]) -> None:
    assert failures(engagement_date=day, date_raw=day.isoformat(), year_given=day.year) == rules


def test_the_largest_plausible_amount_loads() -> None:
    assert failures(amount_eur=Decimal("1000000000.00")) == set()
    assert failures(amount_eur=Decimal("0.01")) == set()


def test_year_only_partner_checks_the_programme_years() -> None:
    ctx = RuleContext(
        communes=CTX.communes,
        extraction_date=date(2024, 6, 30),
        statuses=CTX.statuses,
        has_date=False,
        has_year=True,
        names_instrument=False,
    )
    no_date = {"engagement_date": None, "date_raw": None}
    assert failures(ctx, **no_date, year_given=2019) == set()
    assert failures(ctx, **no_date, year_given=2018) == set()
    assert failures(ctx, **no_date, year_given=2024) == set()
    assert failures(ctx, **no_date, year_given=2017) == {"year_out_of_programme"}
    assert failures(ctx, **no_date, year_given=2025) == {"year_out_of_programme"}
    assert failures(ctx, **no_date, year_given=None) == {"year_missing"}


def test_rules_about_a_field_the_partner_lacks_pass() -> None:
    ctx = RuleContext(CTX.communes, CTX.extraction_date, CTX.statuses, False, False, False)
    lacking = {"date_raw": None, "engagement_date": None, "year_raw": None, "year_given": None}
    assert failures(ctx, **lacking, instrument_label=None, instrument="loan") == set()


def test_every_failure_of_a_row_is_collected() -> None:
    got = failures(insee_code="99999", axis=9, amount_eur=Decimal("-1"), status="?")
    assert got == {"commune_not_acv", "unknown_category", "amount_not_positive", "unknown_status"}


def _canonical(tmp_path: Path, rows: pl.DataFrame) -> Path:
    path = tmp_path / "canonical.parquet"
    rows.write_parquet(path, row_group_size=2)
    return path


def test_a_repeated_id_quarantines_every_row_carrying_it_across_batches(tmp_path: Path) -> None:
    ids = ["A", "B", "C", "A", "D", None, "E", None, "F", "A"]
    con = _canonical(tmp_path, frame(*({"operation_id": i} for i in ids)))
    got = pl.from_arrow(find_failures(con, CTX, chunk_rows=3))
    assert isinstance(got, pl.DataFrame)
    pairs = set(got.iter_rows())
    # Rows 0, 3 and 9 share "A" in three different batches; the two rows without an id count
    # as carrying one same id, as they always have (NULL is one value to a GROUP BY).
    assert pairs == {
        (0, "duplicate_operation_id"),
        (3, "duplicate_operation_id"),
        (9, "duplicate_operation_id"),
        (5, "operation_id_missing"),
        (5, "duplicate_operation_id"),
        (7, "operation_id_missing"),
        (7, "duplicate_operation_id"),
    }


def test_find_failures_reports_row_keys_not_positions(tmp_path: Path) -> None:
    rows = frame({"insee_code": "75056"}, {}, {"amount_eur": Decimal("0")}).with_columns(
        pl.Series("row_key", [70, 80, 90])
    )
    got = pl.from_arrow(find_failures(_canonical(tmp_path, rows), CTX, chunk_rows=2))
    assert isinstance(got, pl.DataFrame)
    assert set(got.iter_rows()) == {(70, "commune_not_acv"), (90, "amount_not_positive")}


def test_a_column_of_the_wrong_type_is_a_parse_bug_not_a_partner_mistake() -> None:
    bad = frame({}).with_columns(pl.col("axis").cast(pl.Int64))
    with pytest.raises(RuntimeError, match="do not fit the CanonicalRecord schema"):
        record_failures(bad, CTX)


def test_every_rule_has_an_explanation_a_message_and_a_report_label() -> None:
    assert len(RULES) == 18
    for r in RULES.values():
        assert re.fullmatch(r"[a-z_]+", r.id), r
        assert r.explanation and r.explanation != r.message, r
        assert rule_label(r.id) == r.explanation[0].upper() + r.explanation[1:], r
        assert r.column in CanonicalRecord.to_schema().columns, r
    assert [r.order for r in RULES.values()] == sorted(r.order for r in RULES.values())


def test_the_readme_lists_every_rule_as_the_models_state_it() -> None:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- rules:start -->\n", 1)[1].split("<!-- rules:end -->", 1)[0]
    assert block.strip() == rules_markdown(), "README's rule table is stale: paste rules_markdown()"
    for r in RULES.values():
        assert f"`{r.id}`" in block and r.explanation in block, r

"""The canonical schema: each programme rule, on its own, quarantines what it should."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from schemas.canonical import RULES, RuleContext, canonical_schema

CTX = RuleContext(
    communes=frozenset({"47001", "62498"}),
    extraction_date=date(2024, 6, 30),
    statuses=frozenset({"engagé", "annulé"}),
    has_date=True,
    has_year=True,
    names_instrument=True,
)
GOOD = {
    "operation_id": "A",
    "operation_id_rows": 1,
    "insee_code": "47001",
    "axis": 1,
    "amount_raw": "10",
    "amount_cents": 1000,
    "instrument_label": "Prêt",
    "instrument": "loan",
    "engagement_date": pd.Timestamp("2020-01-01"),
    "date_raw": "2020-01-01",
    "year_given": 2020,
    "status": "engagé",
}


def failures(ctx: RuleContext = CTX, **changes: object) -> set[str]:
    row = {**GOOD, **changes}
    frame = pd.DataFrame([row]).astype(
        {"operation_id_rows": "Int64", "axis": "Int64", "amount_cents": "Int64", "year_given": "Int64"}
    )
    try:
        canonical_schema(ctx).validate(frame, lazy=True)
    except SchemaErrors as exc:
        return set(exc.failure_cases["check"])
    return set()


def test_a_good_row_passes() -> None:
    assert failures() == set()


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"insee_code": None}, "commune_missing"),
        ({"insee_code": "75056"}, "commune_not_acv"),
        ({"axis": None}, "unknown_category"),
        ({"axis": 7}, "unknown_category"),
        ({"amount_raw": None, "amount_cents": None}, "amount_missing"),
        ({"amount_raw": "#VALEUR!", "amount_cents": None}, "amount_unparseable"),
        ({"amount_cents": 0}, "amount_not_positive"),
        ({"amount_cents": -5}, "amount_not_positive"),
        ({"amount_cents": 100_000_000_001}, "amount_implausible"),
        ({"engagement_date": pd.Timestamp("2017-12-31"), "year_given": 2017}, "date_before_programme"),
        ({"engagement_date": pd.Timestamp("2024-07-01"), "year_given": 2024}, "date_after_extraction"),
        ({"engagement_date": pd.NaT, "date_raw": "32/13/2020"}, "date_unparseable"),
        ({"engagement_date": pd.NaT, "date_raw": None}, "date_missing"),
        ({"year_given": 2021}, "year_date_mismatch"),
        ({"status": "en attente"}, "unknown_status"),
        ({"instrument": None}, "unknown_instrument"),
        ({"operation_id": None}, "operation_id_missing"),
        ({"operation_id_rows": 2}, "duplicate_operation_id"),
    ],
)
def test_each_rule(changes: dict, rule: str) -> None:
    assert rule in RULES
    assert failures(**changes) == {rule}


def test_year_only_partner_checks_the_programme_years() -> None:
    ctx = RuleContext(
        communes=CTX.communes,
        extraction_date=date(2024, 6, 30),
        statuses=CTX.statuses,
        has_date=False,
        has_year=True,
        names_instrument=False,
    )
    assert failures(ctx, engagement_date=pd.NaT, date_raw=None, year_given=2019) == set()
    assert failures(ctx, engagement_date=pd.NaT, date_raw=None, year_given=2017) == {"year_out_of_programme"}
    assert failures(ctx, engagement_date=pd.NaT, date_raw=None, year_given=2025) == {"year_out_of_programme"}


def test_every_failure_of_a_row_is_collected() -> None:
    got = failures(insee_code="99999", axis=9, amount_cents=-1, status="?")
    assert got == {"commune_not_acv", "unknown_category", "amount_not_positive", "unknown_status"}

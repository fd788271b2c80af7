"""The canonical record and the programme's rules, as one Pandera schema.

A row breaking any rule is quarantined; validation is lazy, so every failure of every row is
collected. Each check's name is the rule's id, recorded in the quarantine with the partner's
column and value. The rules:

1. the commune is missing, or its INSEE code is not an ACV commune of the reference;
2. the category maps to no axis 1–5;
3. the amount is missing, unparseable, zero or negative (or above 1 bn€ for one line: a typo);
4. the engagement date is before 2018-01-01 or after the export's extraction date, or the
   year given by the partner differs from the year of that date;
5. the status is not one the partner's spec knows (nor the instrument, when it names one);
6. the operation id is missing, or carried by several rows of the same file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import pandera.pandas as pa

PROGRAMME_START = date(2018, 1, 1)
MAX_LINE_EUR = 1_000_000_000
"""No single engagement line of a 5 bn€ programme reaches 1 bn€: above, it is a typing mistake
(cents typed without their comma, a phone number in the amount column)."""
AXES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Rule:
    id: str
    order: int
    field: str
    """Canonical field whose partner column and raw value the quarantine reports."""
    message: str
    """Template; {value} is the raw value, {extraction_date} the export's date."""


RULES: dict[str, Rule] = {
    r.id: r
    for r in [
        Rule("commune_missing", 1, "insee_code", "no INSEE code in '{value}'"),
        Rule("commune_not_acv", 1, "insee_code", "INSEE code '{value}' is not a commune of the ACV reference"),
        Rule("unknown_category", 2, "category", "category '{value}' maps to no axis 1-5"),
        Rule("amount_missing", 3, "amount_eur", "the amount is missing"),
        Rule("amount_unparseable", 3, "amount_eur", "'{value}' is not an amount"),
        Rule("amount_not_positive", 3, "amount_eur", "amount '{value}' is zero or negative"),
        Rule(
            "amount_implausible",
            3,
            "amount_eur",
            "amount '{value}' is over 1 000 000 000 € for one line: a typing mistake?",
        ),
        Rule("date_missing", 4, "engagement_date", "the engagement date is missing"),
        Rule("date_unparseable", 4, "engagement_date", "'{value}' is not a date"),
        Rule(
            "date_before_programme",
            4,
            "engagement_date",
            "engagement date '{value}' is before the programme (2018-01-01)",
        ),
        Rule(
            "date_after_extraction",
            4,
            "engagement_date",
            "engagement date '{value}' is after the export's extraction date ({extraction_date})",
        ),
        Rule("year_missing", 4, "year", "the year is missing or unreadable ('{value}')"),
        Rule(
            "year_out_of_programme", 4, "year", "year '{value}' is outside the programme (2018 to the extraction year)"
        ),
        Rule("year_date_mismatch", 4, "year", "year '{value}' differs from the year of the engagement date"),
        Rule("unknown_status", 5, "status", "status '{value}' is not one the partner's spec knows"),
        Rule("unknown_instrument", 5, "instrument", "instrument '{value}' is not one the partner's spec knows"),
        Rule("operation_id_missing", 6, "operation_id", "the operation id is missing"),
        Rule(
            "duplicate_operation_id",
            6,
            "operation_id",
            "operation id '{value}' is carried by several rows of this file",
        ),
    ]
}


@dataclass(frozen=True)
class RuleContext:
    """What the rules depend on besides the row: the reference and the export."""

    communes: frozenset[str]
    extraction_date: date
    statuses: frozenset[str]
    has_date: bool
    has_year: bool
    names_instrument: bool


def _check(rule: str, fn: Callable[..., Any], *, element_wise: bool = False) -> pa.Check:
    return pa.Check(fn, name=rule, ignore_na=False, element_wise=element_wise)


def canonical_schema(ctx: RuleContext) -> pa.DataFrameSchema:
    start = pd.Timestamp(PROGRAMME_START)
    end = pd.Timestamp(ctx.extraction_date)
    communes = list(ctx.communes)
    statuses = list(ctx.statuses)
    columns: dict[str, pa.Column] = {
        "operation_id": pa.Column(
            nullable=True,
            checks=[
                _check("operation_id_missing", lambda s: s.notna()),
            ],
        ),
        "operation_id_rows": pa.Column(
            nullable=True,
            checks=[
                _check("duplicate_operation_id", lambda s: s.isna() | (s <= 1)),
            ],
        ),
        "insee_code": pa.Column(
            nullable=True,
            checks=[
                _check("commune_missing", lambda s: s.notna()),
                _check("commune_not_acv", lambda s: s.isna() | s.isin(communes)),
            ],
        ),
        "axis": pa.Column(
            nullable=True,
            checks=[
                _check("unknown_category", lambda s: s.isin(AXES)),
            ],
        ),
        "amount_raw": pa.Column(
            nullable=True,
            checks=[
                _check("amount_missing", lambda s: s.notna()),
            ],
        ),
        "status": pa.Column(
            nullable=True,
            checks=[
                _check("unknown_status", lambda s: s.isin(statuses)),
            ],
        ),
    }
    frame_checks = [
        _check("amount_unparseable", lambda df: df["amount_raw"].isna() | df["amount_cents"].notna()),
        _check("amount_not_positive", lambda df: df["amount_cents"].isna() | (df["amount_cents"] > 0)),
        _check("amount_implausible", lambda df: df["amount_cents"].isna() | (df["amount_cents"] <= MAX_LINE_EUR * 100)),
    ]
    if ctx.names_instrument:
        frame_checks.append(
            _check("unknown_instrument", lambda df: df["instrument_label"].isna() | df["instrument"].notna())
        )
    if ctx.has_date:
        frame_checks += [
            _check("date_missing", lambda df: df["date_raw"].notna()),
            _check("date_unparseable", lambda df: df["date_raw"].isna() | df["engagement_date"].notna()),
            _check("date_before_programme", lambda df: df["engagement_date"].isna() | (df["engagement_date"] >= start)),
            _check("date_after_extraction", lambda df: df["engagement_date"].isna() | (df["engagement_date"] <= end)),
        ]
    if ctx.has_year:
        frame_checks.append(_check("year_missing", lambda df: df["year_given"].notna()))
        if ctx.has_date:
            frame_checks.append(
                _check(
                    "year_date_mismatch",
                    lambda df: (
                        df["year_given"].isna()
                        | df["engagement_date"].isna()
                        | (df["year_given"] == df["engagement_date"].dt.year)
                    ),
                )
            )
        else:
            frame_checks.append(
                _check(
                    "year_out_of_programme",
                    lambda df: (
                        df["year_given"].isna()
                        | df["year_given"].between(PROGRAMME_START.year, ctx.extraction_date.year)
                    ),
                )
            )
    return pa.DataFrameSchema(columns, checks=frame_checks, name="canonical", strict=False)

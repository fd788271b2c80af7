"""The value parsers a spec may name, run on a real DuckDB."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import duckdb
import pytest

from cdv_etl.validate.parse import parser_sql


def parse(parser: str, text: str | None, scale: int = 1):  # type: ignore[no-untyped-def]
    con = duckdb.connect()
    return con.execute(f"SELECT {parser_sql(parser, 'x', scale)} FROM (SELECT ?::VARCHAR AS x)", [text]).fetchone()[0]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 234 567,89", Decimal("1234567.89")),
        ("1\u00a0234\u00a0567,89 €", Decimal("1234567.89")),
        ("1\u202f234,5", Decimal("1234.50")),
        ("  735 975,39  ", Decimal("735975.39")),
        ("-242 529,32", Decimal("-242529.32")),
        ("12", Decimal("12.00")),
        ("#VALEUR!", None),
        ("à préciser €", None),
        ("N/A", None),
        ("", None),
        (None, None),
    ],
)
def test_french_number(text: str | None, value: Decimal | None) -> None:
    assert parse("french_number", text) == value


def test_amounts_in_thousands() -> None:
    assert parse("french_number", "1497,6", 1000) == Decimal("1497600.00")
    assert parse("french_number", "0,05", 1000) == Decimal("50.00")


def test_decimal_from_spreadsheet_cells() -> None:
    assert parse("decimal", "839700.17") == Decimal("839700.17")
    assert parse("decimal", "1032906237.0") == Decimal("1032906237.00")
    assert parse("decimal", "") is None


@pytest.mark.parametrize(
    ("parser", "text", "value"),
    [
        ("date_dmy", "09/04/2019", date(2019, 4, 9)),
        ("date_dmy", "31/02/2019", None),
        ("date_iso", "2022-08-21", date(2022, 8, 21)),
        ("date_iso", "2022-08-21 00:00:00", date(2022, 8, 21)),
        ("date_excel", "2023-12-21", date(2023, 12, 21)),
        ("date_excel", "45281", date(2023, 12, 21)),
        ("date_excel", "21/12/2023", date(2023, 12, 21)),
        ("date_excel", "soon", None),
    ],
)
def test_dates(parser: str, text: str, value: date | None) -> None:
    assert parse(parser, text) == value


@pytest.mark.parametrize(
    ("parser", "text", "value"),
    [
        ("insee", "1004", "01004"),
        ("insee", "1004.0", "01004"),
        ("insee", " 62498 ", "62498"),
        ("insee", "2a004", "2A004"),
        ("insee", "97105", "97105"),
        ("insee", "", None),
        ("insee_in_brackets", "Agen (47001)", "47001"),
        ("insee_in_brackets", "Ajaccio (2A004)", "2A004"),
        ("insee_in_brackets", "Ambérieu-en-Bugey (1004)", "01004"),
        ("insee_in_brackets", "Gonesse", None),
        ("year", "2024", 2024),
        ("year", "Année 2021", 2021),
        ("year", "n/a", None),
    ],
)
def test_codes_and_years(parser: str, text: str, value: object) -> None:
    assert parse(parser, text) == value

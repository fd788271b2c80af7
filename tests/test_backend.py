"""CDV_WAREHOUSE names one of three backends (issue 12 prototype): parsing only, nothing connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdv_etl.errors import CdvError
from cdv_etl.load.backend import DuckDBFile, DuckLake, parse_libpq, parse_warehouse

PG = "host=/run/pg port=5432 dbname=acv user=cdv"


def test_a_path_is_the_duckdb_file_as_today() -> None:
    assert parse_warehouse("warehouse/cdv.duckdb") == DuckDBFile(Path("warehouse/cdv.duckdb"))
    assert parse_warehouse("~/w.db") == DuckDBFile(Path("~/w.db").expanduser())


def test_postgres_catalog_keeps_its_libpq_parameters() -> None:
    lake = parse_warehouse(f"ducklake:postgres:{PG}", "/srv/lake")
    assert lake == DuckLake("postgres", PG, "/srv/lake/")
    assert lake.extensions() == ("ducklake", "postgres_scanner")
    assert lake.attach_sql(read_only=True) == (
        f"ATTACH 'ducklake:postgres:{PG}' AS \"lake\" (DATA_PATH '/srv/lake/', READ_ONLY)"
    )


def test_a_lake_that_exists_needs_no_data_path() -> None:
    lake = parse_warehouse(f"ducklake:postgres:{PG}")
    assert lake.attach_sql() == f"ATTACH 'ducklake:postgres:{PG}' AS \"lake\""


def test_local_catalog_file() -> None:
    lake = parse_warehouse("ducklake:lake/acv.ducklake")
    assert lake == DuckLake("duckdb", "lake/acv.ducklake", None)
    assert lake.extensions() == ("ducklake",)
    assert lake.attach_sql() == "ATTACH 'ducklake:lake/acv.ducklake' AS \"lake\""


def test_s3_data_path_needs_httpfs() -> None:
    lake = parse_warehouse(f"ducklake:postgres:{PG}", "s3://acv-bucket/lake")
    assert lake.data_path == "s3://acv-bucket/lake/"
    assert lake.extensions() == ("ducklake", "postgres_scanner", "httpfs")


def test_quotes_in_values_are_escaped_in_the_attach_statement() -> None:
    lake = parse_warehouse(r"ducklake:postgres:dbname=acv password='it\'s'", "/srv/o'brien")
    assert r"ATTACH 'ducklake:postgres:dbname=acv password=''it\''s''' AS" in lake.attach_sql()
    assert "DATA_PATH '/srv/o''brien/'" in lake.attach_sql()


def test_password_never_shown() -> None:
    lake = parse_warehouse("ducklake:postgres:dbname=acv user=cdv password=s3cret")
    assert isinstance(lake, DuckLake)
    assert "s3cret" not in lake.display
    assert lake.display == "ducklake:postgres:dbname=acv user=cdv password=***"
    with pytest.raises(CdvError) as err:
        parse_warehouse("ducklake:postgres:dbname=acv password=s3cret portt=1")
    assert "s3cret" not in str(err.value)


def test_libpq_quoted_values() -> None:
    assert parse_libpq(r"dbname=acv options='-c search_path=x' password='a\'b'") == {
        "dbname": "acv",
        "options": "-c search_path=x",
        "password": "a'b",
    }


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "empty"),
        ("ducklake:", "needs a catalog"),
        ("ducklake:postgres:", "needs libpq parameters"),
        ("ducklake:postgres:host=/run/pg portt=5432 dbname=acv", "portt is not a libpq connection parameter"),
        ("ducklake:postgres:host=/run/pg user=cdv", "dbname"),
        ("ducklake:mysql:db=acv", "mysql is not a catalog"),
        ("postgres://cdv@db/acv", "prefix its libpq parameters with ducklake:postgres:"),
        ("s3://bucket/cdv.duckdb", "a URL is not a warehouse file"),
        ("ducklake:lake/cdv.duckdb", "name it <name>.ducklake"),
    ],
)
def test_an_unparseable_url_shows_the_accepted_forms(url: str, why: str) -> None:
    with pytest.raises(CdvError) as err:
        parse_warehouse(url)
    assert why in err.value.message
    assert "ducklake:postgres:host=" in err.value.hint
    assert "a DuckDB file" in err.value.hint


def test_data_path_for_a_duckdb_file_is_an_error() -> None:
    with pytest.raises(CdvError, match="holds its own data"):
        parse_warehouse("warehouse/cdv.duckdb", "/srv/lake")


def test_data_path_must_be_a_directory_or_s3() -> None:
    with pytest.raises(CdvError, match="neither a directory nor an s3:// URL"):
        parse_warehouse(f"ducklake:postgres:{PG}", "gs://bucket/x")

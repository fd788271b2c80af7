"""Apply the canonical Pandera models to the canonical table, with Pandera's Polars backend.

The canonical table stays in the reader's DuckDB; only the columns the rules read travel, as
Arrow batches of ``CHUNK_ROWS`` rows turned into Polars frames (no pandas), so memory stays
bounded whatever the file's size. The row rules (``CanonicalRecord``) run on each batch; the
file rules (``CanonicalFile``: repeated ids) run once, on the ids of every batch together,
so no batch hides a duplicate. ``bench/backends.py`` measures this against pandas chunks and
Ibis on DuckDB.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa

from cdv_etl.sql import quote_ident
from cdv_etl.validate.parse import CANONICAL_TABLE
from schemas.canonical import CanonicalFile, CanonicalRecord, RuleContext, file_failures, record_failures

CHUNK_ROWS = 250_000
"""Rows per batch. Polars validates a 250k-row batch in a few tens of milliseconds; larger
batches gain little time and cost memory (see bench/backends.py)."""

RECORD_COLUMNS = tuple(CanonicalRecord.to_schema().columns)
FILE_COLUMNS = tuple(CanonicalFile.to_schema().columns)


def find_failures(con: duckdb.DuckDBPyConnection, ctx: RuleContext, chunk_rows: int = CHUNK_ROWS) -> pa.Table:
    """(row_key, rule) of every failure, one row per rule a row breaks."""
    cols = ", ".join(quote_ident(c) for c in RECORD_COLUMNS)
    reader = con.execute(
        f"SELECT {cols} FROM {CANONICAL_TABLE}"  # noqa: S608 - quoted constant identifiers
    ).to_arrow_reader(chunk_rows)
    found: list[pl.DataFrame] = []
    ids: list[pl.DataFrame] = []
    for batch in reader:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        found.append(record_failures(frame, ctx))
        ids.append(frame.select(FILE_COLUMNS))
    if ids:
        found.append(file_failures(pl.concat(ids, rechunk=False), ctx))
    if not found:
        return pl.DataFrame(schema={"row_key": pl.Int64, "rule": pl.String}).to_arrow()
    return pl.concat(found).to_arrow()

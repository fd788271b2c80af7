"""Apply the canonical Pandera models to the canonical records, with Pandera's Polars backend.

The records are the Parquet file the parse wrote in the reader's private work folder; Polars
reads it a bounded slice of ``CHUNK_ROWS`` rows at a time (only the columns the rules read;
no pandas), so memory stays flat whatever the file's size. The row rules
(``CanonicalRecord``) run on each slice. The file rules (``CanonicalFile``: repeated ids) need
every row at once: while the slices go by, each id's 64-bit hash is kept (8 bytes a row;
keeping the ids themselves and counting over them peaked ~290 MiB higher at 5M
rows). Only rows whose hash repeats can carry a repeated id, so the file rules then run on
those rows alone, read again with their ids: the same verdicts as on every row, exactly
(equal ids, and missing ones, hash alike; a collision only adds a row the rule then keeps).
``bench/backends.py`` measures this against pandas chunks and Ibis on DuckDB.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from schemas.canonical import CanonicalFile, CanonicalRecord, RuleContext, file_failures, record_failures

CHUNK_ROWS = 250_000
"""Rows per slice: at 5M rows, validating 250k-row slices peaks at ~600 MiB for the whole
process; the whole file as one frame took 2 GiB (bench/backends.py)."""

RECORD_COLUMNS = tuple(CanonicalRecord.to_schema().columns)
FILE_COLUMNS = tuple(CanonicalFile.to_schema().columns)
_ID = "operation_id"


def find_failures(canonical: Path, ctx: RuleContext, chunk_rows: int = CHUNK_ROWS) -> pa.Table:
    """(row_key, rule) of every failure in the canonical records, one row per rule a row breaks."""
    assert FILE_COLUMNS == ("row_key", _ID), FILE_COLUMNS  # the hash pre-filter below is for ids
    records = pl.scan_parquet(canonical).select(RECORD_COLUMNS)
    rows = records.select(pl.len()).collect().item()
    found: list[pl.DataFrame] = []
    hashes: list[pl.Series] = []
    for offset in range(0, rows, chunk_rows):
        frame = records.slice(offset, chunk_rows).collect()
        found.append(record_failures(frame, ctx))
        hashes.append(frame.get_column(_ID).hash())
    if hashes:
        # Row positions sorted by hash: a repeated hash sits next to its twin (less memory
        # than a hash table of 5M entries). The positions are the Parquet file's row order.
        h = pl.concat(hashes)
        del hashes
        order = h.arg_sort()
        h = h.gather(order)
        candidates = order.filter((h == h.shift(1)) | (h == h.shift(-1)))
        del h, order
        ids = (
            pl.scan_parquet(canonical)
            .select(FILE_COLUMNS)
            .with_row_index("_position")
            .filter(pl.col("_position").is_in(candidates.implode()))
            .drop("_position")
            .collect()
        )
        found.append(file_failures(ids, ctx))
    if not found:
        return pl.DataFrame(schema={"row_key": pl.Int64, "rule": pl.String}).to_arrow()
    return pl.concat(found).to_arrow()

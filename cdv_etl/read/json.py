"""JSON exports: a list of records at a dotted path; nested fields become ``a.b`` columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, JsonFormat


def read_json(con: duckdb.DuckDBPyConnection, path: Path, fmt: JsonFormat) -> RawExport:
    try:
        data: Any = json.loads(path.read_bytes().decode(fmt.encoding))
    except UnicodeDecodeError as exc:
        raise FileRejected(
            "encoding",
            f"{path.name}: byte at offset {exc.start} is not valid {fmt.encoding}; not loaded",
            "ask the partner to export in UTF-8, or fix format.encoding in the partner's spec",
        ) from exc
    except json.JSONDecodeError as exc:
        raise FileRejected(
            "unreadable",
            f"{path.name}: not valid JSON (line {exc.lineno}: {exc.msg})",
            "ask the partner to send the export again",
        ) from exc
    records = data
    for key in [k for k in fmt.records_path.split(".") if k]:
        if not isinstance(records, dict) or key not in records:
            raise FileRejected(
                "unreadable",
                f"{path.name}: no {fmt.records_path!r} in the JSON document",
                "check the partner's spec (format.records_path)",
            )
        records = records[key]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise FileRejected(
            "unreadable",
            f"{path.name}: {fmt.records_path or 'the document'} is not a list of records",
            "check the partner's spec (format.records_path)",
        )
    frame = pd.json_normalize(records, sep=".") if records else pd.DataFrame()
    frame = frame.astype(object).where(frame.notna(), None)
    frame = frame.map(lambda v: None if v is None else str(v)) if len(frame) else frame
    # The "row a person sees" in a JSON file is the record's position, counted from 1.
    frame[SOURCE_ROW_COLUMN] = range(1, len(frame) + 1)
    columns = [c for c in frame.columns if c != SOURCE_ROW_COLUMN]
    frame[ROW_KEY_COLUMN] = range(len(frame))
    frame[SHEET_COLUMN] = None
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    con.register("json_frame", frame)
    try:
        con.execute(f"CREATE TEMP TABLE {STAGING_TABLE} AS SELECT * FROM json_frame")  # noqa: S608
    finally:
        con.unregister("json_frame")
    return RawExport(STAGING_TABLE, [str(c) for c in columns], len(frame))

"""JSON exports, read by DuckDB's JSON reader: a list of records at a dotted path.

The document is read whole (``read_json_objects``) and kept as JSON; every record's cells are
taken out with ``json_extract_string``, one per value. So a value keeps its own text whatever the
other records hold: an integer stays "5" when another record's value is null (a reader that
infers one type per column would have made it "5.0"). Nested objects become ``a.b`` columns
(``commune.insee``); an array or an object met where other records hold a plain value stays its
JSON text. ``_source_row`` is the record's position in its list, counted from 1.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.read.text import decode_to_utf8
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, JsonFormat
from cdv_etl.sql import quote_ident

DOCUMENT_TABLE = "stg_json_document"
_RECORDS_TABLE = "stg_json_records"
_MALFORMED = re.compile(r"at byte (\d+)[^:]*: (.*)")
_MIN_OBJECT_SIZE = 16 * 1024 * 1024


def json_pointer(keys: list[str]) -> str:
    """The JSON pointer (RFC 6901) of a list of keys: ``["data", "aides"]`` → ``/data/aides``; [] → the root."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def dotted_pointer(dotted: str) -> str:
    """The JSON pointer of a dotted path of the spec: ``data.aides`` → ``/data/aides``; '' → the root."""
    return json_pointer([k for k in dotted.split(".") if k])


def read_json(con: duckdb.DuckDBPyConnection, path: Path, fmt: JsonFormat, workdir: Path) -> RawExport:
    decoded = decode_to_utf8(path, fmt.encoding, workdir)
    try:
        con.execute(f"DROP TABLE IF EXISTS {DOCUMENT_TABLE}")
        # A whole document is one JSON value: the reader's limit is the file's size.
        size = max(_MIN_OBJECT_SIZE, decoded.path.stat().st_size + 1)
        con.execute(
            f"CREATE TEMP TABLE {DOCUMENT_TABLE} AS SELECT json AS doc "  # noqa: S608 - constant SQL
            "FROM read_json_objects(?, format = 'unstructured', maximum_object_size = ?)",
            [str(decoded.path), size],
        )
    except duckdb.Error as exc:
        raise _malformed(path, decoded.path, exc) from exc
    finally:
        if decoded.path != path:
            decoded.path.unlink(missing_ok=True)
    documents = _one(con, f"SELECT count(*) FROM {DOCUMENT_TABLE}")  # noqa: S608 - constant SQL
    if documents != 1:
        raise FileRejected(
            "unreadable",
            f"{path.name}: {documents} JSON documents in the file where one was expected; nothing was loaded",
            "ask the partner for one JSON document holding the list of records",
        )
    where = repr(fmt.records_path) if fmt.records_path else "the document"
    pointer = dotted_pointer(fmt.records_path)
    kind = con.execute(f"SELECT json_type(doc, ?) FROM {DOCUMENT_TABLE}", [pointer]).fetchone()  # noqa: S608
    if kind is None or kind[0] is None:
        raise FileRejected(
            "unreadable",
            f"{path.name}: no {where} in the JSON document; nothing was loaded",
            "check the partner's spec (format.records_path: the dotted path to the list of records)",
        )
    if kind[0] != "ARRAY":
        raise FileRejected(
            "unreadable",
            f"{path.name}: {where} is a JSON {str(kind[0]).lower()}, not a list of records; nothing was loaded",
            "check the partner's spec (format.records_path: the dotted path to the list of records)",
        )
    con.execute(f"DROP TABLE IF EXISTS {_RECORDS_TABLE}")
    # unnest and generate_subscripts of one list run in step: each record with its position.
    con.execute(
        f"CREATE TEMP TABLE {_RECORDS_TABLE} AS "  # noqa: S608 - constant SQL
        "SELECT unnest(recs) AS rec, generate_subscripts(recs, 1) AS pos "
        f"FROM (SELECT from_json(json_extract(doc, ?), '[\"JSON\"]') AS recs FROM {DOCUMENT_TABLE})",
        [pointer],
    )
    odd = con.execute(
        f"SELECT pos, json_type(rec) FROM {_RECORDS_TABLE} "  # noqa: S608 - constant SQL
        "WHERE json_type(rec) IS DISTINCT FROM 'OBJECT' ORDER BY pos LIMIT 1"
    ).fetchone()
    if odd is not None:
        raise FileRejected(
            "unreadable",
            f"{path.name}: record {odd[0]} of {where} is a JSON {str(odd[1] or 'null').lower()}, "
            "not an object; nothing was loaded",
            "ask the partner for a list of records (objects), or check format.records_path in the partner's spec",
        )
    structure = con.execute(f"SELECT json_group_structure(rec) FROM {_RECORDS_TABLE}").fetchone()  # noqa: S608
    columns = _columns(path, json.loads(structure[0]) if structure and structure[0] else {})
    pointers = list(columns.values())
    cells = "".join(f", cells[{i}] AS {quote_ident(c)}" for i, c in enumerate(columns, start=1))
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    con.execute(
        f"CREATE TEMP TABLE {STAGING_TABLE} AS SELECT "  # noqa: S608 - identifiers quoted
        f"{ROW_KEY_COLUMN}, {SOURCE_ROW_COLUMN}, NULL::VARCHAR AS {SHEET_COLUMN}{cells} FROM ("
        f"SELECT pos - 1 AS {ROW_KEY_COLUMN}, pos AS {SOURCE_ROW_COLUMN}, "
        f"json_extract_string(rec, ?::VARCHAR[]) AS cells FROM {_RECORDS_TABLE}) ORDER BY {ROW_KEY_COLUMN}",
        [pointers],
    )
    con.execute(f"DROP TABLE {_RECORDS_TABLE}")
    return RawExport(STAGING_TABLE, list(columns), _one(con, f"SELECT count(*) FROM {STAGING_TABLE}"))  # noqa: S608


def document_text(con: duckdb.DuckDBPyConnection, dotted: str) -> tuple[bool, str | None]:
    """(found, text) of the value at a dotted path of the document read last (``meta.extraction``)."""
    row = con.execute(
        f"SELECT json_type(doc, ?) IS NOT NULL, json_extract_string(doc, ?) FROM {DOCUMENT_TABLE}",  # noqa: S608
        [dotted_pointer(dotted)] * 2,
    ).fetchone()
    return (bool(row[0]), row[1]) if row else (False, None)


def _columns(path: Path, structure: Any) -> dict[str, str]:
    """Column name (dotted path) → JSON pointer of every leaf of the records' merged structure."""
    found: dict[str, str] = {}

    def walk(node: Any, keys: list[str]) -> None:
        if isinstance(node, dict) and (node or not keys):  # an empty object is a leaf, not the root
            for key, child in node.items():
                walk(child, [*keys, key])
            return
        name = ".".join(keys)
        if name in found:
            raise FileRejected(
                "unreadable",
                f"{path.name}: two fields of the records are both named {name!r} "
                "(a key with a dot and a nested object); nothing was loaded",
                "ask the partner to rename one of them",
            )
        found[name] = json_pointer(keys)

    walk(structure, [])
    return found


def _malformed(path: Path, read: Path, exc: duckdb.Error) -> FileRejected:
    """A syntax error, with its byte offset and the line and column a person finds it at."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    m = _MALFORMED.search(message)
    if m:
        # DuckDB counts the bytes of the UTF-8 text from 1: the faulty character is the next one.
        with read.open("rb") as fh:
            before = fh.read(int(m.group(1)) - 1).decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        where = f"at line {line}, column {column}: {m.group(2).strip().rstrip('.')}"
    else:
        where = f"({message})"
    return FileRejected(
        "unreadable",
        f"{path.name}: not valid JSON {where}; nothing was loaded",
        "ask the partner to send the export again (a truncated or hand-edited file?)",
    )


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0

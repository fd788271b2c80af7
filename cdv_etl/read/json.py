"""JSON exports, read by DuckDB's JSON functions: a list of records at a dotted path.

The document is read as text (``read_text``) and its records taken out as JSON values; every
record's cells are taken out with ``json_extract_string``, one per value. So a value keeps its
own text whatever the other records hold: an integer stays "5" when another record's value is
null (a reader that infers one type per column would have made it "5.0"). Nested objects become
``a.b`` columns (``commune.insee``); an array, or an object met where other records hold a plain
value, stays its JSON text. ``_source_row`` is the record's position in its list, counted from 1.
A JSON number is read as a double: exact up to 15 significant digits (cents of any amount below
a thousand billion euros).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.read.text import decode_to_utf8
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, JsonFormat
from cdv_etl.sql import quote_ident

_MALFORMED = re.compile(r"Malformed JSON at byte (\d+) of input: (.*?)\.?(?:\s+Input:|$)")
_BOM = "\ufeff"
# json_type's names → JSON's own, for a person reading a rejection.
_JSON_KINDS = {"VARCHAR": "string", "BIGINT": "number", "UBIGINT": "number", "DOUBLE": "number", "BOOLEAN": "boolean"}

# The keys of the objects at one place of the records ($parent, a JSON pointer), in the order
# of the first record that has them, and whether each key holds objects (or null) in every record.
_KEYS_SQL = """
SELECT key, bool_and(coalesce(kind, 'NULL') IN ('OBJECT', 'NULL')) AND bool_or(kind = 'OBJECT') AS is_object
FROM (
    SELECT pos, i, key, json_type(rec, $parent || '/' || replace(replace(key, '~', '~0'), '/', '~1')) AS kind
    FROM (
        SELECT pos, rec, unnest(json_keys(rec, $parent)) AS key, generate_subscripts(json_keys(rec, $parent), 1) AS i
        FROM stg_json_records WHERE json_type(rec, $parent) = 'OBJECT'
    )
)
GROUP BY key ORDER BY min(pos), arg_min(i, pos)
"""


def json_pointer(keys: list[str]) -> str:
    """The JSON pointer (RFC 6901) of a list of keys: ``["data", "aides"]`` → ``/data/aides``; [] → the root."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def _spec_keys(dotted: str) -> list[str]:
    return [k for k in dotted.split(".") if k]


def _every_element(keys: list[str]) -> str:
    """The JSONPath of every element of the array at these keys: ``$."data"."aides"[*]``."""
    quoted = "".join('."' + k.replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys)
    return f"${quoted}[*]"


def read_json(con: duckdb.DuckDBPyConnection, path: Path, fmt: JsonFormat, workdir: Path) -> RawExport:
    decoded = decode_to_utf8(path, fmt.encoding, workdir)
    try:
        con.execute("DROP TABLE IF EXISTS stg_json_document")
        con.execute(
            "CREATE TEMP TABLE stg_json_document AS SELECT ltrim(content, ?) AS doc FROM read_text(?)",
            [_BOM, str(decoded.path)],
        )
    finally:
        if decoded.path != path:
            decoded.path.unlink(missing_ok=True)
    where = repr(fmt.records_path) if fmt.records_path else "the document"
    keys = _spec_keys(fmt.records_path)
    try:  # the first look at the document parses it all: a syntax error shows here
        kind = con.execute("SELECT json_type(doc, ?) FROM stg_json_document", [json_pointer(keys)]).fetchone()
    except duckdb.Error as exc:
        raise _malformed(con, path, exc) from exc
    if kind is None or kind[0] is None:
        raise FileRejected(
            "unreadable",
            f"{path.name}: no {where} in the JSON document; nothing was loaded",
            "check the partner's spec (format.records_path: the dotted path to the list of records)",
        )
    if kind[0] != "ARRAY":
        raise FileRejected(
            "unreadable",
            f"{path.name}: {where} is a JSON {_kind(kind[0])}, not a list of records; nothing was loaded",
            "check the partner's spec (format.records_path: the dotted path to the list of records)",
        )
    con.execute("DROP TABLE IF EXISTS stg_json_records")
    # unnest and generate_subscripts of one list run in step: each record with its position.
    con.execute(
        "CREATE TEMP TABLE stg_json_records AS "
        "SELECT unnest(recs) AS rec, generate_subscripts(recs, 1) AS pos "
        "FROM (SELECT json_extract(doc, ?) AS recs FROM stg_json_document)",
        [_every_element(keys)],
    )
    odd = con.execute(
        "SELECT pos, json_type(rec) FROM stg_json_records "
        "WHERE json_type(rec) IS DISTINCT FROM 'OBJECT' ORDER BY pos LIMIT 1"
    ).fetchone()
    if odd is not None:
        raise FileRejected(
            "unreadable",
            f"{path.name}: record {odd[0]} of {where} is a JSON {_kind(odd[1])}, not an object; nothing was loaded",
            "ask the partner for a list of records (objects), or check format.records_path in the partner's spec",
        )
    columns = _columns(con, path)
    cells = "".join(f", cells[{i}] AS {quote_ident(c)}" for i, c in enumerate(columns, start=1))
    con.execute(f"DROP TABLE IF EXISTS {STAGING_TABLE}")
    con.execute(
        f"CREATE TEMP TABLE {STAGING_TABLE} AS SELECT "  # noqa: S608 - identifiers quoted
        f"{ROW_KEY_COLUMN}, {SOURCE_ROW_COLUMN}, NULL::VARCHAR AS {SHEET_COLUMN}{cells} FROM ("
        f"SELECT pos - 1 AS {ROW_KEY_COLUMN}, pos AS {SOURCE_ROW_COLUMN}, "
        f"json_extract_string(rec, ?::VARCHAR[]) AS cells FROM stg_json_records) ORDER BY {ROW_KEY_COLUMN}",
        [[json_pointer(k) for k in columns.values()]],
    )
    con.execute("DROP TABLE stg_json_records")
    return RawExport(STAGING_TABLE, list(columns), _one(con, f"SELECT count(*) FROM {STAGING_TABLE}"))  # noqa: S608


def document_text(con: duckdb.DuckDBPyConnection, dotted: str) -> tuple[bool, str | None]:
    """(found, text) of the value at a dotted path of the document read last (``meta.extraction``)."""
    row = con.execute(
        "SELECT json_type(doc, ?) IS NOT NULL, json_extract_string(doc, ?) FROM stg_json_document",
        [json_pointer(_spec_keys(dotted))] * 2,
    ).fetchone()
    return (bool(row[0]), row[1]) if row else (False, None)


def _columns(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, list[str]]:
    """Column name (dotted path) → keys of every leaf of the records, in the order first met.

    A key whose values are objects (or null) in every record is opened into its own keys (an
    object that is always empty stays one column); any other key is one column. Read with
    ``json_keys``, one pass over the records per nested object.
    """
    leaves: list[tuple[tuple[int, ...], list[str]]] = []

    def walk(parent: list[str], order: tuple[int, ...]) -> bool:
        rows = con.execute(_KEYS_SQL, {"parent": json_pointer(parent)}).fetchall()
        for n, (key, is_object) in enumerate(rows):
            keys = [*parent, str(key)]
            if not (is_object and walk(keys, (*order, n))):
                leaves.append(((*order, n), keys))
        return bool(rows)

    walk([], ())
    found: dict[str, list[str]] = {}
    for _, keys in sorted(leaves):  # in the records' order: depth first
        name = ".".join(keys)
        if name in found or not name:
            what = f"both named {name!r} (a key with a dot and a nested object)" if name else "without a name"
            raise FileRejected(
                "unreadable",
                f"{path.name}: fields of the records {what}: they cannot be told apart; nothing was loaded",
                "ask the partner to name every field of the records once",
            )
        found[name] = keys
    return found


def _malformed(con: duckdb.DuckDBPyConnection, path: Path, exc: duckdb.Error) -> FileRejected:
    """A syntax error, at the line and column a person finds it."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    m = _MALFORMED.search(message)
    if m:
        row = con.execute("SELECT doc FROM stg_json_document").fetchone()
        # DuckDB counts the bytes of the UTF-8 text from 0: the faulty character is at that offset.
        before = str(row[0] if row else "").encode("utf-8")[: int(m.group(1))].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        where = f"at line {line}, column {column}: {m.group(2).strip()}"
    else:
        where = f"({message})"
    return FileRejected(
        "unreadable",
        f"{path.name}: not valid JSON {where}; nothing was loaded",
        "ask the partner to send the export again (a truncated or hand-edited file?)",
    )


def _kind(json_type: str | None) -> str:
    return _JSON_KINDS.get(str(json_type), str(json_type or "null").lower())


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0

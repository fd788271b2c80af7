"""CSV and TSV exports, read by DuckDB's CSV reader as text cells."""

from __future__ import annotations

from pathlib import Path

import duckdb

from cdv_etl.errors import FileRejected
from cdv_etl.read import STAGING_TABLE, RawExport
from cdv_etl.read.text import decode_to_utf8
from cdv_etl.specs import ROW_KEY_COLUMN, SHEET_COLUMN, SOURCE_ROW_COLUMN, CsvFormat
from cdv_etl.sql import quote_ident


def read_csv(con: duckdb.DuckDBPyConnection, path: Path, fmt: CsvFormat, workdir: Path) -> RawExport:
    decoded = decode_to_utf8(path, fmt.encoding, workdir)
    try:
        con.execute("DROP TABLE IF EXISTS stg_file")
        con.execute(
            "CREATE TEMP TABLE stg_file AS SELECT * FROM read_csv(?, delim = ?, quote = ?, "
            "escape = ?, header = true, all_varchar = true, skip = ?, "
            "auto_detect = true, null_padding = false, max_line_size = 4194304)",
            [str(decoded.path), fmt.delimiter, fmt.quote, fmt.quote, fmt.header_line - 1],
        )
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileRejected(
            "unreadable",
            f"{path.name}: not a readable CSV with delimiter {fmt.delimiter!r}: {first}",
            "check that the file is the partner's export and that its spec's delimiter is right",
        ) from exc
    finally:
        if decoded.path != path:
            decoded.path.unlink(missing_ok=True)
    columns = [str(r[0]) for r in con.execute("DESCRIBE stg_file").fetchall()]
    # The line a person sees: header line + 1 + record index, plus the blank lines the
    # reader skipped before it (a record after k blank lines sits k lines further down).
    base = f"rowid + {int(fmt.header_line) + 1}"
    blanks = [b for b in decoded.blank_lines if b > fmt.header_line]
    renamed = (f"{quote_ident(c)} AS {quote_ident(c.strip().lstrip(chr(0xFEFF)))}" for c in columns)
    select = f"rowid AS {ROW_KEY_COLUMN}, NULL::VARCHAR AS {SHEET_COLUMN}, " + ", ".join(renamed)
    # A view, not a copy: the row numbers are computed when stg_raw is read (by the parse
    # and, for the rejected rows only, by the quarantine), never stored a second time.
    if blanks:
        adjust = [b - j for j, b in enumerate(sorted(blanks))]
        # a view takes no parameters: the blank lines wait in a one-column table
        con.execute("CREATE TEMP TABLE stg_blanks AS SELECT unnest(?::BIGINT[]) AS line", [adjust])
        con.execute(
            f"CREATE TEMP VIEW {STAGING_TABLE} AS SELECT {select}, "  # noqa: S608 - identifiers quoted
            f"{base} + len(list_filter((SELECT list(line) FROM stg_blanks), v -> v <= {base})) "
            f"AS {SOURCE_ROW_COLUMN} FROM stg_file"
        )
    else:
        con.execute(
            f"CREATE TEMP VIEW {STAGING_TABLE} AS SELECT {select}, "  # noqa: S608 - identifiers quoted
            f"{base} AS {SOURCE_ROW_COLUMN} FROM stg_file"
        )
    rows = con.execute("SELECT count(*) FROM stg_file").fetchone()
    return RawExport(STAGING_TABLE, [c.strip().lstrip("\ufeff") for c in columns], int(rows[0]) if rows else 0)

"""SQL safety: no SQL text is built from values.

The scan reads the project's code (cdv_etl/, flows/, schemas/) with ``ast`` and finds every
call ``.execute(...)``, ``.executemany(...)``, ``.sql(...)`` or ``.query(...)`` whose SQL is
built by string formatting: an f-string, a ``%`` format, ``.format(...)``, a ``+`` with a
non-constant, or a ``.join(...)`` — directly, through a local variable, or returned by a
function of the same module. Each non-constant piece must be in ALLOWLIST (file, source of
the expression, reason): quoted identifiers, module constants, fragments built in code. Any
new piece fails the test, and no allowlisted piece may name a value-like variable (path,
file name, name, value, partner, query…) outside an identifier-quoting function.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

SCANNED = ("cdv_etl", "flows", "schemas")
SQL_METHODS = {"execute", "executemany", "sql", "query"}
QUOTERS = {"_q", "quote_ident", "_quote_ident"}  # identifier quoting: '"' + name.replace('"', '""') + '"'
VALUE_LIKE = re.compile(
    r"(?:^|_)(?:path|paths|file|filename|file_name|name|names|value|values|partner|partners|"
    r"query|queries)(?:$|_)",
    re.IGNORECASE,
)
NEXT_STEP = (
    "pass values as parameters (`con.execute(sql, [value])` with `?` in the SQL), or, for an "
    "identifier or a fragment built in code, add a justified entry to ALLOWLIST in tests/test_sql_safety.py"
)

# (file, interpolated expression as ast.unparse writes it, why it is safe) — one line each.
ALLOWLIST: list[tuple[str, str, str]] = [
    ("cdv_etl/load/loader.py", "table", "a name from the fixed tuple ('engagement_rows', 'quarantine_rows', …)"),
    ("cdv_etl/load/loader.py", "ENGAGEMENT_COLUMNS[3:]", "column names: a module constant tuple"),
    ("cdv_etl/load/loader.py", "QUARANTINE_RECORD_COLUMNS", "column names: a module constant tuple"),
    ("cdv_etl/load/loader.py", "_FILE_KEYS", "a module constant query (a file's row keys); its file id is bound"),
    ("cdv_etl/load/revalidate.py", "_LOADED", "module constant: column names joined from ENGAGEMENT_COLUMNS"),
    ("cdv_etl/load/revalidate.py", "_RECORD", "module constant: column names joined from QUARANTINE_RECORD_COLUMNS"),
    ("cdv_etl/load/revalidate.py", "_RECORD_OF_LOADED", "module constant: column names, insee_raw read as insee_code"),
    ("cdv_etl/load/revalidate.py", "_LOADED_AS_JSON", "module constant: json_object pairs of the constant columns"),
    ("cdv_etl/load/revalidate.py", "_MESSAGE", "module constant: message_sql over a bound template and columns"),
    ("cdv_etl/load/revalidate.py", "table", "a name from the fixed tuple ('quarantine_rows', 'quarantine_records')"),
    ("cdv_etl/load/revalidate.py", "temp", "a name from the module's fixed tuple _TEMP_TABLES"),
    ("cdv_etl/load/warehouse.py", "LAKE", "module constant: the name a lake is attached under"),
    ("cdv_etl/load/warehouse.py", "p.read_text(encoding='utf-8')", "the project's own warehouse/views/*.sql"),
    ("cdv_etl/publish/dictionary.py", "_quote_ident(name)", "a catalog macro's name, quoted"),
    ("cdv_etl/publish/dictionary.py", "['NULL'] * count", "DESCRIBE a macro call with NULL arguments"),
    ("cdv_etl/publish/export.py", "_quote_ident(views[text.lower()])", "a name from PUBLIC_VIEWS, quoted"),
    ("cdv_etl/read/csv.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/read/csv.py", "ROW_KEY_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/csv.py", "SHEET_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/csv.py", "SOURCE_ROW_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/csv.py", "quote_ident(c)", "a column of the partner's header, quoted"),
    ("cdv_etl/read/csv.py", "quote_ident(c.strip().lstrip(chr(65279)))", "the same column, trimmed, quoted"),
    ("cdv_etl/read/csv.py", "int(fmt.header_line)", "an integer from the spec (pydantic: int >= 1)"),
    ("cdv_etl/read/json.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/read/json.py", "ROW_KEY_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/json.py", "SHEET_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/json.py", "SOURCE_ROW_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/json.py", "quote_ident(c)", "a dotted field path of the records, quoted"),
    ("cdv_etl/read/json.py", "i", "a cell's position in the extracted list: an int from enumerate"),
    ("cdv_etl/read/__init__.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/read/__init__.py", "ROW_KEY_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/__init__.py", "SHEET_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/__init__.py", "SOURCE_ROW_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/__init__.py", "date_column", "the spec's extraction date column, quoted by quote_ident"),
    ("cdv_etl/read/__init__.py", "parsed", "parser_sql of a date parser over the alias t: code, no values"),
    ("cdv_etl/read/xlsx.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/read/xlsx.py", "_READ", "module constant: the read_xlsx call, its path, sheet and range bound"),
    ("cdv_etl/read/xlsx.py", "ROW_KEY_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/xlsx.py", "SHEET_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/xlsx.py", "SOURCE_ROW_COLUMN", "module constant: a staging column's name"),
    ("cdv_etl/read/xlsx.py", "quote_ident(c)", "a column letter (A…IV) made by _column_letters, quoted"),
    ("cdv_etl/read/xlsx.py", "quote_ident(n)", "a column of the partner's header, quoted"),
    ("cdv_etl/read/xlsx.py", "position", "a column's position (#n): an int from range/enumerate"),
    ("cdv_etl/read/xlsx.py", "_nonblank(f'#{position}')", "trim of a column position (#n) from range()"),
    ("cdv_etl/read/xlsx.py", "_any_text(letters)", "coalesce over column letters made by _column_letters, quoted"),
    ("cdv_etl/read/xlsx.py", "table", "_sheet_table(index): stg_sheet_ and an int"),
    ("cdv_etl/read/xlsx.py", "_sheet_table(index)", "stg_sheet_ and an int from enumerate"),
    ("cdv_etl/read/xlsx.py", "quote_ident(_column_letters(i + 1))", "a column letter made from an int, quoted"),
    ("cdv_etl/cli_specs.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/cli_specs.py", "CANONICAL_TABLE", "module constant: the canonical table's name"),
    ("cdv_etl/cli_specs.py", "c", "a column of the module constant PREVIEW_COLUMNS"),
    ("cdv_etl/validate/outputs.py", "_VALUE_CASE", "module constant: CASE over the fixed RAW_VALUE_COLUMN"),
    ("cdv_etl/validate/outputs.py", "_MESSAGE", "module constant: message_sql over the rules table and _VALUE_CASE"),
    ("cdv_etl/validate/outputs.py", "CANONICAL_TABLE", "module constant: the canonical table's name"),
    ("cdv_etl/validate/outputs.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/validate/outputs.py", "QUARANTINE_RECORD_COLUMNS", "column names: a module constant tuple"),
    ("cdv_etl/validate/parse.py", "typ", "a SQL type from the fixed constant table of _register_constants"),
    ("cdv_etl/validate/parse.py", "_q(k)", "a constant's column name (k_axis, k_<field>), quoted"),
    ("cdv_etl/validate/parse.py", "CANONICAL_TABLE", "module constant: the canonical table's name"),
    ("cdv_etl/validate/parse.py", "STAGING_TABLE", "module constant: the staging table's name"),
    ("cdv_etl/validate/parse.py", "_q(ROW_KEY_COLUMN)", "module constant, quoted"),
    ("cdv_etl/validate/parse.py", "_q(SOURCE_ROW_COLUMN)", "module constant, quoted"),
    ("cdv_etl/validate/parse.py", "_q(SHEET_COLUMN)", "module constant, quoted"),
    ("cdv_etl/validate/parse.py", "parsed['{field}']", "parser_sql over _q(column): identifiers, no values"),
    ("cdv_etl/validate/parse.py", "raw['{field}']", "_text(_q(column)): identifiers, no values"),
]


@dataclass(frozen=True)
class Piece:
    file: str
    line: int
    method: str
    source: str
    node: ast.expr


def _key(source: str) -> str:
    """Subscripts by a string literal are one entry per dict: parsed['year'] → parsed['{field}']."""
    return re.sub(r"^(\w+)\['\w+'\]$", r"\1['{field}']", source)


class _Module:
    def __init__(self, path: Path, rel: str | None = None) -> None:
        self.rel = rel or path.relative_to(ROOT).as_posix()
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.functions = {n.name: n for n in self.tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(self.tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent

    def scope(self, node: ast.AST) -> ast.AST:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                return node
        return self.tree

    def assignments(self, name: str, scope: ast.AST) -> list[ast.expr]:
        found: list[ast.expr] = []
        for node in ast.walk(scope):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign | ast.AugAssign)
                else []
            )
            value = getattr(node, "value", None)
            if value is not None and any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(value)
        if not found and scope is not self.tree:  # a module-level name used in a function
            return self.assignments(name, self.tree) if name not in _parameters(scope) else []
        return found

    def pieces(self, node: ast.expr, depth: int = 0, whole: bool = False) -> tuple[bool, list[ast.expr]]:
        """(built by formatting?, its non-constant pieces) for an expression giving SQL text.

        ``whole``: the expression is the entire SQL (the call's argument, or a local variable or
        a same-module function's result standing for it), so a call is followed into the
        function; a piece inside formatting is a leaf (``_q(name)``, ``int(n)``…).
        """
        if depth > 8:
            return False, [node]
        if isinstance(node, ast.Constant):
            return False, []
        if isinstance(node, ast.JoinedStr):
            out: list[ast.expr] = []
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    out += self.pieces(v.value, depth + 1)[1]
            return True, out
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
            left = self.pieces(node.left, depth + 1)[1]
            right_nodes = (
                node.right.elts if isinstance(node.op, ast.Mod) and isinstance(node.right, ast.Tuple) else [node.right]
            )
            right = [p for r in right_nodes for p in self.pieces(r, depth + 1)[1]]
            return True, left + right
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
            out = self.pieces(node.func.value, depth + 1)[1]
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                elements = arg.elts if isinstance(arg, ast.List | ast.Tuple) else [arg]
                out += [p for e in elements for p in self.pieces(e, depth + 1)[1]]
            return True, out
        if isinstance(node, ast.GeneratorExp | ast.ListComp | ast.SetComp):
            return self.pieces(node.elt, depth + 1)
        if isinstance(node, ast.IfExp):
            body, orelse = self.pieces(node.body, depth + 1, whole), self.pieces(node.orelse, depth + 1, whole)
            return body[0] or orelse[0], body[1] + orelse[1]
        if isinstance(node, ast.Name) and not node.id.isupper():
            values = self.assignments(node.id, self.scope(node))
            results = [self.pieces(v, depth + 1, whole) for v in values]
            if any(d for d, _ in results):  # only what formatting built: a text passed through is not
                return True, [p for d, ps in results if d for p in ps]
            if values and all(not ps for _, ps in results):  # constants only
                return False, []
            return False, [node]
        if whole and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.functions:
            returns = [
                n.value
                for n in ast.walk(self.functions[node.func.id])
                if isinstance(n, ast.Return) and n.value is not None
            ]
            results = [self.pieces(v, depth + 1, whole) for v in returns]
            if any(d for d, _ in results):
                return True, [p for d, ps in results if d for p in ps]
        return False, [node]

    def sql_pieces(self) -> Iterator[Piece]:
        for node in ast.walk(self.tree):
            if not (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_METHODS
            ):
                continue
            first = (
                node.args[0] if node.args else next((k.value for k in node.keywords if k.arg in ("query", "sql")), None)
            )
            if first is None:
                continue
            dynamic, pieces = self.pieces(first, whole=True)
            if dynamic:
                for p in pieces:
                    yield Piece(self.rel, node.lineno, node.func.attr, ast.unparse(p), p)


def _parameters(fn: ast.AST) -> set[str]:
    args = getattr(fn, "args", None)
    if args is None:
        return set()
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}


def scan(paths: list[Path]) -> list[Piece]:
    return [p for path in paths for p in _Module(path).sql_pieces()]


def project_files() -> list[Path]:
    return sorted(f for d in SCANNED for f in (ROOT / d).rglob("*.py"))


def value_like_names(source: str) -> list[str]:
    """Identifiers in the expression that look like values, outside identifier-quoting calls."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in QUOTERS:
            return
        if isinstance(node, ast.Name) and not node.id.isupper() and VALUE_LIKE.search(node.id):  # constants are fine
            found.append(node.id)
        elif isinstance(node, ast.Attribute) and VALUE_LIKE.search(node.attr):
            found.append(node.attr)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source.replace("{field}", "field"), mode="eval"))
    return found


# -- the tests ---------------------------------------------------------------------------------


def test_sql_is_never_built_from_values() -> None:
    allowed = {(f, e) for f, e, _ in ALLOWLIST}
    unexpected = [p for p in scan(project_files()) if (p.file, _key(p.source)) not in allowed]
    assert not unexpected, (
        "SQL built by string formatting with a new piece:\n"
        + "\n".join(f"  {p.file}:{p.line}: {{{p.source}}} in the SQL passed to .{p.method}()" for p in unexpected)
        + f"\n→ {NEXT_STEP}"
    )


def test_allowlist_is_tight_and_justified() -> None:
    seen = {(p.file, _key(p.source)) for p in scan(project_files())}
    stale = [(f, e) for f, e, _ in ALLOWLIST if (f, e) not in seen]
    assert not stale, f"allowlist entries that match nothing any more (remove them): {stale}"
    assert len({(f, e) for f, e, _ in ALLOWLIST}) == len(ALLOWLIST), "duplicate allowlist entries"
    assert all(len(reason) >= 10 for _, _, reason in ALLOWLIST), "every entry needs a reason"


def test_no_allowlisted_piece_names_a_value() -> None:
    """Values from files, file names or users are parameters; identifiers go through a quoting function."""
    risky = [(f, e, value_like_names(e)) for f, e, _ in ALLOWLIST if value_like_names(e)]
    assert not risky, f"allowlisted pieces naming value-like variables outside {sorted(QUOTERS)}: {risky}"


def test_scanner_finds_every_kind_of_formatting(tmp_path: Path) -> None:
    """The scan itself: each way of pasting a value into SQL is found; parameters and constants are not."""
    code = tmp_path / "cdv_etl" / "sample_module.py"
    code.parent.mkdir()
    code.write_text(
        """
TABLE = "files"

def _q(name):
    return '"' + name.replace('"', '""') + '"'

def build(name):
    return f"SELECT * FROM t WHERE name = '{name}'"

def bad(con, path, partner, value, query, ids, col):
    con.execute(f"SELECT * FROM files WHERE file_name = '{path.name}'")
    con.execute("SELECT * FROM files WHERE partner = '%s'" % partner)
    con.execute("SELECT * FROM files WHERE partner = '{}'".format(value))
    con.execute("SELECT * FROM files WHERE partner = '" + partner + "'")
    sql = f"SELECT {query}"
    con.sql(sql)
    con.executemany("INSERT INTO t VALUES " + ", ".join(f"({i})" for i in ids))
    con.query(build(value))
    con.execute(f"SELECT {_q(col)} FROM {TABLE}")

def good(con, path):
    con.execute("SELECT * FROM files WHERE file_name = ?", [path.name])
    con.execute("SELECT " + "1")
    sql = "SELECT 2"
    con.execute(sql)
""",
        encoding="utf-8",
    )
    pieces = sorted((p.line, p.method, p.source) for p in _Module(code, rel="sample").sql_pieces())
    assert pieces == [
        (11, "execute", "path.name"),
        (12, "execute", "partner"),
        (13, "execute", "value"),
        (14, "execute", "partner"),
        (16, "sql", "query"),
        (17, "executemany", "i"),
        (18, "query", "name"),
        (19, "execute", "TABLE"),
        (19, "execute", "_q(col)"),
    ]
    assert value_like_names("path.name") and value_like_names("partner") and value_like_names("query")
    assert not value_like_names("_q(name)") and not value_like_names("quote_ident(c)")
    assert not value_like_names("_VALUE_CASE") and value_like_names("f(file_name)")
    assert value_like_names("_sql_literal(value)")


def test_ruff_finds_no_sql_injection_vector() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [str(ruff), "check", "--select", "S608", "--no-cache", *SCANNED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

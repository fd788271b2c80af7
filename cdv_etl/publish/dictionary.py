"""The data dictionary: every public view, table macro and column, from the warehouse's own comments.

The views' comments live in their SQL (``COMMENT ON VIEW``); the docs of their columns
(``warehouse/columns.yaml``) and of the table macros (their SQL) in the ``schema_docs`` table,
on a DuckDB file and a DuckLake alike (DuckLake refuses ``COMMENT ON COLUMN`` of a view and
``COMMENT ON MACRO``). This module only reads them back, with ``duckdb_views()``,
``duckdb_columns()`` and ``duckdb_functions()`` of the warehouse's own catalog, so the
dictionary describes the warehouse it was built from, whatever its version. Then come the
quarantine's rule codes and their explanations, from the programme's rules
(``schemas.canonical.RULES``, read in ``rule_explanations``).

The page is in French, the analysts' language, like the comments; the names (views, macros,
columns, rule codes) are the warehouse's English identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from cdv_etl.errors import CdvError
from cdv_etl.load.warehouse import PUBLIC_VIEWS
from cdv_etl.sql import quote_ident as _quote_ident
from schemas.canonical import RULES

NO_COMMENT = "**(sans commentaire)**"
RULES_ANCHOR = "codes-des-règles"
"""The anchor GitHub gives the heading "Codes des règles" (lower case, spaces as hyphens)."""


def rule_explanations() -> list[tuple[str, str]]:
    """Each rule's code and its explanation, in quarantine order: the one place the dictionary reads RULES."""
    return [(r.id, r.explanation) for r in sorted(RULES.values(), key=lambda r: r.order)]


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    comment: str | None


@dataclass(frozen=True)
class Entry:
    """A public view or table macro and its columns."""

    kind: str  # view | macro
    name: str
    comment: str | None
    columns: list[Column]
    parameters: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Dictionary:
    entries: list[Entry]
    missing_views: list[str]

    @property
    def undocumented(self) -> list[str]:
        """Public views, macros and view columns that carry no comment (macro columns borrow theirs)."""
        found = [f"view {v} (absent from the warehouse)" for v in self.missing_views]
        for e in self.entries:
            if not e.comment:
                found.append(f"{e.kind} {e.name}")
            if e.kind == "view":
                found.extend(f"column {e.name}.{c.name}" for c in e.columns if not c.comment)
        return found


def _macro_columns(con: duckdb.DuckDBPyConnection, name: str, parameters: int) -> list[tuple[str, str]]:
    """The columns a table macro returns: DESCRIBE a call with NULL for each argument it needs."""
    for count in range(parameters + 1):
        args = ", ".join(["NULL"] * count)
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM {_quote_ident(name)}({args})").fetchall()  # noqa: S608 - a catalog name
        except duckdb.Error:
            continue
        return [(str(r[0]), str(r[1])) for r in rows]
    return []


def read_dictionary(con: duckdb.DuckDBPyConnection) -> Dictionary:
    """Public views (in PUBLIC_VIEWS order), then the table macros, with their comments.

    Each catalog query keeps to ``current_database()``: on a lake, the memory catalog has a ``main`` too.
    """
    has_docs = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'schema_docs'"
    ).fetchone()
    if not has_docs or not has_docs[0]:
        raise CdvError(
            "this warehouse has no schema_docs table: it was built by an older cdv-etl",
            "run cdv-etl init (it upgrades the warehouse in place), then publish it (cdv-etl publish)",
        )
    docs = {
        (kind, name, column): comment
        for kind, name, column, comment in con.execute(
            "SELECT kind, name, column_name, comment FROM schema_docs"
        ).fetchall()
    }
    views = dict(
        con.execute(
            "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal "
            "AND database_name = current_database() AND schema_name = 'main' AND view_name IN (SELECT unnest(?))",
            [list(PUBLIC_VIEWS)],
        ).fetchall()
    )
    columns: dict[str, list[Column]] = {}
    for table, name, data_type in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND table_name IN (SELECT unnest(?)) "
        "ORDER BY table_name, column_index",
        [list(PUBLIC_VIEWS)],
    ).fetchall():
        columns.setdefault(table, []).append(Column(name, data_type, docs.get(("column", table, name)) or None))
    entries = [Entry("view", v, views[v] or None, columns.get(v, [])) for v in PUBLIC_VIEWS if v in views]

    # A macro's columns are those of the public views: each borrows the comment of the
    # first public view (in PUBLIC_VIEWS order) with a column of that name.
    by_name: dict[str, str] = {}
    for e in entries:
        for c in e.columns:
            if c.comment:
                by_name.setdefault(c.name, c.comment)
    macros = con.execute(
        "SELECT function_name, parameters FROM duckdb_functions() WHERE NOT internal "
        "AND database_name = current_database() AND schema_name = 'main' AND function_type = 'table_macro' "
        "ORDER BY function_name"
    ).fetchall()
    for name, parameters in macros:
        cols = [Column(n, t, by_name.get(n)) for n, t in _macro_columns(con, name, len(parameters))]
        entries.append(Entry("macro", name, docs.get(("macro", name, None)) or None, cols, list(parameters)))
    return Dictionary(entries, [v for v in PUBLIC_VIEWS if v not in views])


def _md(text: str | None) -> str:
    if not text:
        return NO_COMMENT
    return " ".join(text.split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    """The anchor GitHub and most renderers give a heading made of one identifier."""
    return name.lower()


def to_markdown(d: Dictionary, source: str, generated_at: datetime | None = None) -> str:
    """The dictionary as one markdown page: contents, each view and macro with its columns, the rule codes."""
    when = (generated_at or datetime.now()).strftime("%d/%m/%Y %H:%M")
    out = [
        "# Dictionnaire des données de cdv-etl",
        "",
        f"Produit par `cdv-etl docs` le {when} à partir des commentaires de `{source}`.",
        "Chaque nom ci-dessous (vue, macro, colonne, code de règle) est une interface publique stable, "
        "en anglais ; les tables derrière sont privées.",
        "Les montants sont en euros `DECIMAL(18,2)`, exacts au centime ; les comptes sont des `BIGINT` ; "
        "les codes INSEE sont des chaînes de 5 caractères.",
        "",
        "## Sommaire",
        "",
    ]
    views = [e for e in d.entries if e.kind == "view"]
    macros = [e for e in d.entries if e.kind == "macro"]
    for e in views:
        out.append(f"- [`{e.name}`](#{_anchor(e.name)}) — {_md(e.comment)}")
    for e in macros:
        out.append(f"- [`{e.name}(…)`](#{_anchor(e.name)}) — macro de table : {_md(e.comment)}")
    out.append(f"- [Codes des règles](#{RULES_ANCHOR}) — pourquoi une ligne est en quarantaine")
    if d.missing_views:
        out += [
            "",
            "Absentes de cet entrepôt (construit par une version antérieure ?) : "
            + ", ".join(f"`{v}`" for v in d.missing_views),
        ]
    out += ["", "## Vues", ""]
    for e in views:
        out += _section(e)
    if macros:
        out += [
            "## Macros de table",
            "",
            "Elles s'appellent dans `FROM`, par exemple `SELECT * FROM financing_as_of(DATE '2024-12-31')`. "
            "Leurs colonnes portent les commentaires des colonnes de même nom des vues.",
            "",
        ]
        for e in macros:
            out += _section(e)
    out += [
        "## Codes des règles",
        "",
        "Une ligne qui enfreint une règle du programme est mise en quarantaine (vue `quarantine`, "
        "`cdv-etl quarantine`) : `rule` donne la première règle enfreinte, `all_rules` toutes.",
        "",
        "| code | explication |",
        "|---|---|",
    ]
    out += [f"| `{code}` | {_md(text)} |" for code, text in rule_explanations()]
    return "\n".join(out).rstrip() + "\n"


def _section(e: Entry) -> list[str]:
    lines = [f"### {e.name}", ""]
    if e.kind == "macro":
        lines += [f"Macro de table : `{e.name}({', '.join(e.parameters)})`", ""]
    lines += [_md(e.comment), "", "| colonne | type | description |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.data_type} | {_md(c.comment)} |" for c in e.columns]
    return [*lines, ""]


def build_dictionary(
    con: duckdb.DuckDBPyConnection, source: str, generated_at: datetime | None = None
) -> tuple[str, list[str]]:
    """The markdown page and what is undocumented (empty when every name has its comment)."""
    d = read_dictionary(con)
    return to_markdown(d, source, generated_at), d.undocumented

"""SQL text helpers. Values always travel as parameters; only identifiers are ever quoted into text."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A DuckDB identifier, double-quoted (embedded quotes doubled): safe for any column or view name."""
    return '"' + name.replace('"', '""') + '"'

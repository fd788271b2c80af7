"""The data dictionary (`cdv-etl docs`): every public view and column, with the warehouse's comments."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import fresh_settings, run_cli

from cdv_etl.config import Settings
from cdv_etl.load.warehouse import PUBLIC_VIEWS
from cdv_etl.publish.dictionary import NO_COMMENT, build_dictionary


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return fresh_settings(tmp_path_factory.mktemp("docs"))


def _sections(markdown: str) -> dict[str, list[tuple[str, str, str]]]:
    """Section title → its table's rows (column, type, description)."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            found[current] = []
        elif current and (m := re.fullmatch(r"\| `([^`]+)` \| ([^|]+) \| (.*) \|", line)):
            found[current].append((m.group(1), m.group(2).strip(), m.group(3).strip()))
    return found


def test_docs_lists_every_public_view_with_all_its_columns_and_comments(warehouse: Settings, tmp_path: Path) -> None:
    out = tmp_path / "docs" / "data_dictionary.md"
    run_cli(["docs", "-w", str(warehouse.warehouse), "-o", str(out)], tmp_path)
    markdown = out.read_text(encoding="utf-8")
    sections = _sections(markdown)
    con = duckdb.connect(str(warehouse.published_path), read_only=True)
    for view in PUBLIC_VIEWS:
        assert view in sections, f"{view} missing from the dictionary"
        expected = con.execute(
            "SELECT c.column_name, c.data_type, d.comment FROM duckdb_columns() AS c "
            "LEFT JOIN schema_docs AS d "
            "ON d.kind = 'column' AND d.name = c.table_name AND d.column_name = c.column_name "
            "WHERE c.table_name = ? ORDER BY c.column_index",
            [view],
        ).fetchall()
        assert [(c, t) for c, t, _ in sections[view]] == [(c, t) for c, t, _ in expected], view
        for (column, _, described), (_, _, comment) in zip(sections[view], expected, strict=True):
            assert described != NO_COMMENT and described == " ".join(comment.split()).replace("|", "\\|"), column
        view_comment = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = ?", [view]).fetchone()[0]
        assert f"[`{view}`](#{view}) — {view_comment.replace('|', chr(92) + '|')}" in markdown
    for macro in ("financing_as_of", "engaged_as_of", "changes_between"):
        assert sections[macro] and all(d != NO_COMMENT for _, _, d in sections[macro]), macro
    assert NO_COMMENT not in markdown


def test_docs_prints_to_stdout_by_default(warehouse: Settings, tmp_path: Path) -> None:
    out = run_cli(["docs", "-w", str(warehouse.warehouse)], tmp_path).stdout
    assert out.startswith("# Dictionnaire des données de cdv-etl") and "### v_changes" in out


def test_an_uncommented_column_is_flagged(warehouse: Settings, tmp_path: Path) -> None:
    copy = tmp_path / "wh" / "cdv.duckdb"
    copy.parent.mkdir()
    shutil.copyfile(warehouse.warehouse, copy)
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM schema_docs WHERE kind = 'column' AND name = 'financing' AND column_name = 'amount_eur'")
    con.execute("DELETE FROM schema_docs WHERE kind = 'macro' AND name = 'engaged_as_of'")
    con.execute("COMMENT ON VIEW v_changes IS NULL")
    markdown, undocumented = build_dictionary(con, str(copy))
    con.close()
    assert undocumented == ["column financing.amount_eur", "view v_changes", "macro engaged_as_of"]
    assert f"| `amount_eur` | DECIMAL(18,2) | {NO_COMMENT} |" in markdown
    proc = run_cli(["docs", "--live", "-w", str(copy), "-o", str(tmp_path / "d.md")], tmp_path, ok=False)
    assert proc.returncode == 1 and "financing.amount_eur" in proc.stderr


def test_analyst_commands_have_help(tmp_path: Path) -> None:
    for command in ("changes", "docs", "export", "report"):
        out = run_cli([command, "--help"], tmp_path).stdout
        assert "Usage" in out and "--warehouse" in out and "--live" in out, command

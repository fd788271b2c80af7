"""The published warehouse: a load never blocks a reader, a reader never sees a half-loaded state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
from analyst_helpers import demo_warehouse, never_holding_specs, run_cli

from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.pipeline import open_pipeline

# What a reader asks: engaged per partner, with the files and rows behind it. A state between
# two files of a run, or a file half written, would give an answer that is neither before nor after.
QUESTION = """
SELECT partner, engaged_eur::VARCHAR, file_id,
       (SELECT count(*) FROM financing_history) AS history_rows,
       (SELECT count(*) FROM file_loads) AS files
FROM v_financing_by_partner ORDER BY partner
"""

# The reader: another process, opening the published file read-only for each query (DuckDB opens
# by path, so each query sees whichever file the path names at that moment), until told to stop.
READER = """
import json, os, sys, duckdb
path, out, stop, question = sys.argv[1:5]
with open(out, "w", encoding="utf-8") as fh:
    while not os.path.exists(stop):
        try:
            con = duckdb.connect(path, read_only=True)
            try:
                answer = {"ok": [list(r) for r in con.execute(question).fetchall()]}
            finally:
                con.close()
        except Exception as exc:
            answer = {"error": repr(exc)}
        fh.write(json.dumps(answer) + "\\n")
        fh.flush()
"""


def ask(path: Path) -> list[list[Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [list(r) for r in con.execute(QUESTION).fetchall()]
    finally:
        con.close()


def answers(out: Path) -> list[dict[str, Any]]:
    lines = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_readers_see_the_state_before_or_after_a_load_never_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = demo_warehouse(tmp_path, loads=1)
    # The next round is drawn afresh: the ingest below takes it whole (none held), in one run.
    monkeypatch.setenv("CDV_SPECS", str(never_holding_specs(tmp_path / "specs")))
    before = ask(s.published_path)
    # Its three text exports (reading workbooks is not the point, and the reader spins all along).
    exports = [
        p for p in generate_demo_exports(tmp_path / "next", today=date(2025, 6, 15), seed=7) if p.suffix != ".xlsx"
    ]
    assert len(exports) == 3
    out, stop = tmp_path / "answers.jsonl", tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(s.published_path), str(out), str(stop), QUESTION])
    try:
        wait_for(lambda: len(answers(out)) >= 3, 600, "the reader's first answers")
        # The load: the command line, three files, each in its own transaction, then one publish.
        run_cli(["ingest", "-w", str(s.warehouse), *map(str, exports)], tmp_path)
        # ... and a few more publishes of the same state: more renames under the reader's feet.
        for _ in range(3):
            with open_pipeline(s, need_reference=False) as pipe:
                pipe.publish()
        after = ask(s.published_path)
        seen = len(answers(out))
        wait_for(lambda: len(answers(out)) >= seen + 5, 600, "the reader's answers after the load")
    finally:
        stop.touch()
        reader.wait(timeout=600)
    got = answers(out)
    errors = [a["error"] for a in got if "error" in a]
    assert errors == []
    assert before != after
    states = ["before" if a["ok"] == before else "after" if a["ok"] == after else "other" for a in got]
    assert "other" not in states, [a for a in got if a["ok"] not in (before, after)][:1]
    assert len(got) >= 20 and states[0] == "before" and states[-1] == "after"
    assert "before" not in states[states.index("after") :]  # once renamed, the old state is gone


def test_the_live_warehouse_is_locked_during_a_load_the_published_copy_is_not(tmp_path: Path) -> None:
    """Why the published copy exists: DuckDB refuses other processes while one writes."""
    s = demo_warehouse(tmp_path, loads=1)
    probe = (
        "import sys, duckdb\n"
        "try:\n"
        "    print(duckdb.connect(sys.argv[1], read_only=True)"
        ".execute('SELECT count(*) FROM financing').fetchone()[0])\n"
        "except duckdb.IOException as exc:\n"
        "    print('locked' if 'lock' in str(exc).lower() else repr(exc))\n"
    )
    with open_pipeline(s):
        live = subprocess.run([sys.executable, "-c", probe, str(s.warehouse)], capture_output=True, text=True)
        published = subprocess.run([sys.executable, "-c", probe, str(s.published_path)], capture_output=True, text=True)
        sql = run_cli(
            ["sql", "-w", str(s.warehouse), "--format", "csv", "SELECT count(*) AS n FROM financing"], tmp_path
        )
    assert live.stdout.strip() == "locked", live.stdout + live.stderr
    count = int(published.stdout.strip())
    assert count > 0 and sql.stdout.splitlines() == ["n", str(count)]

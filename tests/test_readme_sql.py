"""The README's SQL examples run on a warehouse holding the demo exports (docs kept true)."""

from __future__ import annotations

import re
from pathlib import Path

from analyst_helpers import demo_warehouse
from conftest import ROOT

from cdv_etl.pipeline import open_pipeline


def readme_sql() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    statements = [s.strip() for b in blocks for s in b.split(";")]
    inline = re.findall(r'cdv-etl sql "([^"]+)"', text)
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())] + inline


def test_every_readme_query_runs(tmp_path: Path) -> None:
    with open_pipeline(demo_warehouse(tmp_path, loads=1)) as pipe:  # the session's, every demo export loaded
        queries = readme_sql()
        assert len(queries) >= 8
        for query in queries:
            pipe.con.execute(query).fetchall()
        lens = pipe.con.execute("SELECT count(*) FROM financing WHERE convention_id = 'ACV113'").fetchone()[0]
    assert lens > 0  # the demo finances the Lens–Liévin convention of the README's example

"""Run artifacts for the Prefect UI: the files, the rejected rows, the consolidated figures.

Built from the published (read-only) warehouse after the run, so they show what analysts see.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from cdv_etl.publish.tables import SUMMARY_QUERIES, euros


def _euros(v: Any) -> str:
    return euros(Decimal(v)) if v not in (None, "") else "—"


def files_table(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        ok = r.get("control_total_ok")
        check = "—" if ok is None else ("ok" if ok else f"off by {_euros(r.get('control_total_diff_eur'))}")
        rows.append(
            {
                "file": r["file_name"],
                "partner": r.get("partner") or "?",
                "status": r["status"],
                "rows read": r.get("rows_read", 0),
                "rows loaded": r.get("rows_loaded", 0),
                "rows quarantined": r.get("rows_quarantined", 0),
                "engaged": _euros(r.get("engaged_amount_eur")),
                "control total": _euros(r.get("control_total_eur")),
                "control check": check,
                "moved to": r.get("moved_to", ""),
                "message": r.get("message", ""),
            }
        )
    return rows


def quarantine_table(published: Path, file_ids: Sequence[int]) -> list[dict[str, Any]]:
    if not file_ids or not published.exists():
        return []
    con = duckdb.connect(str(published), read_only=True)
    try:
        rows = con.execute(
            "SELECT partner, rule, count(*) AS n, min(file_name) FROM quarantine "
            "WHERE file_id IN (SELECT unnest(?)) GROUP BY ALL ORDER BY partner, n DESC, rule",
            [list(file_ids)],
        ).fetchall()
    finally:
        con.close()
    return [{"partner": p, "rule": rule, "rows quarantined": n, "file": f} for p, rule, n, f in rows]


def _md_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    def cell(v: Any, c: str) -> str:
        if isinstance(v, Decimal) and c.endswith("_eur"):
            return euros(v)
        return "—" if v is None else str(v).replace("|", "\\|")

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(v, c) for v, c in zip(r, columns, strict=True)) + " |\n" for r in rows)


def summary_markdown(published: Path, results: Sequence[dict[str, Any]], title: str) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [
        f"# {title}",
        "",
        "Files: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing new"),
        "",
    ]
    if published.exists():
        con = duckdb.connect(str(published), read_only=True)
        try:
            for heading, query in SUMMARY_QUERIES:
                cur = con.execute(query)
                columns = [d[0] for d in cur.description or []]
                lines += [f"## {heading}", "", _md_table(columns, cur.fetchall()), ""]
        finally:
            con.close()
    return "\n".join(lines)


def publish_artifacts(published: Path, results: Sequence[dict[str, Any]], *, prefix: str | None, title: str) -> None:
    """Files table, rejected rows per rule and partner, and the summary; keyed when ``prefix``."""

    def key(name: str) -> str | None:
        return f"{prefix}-{name}" if prefix else None

    create_table_artifact(files_table(results), key=key("files"), description=f"{title}: the files of this run")
    ids = [
        int(r["file_id"])
        for r in results
        if r.get("file_id") and r["status"] == "loaded" and not r.get("already_recorded")
    ]
    create_table_artifact(
        quarantine_table(published, ids)
        or [{"partner": "—", "rule": "no rejected rows", "rows quarantined": 0, "file": "—"}],
        key=key("quarantine"),
        description=f"{title}: rejected rows per rule and partner",
    )
    create_markdown_artifact(
        summary_markdown(published, results, title),
        key=key("summary"),
        description=f"{title}: totals by axis and partner, envelope consumption",
    )


def link_report(report: Path, *, key: str | None) -> None:
    """Link the steering committee's HTML report (written by the core run) from the run."""
    create_link_artifact(
        report.resolve().as_uri(),
        link_text=f"Steering committee report ({report.name})",
        key=key,
        description="Self-contained HTML report: totals by axis, partner and year, envelopes, "
        "conventions, data quality",
    )

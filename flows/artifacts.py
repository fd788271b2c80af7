"""Run artifacts for the Prefect UI, in French: the files, the rejected rows, the consolidated figures.

Built from the published (read-only) warehouse after the run, so they show what analysts see.
One number style, the French one: amounts as ``1 234 567,89 €`` (``euros``), counts with the
same narrow no-break space between thousands, percentages as ``12,3 %``.

The UI renders each table cell as markdown on one line (``white-space: nowrap``) in a column of
about 844 px at a 1400 px window (the artifact's page has a side panel): the files table puts
the partner under the file name (a markdown hard break, ``"  \n"``) to fit, and long texts of
the details table are broken into lines the same way.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from cdv_etl.inbox import LEFT_IN_INBOX
from cdv_etl.publish.reader import ReadTarget, read_only, readable
from cdv_etl.publish.tables import SUMMARY_LABELS, SUMMARY_QUERIES, euros

NOTHING_NEW = "rien de nouveau"

STATUS = {"loaded": "chargé", "duplicate": "doublon", "held": "retenu", "rejected": "rejeté", "failed": "échec"}
"""A file's status as the artifacts show it."""

FILE_PARTNER = "fichier · partenaire"
BREAK = "  \n"
"""A markdown hard break: a new line inside a table cell of the UI."""
FILE, PARTNER, STATUS_COL, READ, LOADED, QUARANTINED, ENGAGED = (
    "fichier",
    "partenaire",
    "statut",
    "lignes lues",
    "chargées",
    "en quarantaine",
    "engagé",
)
CONTROL_TOTAL, CHECK, RECONCILIATION, MOVED_TO, MESSAGE, RULE = (
    "total de contrôle",
    "contrôle",
    "rapprochement",
    "déplacé vers",
    "message",
    "règle",
)
TOTAL = "Total"


def count(n: Any) -> str:
    """12 345 — French thousands separator (the narrow no-break space of ``euros``)."""
    return f"{int(n or 0):,}".replace(",", "\u202f")


def _euros(v: Any) -> str:
    return euros(Decimal(v)) if v not in (None, "") else "—"


def _pct(v: Decimal | float) -> str:
    return f"{Decimal(v):.1f}".replace(".", ",") + "\u202f%"


def lines(text: str, width: int = 50) -> str:
    """``text`` in lines of at most ``width`` characters (at spaces), for a cell of the UI."""
    return BREAK.join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)) or text


def files_table(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The essentials of each file, and a total row; an empty night is one row « rien de nouveau »."""
    if not results:
        return [{FILE_PARTNER: NOTHING_NEW, STATUS_COL: "—", READ: "0", LOADED: "0", QUARANTINED: "0"}]
    rows = [
        {
            FILE_PARTNER: f"{r['file_name']}{BREAK}{r.get('partner') or '?'}",
            STATUS_COL: STATUS[r["status"]],
            READ: count(r.get("rows_read")),
            LOADED: count(r.get("rows_loaded")),
            QUARANTINED: count(r.get("rows_quarantined")),
            ENGAGED: _euros(r.get("engaged_amount_eur")),
        }
        for r in results
    ]
    loaded = [r for r in results if r["status"] == "loaded"]  # a duplicate's rows are already counted
    rows.append(
        {
            FILE_PARTNER: f"{TOTAL} (chargés : {count(len(loaded))})",
            STATUS_COL: "",
            READ: count(sum(int(r.get("rows_read") or 0) for r in loaded)),
            LOADED: count(sum(int(r.get("rows_loaded") or 0) for r in loaded)),
            QUARANTINED: count(sum(int(r.get("rows_quarantined") or 0) for r in loaded)),
            ENGAGED: euros(sum((Decimal(r.get("engaged_amount_eur") or 0) for r in loaded), Decimal(0))),
        }
    )
    return rows


def _control_split(published: ReadTarget, file_ids: Sequence[int]) -> dict[int, tuple[Decimal, ...]]:
    """file id → (control total, engaged, not engaged, quarantined, unexplained), from ``v_control_totals``."""
    if not file_ids or not readable(published):
        return {}
    with read_only(published) as con:
        rows = con.execute(
            "SELECT file_id, control_total_eur, engaged_amount_eur, not_engaged_amount_eur, "
            "quarantined_amount_eur, control_total_diff_eur FROM v_control_totals WHERE file_id IN (SELECT unnest(?))",
            [list(file_ids)],
        ).fetchall()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def reconciliation(total: Decimal, engaged: Decimal, not_engaged: Decimal, quarantined: Decimal, diff: Decimal) -> str:
    """How a file's control total splits: engaged + not engaged + quarantined (+ what no row explains)."""
    parts = [f"{euros(total)} =", f"{euros(engaged)} engagés", f"{euros(not_engaged)} non engagés"]
    parts.append(f"{euros(quarantined)} en quarantaine")
    if diff:
        parts.append(f"écart de {euros(diff)} qu'aucune ligne n'explique")
    # "+" ends a line: a line that began with "+ " would be a markdown list item
    return parts[0] + BREAK + f" +{BREAK}".join(parts[1:])


def _moved_to(moved: str | None) -> str:
    if moved == LEFT_IN_INBOX:
        return "laissé dans la boîte de dépôt"
    if not moved:
        return ""
    path = Path(moved)
    return f"{path.parent}/{BREAK}{path.name}"  # the folder, then the file's name there


def details_table(published: ReadTarget, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rest of each file: its control total and how it reconciles, where it went, the message."""
    split = _control_split(published, [int(r["file_id"]) for r in results if r.get("file_id")])
    rows = []
    for r in results:
        ok = r.get("control_total_ok")
        parts = split.get(int(r["file_id"])) if r.get("file_id") else None
        rows.append(
            {
                FILE: r["file_name"],
                CONTROL_TOTAL: _euros(r.get("control_total_eur")),
                CHECK: "—" if ok is None else ("ok" if ok else f"écart de {_euros(r.get('control_total_diff_eur'))}"),
                RECONCILIATION: reconciliation(*parts) if parts else "—",
                MOVED_TO: _moved_to(r.get("moved_to")),
                MESSAGE: lines(r.get("message") or ""),
            }
        )
    return rows


def quarantine_table(published: ReadTarget, file_ids: Sequence[int]) -> list[dict[str, Any]]:
    if not file_ids or not readable(published):
        return []
    with read_only(published) as con:
        rows = con.execute(
            "SELECT partner, rule, count(*) AS n, min(file_name) FROM quarantine "
            "WHERE file_id IN (SELECT unnest(?)) GROUP BY ALL ORDER BY partner, n DESC, rule",
            [list(file_ids)],
        ).fetchall()
    return [{PARTNER: p, RULE: rule, QUARANTINED: count(n), FILE: f} for p, rule, n, f in rows]


def _cell(v: Any, column: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, Decimal) and column.endswith("_eur"):
        return euros(v)
    if isinstance(v, Decimal | float) and column.endswith("_pct"):
        return _pct(v)
    if isinstance(v, int) and not isinstance(v, bool) and column != "year":
        return count(v)
    if isinstance(v, date):
        return f"{v:%d/%m/%Y}"
    return str(v).replace("|", "\\|")


def md_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """A markdown table with French headers (``SUMMARY_LABELS``) and French numbers."""
    head = "| " + " | ".join(SUMMARY_LABELS.get(c, c) for c in columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = ("| " + " | ".join(_cell(v, c) for v, c in zip(r, columns, strict=True)) + " |\n" for r in rows)
    return head + "".join(body)


def grand_total(con: duckdb.DuckDBPyConnection) -> str:
    """The total line: engaged euros and operations of the current exports."""
    engaged, operations, partners = con.execute(
        "SELECT coalesce(sum(engaged_eur), 0), coalesce(sum(operations), 0), count(*) FROM v_financing_by_partner "
        "WHERE operations > 0"
    ).fetchone() or (Decimal(0), 0, 0)
    return (
        f"**Total engagé : {euros(Decimal(engaged))}** — {count(operations)} opérations, "
        f"{count(partners)} partenaires (exports courants)"
    )


def files_line(results: Sequence[dict[str, Any]]) -> str:
    """« Fichiers : 6 (chargé : 5, rejeté : 1). », or « Fichiers : rien de nouveau. »"""
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    if not counts:
        return f"Fichiers : {NOTHING_NEW}."
    detail = ", ".join(f"{STATUS[s]} : {count(n)}" for s, n in sorted(counts.items()))
    return f"Fichiers : {count(len(results))} ({detail})."


def summary_markdown(published: ReadTarget, results: Sequence[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "", files_line(results), ""]
    if readable(published):
        with read_only(published) as con:
            lines += [grand_total(con), ""]
            for heading, query in SUMMARY_QUERIES:
                cur = con.execute(query)
                columns = [d[0] for d in cur.description or []]
                lines += [f"## {SUMMARY_LABELS.get(heading, heading)}", "", md_table(columns, cur.fetchall()), ""]
    return "\n".join(lines)


def publish_artifacts(
    published: ReadTarget, results: Sequence[dict[str, Any]], *, prefix: str | None, title: str
) -> None:
    """Files table, their details, rejected rows per rule and partner, and the summary; keyed when ``prefix``."""

    def key(name: str) -> str | None:
        return f"{prefix}-{name}" if prefix else None

    create_table_artifact(
        files_table(results),
        key=key("files"),
        description=f"{title} — {files_line(results)}",
    )
    if results:
        create_table_artifact(
            details_table(published, results),
            key=key("file-details"),
            description=f"{title} : total de contrôle et son rapprochement, destination, message de chaque fichier",
        )
    ids = [
        int(r["file_id"])
        for r in results
        if r.get("file_id") and r["status"] == "loaded" and not r.get("already_recorded")
    ]
    create_table_artifact(
        quarantine_table(published, ids) or [{PARTNER: "—", RULE: "aucune ligne rejetée", QUARANTINED: "0", FILE: "—"}],
        key=key("quarantine"),
        description=f"{title} : lignes rejetées par règle et partenaire",
    )
    create_markdown_artifact(
        summary_markdown(published, results, title),
        key=key("summary"),
        description=f"{title} : totaux par axe, partenaire et année, consommation des enveloppes",
    )


REPORT_TITLE = "Rapport du comité de pilotage"


def link_report(report: Path, published: ReadTarget, *, url: str | None, key: str | None) -> None:
    """The steering committee's HTML report from the run: a link to the report server when ``url``
    (``cdv-etl serve``), otherwise its key figures and where the file is (a ``file://`` link would
    not open from the UI)."""
    description = "Rapport HTML autonome : totaux par axe, partenaire et année, enveloppes, conventions, qualité"
    if url:
        create_link_artifact(url, link_text=f"{REPORT_TITLE} ({report.name})", key=key, description=description)
        return
    with read_only(published) as con:
        total = grand_total(con)
    create_markdown_artifact(
        f"# {REPORT_TITLE}\n\n{total}\n\nLe rapport est écrit dans `{report}` (et `latest.html` à côté) : "
        "l'ouvrir dans un navigateur sur cette machine. Sous `cdv-etl serve`, ce lien mène au rapport servi en HTTP.",
        key=key,
        description=description,
    )


FEEDBACK_TITLE = "Retours aux partenaires : lignes rejetées"


def feedback_markdown(feedback: dict[str, Path], published: ReadTarget, urls: dict[str, str | None]) -> str:
    """The feedback workbooks of the run, one line per partner: its rejected rows and euros, and
    the workbook's link (``urls``, on the report server) or, without a server, where the file is."""
    with read_only(published) as con:
        counts = {
            str(p): (n, Decimal(e or 0))
            for p, n, e in con.execute(
                "SELECT c.partner, count(*), sum(t.amount_eur) FROM quarantine_rows AS q "
                "LEFT JOIN quarantine_records AS t USING (file_id, row_key) "
                "JOIN current_files AS c USING (file_id) GROUP BY ALL"
            ).fetchall()
        }
    lines = [
        f"# {FEEDBACK_TITLE}",
        "",
        "| partenaire | lignes rejetées | montant concerné | classeur |",
        "|---|---|---|---|",
    ]
    for partner, path in sorted(feedback.items()):
        n, eur = counts.get(partner, (0, Decimal(0)))
        url = urls.get(partner)
        link = f"[{path.name}]({url})" if url else f"`{path}`"
        lines.append(f"| {partner} | {count(n)} | {euros(eur)} | {link} |")
    return "\n".join(lines) + "\n"


def link_feedback(
    feedback: dict[str, Path], published: ReadTarget, *, urls: dict[str, str | None], key: str | None
) -> None:
    """The run's feedback workbooks (``cdv_etl.inbox.write_feedback``) in one markdown artifact."""
    create_markdown_artifact(
        feedback_markdown(feedback, published, urls),
        key=key,
        description="Un classeur par partenaire : ses lignes rejetées telles qu'il les a envoyées, et pourquoi",
    )

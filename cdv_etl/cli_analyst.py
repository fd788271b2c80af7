"""Analyst commands (exports, data dictionary, report, changes between exports, feedback to partners).

``register(app)`` adds them to the ``cdv-etl`` command line (see ``cdv_etl.cli``). They read
the published copy of the warehouse (``--live`` reads the warehouse itself), never write it.
The shared helpers of ``cdv_etl.cli`` are imported when a command runs: ``cdv_etl.cli``
imports this module while it is being loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cdv_etl.errors import CdvError
from cdv_etl.load.backend import DuckLake

WarehouseOpt = Annotated[
    str | None,
    typer.Option(
        "--warehouse",
        "-w",
        help="Warehouse: a DuckDB file, ducklake:postgres:<libpq parameters> or ducklake:<catalog file> "
        "[env: CDV_WAREHOUSE; default warehouse/cdv.duckdb].",
    ),
]
LiveOpt = Annotated[
    bool, typer.Option(help="Read the warehouse itself (fails while a load runs) instead of the published copy.")
]


def _source(warehouse: str | None, live: bool) -> Path | DuckLake:
    from cdv_etl.cli import settings

    return settings(warehouse).read_target(live)


def changes(
    partner: Annotated[
        str | None,
        typer.Option("--partner", "-p", help="Partner code (default: every partner, its two latest exports)."),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Earlier export: file_id or file name (default: the export before --to)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Later export: file_id or file name (default: the partner's current export)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
    warehouse: WarehouseOpt = None,
    live: LiveOpt = False,
) -> None:
    """What changed between two exports of a partner, with the euros of each change.

    added, withdrawn, revised (the amount, axis, commune, year, instrument or status differs):
    the partner's doing. newly_valid (quarantined before, loaded now) and newly_quarantined
    (loaded before, quarantined now): an operation that only moved out of or into quarantine.
    Prints the operations and euros of each kind, then the changes. Without options: each
    partner's current export against the one before it.
    """
    from cdv_etl.cli import console, fail, print_rows
    from cdv_etl.publish import changes as ch
    from cdv_etl.publish.reader import read_only

    try:
        with read_only(_source(warehouse, live)) as con:
            if partner is None and from_ is None and to is None:
                cur = con.execute("SELECT * FROM v_changes WHERE to_is_current")
                columns, rows = [d[0] for d in cur.description or []], cur.fetchall()
                title = "Changes in each partner's current export"
            else:
                if partner is None:
                    found = {ch.partner_of(con, ref) for ref in (from_, to) if ref}
                    if None in found or len(found) != 1:
                        raise CdvError(
                            "cannot tell the partner from --from/--to",
                            "give --partner, and file_ids or names of its loaded exports (see `cdv-etl files`)",
                        )
                    partner = str(found.pop())
                frm, later = ch.pick_exports(con, partner, from_, to)
                columns, rows = ch.changes(con, frm, later)
                title = f"{partner}: from {frm} to {later}"
    except CdvError as exc:
        fail(exc)
    totals = ch.summary(columns, rows)
    line = f"{title}: {ch.summary_line(totals)}"
    if fmt == "table":
        console.print(line, markup=False, emoji=False, soft_wrap=True)
        print_rows(list(ch.SUMMARY_COLUMNS), [t.row() for t in totals], fmt, title="per kind")
        shown = [c for c in ch.TABLE_COLUMNS if c in columns]
        if partner is None:
            shown = ["partner", *shown]
        at = [columns.index(c) for c in shown]
        print_rows(shown, [tuple(r[i] for i in at) for r in rows], fmt, title="changes")
    else:
        print(line, file=sys.stderr)
        print_rows(columns, rows, fmt)


def docs(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Markdown file to write, e.g. docs/data_dictionary.md (default: print it)."
        ),
    ] = None,
    warehouse: WarehouseOpt = None,
    live: LiveOpt = False,
) -> None:
    """The data dictionary: every public view, table macro and column, from the warehouse's comments.

    Exits with 1 when a public view, macro or column has no comment (listed on stderr).
    """
    from cdv_etl.cli import console, err, fail
    from cdv_etl.publish.dictionary import build_dictionary
    from cdv_etl.publish.reader import read_only

    source = _source(warehouse, live)
    try:
        with read_only(source) as con:
            markdown, undocumented = build_dictionary(con, str(source))
    except CdvError as exc:
        fail(exc)
    if output is None:
        sys.stdout.write(markdown)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(markdown, encoding="utf-8")
        console.print(f"data dictionary written to {output}", markup=False, emoji=False)
    if undocumented:
        err.print("no comment: " + ", ".join(undocumented), style="yellow", markup=False, emoji=False)
        raise typer.Exit(1)


def export(
    source: Annotated[
        str, typer.Argument(help="A public view's name (e.g. financing) or a SQL query on the warehouse.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (replaced whole).")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="xlsx, csv or parquet (default: from the file's suffix).")
    ] = None,
    warehouse: WarehouseOpt = None,
    live: LiveOpt = False,
) -> None:
    """Export a view or a query to Excel, CSV or Parquet; amounts stay exact.

    Excel: bold frozen header, euro formats, fitted columns. Text cells that could run as
    formulas (beginning with = + - @, a tab or a carriage return) are neutralised: kept as
    text in Excel, prefixed with ' in CSV. Excel holds at most 32,767 characters a cell: a
    longer text is cut, the cells cut are listed (and in the workbook's about sheet), and
    the command exits with 1; csv and parquet keep every text whole.
    """
    from cdv_etl.cli import console, err, fail
    from cdv_etl.publish.export import export as run_export
    from cdv_etl.publish.reader import read_only

    path = _source(warehouse, live)
    try:
        with read_only(path) as con:
            result = run_export(con, source, output, fmt, origin=str(path))
    except CdvError as exc:
        fail(exc)
    console.print(
        f"{result.rows} rows × {len(result.columns)} columns written to {result.path} ({result.fmt})",
        markup=False,
        emoji=False,
    )
    if result.changed_count:
        shown = result.changed[:10]
        lines = [f"  {c}" for c in shown]
        if result.changed_count > len(shown):
            lines.append(f"  … and {result.changed_count - len(shown):,} more (listed in the workbook's about sheet)")
        err.print(
            f"{result.changed_count:,} cell(s) changed to fit Excel:\n" + "\n".join(lines) + "\n"
            "  → for the exact text, export to csv or parquet (e.g. --format parquet)",
            style="yellow",
            markup=False,
            emoji=False,
        )
        raise typer.Exit(1)


def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    warehouse: WarehouseOpt = None,
    live: LiveOpt = False,
) -> None:
    """The steering committee's report: one self-contained HTML page with charts.

    Totals by axis, partner and year, the axis × partner matrix, envelope consumption, the
    conventions that receive most and least, changes since the previous exports, data quality.
    Opening it fetches nothing from the network.
    """
    from cdv_etl.cli import console, fail
    from cdv_etl.publish.report import build_report

    try:
        page = build_report(_source(warehouse, live))
    except CdvError as exc:
        fail(exc)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    console.print(f"report written to {output} ({len(page) // 1024} KiB)", markup=False, emoji=False)


def feedback(
    partner: Annotated[str, typer.Option("--partner", "-p", help="Partner code (e.g. bdt, anah).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write, replaced whole (default: rejets_PARTNER.xlsx)."),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="xlsx or csv (default: from the file's suffix).")
    ] = None,
    warehouse: WarehouseOpt = None,
    live: LiveOpt = False,
) -> None:
    """The rejected rows of a partner's current export, to send back to the partner.

    Each row as the partner sent it (its row, sheet and every cell, in the partner's column
    order), and beside it the reason in plain French, the column and value at fault and the
    euros concerned; a second sheet sums the rows and euros per reason (csv: the rows only).
    Headers are French. An export with no rejected row gets a workbook saying so.
    Exits with 2 for an unknown partner or a partner with no loaded export.
    """
    from cdv_etl.cli import console, fail
    from cdv_etl.publish import feedback as fb
    from cdv_etl.publish.reader import read_only

    out = output or Path(f"rejets_{partner}.xlsx")
    try:
        fb.format_for(out, fmt)
        with read_only(_source(warehouse, live)) as con:
            found = fb.feedback(con, partner)
        fb.write(found, out, fmt)
    except CdvError as exc:
        fail(exc)
    console.print(f"{found.summary_line()}; written to {out}", markup=False, emoji=False, soft_wrap=True)
    for t in found.per_reason():
        unreadable = f" ({t.unreadable} without a readable amount)" if t.unreadable else ""
        console.print(
            f"  {t.rows:>6} row(s) {t.amount_eur:>18,.2f} €  {t.rule}: {t.explanation}{unreadable}",
            markup=False,
            emoji=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add the analyst commands to ``app``."""
    app.command()(changes)
    app.command()(docs)
    app.command()(export)
    app.command()(feedback)
    app.command()(report)

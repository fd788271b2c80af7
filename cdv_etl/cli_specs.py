"""Spec commands: ``cdv-etl specs`` (every spec and its status, or the reference) and
``cdv-etl spec check SPEC FILE`` (a dry run of a spec on a sample file).

``register(app)`` adds them to the ``cdv-etl`` command line (see ``cdv_etl.cli``). They never
open the warehouse for writing: ``spec check`` reads and validates the file in the reader's
sandbox, as an ingest does, and reads at most the reference communes of ``-w``'s warehouse.
The shared helpers of ``cdv_etl.cli`` are imported when a command runs: ``cdv_etl.cli``
imports this module while it is being loaded.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cdv_etl.errors import CdvError, FileRejected

if TYPE_CHECKING:  # imported by the commands that use them: `cdv-etl --help` stays light
    import duckdb

    from cdv_etl.specs import PartnerSpec

spec_app = typer.Typer(help="Write a partner spec and try it on a sample file.", no_args_is_help=True)

PREVIEW_COLUMNS = (
    "source_row",
    "sheet",
    "operation_id",
    "insee_code",
    "commune_label",
    "axis",
    "instrument",
    "amount_eur",
    "engagement_date",
    "year",
    "status",
    "counts_as_engaged",
)


@dataclass
class DryRun:
    """What ``spec check`` found: what an ingest of the file would do, nothing written."""

    spec: PartnerSpec
    reference: str
    """Where the reference communes came from."""
    columns: list[str] = field(default_factory=list)
    rejected: FileRejected | None = None
    extraction_date: date | None = None
    rows_read: int = 0
    preview_columns: list[str] = field(default_factory=list)
    preview: list[tuple[Any, ...]] = field(default_factory=list)
    by_rule: list[tuple[str, int, str]] = field(default_factory=list)
    """(rule, rows, first message) of the quarantined rows, each under its first rule."""
    control_total: Any = None

    @property
    def rows_quarantined(self) -> int:
        return sum(n for _, n, _ in self.by_rule)

    @property
    def rows_loaded(self) -> int:
        return self.rows_read - self.rows_quarantined


def reference_communes(warehouse: Path | None) -> tuple[frozenset[str], str]:
    """The reference communes to check against: ``warehouse``'s when it exists, else the bundled sample."""
    from cdv_etl.load.reference import SAMPLE_REFERENCE, read_reference, reference_codes

    if warehouse is not None and warehouse.exists():
        from cdv_etl.publish.reader import read_only

        with read_only(warehouse) as con:
            codes = reference_codes(con)
        return codes, f"the reference of the warehouse {warehouse} ({len(codes)} communes)"
    codes = frozenset(read_reference(SAMPLE_REFERENCE)["insee_code"].dropna())
    why = f"no warehouse at {warehouse}" if warehouse is not None else "no -w given"
    return codes, f"the bundled sample reference {SAMPLE_REFERENCE.name} ({len(codes)} communes; {why})"


def dry_run(
    spec: PartnerSpec,
    file: Path,
    *,
    communes: frozenset[str],
    reference: str,
    rows: int = 5,
    memory_limit: str = "512MiB",
    max_file_mb: float = 2048,
    today: date | None = None,
) -> DryRun:
    """Read, parse and validate ``file`` with ``spec`` as an ingest does, in the reader sandbox."""
    from cdv_etl.pipeline import read_and_validate
    from cdv_etl.read.sandbox import reader_connection
    from cdv_etl.validate.parse import CANONICAL_TABLE

    result = DryRun(spec=spec, reference=reference)
    with tempfile.TemporaryDirectory(prefix="cdv-check-") as tmp:
        reader = reader_connection(file, Path(tmp), memory_limit, excel=spec.format.type == "xlsx")
        try:
            try:
                raw, outputs, extracted = read_and_validate(
                    reader,
                    file,
                    spec,
                    Path(tmp),
                    communes=communes,
                    max_file_mb=max_file_mb,
                    today=today or date.today(),
                )
            except FileRejected as exc:
                result.rejected = exc
                result.columns = _staged_columns(reader)
                return result
            result.columns = raw.columns
            result.extraction_date = extracted
            result.rows_read = raw.rows_read
            result.control_total = raw.control_total
            reader.register("check_failures", outputs.failures)
            shown = [c for c in PREVIEW_COLUMNS if _shown(spec, c)]
            cols = ", ".join(f"c.{c}" for c in shown)
            cur = reader.execute(
                f"""SELECT {cols}, coalesce((SELECT string_agg(f.rule, ', ' ORDER BY f.rule_order)
                                            FROM check_failures AS f WHERE f.row_key = c.row_key), '') AS rules_broken
                    FROM {CANONICAL_TABLE} AS c ORDER BY c.row_key LIMIT ?""",  # noqa: S608 - constant SQL
                [rows],
            )
            result.preview_columns = [d[0] for d in cur.description or []]
            result.preview = cur.fetchall()
            result.by_rule = [
                (str(r), int(n), str(m))
                for r, n, m in reader.execute(
                    """SELECT rule, count(*), first(message ORDER BY row_key) FROM (
                         SELECT row_key, arg_min(rule, rule_order) AS rule, arg_min(message, rule_order) AS message
                         FROM check_failures GROUP BY row_key)
                       GROUP BY rule ORDER BY count(*) DESC, rule"""
                ).fetchall()
            ]
        finally:
            reader.close()
    return result


def _shown(spec: PartnerSpec, column: str) -> bool:
    """Whether the preview shows this canonical column: the sheet for workbooks, the label when given."""
    if column == "sheet":
        return spec.format.type == "xlsx"
    if column == "commune_label":
        return column in spec.fields
    return True


def _staged_columns(reader: duckdb.DuckDBPyConnection) -> list[str]:
    """The partner's columns the reader staged before the file was refused (none if it was not read)."""
    import duckdb

    from cdv_etl.read import STAGING_TABLE

    try:
        cur = reader.execute(f"SELECT * FROM {STAGING_TABLE} LIMIT 0")  # noqa: S608 - constant identifier
    except duckdb.Error:
        return []
    return [d[0] for d in cur.description or [] if not d[0].startswith("_")]


def mapping_rows(spec: PartnerSpec, columns: list[str] | None) -> list[tuple[str, str, str, str]]:
    """(canonical field, ← where it comes from, parser, found in the file) of each field the spec gives."""
    from cdv_etl.specs import CANONICAL_FIELDS, SHEET_COLUMN, did_you_mean

    out: list[tuple[str, str, str, str]] = []
    for name in CANONICAL_FIELDS:
        f = spec.fields.get(name)
        if f is None:
            continue
        if f.constant is not None:
            source, found = f"constant {f.constant!r}", "–"
        else:
            shown = ["sheet name" if c == SHEET_COLUMN else c for c in f.source_columns]
            source = " | ".join(shown)
            if columns is None:
                found = "?"
            else:
                missing = [c for c in f.source_columns if c != SHEET_COLUMN and c not in columns]
                hints = "".join(did_you_mean(c, columns) for c in missing)
                found = f"missing: {', '.join(missing)}{hints}" if missing else "yes"
        parser = f.parser + (f" × {f.scale}" if f.scale != 1 else "")
        out.append((name, source, parser, found))
    out.append(("axis", _axis_source(spec), "", ""))
    if "instrument" not in spec.fields:
        out.append(("instrument", f"default_instrument {spec.default_instrument!r}", "", ""))
    if "status" not in spec.fields:
        out.append(("status", f"default_status {spec.default_status!r}", "", ""))
    return out


def _axis_source(spec: PartnerSpec) -> str:
    if spec.axis is not None:
        return f"axis {spec.axis} on every row"
    if spec.axis_pattern is not None:
        return f"category, first group of axis_pattern {spec.axis_pattern!r}"
    if spec.axis_code:
        return "category read as an axis code (5, 'Axe 5', 'axe 5 - …')"
    return f"category through axis_map ({len(spec.axis_map or {})} labels)"


def _extraction_rule(spec: PartnerSpec) -> str:
    rule = spec.extraction_date
    if rule.source in ("filename", "cell"):
        where = "the file name" if rule.source == "filename" else "the title rows"
        return f"from {where}: pattern {rule.pattern!r}, format {rule.format!r}"
    if rule.source == "field":
        return f"from the JSON field {rule.field!r} ({rule.date_parser})"
    if rule.source == "column":
        return f"from the column {rule.column!r} ({rule.date_parser})"
    return "the day the file is received"


def print_dry_run(r: DryRun, file: Path) -> None:
    from cdv_etl.cli import console, err
    from cdv_etl.publish.tables import query_table

    spec = r.spec
    say: dict[str, Any] = {"markup": False, "emoji": False}
    matched = "matches" if spec.matches(file.name) else "does NOT match (an ingest would need --partner)"
    console.print(f"partner {spec.partner} ({spec.name}), format {spec.format.type}", **say)
    console.print(f"file {file.name}: {matched} file_pattern {spec.file_pattern!r}", **say)
    console.print(f"reference communes: {r.reference}", **say)
    if r.columns:
        console.print(f"columns found ({len(r.columns)}): {', '.join(r.columns)}", **say)
    console.print(
        query_table(
            ["canonical field", "← partner column", "parser", "found"],
            mapping_rows(spec, r.columns if r.columns else None),
            "How the columns map",
        )
    )
    used = {c for f in spec.fields.values() for c in f.source_columns}
    unused = [c for c in r.columns if c not in used and c != spec.extraction_date.column]
    if unused:
        console.print(f"columns not used: {', '.join(unused)}", **say)
    if r.rejected is not None:
        err.print(f"✗ the file would be rejected whole ({r.rejected.reason}): {r.rejected.message}", style="red", **say)
        if r.rejected.hint:
            err.print(f"  → {r.rejected.hint}", style="yellow", **say)
        return
    console.print(f"extraction date: {r.extraction_date} ({_extraction_rule(spec)})", **say)
    console.print(query_table(r.preview_columns, r.preview, f"First {len(r.preview)} rows, parsed"))
    console.print(
        f"{r.rows_read} rows read: {r.rows_loaded} would load, {r.rows_quarantined} would be quarantined", **say
    )
    if r.by_rule:
        console.print(query_table(["rule", "rows", "first message"], r.by_rule, "Quarantined rows by their first rule"))
    if r.control_total is not None:
        console.print(f"control total (footer): {r.control_total}", **say)
    console.print("nothing was written: no warehouse was opened for writing", **say)


@spec_app.command("check")
def check(
    spec_file: Annotated[Path, typer.Argument(help="The partner spec (YAML).", exists=True, dir_okay=False)],
    file: Annotated[Path, typer.Argument(help="A sample export of the partner.", exists=True, dir_okay=False)],
    warehouse: Annotated[
        Path | None,
        typer.Option(
            "--warehouse",
            "-w",
            help="Check communes against this warehouse's reference (default: the bundled sample reference).",
        ),
    ] = None,
    rows: Annotated[int, typer.Option(help="How many parsed rows to show.")] = 5,
) -> None:
    """Dry run of a spec on a sample file: the columns and how each maps, the extraction date,
    the first rows parsed, and how many rows would load or be quarantined, per rule.

    Reads and validates the file as an ingest does, in the reader's sandbox; writes nothing.
    Exit code 1 when the file would be rejected whole, 2 when the spec is invalid.
    """
    import duckdb

    from cdv_etl.cli import fail, settings
    from cdv_etl.specs import load_spec

    s = settings()
    try:
        spec = load_spec(spec_file)
        communes, reference = reference_communes(warehouse)
        result = dry_run(
            spec,
            file,
            communes=communes,
            reference=reference,
            rows=rows,
            memory_limit=s.memory_limit,
            max_file_mb=s.max_file_mb,
        )
    except CdvError as exc:
        fail(exc)
    except duckdb.Error as exc:
        fail(CdvError(f"{file.name}: cannot be read: {exc}", "check the file and the spec's format block"))
    print_dry_run(result, file)
    if result.rejected is not None:
        raise typer.Exit(1)


def specs(
    reference: Annotated[
        bool,
        typer.Option(
            "--reference", help="Print the spec reference (Markdown): cdv-etl specs --reference > docs/partner-specs.md"
        ),
    ] = False,
) -> None:
    """Every partner spec of CDV_SPECS (default schemas/partners) with its status: ok, or the error.

    Exit code 1 when a spec is invalid (its partner's files are rejected until it is fixed).
    """
    from cdv_etl.cli import console, fail, settings
    from cdv_etl.publish.tables import query_table
    from cdv_etl.specs import default_specs_dir, load_specs

    if reference:
        from cdv_etl.specs_doc import render_reference

        sys.stdout.write(render_reference())
        return
    s = settings()
    try:
        found = load_specs(s.specs_dir, warn=False)
    except CdvError as exc:
        fail(exc)
    rows: list[tuple[Any, ...]] = [
        (spec.partner, found.paths[p].name, spec.format.type, spec.file_pattern, "ok", "") for p, spec in found.items()
    ]
    for b in found.broken:
        problems = b.error.message.split("\n", 1)[-1].strip()
        rows.append((b.partner or "?", b.path.name, "", b.file_pattern or "", "error", problems))
    rows.sort(key=lambda r: r[1])
    console.print(
        query_table(
            ["partner", "file", "format", "file_pattern", "status", "message"],
            rows,
            f"specs in {s.specs_dir or default_specs_dir()}",
        )
    )
    if found.broken:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the spec commands to ``app``."""
    app.command()(specs)
    app.add_typer(spec_app, name="spec")

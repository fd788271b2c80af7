"""The ``cdv-etl`` command line."""

from __future__ import annotations

import atexit
import gc
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

from cdv_etl import offline
from cdv_etl.config import Settings
from cdv_etl.errors import CdvError
from cdv_etl.load.loader import NEEDS_ATTENTION, LoadResult
from cdv_etl.load.reference import SAMPLE_REFERENCE, ReferenceRefused, ReferenceResult
from cdv_etl.publish.tables import SUMMARY_QUERIES, as_csv, as_json, euros, load_results_table, query_table

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

# Start-up is part of every command: this module imports the standard library, typer and the
# light modules above, nothing else. DuckDB, rich and the pipeline (pandas, pandera, pyarrow)
# are imported by the commands that use them (tests/test_startup.py keeps it so).

offline.apply()

app = typer.Typer(
    help="Consolidate Action Cœur de Ville partner exports into a DuckDB warehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
reference_app = typer.Typer(help="The ANCT reference of ACV communes.", no_args_is_help=True)
app.add_typer(reference_app, name="reference")


@app.callback()
def _every_command() -> None:
    # A command is a short process that imports a large stack (pandas, Polars, Pandera: some
    # 200,000 objects that live until the end). Python's cyclic garbage collector, tuned for
    # long programs, walks them again and again, then once more at exit to free memory the
    # system takes back anyway: ~0.3 s of CPU while importing and ~0.5 s at exit, for a 1M-row
    # ingest of 15. So a collection waits for 50,000 new objects instead of 700 (garbage is
    # still collected, later), and at exit the objects are frozen: the last collections skip
    # them; reference counting still frees them, and atexit handlers, files and threads end as
    # usual. Every connection a command opens is closed before it returns (context managers):
    # nothing waits for a collection to be closed.
    gc.set_threshold(50_000)
    atexit.unregister(gc.freeze)  # once per process, however many commands ran in it (tests)
    atexit.register(gc.freeze)


class _LazyConsole:
    """rich's Console, made when a command first prints (``cdv-etl --help`` never imports it)."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # Piped output (CI logs, files) gets a wide fixed width rather than rich's 80 columns.
            self._console = Console(stderr=self._stderr, width=None if stream.isatty() else 200)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich(), name)


console = _LazyConsole()
err = _LazyConsole(stderr=True)

WarehouseOpt = Annotated[
    str | None,
    typer.Option(
        "--warehouse",
        "-w",
        help="Warehouse: a DuckDB file, ducklake:postgres:<libpq parameters> or ducklake:<catalog file> "
        "[env: CDV_WAREHOUSE; default warehouse/cdv.duckdb].",
    ),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")]


def settings(warehouse: str | Path | None = None, **changes: Any) -> Settings:
    """The environment's settings with the command's options; a warehouse URL that names no backend fails here."""
    try:
        return Settings.from_env(warehouse).with_(**changes)
    except CdvError as exc:
        fail(exc)


def fail(exc: CdvError, code: int = 2) -> NoReturn:
    """The error and what to do next, then exit ``code`` (2: the command could not run; 1: a
    file or reference was refused, nothing changed)."""
    # Messages quote partner text (file names, values, queries): printed as written, never as markup.
    err.print(f"error: {exc.message}", style="bold red", markup=False, emoji=False)
    if exc.hint:
        err.print(f"  → {exc.hint}", style="yellow", markup=False, emoji=False)
    raise typer.Exit(code)


def print_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, title: str | None = None) -> None:
    if fmt == "csv":
        sys.stdout.write(as_csv(columns, rows))
    elif fmt == "json":
        sys.stdout.write(as_json(columns, rows) + "\n")
    elif fmt == "table":
        console.print(query_table(columns, rows, title))
    else:
        fail(CdvError(f"unknown format {fmt!r}", "use table, csv or json"))


@app.command()
def init(warehouse: WarehouseOpt = None) -> None:
    """Create the warehouse, or upgrade an older one in place (idempotent)."""
    from cdv_etl.load.warehouse import init_warehouse
    from cdv_etl.specs import load_specs

    s = settings(warehouse)
    try:
        applied = init_warehouse(s.backend, load_specs(s.specs_dir), timeout_s=s.lock_timeout_s)
    except CdvError as exc:
        fail(exc)
    done = ", ".join(applied) if applied else "nothing to do: already up to date"
    console.print(f"warehouse [bold]{s.backend.display}[/bold]: {done}")


@reference_app.command("load")
def reference_load(
    file: Annotated[Path | None, typer.Argument(help="ANCT GeoJSON, or CSV with its property names.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Load the bundled sample reference.")] = False,
    vintage: Annotated[
        str | None,
        typer.Option("--vintage", help="The list's date, YYYY-MM or YYYY-MM-DD (default: the date in its file name)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Load it even when it is older than the current vintage.")
    ] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Load a vintage of the reference of ACV communes and conventions; the loaded exports are
    validated again against it, and what moved in or out of quarantine is printed.

    Exit 1 when the vintage is refused (no date, or older than the current one without --force)."""
    if (file is None) == (not sample):
        fail(CdvError("give a FILE or --sample", "e.g. cdv-etl reference load acv_communes_2024-04.geojson"))
    path = SAMPLE_REFERENCE if sample else file
    assert path is not None
    from cdv_etl.pipeline import open_pipeline

    s = settings(warehouse)
    try:
        with open_pipeline(s, need_reference=False) as pipe:
            r = pipe.load_reference(path, vintage=vintage, force=force)
    except ReferenceRefused as exc:
        fail(exc, 1)
    except CdvError as exc:
        fail(exc)
    print_reference(r)


def print_reference(r: ReferenceResult) -> None:
    """A reference load's line and, when it changed, the table of the rows that moved."""
    console.print(r.summary(), markup=False, emoji=False)
    if r.moves is None:
        return
    if r.moves.files:
        console.print(query_table(r.moves.COLUMNS, r.moves.rows(), "rows moved by the new reference"))
    else:
        console.print("  no row moved: every loaded row keeps its place", markup=False, emoji=False)


def progress_bar() -> Progress:
    """The progress bar of long commands, on stderr, gone when the work is done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err.rich(),
        transient=True,
    )


def run_ingest(s: Settings, files: list[Path], partner: str | None, force: bool) -> list[LoadResult]:
    from cdv_etl.pipeline import open_pipeline

    results: list[LoadResult] = []
    with progress_bar() as bar:
        task = bar.add_task("ingesting", total=len(files))
        with open_pipeline(s) as pipe:
            for f in files:
                results.append(
                    pipe.ingest(f, partner=partner, force=force, progress=lambda m: bar.update(task, description=m))
                )
                bar.advance(task)
            bar.update(task, description="publishing")
    return results


def print_results(results: list[LoadResult], warehouse: str | Path | None = None) -> None:
    """The files table, then what a person must know of each file (``warehouse``: the one named
    on the command line, repeated in the commands it suggests)."""
    console.print(load_results_table(results))
    for r in results:
        if r.status == "rejected":
            err.print(f"✗ {r.message}", style="red", markup=False, emoji=False)
        elif r.status == "held":
            err.print(f"⏸ {r.file_name}: {r.message}", style="yellow", markup=False, emoji=False)
            where = f" -w {warehouse}" if warehouse else ""
            err.print(f"  → to make it current: cdv-etl accept {r.file_id}{where}", markup=False, emoji=False)
        elif r.status == "loaded" and r.became_current is False:
            console.print(f"  {r.file_name}: {r.message}", markup=False, emoji=False)
        elif r.quarantine_by_rule:
            rules = ", ".join(f"{k} {v}" for k, v in r.quarantine_by_rule.items())
            console.print(f"  {r.file_name}: quarantined by rule — {rules}", markup=False, emoji=False)
        if r.status == "loaded" and r.control_total_ok is False:
            err.print(f"! {r.file_name}: {r.message}", style="yellow", markup=False, emoji=False)
        if r.status == "duplicate":
            console.print(f"  {r.file_name}: {r.message}", markup=False, emoji=False)


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Partner export files.", exists=True, dir_okay=False)],
    partner: Annotated[str | None, typer.Option(help="Partner code (default: recognised from the file name).")] = None,
    force: Annotated[bool, typer.Option(help="Re-ingest files already loaded (after a spec fix).")] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Read, validate and load partner exports; each file in one transaction.

    Prints per file the rows read, loaded and quarantined, the engaged amount and the
    control total check. Exit code 1 when a file was rejected whole, or held: an export that
    would withdraw too much of its partner's current one is kept out of the figures until
    `cdv-etl accept FILE_ID`.
    """
    s = settings(warehouse)
    try:
        results = run_ingest(s, files, partner, force)
    except CdvError as exc:
        fail(exc)
    print_results(results, warehouse)
    print_published(s)
    if any(r.status in NEEDS_ATTENTION for r in results):
        raise typer.Exit(1)


@app.command()
def accept(
    file_id: Annotated[int, typer.Argument(help="The held export's file_id (see `cdv-etl files`, status held).")],
    warehouse: WarehouseOpt = None,
) -> None:
    """Accept a held export: it is loaded, and current when its extraction date is its partner's latest.

    Prints the partner's current export and figures (operations, engaged euros) before and
    after. Exit code 2 when the file is unknown or not held (nothing changed)."""
    from cdv_etl.pipeline import accept_held

    s = settings(warehouse)
    try:
        r = accept_held(s, file_id)
    except CdvError as exc:
        fail(exc)
    columns, rows = r.table()
    console.print(query_table(columns, rows, f"{r.partner}: file {r.file_id} accepted"))
    if r.became_current:
        state = f"file {r.file_id} ({r.file_name}) is now the current export of {r.partner}"
    else:
        state = (
            f"file {r.file_id} ({r.file_name}) is loaded into history; the current export of {r.partner} "
            f"stays file {r.after.file_id} ({r.after.file_name}), extracted later"
        )
    console.print(state, markup=False, emoji=False)
    print_published(s)


def _query(
    s: Settings, sql: str, params: list[Any] | None = None, live: bool = False
) -> tuple[list[str], list[tuple[Any, ...]]]:
    from cdv_etl.publish.reader import query, read_only

    with read_only(s.read_target(live)) as con:
        return query(con, sql, params)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='SQL to run, e.g. "SELECT * FROM v_financing_by_axis".')],
    fmt: FormatOpt = "table",
    warehouse: WarehouseOpt = None,
    live: Annotated[
        bool,
        typer.Option(
            help="Query the warehouse itself (waits for no writer; "
            "fails while a load runs) instead of the published copy."
        ),
    ] = False,
) -> None:
    """Run SQL on the published (read-only) warehouse: never blocked by a load."""
    s = settings(warehouse)
    try:
        columns, rows = _query(s, query, live=live)
    except CdvError as exc:
        fail(exc)
    print_rows(columns, rows, fmt)


@app.command()
def files(warehouse: WarehouseOpt = None, fmt: FormatOpt = "table") -> None:
    """The file ledger: every file seen, loaded, held, duplicate or rejected, and why."""
    s = settings(warehouse)
    try:
        columns, rows = _query(
            s,
            "SELECT file_id, partner, file_name, status, reason, extraction_date, rows_read, "
            "rows_loaded, rows_quarantined, engaged_amount_eur, control_total_ok, "
            "is_current, message FROM file_loads ORDER BY file_id",
        )
    except CdvError as exc:
        fail(exc)
    print_rows(columns, rows, fmt, "file_loads")


@app.command()
def quarantine(
    file: Annotated[int | None, typer.Option("--file", help="Only this file_id (see `cdv-etl files`).")] = None,
    fmt: FormatOpt = "table",
    all_files: Annotated[bool, typer.Option("--all", help="Include earlier exports, not only current ones.")] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """What was rejected and why, row by row: a list to send back to the partner."""
    s = settings(warehouse)
    where, params = ["TRUE"], []
    if file is not None:
        where.append("file_id = ?")
        params.append(file)
    elif not all_files:
        where.append("is_current")
    query = (
        'SELECT file_id, partner, file_name, source_row, sheet, rule, "column", value, message, all_rules '
        "FROM quarantine WHERE " + " AND ".join(where) + " ORDER BY file_id, source_row"
    )
    try:
        columns, rows = _query(s, query, params)
    except CdvError as exc:
        fail(exc)
    print_rows(columns, rows, fmt, "quarantine")


@app.command()
def publish(warehouse: WarehouseOpt = None) -> None:
    """Publish the read-only copy of the warehouse for analysts again."""
    from cdv_etl.pipeline import open_pipeline

    s = settings(warehouse)
    try:
        with open_pipeline(s, need_reference=False) as pipe:
            path = pipe.publish()
    except CdvError as exc:
        fail(exc)
    console.print(f"published {path}" if path else f"nothing to publish: readers attach the lake {s.backend} itself")


def print_published(s: Settings) -> None:
    """Where analysts read what a command wrote: the published copy, or the lake itself."""
    if s.lake is not None:
        console.print(f"analysts read it in the lake [bold]{s.lake.display}[/bold] (no copy)")
    else:
        console.print(f"published for analysts: [bold]{s.published_path}[/bold]")


def print_summary(s: Settings) -> None:
    for title, query in SUMMARY_QUERIES:
        columns, rows = _query(s, query)
        console.print(query_table(columns, rows, title))


def run_nightly(s: Settings) -> list[LoadResult]:
    """The nightly run, once: the core, or with PREFECT_API_URL the nightly flow on that server.

    Prints what it did. When a file's ingest raised (the file stays in the inbox), prints the
    error after the other files' results and exits with 1."""
    import os

    from cdv_etl.inbox import InboxFailed, InboxRun, NeedsAttention, run_inbox

    api = os.environ.get("PREFECT_API_URL")
    try:
        if api:
            err.print(f"running the nightly flow on the Prefect server {api}: the run shows in its UI")
            from flows.nightly import nightly as nightly_flow

            if s.lake is not None:  # the flow reads it from there: a password never lands in the run's parameters
                os.environ["CDV_WAREHOUSE"] = s.lake.attach_target
            try:
                ran = nightly_flow(
                    inbox=str(s.inbox),
                    warehouse=None if s.lake is not None else str(s.warehouse),
                    archive=str(s.archive_dir),
                    rejected=str(s.rejected_dir),
                )
                run = InboxRun.from_dict(cast(dict[str, Any], ran))  # its plain data, as the flow returns it
            except NeedsAttention as exc:  # the flow run failed on a rejected or held export: the results say which
                assert exc.run is not None
                run = exc.run
        else:
            if s.writers > 1:
                err.print(f"a DuckLake: up to {s.writers} partners' exports load at once (CDV_PARALLEL_FILES)")
            with progress_bar() as bar:
                task = bar.add_task("nightly", total=None)
                run = run_inbox(
                    s, progress=lambda done, total, m: bar.update(task, completed=done, total=total, description=m)
                )
    except InboxFailed as exc:
        print_results(exc.run.results, s.warehouse)
        fail(exc, 1)
    for r in run.references:
        print_reference(r)
    if run.results:
        print_results(run.results, s.warehouse)
    elif not run.references:
        console.print(f"nothing new in {s.inbox}")
    print_published(s)
    if run.report:
        console.print(f"report: [bold]{run.report}[/bold]")
    return run.results


@app.command()
def nightly(
    inbox: Annotated[Path | None, typer.Option(help="Inbox folder [env: CDV_INBOX; default ./inbox].")] = None,
    archive: Annotated[Path | None, typer.Option(help="Archive folder [default: archive/ beside the inbox].")] = None,
    rejected: Annotated[Path | None, typer.Option(help="Rejected folder [default: rejected/ beside inbox].")] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run the inbox once, now: a new ANCT reference first, then every new export, files moved to
    archive/<partner>/ or rejected/, publish, report, summary. With PREFECT_API_URL set, as the
    nightly flow on that server (each file its own task, the run in its UI). Exit code 1 when a
    file was rejected, held or could not be processed."""
    s = settings(warehouse, inbox=inbox, archive=archive, rejected=rejected)
    try:
        results = run_nightly(s)
    except CdvError as exc:
        fail(exc)
    if any(r.status in NEEDS_ATTENTION for r in results):
        raise typer.Exit(1)


@app.command()
def serve() -> None:
    """Serve the deployments to the Prefect server of PREFECT_API_URL: `nightly` every night at
    02:00 Europe/Paris, `ingest-export` and `reference-refresh` on demand (from the UI)."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail(
            CdvError(
                "PREFECT_API_URL is not set: serve needs a Prefect server",
                "start one with `prefect server start` and export "
                "PREFECT_API_URL=http://127.0.0.1:4200/api (see README, Running with Prefect)",
            )
        )
    from flows.deployments import serve_all

    try:
        serve_all()
    except CdvError as exc:
        fail(exc)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's inbox, archive and warehouse.")] = Path("demo"),
) -> None:
    """Generate demo exports for the five partners (with a few realistic mistakes) and the sample
    reference into a fresh inbox, run the nightly over it (as `cdv-etl nightly` does), and print
    the consolidated figures."""
    from cdv_etl.demo_data import generate_demo_exports

    if out.exists():
        shutil.rmtree(out)
    inbox = out / "inbox"
    exports = generate_demo_exports(inbox)
    shutil.copyfile(SAMPLE_REFERENCE, inbox / SAMPLE_REFERENCE.name)
    console.print(f"demo inbox [bold]{inbox}[/bold]: {SAMPLE_REFERENCE.name}, {', '.join(p.name for p in exports)}")
    s = settings(out / "warehouse" / "cdv.duckdb", inbox=inbox, archive=out / "archive", rejected=out / "rejected")
    try:
        results = run_nightly(s)
        print_summary(s)
    except CdvError as exc:
        fail(exc)
    total = sum((r.engaged_amount_eur or 0 for r in results), start=0)
    console.print(f"\nengaged in total: [bold]{euros(total)}[/bold]")  # type: ignore[arg-type]
    console.print(
        "\nQuery the demo warehouse (in .venv/bin):\n"  # noqa: S608 - help text, not SQL
        f'  cdv-etl sql -w {s.warehouse} "SELECT * FROM v_financing_by_axis"\n'
        f'  duckdb -readonly {s.published_path} "FROM v_envelope_consumption"\n'
        f"  cdv-etl quarantine -w {s.warehouse}"
    )


def _register_extensions() -> None:
    from cdv_etl import cli_analyst, cli_specs

    cli_analyst.register(app)
    cli_specs.register(app)


_register_extensions()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

"""Scale-out benchmark: six partner exports through a serial and a parallel inbox run, on the
DuckDB file and on DuckLake (PostgreSQL catalog); and what publishing costs as the warehouse grows.

    python -m bench.scaleout --sizes 10k            # smoke test: about a minute
    python -m bench.scaleout --sizes 1M             # the measurement: six 1M-row exports
    python -m bench.scaleout --sizes 1M --writers 2,5 --settle 30

For each size, the six exports (``bench.generate.SIX_EXPORTS``: Action Logement's October CSV,
BDT's workbook, Anah's CSV, État's workbook, EPF's TSV, then Action Logement's November CSV) are
copied into a fresh inbox, in that order of arrival, and loaded by ``cdv_etl.inbox.run_inbox``:

* **serial**: ``Settings(parallel_files=1)``, one export after the other;
* **parallel**: ``Settings(parallel_files=N)`` for each N of ``--writers``: on a lake, N partners'
  exports load at once (the two Action Logement months one after the other, in order); a DuckDB
  file has one writer, so its "parallel" run is a serial run (measured all the same, to show it);

each on a DuckDB file and on a DuckLake whose catalog is a database of a throwaway PostgreSQL
server (``tests/pg_server.py``, started here and stopped at the end) and whose data path is a
local folder. Each run is one fresh process (``--step run``), after a setup process (migrations
and the bundled 36-commune reference); the harness's ``run_command`` reads its peak RSS with
``os.wait4`` and the share of the CPUs other processes used meanwhile. Every export's figures are
checked against the generator's manifest (loaded, rows quarantined as planted), and the partner's
current export must be November's.

**Growth** (``--step growth``, one process per backend): the six exports ingested one by one with
the inbox run's own step (``ingest_file``); after 1, 2, 4 and 6 of them, on the DuckDB file the
publish (CHECKPOINT + copy of the whole file + fsync) is timed, and on both a fresh reader process
(``--step reader``) times what an analyst pays: the project's read-only connection (the published
copy; on the lake the extensions, the catalog and the ATTACH) and the first query of a view.

Results: ``bench/results/<name>.json`` and ``<name>.md`` (``scaleout`` by default). Like the
harness, this process imports only the standard library, so that its children's RSS readings are
their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import OUT, RESULTS, ROOT, run_command

NAME = "scaleout"
GROWTH_AT = (1, 2, 4, 6)
"""After how many of the six exports the growth step measures publishing and a reader."""
FIRST_VIEW = "v_financing_by_partner"
"""The view a reader's first query reads (every current row, grouped by partner)."""
DB_PREFIX = "scaleout"


# -- the children: each step runs in a fresh process ------------------------------------------------


def _settings(p: dict[str, Any], **changes: Any) -> Any:
    from cdv_etl.config import Settings
    from cdv_etl.load.backend import parse_warehouse

    folder = Path(p["folder"])
    s = Settings(warehouse=folder / "wh" / "cdv.duckdb", inbox=folder / "inbox", lock_timeout_s=600, **changes)
    if p["backend"] == "lake":
        s = s.with_(lake=parse_warehouse(f"ducklake:postgres:{p['libpq']}", str(folder / "lake-data")))
    return s


def step_setup(p: dict[str, Any]) -> dict[str, Any]:
    """A new warehouse: migrations, views and the bundled 36-commune reference."""
    from cdv_etl.load.reference import SAMPLE_REFERENCE
    from cdv_etl.pipeline import open_pipeline

    t = time.perf_counter()
    s = _settings(p)
    s.warehouse.parent.mkdir(parents=True, exist_ok=True)
    with open_pipeline(s, need_reference=False) as pipe:
        pipe.load_reference(SAMPLE_REFERENCE)
    return {"seconds": time.perf_counter() - t}


def _check(con: Any) -> dict[str, Any]:
    """The warehouse after the run: each partner's current export, and the rows the views count."""
    current = con.execute(
        "SELECT c.partner, f.file_name FROM current_files AS c JOIN files AS f USING (file_id) ORDER BY 1"
    ).fetchall()
    rows = con.execute("SELECT count(*) FROM financing").fetchone()
    return {"current": dict(current), "current_rows": int(rows[0]) if rows else 0}


def step_run(p: dict[str, Any]) -> dict[str, Any]:
    """One inbox run over the six exports, ``parallel_files`` at a time; each export's span."""
    from cdv_etl import inbox
    from cdv_etl.inbox import Steps, ingest_file, publish, run_inbox
    from cdv_etl.load.warehouse import connect

    s = _settings(p, parallel_files=p["parallel_files"])
    t0 = time.perf_counter()
    spans: dict[str, list[float]] = {}
    publish_s: list[float] = []

    def timed_ingest(settings: Any, path: Path, partner: Any = None, force: bool = False, progress: Any = None) -> Any:
        start = time.perf_counter() - t0
        try:
            return ingest_file(settings, path, partner, force, progress)
        finally:
            spans[path.name] = [start, time.perf_counter() - t0]

    def timed_publish(settings: Any) -> Path:
        start = time.perf_counter()
        try:
            return publish(settings)
        finally:
            publish_s.append(time.perf_counter() - start)

    after: dict[str, Any] = {}

    def timed(name: str, fn: Any, empty: Any) -> Any:
        """The run's report or feedback step, timed; its error recorded (the loads are what is measured)."""

        def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            except Exception as exc:
                after[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
                return empty
            finally:
                after[f"{name}_s"] = time.perf_counter() - start

        return call

    inbox.write_report = timed("report", inbox.write_report, None)
    inbox.write_feedback = timed("feedback", inbox.write_feedback, {})
    c0 = time.process_time()
    run = run_inbox(s, steps=Steps(ingest=timed_ingest, publish=timed_publish))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ends = [e for _, e in spans.values()]
    files = [
        {
            "file_name": f.file_name,
            "partner": f.result.partner if f.result else None,
            "status": f.status,
            "file_id": f.result.file_id if f.result else None,
            "rows_read": f.result.rows_read if f.result else 0,
            "rows_loaded": f.result.rows_loaded if f.result else 0,
            "rows_quarantined": f.result.rows_quarantined if f.result else 0,
            "became_current": f.result.became_current if f.result else None,
            "message": f.reason if f.needs_attention else "",
            "span_s": spans.get(f.file_name),
        }
        for f in run.files
    ]
    con = connect(s.backend, read_only=True) if s.lake is not None else connect(s.backend)
    try:
        check = _check(con)
    finally:
        con.close()
    return {
        "run_wall_s": wall,
        "run_cpu_s": cpu,
        "loads_wall_s": max(ends) - min(start for start, _ in spans.values()) if ends else None,
        "writers": s.writers,
        "publish_s": publish_s[0] if publish_s else None,
        **after,
        "report": str(run.report) if run.report else None,
        "files": files,
        **check,
        **_sizes(s),
    }


def _sizes(s: Any) -> dict[str, Any]:
    """Bytes on disk: the DuckDB file and its published copy, or the lake's Parquet files."""
    if s.lake is not None:
        data = Path(s.data_path or "")
        parquet = [f for f in data.rglob("*.parquet")] if data.is_dir() else []
        return {"data_mb": sum(f.stat().st_size for f in parquet) / 1e6, "parquet_files": len(parquet)}
    return {
        "warehouse_mb": s.warehouse.stat().st_size / 1e6,
        "published_mb": s.published_path.stat().st_size / 1e6 if s.published_path.exists() else None,
    }


def step_reader(p: dict[str, Any]) -> dict[str, Any]:
    """What an analyst pays to start reading: the read-only connection (imports apart), then the
    first query of a view, then a warm one."""
    c0, t0 = time.process_time(), time.perf_counter()
    s = _settings(p)
    target = s.read_target()
    from cdv_etl.load.warehouse import connect
    from cdv_etl.publish.reader import read_only

    t1 = time.perf_counter()
    if s.lake is not None:  # the lake: attached read-only, the way every reader of a lake connects
        con = connect(s.backend, read_only=True)
        closing: Any = con
    else:
        closing = read_only(target)
        con = closing.__enter__()
    t2 = time.perf_counter()
    first = con.execute(f"SELECT * FROM {FIRST_VIEW}").fetchall()  # noqa: S608 - a constant
    t3 = time.perf_counter()
    con.execute(f"SELECT * FROM {FIRST_VIEW}").fetchall()  # noqa: S608 - a constant
    t4 = time.perf_counter()
    rows = con.execute("SELECT count(*) FROM financing").fetchone()
    if s.lake is not None:
        con.close()
    else:
        closing.__exit__(None, None, None)
    return {
        "imports_s": t1 - t0,
        "attach_s": t2 - t1,
        "first_query_s": t3 - t2,
        "warm_query_s": t4 - t3,
        "reader_cpu_s": time.process_time() - c0,
        "partners": len(first),
        "financing_rows": int(rows[0]) if rows else 0,
    }


def step_growth(p: dict[str, Any]) -> dict[str, Any]:
    """The exports ingested one by one; after some of them, the publish (file) and a fresh reader."""
    from cdv_etl import pipeline
    from cdv_etl.inbox import ingest_file, publish

    copy_s: list[float] = []
    copy = pipeline.publish

    def timed_copy(con: Any, warehouse: Path, target: Path) -> Path | None:  # CHECKPOINT, copy, fsync, rename
        start = time.perf_counter()
        try:
            return copy(con, warehouse, target)
        finally:
            copy_s.append(time.perf_counter() - start)

    pipeline.publish = timed_copy
    s = _settings(p)
    points = []
    loaded = 0
    for k, path in enumerate(p["files"], 1):
        r = ingest_file(s, Path(path))
        loaded += r.rows_loaded
        if k not in p["at"]:
            continue
        point: dict[str, Any] = {"files": k, "rows_loaded": loaded}
        if s.lake is None:
            c0, t0 = time.process_time(), time.perf_counter()
            publish(s)
            point |= {"publish_s": time.perf_counter() - t0, "publish_cpu_s": time.process_time() - c0}
            point |= {"copy_s": copy_s[-1] if copy_s else None}
        point |= _sizes(s)
        reader = _step("reader", p, f"{p['tag']}-reader-{k}", 600, settle_first=False)
        point |= {"reader": reader}
        points.append(point)
    return {"points": points}


STEPS = {"setup": step_setup, "run": step_run, "reader": step_reader, "growth": step_growth}


# -- the harness ---------------------------------------------------------------------------------


def _step(step: str, params: dict[str, Any], tag: str, timeout: float, *, settle_first: bool = True) -> dict[str, Any]:
    """A measured step in a new process, after waiting for a quiet machine (``harness.settle``; not from
    inside a step, which measures around it)."""
    work = OUT / "steps"
    work.mkdir(parents=True, exist_ok=True)
    pfile, rfile = work / f"{tag}.params.json", work / f"{tag}.result.json"
    pfile.write_text(json.dumps(params), encoding="utf-8")
    rfile.unlink(missing_ok=True)
    out = run_command(
        [sys.executable, "-m", "bench.scaleout", "--step", step, str(pfile), str(rfile)],
        tag=tag,
        timeout=timeout,
        label=step,
        settle_first=settle_first,
    )
    if "error" not in out and not rfile.exists():
        out["error"] = f"{step} wrote no result"
    if "error" in out:
        raise RuntimeError(f"{tag}: {out['error']} (log: {work / (tag + '.log')})")
    return {**json.loads(rfile.read_text(encoding="utf-8")), **out}


def _dbname(tag: str) -> str:
    return f"{DB_PREFIX}_{tag.replace('-', '_').lower()}"


def generate(size: str) -> list[dict[str, Any]]:
    """The six exports of ``size`` (generated unless cached), in their order of arrival."""
    from bench.generate import SIX_EXPORTS  # numpy and pyarrow stay in the child: imported here only by name

    cmd = [sys.executable, "-m", "bench.generate", "--sizes", size, "--partners", ",".join(SIX_EXPORTS), "--json"]
    out = subprocess.run(
        cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def fill_inbox(inbox: Path, exports: list[dict[str, Any]]) -> None:
    """Copies of the exports, arrived one second apart in their order (the inbox sorts by mtime)."""
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir(parents=True)
    base = time.time() - 3600
    for i, e in enumerate(exports):
        target = inbox / Path(e["path"]).name
        shutil.copyfile(e["path"], target)
        os.utime(target, (base + i, base + i))


def verify(run: dict[str, Any], exports: list[dict[str, Any]]) -> list[str]:
    """What differs from the manifest: each export loaded, quarantining the rows planted; the later
    Action Logement month current."""
    problems = []
    by_name = {f["file_name"]: f for f in run["files"]}
    for e in exports:
        name = Path(e["path"]).name
        f = by_name.get(name)
        if f is None:
            problems.append(f"{name}: not in the run")
            continue
        if f["status"] != "loaded":
            problems.append(f"{name}: {f['status']} ({f['message']})")
        if f["rows_quarantined"] != e["expected_quarantined"]:
            problems.append(f"{name}: {f['rows_quarantined']} rows quarantined, {e['expected_quarantined']} planted")
        if f["rows_loaded"] != e["rows"] - e["expected_quarantined"]:
            problems.append(f"{name}: {f['rows_loaded']} rows loaded, {e['rows'] - e['expected_quarantined']} expected")
    later = Path(exports[-1]["path"]).name
    if run["current"].get("action_logement") != later:
        problems.append(f"action_logement's current export is {run['current'].get('action_logement')}, not {later}")
    expected_current = sum(e["rows"] - e["expected_quarantined"] for e in exports[1:])
    if run["current_rows"] != expected_current:
        problems.append(f"financing holds {run['current_rows']} current rows, {expected_current} expected")
    return problems


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--step"]:
        _, step, pfile, rfile = argv
        result = STEPS[step](json.loads(Path(pfile).read_text(encoding="utf-8")))
        Path(rfile).write_text(json.dumps(result, default=str), encoding="utf-8")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M", help="rows per export, e.g. 10k or 100k,1M (workbooks stop at 1M)")
    ap.add_argument("--writers", default="2", help="N of the parallel runs (CDV_PARALLEL_FILES), e.g. 2 or 2,5")
    ap.add_argument("--backends", default="file,lake")
    ap.add_argument("--skip-growth", action="store_true", help="no publish-cost-against-size measurement")
    ap.add_argument("--settle", type=float, default=10.0, help="wait at most this long for a quiet machine per run")
    ap.add_argument("--name", default=None, help=f"results file name (default {NAME}, or {NAME}-smoke below 1M)")
    ap.add_argument("--keep", action="store_true", help="keep the warehouses and lakes in bench/out/scaleout")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument(
        "--skip-file-parallel",
        action="store_true",
        help="no parallel run on the DuckDB file (one writer: it is a serial run, by construction)",
    )
    args = ap.parse_args(argv)
    harness.SETTLE["max_s"] = args.settle
    sizes = args.sizes.split(",")
    name = args.name or (NAME if all(s.endswith("M") for s in sizes) else f"{NAME}-smoke")
    backends = args.backends.split(",")
    modes = [("serial", 1)] + [("parallel", int(n)) for n in args.writers.split(",")]

    sys.path.insert(0, str(ROOT))
    from tests import pg_server  # the tests' throwaway PostgreSQL server (stdlib only)

    started = datetime.now(UTC)
    load0 = os.getloadavg()
    res: dict[str, Any] = {
        "cpu_at_start": harness._cpu_busy(),
        "complete": False,
        "command": "python -m bench.scaleout " + " ".join(argv),
        "started": started.isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "core": harness.core_fingerprint(),
        "loadavg_start": load0,
        "sizes": {},
    }
    server = pg_server.start() if "lake" in backends else None
    root = OUT / "scaleout"
    try:
        for size in sizes:
            exports = generate(size)
            out: dict[str, Any] = {"exports": exports, "runs": [], "growth": {}}
            res["sizes"][size] = out
            for backend in backends:
                for mode, n in modes:
                    if backend == "file" and mode == "parallel" and args.skip_file_parallel:
                        continue
                    tag = f"{size}-{backend}-{mode}{n}"
                    folder = root / tag
                    shutil.rmtree(folder, ignore_errors=True)
                    params: dict[str, Any] = {"folder": str(folder), "backend": backend, "parallel_files": n}
                    if server is not None and backend == "lake":
                        params["libpq"] = server.createdb(_dbname(tag))
                    _step("setup", params, f"so-{tag}-setup", args.timeout)
                    fill_inbox(folder / "inbox", exports)
                    print(f"{tag}: running ...", flush=True)
                    run = _step("run", params, f"so-{tag}", args.timeout)
                    run |= {"backend": backend, "mode": mode, "parallel_files": n, "problems": verify(run, exports)}
                    if server is not None and backend == "lake":
                        size_sql = "SELECT pg_database_size(current_database())"
                        run["catalog_mb"] = int(server.psql(_dbname(tag), size_sql)) / 1e6
                    out["runs"].append(run)
                    write(res, name)
                    print(
                        f"{tag}: {run['run_wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
                        f"{run['peak_rss_mib']:.0f} MiB peak, others used {run['foreign_cpu_share']:.0%} of the CPUs"
                        + (f"; PROBLEMS: {run['problems']}" if run["problems"] else "; figures as planted"),
                        flush=True,
                    )
                    if not args.keep:
                        shutil.rmtree(folder, ignore_errors=True)
            for backend in [] if args.skip_growth else backends:  # after every run: the runs come first
                tag = f"{size}-{backend}-growth"
                folder = root / tag
                shutil.rmtree(folder, ignore_errors=True)
                params = {
                    "folder": str(folder),
                    "backend": backend,
                    "files": [e["path"] for e in exports],
                    "at": list(GROWTH_AT),
                    "tag": f"so-{tag}",
                }
                if server is not None and backend == "lake":
                    params["libpq"] = server.createdb(_dbname(tag))
                _step("setup", params, f"so-{tag}-setup", args.timeout)
                print(f"{tag}: running ...", flush=True)
                out["growth"][backend] = _step("growth", params, f"so-{tag}", args.timeout)
                write(res, name)
                for pt in out["growth"][backend]["points"]:
                    rd = pt["reader"]
                    print(
                        f"{tag} after {pt['files']}: publish {pt.get('publish_s') or 0:.2f} s; reader attach "
                        f"{rd.get('attach_s', 0):.2f} s + first query {rd.get('first_query_s', 0):.2f} s",
                        flush=True,
                    )
                if not args.keep:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        if server is not None:
            server.stop()
    res["complete"] = True
    write(res, name)
    print(f"wrote {RESULTS / (name + '.json')} and {name}.md")


def write(res: dict[str, Any], name: str) -> None:
    """The results so far (after each run: a run cut short keeps what it measured)."""
    busy1, all1 = harness._cpu_busy()
    busy0, all0 = res["cpu_at_start"]
    res["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    res["loadavg_end"] = os.getloadavg()
    res["machine_busy_share"] = round((busy1 - busy0) / (all1 - all0), 3) if all1 > all0 else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    (RESULTS / f"{name}.md").write_text(markdown(res), encoding="utf-8")


# -- the tables ------------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _report(r: dict[str, Any]) -> str:
    """The report and feedback steps' time, or the error that stopped them."""
    errors = [r[k] for k in ("report_error", "feedback_error") if k in r]
    if errors:
        return "failed†: " + "; ".join(e.replace("|", "/")[:120] for e in errors)
    return _f((r.get("report_s") or 0) + (r.get("feedback_s") or 0))


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Measured {res['started']} – {res['finished']} with `{res['command']}` ({m['cores']} cores, {m['memory']}, "
        f"{m['cpu']}; Python {m['python']}, DuckDB {m['duckdb']}; core {res['core']}). "
        f"Load average {', '.join(f'{x:.1f}' for x in res['loadavg_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in res['loadavg_end'])} at the end; the machine's CPUs were "
        f"{_f(100 * (res['machine_busy_share'] or 0), 0)} % busy over the whole run (this benchmark included).",
        "",
    ]
    for size, out in res["sizes"].items():
        ex = out["exports"]
        lines += [
            f"### {size} rows per export: {len(ex)} exports, {sum(e['rows'] for e in ex):,} rows, "
            f"{sum(e['bytes'] for e in ex) / 1e6:,.0f} MB",
            "",
            "| export | partner | MB | rows to quarantine |",
            "|---|---|---:|---:|",
            *(
                f"| {Path(e['path']).name} | {e['partner']} | {e['bytes'] / 1e6:,.1f} | {e['expected_quarantined']:,} |"
                for e in ex
            ),
            "",
            "| backend | run | writers | loads wall s | run wall s | run CPU s | peak RSS MiB | others' CPU share "
            "| publish s | report + feedback s | on disk MB | checked |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in out["runs"]:
            disk = r.get("data_mb") if r["backend"] == "lake" else r.get("warehouse_mb")
            label = "DuckDB file" if r["backend"] == "file" else "DuckLake (PostgreSQL catalog)"
            lines.append(
                f"| {label} | {r['mode']} (`CDV_PARALLEL_FILES={r['parallel_files']}`) | {r['writers']} "
                f"| {_f(r.get('loads_wall_s'))} | {_f(r['run_wall_s'])} | {_f(r['run_cpu_s'])} "
                f"| {_f(r['peak_rss_mib'], 0)} | {_f(100 * r['foreign_cpu_share'], 0)} % | {_f(r.get('publish_s'))} "
                f"| {_report(r)} | {_f(disk, 1)} "
                f"| {'as planted ✓' if not r['problems'] else '; '.join(r['problems'])} |"
            )
        lines += ["", "Each export's span in the run (seconds from the run's start):", ""]
        for r in out["runs"]:
            spans = ", ".join(
                f"{f['partner'] or '?'}{'·' + f['file_name'][14:21] if f['partner'] == 'action_logement' else ''} "
                f"{_f((f['span_s'] or [0, 0])[0], 1)}–{_f((f['span_s'] or [0, 0])[1], 1)}"
                for f in r["files"]
            )
            lines.append(f"* {r['backend']} {r['mode']} ×{r['parallel_files']}: {spans}")
        if out["growth"]:
            lines += [
                "",
                "Publishing against warehouse size (the six exports ingested one by one; a fresh reader process "
                f"after each point: the read-only connection, then the first query of `{FIRST_VIEW}`, a warm one):",
                "",
                "| backend | exports | rows loaded | on disk MB | publish step s | of which the copy s | publish CPU s "
                "| reader connect s | first query s | warm query s | reader process s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for backend, g in out["growth"].items():
                for pt in g["points"]:
                    rd = pt["reader"]
                    disk = pt.get("data_mb") if backend == "lake" else pt.get("warehouse_mb")
                    lines.append(
                        f"| {'DuckDB file' if backend == 'file' else 'DuckLake'} | {pt['files']} | "
                        f"{pt['rows_loaded']:,} | {_f(disk, 1)} | {_f(pt.get('publish_s'))} | {_f(pt.get('copy_s'))} "
                        f"| {_f(pt.get('publish_cpu_s'))} | {_f(rd.get('attach_s'))} | {_f(rd.get('first_query_s'))} "
                        f"| {_f(rd.get('warm_query_s'), 3)} | {_f(rd.get('process_wall_s'))} |"
                    )
        lines += ["", *summary(out), ""]
    noisy = [r for o in res["sizes"].values() for r in o["runs"] if r["foreign_cpu_share"] > 0.10]
    lines += [
        "**How to read this.** *loads wall s* is from the first export's start to the last one's end (what "
        "parallel loading changes); *run wall s* and *run CPU s* are the whole `run_inbox` call in its process "
        "(CPU: every thread, DuckDB's included), *peak RSS* that process's high-water mark (parallel loads share it). "
        "A DuckDB file has one writer, so its inbox run loads one export at a time whatever `CDV_PARALLEL_FILES` "
        "says; a lake loads that many partners at once, one partner's exports in their order (the two Action "
        "Logement months one after the other: see the spans). *on disk* is the DuckDB file, or the lake's Parquet "
        "files (its catalog is in PostgreSQL). † a step that failed: its error is shown; the loads were measured "
        "all the same.",
        "",
    ]
    if noisy:
        lines += [
            f"**Read the times with care**: other processes used over 10 % of the CPUs during {len(noisy)} of the "
            f"{sum(len(o['runs']) for o in res['sizes'].values())} runs (up to "
            f"{max(r['foreign_cpu_share'] for r in noisy):.0%}). Wall times are inflated and noisy; CPU seconds are "
            "the steadier comparison. On a busy machine a run with two writers also gets a larger share of the "
            "CPUs from the scheduler than a run with one, so its wall-time gain overstates what an idle "
            f"{res['machine']['cores']}-core machine would show.",
            "",
        ]
    return "\n".join(lines)


def _run(out: dict[str, Any], backend: str, mode: str) -> dict[str, Any] | None:
    return next((r for r in out["runs"] if r["backend"] == backend and r["mode"] == mode), None)


def summary(out: dict[str, Any]) -> list[str]:
    """The comparisons the tables are for, worked out."""
    lines = []
    for backend in ("lake", "file"):
        serial = _run(out, backend, "serial")
        for r in (x for x in out["runs"] if x["backend"] == backend and x["mode"] == "parallel"):
            if serial and r.get("loads_wall_s") and serial.get("loads_wall_s"):
                lines.append(
                    f"* {backend}, {r['parallel_files']} writers against 1: loads "
                    f"{serial['loads_wall_s'] / r['loads_wall_s']:.2f}× faster in wall time "
                    f"({_f(serial['loads_wall_s'], 1)} s → {_f(r['loads_wall_s'], 1)} s), "
                    f"{r['run_cpu_s'] / serial['run_cpu_s']:.2f}× the CPU, "
                    f"{r['peak_rss_mib'] / serial['peak_rss_mib']:.2f}× the peak RSS."
                )
    lake, file = _run(out, "lake", "serial"), _run(out, "file", "serial")
    if lake and file and lake.get("loads_wall_s") and file.get("loads_wall_s"):
        lines.append(
            f"* serial, lake against file: loads {lake['loads_wall_s'] / file['loads_wall_s']:.2f}× the wall time, "
            f"{lake['run_cpu_s'] / file['run_cpu_s']:.2f}× the CPU (the lake's writers load the ducklake and "
            "postgres_scanner extensions and talk to PostgreSQL; the file's run also publishes a copy)."
        )
    g = out["growth"]
    if "file" in g and g["file"]["points"]:
        pts = g["file"]["points"]
        lines.append(
            f"* publishing the DuckDB file: {_f(pts[0].get('publish_s'))} s after {pts[0]['files']} export(s), "
            f"{_f(pts[-1].get('publish_s'))} s after {pts[-1]['files']} "
            f"({_f(pts[0].get('warehouse_mb'), 0)} → {_f(pts[-1].get('warehouse_mb'), 0)} MB copied)."
        )
    for backend, pts in ((b, g[b]["points"]) for b in ("file", "lake") if b in g and g[b]["points"]):
        a, b = pts[0]["reader"], pts[-1]["reader"]
        lines.append(
            f"* a new reader of the {'published copy' if backend == 'file' else 'lake'}: connect "
            f"{_f(a.get('attach_s'))} s + first query {_f(a.get('first_query_s'))} s after {pts[0]['files']} "
            f"export(s); {_f(b.get('attach_s'))} s + {_f(b.get('first_query_s'))} s after {pts[-1]['files']}."
        )
    return lines


if __name__ == "__main__":
    main()

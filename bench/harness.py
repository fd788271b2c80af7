"""Benchmark harness: the project's ingest beside the DuckDB floor and a naive pandas peer.

    python -m bench.harness                       # 10k, 100k, 1M, 5M rows (about 15 minutes)
    python -m bench.harness --quick               # 10k and 100k (well under a minute)
    python -m bench.harness --sizes 1M --profile 1M

One run measures, on the same files and the same machine, each measurement in a fresh
Python process (``bench/steps.py``) whose peak RSS is read with ``os.wait4``:

* CSV (Action Logement, Windows-1252): the DuckDB floor, the project's ingest, the naive peer;
* XLSX (Banque des Territoires, at most 1M rows): python-calamine alone, the project's ingest;
* a nightly run with nothing new over the warehouse of the largest CSV size;
* every consolidated view on that warehouse's published copy.

It prints the tables with rich, writes ``bench/results/<name>.json`` and ``<name>.md``
(``latest`` for a full run, ``quick`` for ``--quick``) and, for ``latest``, puts the table in
``bench/README.md``. Targets are reported, never enforced: a slow machine fails nothing.

This process stays small on purpose (stdlib and rich only): a child started by ``fork``/``exec``
inherits its parent's high-water RSS in ``ru_maxrss``, so heavy imports here would inflate
every child's reading.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
OUT = BENCH / "out"
RESULTS = BENCH / "results"
README = BENCH / "README.md"

SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000, "5M": 5_000_000}
XLSX_MAX = 1_000_000
CONSOLIDATED_VIEWS = (
    "v_financing_by_axis",
    "v_financing_by_partner",
    "v_financing_by_year",
    "v_financing_axis_partner_year",
    "v_financing_by_convention",
    "v_financing_by_commune",
    "v_envelope_consumption",
)
OTHER_VIEWS = ("v_quarantine_summary", "current_files", "file_loads")
MIB = 1024

BEGIN_MARK = "<!-- bench:latest:start -->"
END_MARK = "<!-- bench:latest:end -->"


# -- running a step in a fresh process -----------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SETTLE = {"max_s": 60.0, "busy": 0.15}
"""Before each step, wait (at most max_s) until other processes use under ``busy`` of the CPUs."""


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


def settle() -> tuple[float, float]:
    """Wait for a quiet machine; (seconds waited, busy share of the CPUs when starting)."""
    t0 = time.perf_counter()
    share = 0.0
    if SETTLE["max_s"] <= 0:
        return 0.0, share
    while True:
        b0, a0 = _cpu_busy()
        time.sleep(0.25)
        b1, a1 = _cpu_busy()
        share = (b1 - b0) / (a1 - a0) if a1 > a0 else 0.0
        if share < SETTLE["busy"] or time.perf_counter() - t0 >= SETTLE["max_s"]:
            return time.perf_counter() - t0, share


def run_step(step: str, params: dict[str, Any], *, tag: str, timeout: float) -> dict[str, Any]:
    """Run ``bench.steps STEP`` in a new process; its result, wall time, CPU time and peak RSS.

    ``foreign_cpu_share`` is the share of the machine's CPUs that other processes used while
    the step ran: above ~0.1 the step's wall time was inflated by a busy neighbour.
    """
    work = OUT / "steps"
    work.mkdir(parents=True, exist_ok=True)
    pfile, rfile = work / f"{tag}.params.json", work / f"{tag}.result.json"
    pfile.write_text(json.dumps(params), encoding="utf-8")
    rfile.unlink(missing_ok=True)
    out = run_command(
        [sys.executable, "-m", "bench.steps", step, str(pfile), str(rfile)], tag=tag, timeout=timeout, label=step
    )
    if "error" not in out and not rfile.exists():
        out["error"] = f"{step} wrote no result"
    if "error" in out:
        return out
    return {**json.loads(rfile.read_text(encoding="utf-8")), **out}


def run_command(
    cmd: list[str], *, tag: str, timeout: float, label: str, settle_first: bool = True, code: Path = ROOT
) -> dict[str, Any]:
    """Run ``cmd`` in a new process (after waiting for a quiet machine), with the project's
    code from ``code`` (``--baseline``: an older checkout): its wall time, CPU time, peak RSS
    and the share of the CPUs other processes used meanwhile."""
    waited, busy_before = settle() if settle_first else (0.0, 0.0)
    work = OUT / "steps"
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{tag}.log"
    env = dict(
        os.environ,
        PYTHONPATH=str(code),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    t0 = time.perf_counter()
    cpu0, _ = _cpu_busy()
    with log.open("wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    cpu1, _ = _cpu_busy()
    peak = usage.ru_maxrss / MIB  # KiB on Linux
    child_cpu = usage.ru_utime + usage.ru_stime
    foreign = max(0.0, (cpu1 - cpu0) - child_cpu) / (wall * (os.cpu_count() or 1))
    out: dict[str, Any] = {
        "process_wall_s": wall,
        "peak_rss_mib": peak,
        "cpu_s": child_cpu,
        "foreign_cpu_share": round(foreign, 3),
        "settle_wait_s": round(waited, 1),
        "busy_before": round(busy_before, 3),
        "returncode": proc.returncode,
    }
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        why = "timeout" if wall >= timeout else f"exit {proc.returncode}"
        out["error"] = f"{label} failed ({why}): " + " | ".join(tail)
    return out


def cdv_etl_command() -> list[str]:
    """The installed ``cdv-etl`` script beside this interpreter (what a user runs), else ``-m``."""
    script = Path(sys.executable).parent / "cdv-etl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdv_etl.cli"]


def cli_startup(published: Path, repeats: int, timeout: float, baseline: Path | None = None) -> dict[str, Any]:
    """Start-up of the command line beside Python opening DuckDB: whole processes, the
    commands taken in turn ``repeats`` times (with ``baseline``, the older checkout's too);
    medians. The warehouse is the benchmark's empty one."""
    warehouse = published.with_name(published.name.replace(".published", ""))
    commands = {
        CLI_HELP: [*cdv_etl_command(), "--help"],
        CLI_SQL: [*cdv_etl_command(), "sql", "-w", str(warehouse), "SELECT 1"],
    }
    cases: dict[str, tuple[list[str], Path]] = {
        PY_DUCKDB: ([sys.executable, "-c", f"import duckdb; duckdb.connect({str(published)!r}, read_only=True)"], ROOT)
    }
    for name, cmd in commands.items():
        cases[name] = (cmd, ROOT)
        if baseline is not None:
            cases[f"{name} {BASELINE}"] = (cmd, baseline)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    for rep in range(repeats):
        for i, (name, (cmd, code)) in enumerate(cases.items()):
            runs[name].append(run_command(cmd, tag=f"cli-{i}-{rep}", timeout=timeout, label=name, code=code))
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out[name] = {"error": rs[-1].get("error", "not run")}
            continue
        walls = sorted(r["process_wall_s"] for r in ok)
        out[name] = {
            "median_s": walls[(len(walls) - 1) // 2]
            if len(walls) % 2
            else (walls[len(walls) // 2 - 1] + walls[len(walls) // 2]) / 2,
            "times_s": [round(r["process_wall_s"], 3) for r in ok],
            "cpu_s": sorted(r["cpu_s"] for r in ok)[(len(ok) - 1) // 2],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
            "foreign_cpu_share": sorted(r["foreign_cpu_share"] for r in ok)[(len(ok) - 1) // 2],
        }
    return out


def ingest_command(file: Path, warehouse: Path, *, tag: str, timeout: float, code: Path = ROOT) -> dict[str, Any]:
    """``cdv-etl ingest FILE`` as a user runs it: the whole process, imports, publish and
    printing included; then the ledger (read by another command, untimed) says what it did."""
    out = run_command(
        [*cdv_etl_command(), "ingest", "-w", str(warehouse), str(file)],
        code=code,
        tag=tag,
        timeout=timeout,
        label="cdv-etl ingest",
    )
    if "error" in out:
        return out
    ledger = subprocess.run(
        [*cdv_etl_command(), "files", "-w", str(warehouse), "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
    )
    last = json.loads(ledger.stdout)[-1]
    out.update(
        total_s=out["process_wall_s"],
        status=last["status"],
        rows_read=last["rows_read"],
        rows_quarantined=last["rows_quarantined"],
    )
    return out


def warm(path: Path) -> None:
    """Read the file once so that every contender finds it in the page cache."""
    with path.open("rb") as fh:
        while fh.read(16 << 20):
            pass


def fresh_warehouse(template: Path, name: str) -> Path:
    folder = OUT / "wh" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = folder / "cdv.duckdb"
    shutil.copyfile(template, target)
    return target


def published_of(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.stem + ".published.duckdb")


@dataclass
class Measured:
    """Repeated runs of one contender: the median run, and all times."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    key: str = "total_s"

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if "error" not in r]

    @property
    def median(self) -> dict[str, Any] | None:
        ok = sorted(self.ok, key=lambda r: r[self.key])
        return ok[(len(ok) - 1) // 2] if ok else None

    def summary(self) -> dict[str, Any] | None:
        m = self.median
        if m is None:
            return {"error": self.runs[-1].get("error") if self.runs else "not run"}
        walls = sorted(r["process_wall_s"] for r in self.ok)
        return {
            **m,
            "times_s": [round(r[self.key], 3) for r in self.ok],
            "process_walls_s": [round(r["process_wall_s"], 3) for r in self.ok],
            "process_wall_median_s": walls[(len(walls) - 1) // 2],
            "cpu_median_s": sorted(r["cpu_s"] for r in self.ok)[(len(walls) - 1) // 2],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in self.ok),
            "foreign_cpu_share": m.get("foreign_cpu_share", 0.0),
        }


# -- the run ---------------------------------------------------------------------------------------


def generate(sizes: list[str], partners: str) -> dict[str, dict[str, Any]]:
    cmd = [sys.executable, "-m", "bench.generate", "--sizes", ",".join(sizes), "--partners", partners, "--json"]
    out = subprocess.run(
        cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    return {f"{e['partner']}/{e['size']}": e for e in json.loads(out.stdout.strip().splitlines()[-1])}


def core_fingerprint() -> str:
    """SHA-256 of the project's code, specs and SQL: which version of the core was measured."""
    import hashlib

    h = hashlib.sha256()
    for folder, patterns in (
        ("cdv_etl", ("*.py",)),
        ("schemas", ("*.py", "*.yaml")),
        ("warehouse", ("*.sql", "*.yaml")),
    ):
        for pattern in patterns:
            for path in sorted((ROOT / folder).rglob(pattern)):
                h.update(str(path.relative_to(ROOT)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for pkg in ("duckdb", "pandas", "pandera", "pyarrow", "python-calamine", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def run(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    sizes = args.sizes
    xlsx_sizes = [s for s in (sizes if args.xlsx_sizes is None else args.xlsx_sizes) if SIZES.get(s, 0) <= XLSX_MAX]
    started = datetime.now(UTC)
    t_all = time.perf_counter()
    core_before = core_fingerprint()

    def say(msg: str) -> None:
        console.log(msg)

    say(f"generating (or reusing) files in {DATA.relative_to(ROOT)}/ …")
    t = time.perf_counter()
    files = generate(sorted(set(sizes) | set(xlsx_sizes), key=lambda s: SIZES[s]), "action_logement")
    if xlsx_sizes:
        files.update(generate(xlsx_sizes, "bdt"))
    gen_s = time.perf_counter() - t

    timeout = args.timeout
    base = run_step("import", {}, tag="import", timeout=timeout)
    template = OUT / "wh" / "template" / "cdv.duckdb"
    shutil.rmtree(template.parent, ignore_errors=True)
    setup = run_step("setup", {"warehouse": str(template)}, tag="setup", timeout=timeout)
    if "error" in setup:
        raise SystemExit(setup["error"])

    def repeats(size: str) -> int:
        return args.repeat.get(size) or args.repeat.get("*") or (3 if SIZES[size] <= 100_000 else 1)

    cli = None
    if args.cli_repeat:
        say(f"CLI start-up ({args.cli_repeat} runs of each command, in turn)")
        cli = cli_startup(published_of(template), args.cli_repeat, timeout, args.baseline)
    plan = run_step("floor_plan", {}, tag="floor-plan", timeout=timeout)
    if "error" in plan:
        raise SystemExit(plan["error"])
    plan = {k: plan[k] for k in ("select", "encoding", "delimiter", "quote", "amount_column", "date_column")}
    with_dlt = not args.skip_dlt and importlib.util.find_spec("dlt") is not None

    csv_rows: list[dict[str, Any]] = []
    largest_wh: Path | None = None
    largest_size: str | None = None
    largest_file: Path | None = None
    for size in sizes:
        entry = files[f"action_logement/{size}"]
        path = Path(entry["path"])
        floor, project, peer = Measured(), Measured(key="ingest_s"), Measured()
        process, dlt_peer, before = Measured(), Measured(), Measured()
        wh = template
        for rep in range(repeats(size)):
            warm(path)
            say(f"CSV {size}: floor ({rep + 1}/{repeats(size)})")
            floor.runs.append(
                run_step(
                    "floor_csv",
                    {"file": str(path), "workdir": str(OUT / "floor"), "plan": plan},
                    tag=f"floor-{size}-{rep}",
                    timeout=timeout,
                )
            )
            say(f"CSV {size}: project ingest")
            wh = fresh_warehouse(template, f"csv-{size}")
            project.runs.append(
                run_step(
                    "project", {"file": str(path), "warehouse": str(wh)}, tag=f"project-{size}-{rep}", timeout=timeout
                )
            )
            say(f"CSV {size}: cdv-etl ingest, the whole process")
            process.runs.append(
                ingest_command(
                    path, fresh_warehouse(template, f"process-{size}"), tag=f"process-{size}-{rep}", timeout=timeout
                )
            )
            if args.baseline is not None:
                say(f"CSV {size}: cdv-etl ingest, the whole process, baseline code ({args.baseline})")
                before.runs.append(
                    ingest_command(
                        path,
                        fresh_warehouse(template, f"baseline-{size}"),
                        tag=f"baseline-{size}-{rep}",
                        timeout=timeout,
                        code=args.baseline,
                    )
                )
            if with_dlt:
                say(f"CSV {size}: dlt")
                dlt_peer.runs.append(
                    run_step(
                        "dlt_csv",
                        {"file": str(path), "workdir": str(OUT / "dlt"), "plan": plan},
                        tag=f"dlt-{size}-{rep}",
                        timeout=timeout,
                    )
                )
            if not args.skip_peer:
                say(f"CSV {size}: naive peer")
                peer.runs.append(
                    run_step(
                        "peer_csv",
                        {"file": str(path), "workdir": str(OUT / "peer")},
                        tag=f"peer-{size}-{rep}",
                        timeout=timeout,
                    )
                )
        csv_rows.append(
            {
                "size": size,
                "rows": entry["rows"],
                "file_mb": entry["bytes"] / 1e6,
                "expected_quarantined": entry["expected_quarantined"],
                "floor": floor.summary(),
                "project": project.summary(),
                "peer": peer.summary() if not args.skip_peer else None,
                "process": process.summary(),
                "dlt": dlt_peer.summary() if with_dlt else None,
                "baseline_process": before.summary() if args.baseline is not None else None,
            }
        )
        if project.ok:
            largest_wh, largest_size, largest_file = wh, size, path

    xlsx_rows: list[dict[str, Any]] = []
    for size in xlsx_sizes:
        entry = files[f"bdt/{size}"]
        path = Path(entry["path"])
        cal, project = Measured(), Measured(key="ingest_s")
        for rep in range(repeats(size)):
            warm(path)
            say(f"XLSX {size}: python-calamine alone ({rep + 1}/{repeats(size)})")
            cal.runs.append(run_step("calamine", {"file": str(path)}, tag=f"calamine-{size}-{rep}", timeout=timeout))
            say(f"XLSX {size}: project ingest")
            wh = fresh_warehouse(template, f"xlsx-{size}")
            project.runs.append(
                run_step(
                    "project",
                    {"file": str(path), "warehouse": str(wh)},
                    tag=f"project-xlsx-{size}-{rep}",
                    timeout=timeout,
                )
            )
        xlsx_rows.append(
            {
                "size": size,
                "rows": entry["rows"],
                "file_mb": entry["bytes"] / 1e6,
                "expected_quarantined": entry["expected_quarantined"],
                "calamine": cal.summary(),
                "project": project.summary(),
            }
        )

    nightly: dict[str, Any] | None = None
    views: dict[str, Any] | None = None
    if largest_wh is not None and largest_file is not None:
        say(f"nightly run with nothing new over the {largest_size} warehouse")
        night, redelivered = Measured(), Measured()
        for rep in range(3):
            warm(largest_file)
            night.runs.append(
                run_step(
                    "nightly",
                    {"file": str(largest_file), "warehouse": str(largest_wh)},
                    tag=f"nightly-{rep}",
                    timeout=timeout,
                )
            )
            redelivered.runs.append(
                run_step(
                    "nightly",
                    {"file": str(largest_file), "warehouse": str(largest_wh), "copy_to": str(OUT / "redelivered")},
                    tag=f"nightly-copy-{rep}",
                    timeout=timeout,
                )
            )
        nightly = {"size": largest_size, **(night.summary() or {}), "redelivered": redelivered.summary()}
        say(f"consolidated views over the {largest_size} warehouse (published copy, read-only)")
        views = {
            "size": largest_size,
            **run_step(
                "views",
                {
                    "database": str(published_of(largest_wh)),
                    "views": list(CONSOLIDATED_VIEWS + OTHER_VIEWS),
                    "repeats": 5,
                },
                tag="views",
                timeout=timeout,
            ),
        }

    incremental: dict[str, Any] | None = None
    inc_size = "1M" if "1M" in sizes else (sizes[0] if sizes else None)
    if largest_wh is not None and inc_size and inc_size != largest_size:
        # A cost that grows with the new data, not with the warehouse: the same file loaded
        # into an empty warehouse (above) and into the largest one.
        say(f"CSV {inc_size} ingest into the {largest_size} warehouse")
        inc_wh = OUT / "wh" / f"incremental-{inc_size}-into-{largest_size}" / "cdv.duckdb"
        shutil.rmtree(inc_wh.parent, ignore_errors=True)
        inc_wh.parent.mkdir(parents=True)
        shutil.copyfile(largest_wh, inc_wh)
        inc_file = Path(files[f"action_logement/{inc_size}"]["path"])
        warm(inc_file)
        incremental = {
            "size": inc_size,
            "into": largest_size,
            **run_step(
                "project",
                {"file": str(inc_file), "warehouse": str(inc_wh)},
                tag=f"incremental-{inc_size}",
                timeout=timeout,
            ),
        }

    profile = None
    if args.profile:
        size = args.profile
        entry = files.get(f"action_logement/{size}") or generate([size], "action_logement")[f"action_logement/{size}"]
        say(f"profiling the project's ingest at {size} (cProfile)")
        wh = fresh_warehouse(template, f"profile-{size}")
        pstats_path = OUT / f"profile-{size}.pstats"
        profile = run_step(
            "profile",
            {"file": entry["path"], "warehouse": str(wh), "pstats": str(pstats_path)},
            tag=f"profile-{size}",
            timeout=timeout,
        )
        profile["pstats"] = str(pstats_path.relative_to(ROOT))

    return {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_all, 1),
        "generate_s": round(gen_s, 1),
        "command": "python -m bench.harness " + " ".join(args.argv),
        "core": core_before
        if core_before == core_fingerprint()
        else f"{core_before} → {core_fingerprint()} (the core changed during the run: results mix versions)",
        "machine": machine(),
        "parent_rss_mib": _self_rss(),
        "import_baseline": base,
        "cli": cli,
        "setup": setup,
        "files": files,
        "csv": csv_rows,
        "xlsx": xlsx_rows,
        "nightly": nightly,
        "views": views,
        "incremental": incremental,
        "profile": profile,
    }


def _self_rss() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB


# -- targets -----------------------------------------------------------------------------------------


def _get(rows: list[dict[str, Any]], size: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["size"] == size), None)


def _project(rows: list[dict[str, Any]], size: str) -> dict[str, Any] | None:
    row = _get(rows, size)
    return row["project"] if row else None


def _t(d: dict[str, Any] | None, key: str) -> float | None:
    if not d or "error" in d or d.get(key) is None:
        return None
    return float(d[key])


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: what was measured, and whether it is met (None: not measured)."""
    out: list[dict[str, Any]] = []
    csv = res["csv"]

    def add(name: str, goal: str, value: float | None, met: bool | None, unit: str = "", note: str = "") -> None:
        out.append({"target": name, "goal": goal, "measured": value, "unit": unit, "met": met, "note": note})

    cli = res.get("cli") or {}
    base = _t(cli.get(PY_DUCKDB), "median_s")
    for case in (CLI_HELP, CLI_SQL):
        c = _t(cli.get(case), "median_s")
        add(
            f"`{case}` / `python -c 'import duckdb; duckdb.connect(…)'` (whole processes)",
            "≤ 3×",
            c / base if c and base else None,
            (c / base <= 3) if c and base else None,
            "×",
        )
    for size, goal in (("1M", 3.0), ("5M", 2.0)):
        row = _get(csv, size)
        p = _t(row and row["project"], "ingest_s")
        f = _t(row and row["floor"], "total_s")
        q = _t(row and row.get("peer"), "total_s")
        add(
            f"CSV {size}: project / DuckDB floor (in process)",
            f"≤ {goal:g}×",
            p / f if p and f else None,
            (p / f <= goal) if p and f else None,
            "×",
        )
        pc, fc = _t(row and row["project"], "ingest_cpu_s"), _t(row and row["floor"], "total_cpu_s")
        add(
            f"(for information) CSV {size}: project / DuckDB floor in CPU seconds (steadier on a busy machine)",
            "—",
            pc / fc if pc and fc else None,
            None,
            "×",
        )
        w = _t(row and row.get("process"), "process_wall_median_s")
        fw = _t(row and row["floor"], "process_wall_median_s")
        add(
            f"CSV {size}: `cdv-etl ingest` / DuckDB floor, whole processes",
            "≤ 2.5×" if size == "1M" else "—",
            w / fw if w and fw else None,
            (w / fw <= 2.5) if w and fw and size == "1M" else None,
            "×",
        )
        d = _t(row and row.get("dlt"), "process_wall_median_s")
        wc = _t(row and row.get("process"), "cpu_median_s") or _t(row and row.get("process"), "cpu_s")
        dc = _t(row and row.get("dlt"), "cpu_median_s") or _t(row and row.get("dlt"), "cpu_s")
        add(
            f"CSV {size}: `cdv-etl ingest` / dlt, whole processes",
            "≤ 1×",
            w / d if w and d else None,
            (w / d <= 1) if w and d else None,
            "×",
        )
        add(
            f"(for information) CSV {size}: `cdv-etl ingest` / dlt in CPU seconds, whole processes",
            "—",
            wc / dc if wc and dc else None,
            None,
            "×",
        )
        add(
            f"CSV {size}: naive peer / project",
            "≥ 3×",
            q / p if p and q else None,
            (q / p >= 3) if p and q else None,
            "×",
        )
    row = _get(csv, "5M")
    rss = _t(_project(csv, "5M"), "peak_rss_mib")
    add("CSV 5M: project peak RSS", "< 1 GiB", rss, (rss < 1024) if rss else None, "MiB")
    p1 = _t(_project(csv, "1M"), "ingest_s")
    p5 = _t(_project(csv, "5M"), "ingest_s")
    add(
        "CSV linear growth: 5M time / 1M time",
        "≤ 5.5",
        p5 / p1 if p1 and p5 else None,
        (p5 / p1 <= 5.5) if p1 and p5 else None,
        "×",
    )
    night = res.get("nightly")
    n = _t(night, "total_s")
    if night is not None and n is not None and p1:
        add(
            f"nightly with nothing new ({night['size']} warehouse) / 1M ingest",
            "< 5 %",
            100 * n / p1,
            (100 * n / p1 < 5) and night["size"] == "5M",
            "%",
            "" if night["size"] == "5M" else f"warehouse holds {night['size']}, not 5M",
        )
        copy = _t(night.get("redelivered"), "total_s")
        if copy is not None:
            add(
                f"(for information) the same, the file re-delivered as a copy ({night['size']} file hashed)",
                "—",
                100 * copy / p1,
                None,
                "%",
                "a copy has a new inode: its bytes are hashed",
            )
    else:
        add("nightly with nothing new / 1M ingest", "< 5 %", None, None, "%", "needs the 1M and 5M sizes")
    views = res.get("views")
    if views and "views" in views:
        worst = max(views["views"][v]["first_ms"] for v in CONSOLIDATED_VIEWS)
        worst_warm = max(views["views"][v]["warm_median_ms"] for v in CONSOLIDATED_VIEWS)
        at5 = views["size"] == "5M"
        add(
            f"slowest consolidated view, first query ({views['size']} rows)",
            "< 200 ms",
            worst,
            worst < 200 if at5 else None,
            "ms",
            "" if at5 else "indicative: not the 5M warehouse",
        )
        add(
            f"slowest consolidated view, warm ({views['size']} rows)",
            "< 200 ms",
            worst_warm,
            worst_warm < 200 if at5 else None,
            "ms",
            "" if at5 else "indicative: not the 5M warehouse",
        )
    for row in res["xlsx"]:
        p = _t(row["project"], "ingest_s")
        c = _t(row["calamine"], "total_s")
        add(
            f"XLSX {row['size']}: project / python-calamine alone",
            "≤ 1.5×",
            p / c if p and c else None,
            (p / c <= 1.5) if p and c else None,
            "×",
        )
    return out


# -- rendering ---------------------------------------------------------------------------------------


def _s(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


NOISY = 0.10
BASELINE = "(baseline)"
PY_DUCKDB = "python -c 'import duckdb; duckdb.connect(…)'"
CLI_HELP = "cdv-etl --help"
CLI_SQL = 'cdv-etl sql "SELECT 1"'


def _tn(d: dict[str, Any] | None, key: str, digits: int = 2) -> str:
    """A time, marked † when other processes used over 10 % of the CPUs meanwhile."""
    v = _t(d, key)
    if v is None:
        return "—" if not d or "error" not in d else "failed"
    mark = " †" if d and d.get("foreign_cpu_share", 0) > NOISY else ""
    return f"{v:,.{digits}f}{mark}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def tables(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, for the console and for markdown alike."""
    out = []
    rows = []
    for r in res["csv"]:
        f, p, q = r["floor"], r["project"], r.get("peer") or {}
        ft, pt, qt = _t(f, "total_s"), _t(p, "ingest_s"), _t(q, "total_s")
        quarantined = p.get("rows_quarantined") if p and "error" not in p else None
        ok = "✓" if quarantined == r["expected_quarantined"] else "✗"
        rows.append(
            [
                f"{r['rows']:,}",
                _s(r["file_mb"], 1),
                _tn(f, "total_s"),
                _tn(p, "ingest_s"),
                _s(_t(p, "publish_s")),
                _tn(q, "total_s"),
                _ratio(pt, ft),
                _ratio(qt, pt),
                _s(_t(f, "peak_rss_mib"), 0),
                _s(_t(p, "peak_rss_mib"), 0),
                _s(_t(q, "peak_rss_mib"), 0),
                f"{quarantined:,} {ok}" if quarantined is not None else "—",
            ]
        )
    if rows:
        out.append(
            (
                "CSV ingest — Action Logement export (Windows-1252, ';', French numbers)",
                [
                    "rows",
                    "file MB",
                    "floor s",
                    "project s",
                    "publish s",
                    "peer s",
                    "project/floor",
                    "peer/project",
                    "floor RSS MiB",
                    "project RSS MiB",
                    "peer RSS MiB",
                    "quarantined",
                ],
                rows,
            )
        )
    rows = []
    for r in res["csv"]:
        f, w, d, p = r["floor"], r.get("process"), r.get("dlt"), r["project"]
        if not w:
            continue
        key = "process_wall_median_s"
        b = r.get("baseline_process")
        ft, wt, dt = _t(f, key), _t(w, key), _t(d, key)
        quarantined = w.get("rows_quarantined") if "error" not in w else None
        ok = "✓" if quarantined == r["expected_quarantined"] else "✗"
        rows.append(
            [
                f"{r['rows']:,}",
                _tn(f, key),
                _tn(w, key),
                _tn(d, key),
                _tn(b, key),
                _ratio(wt, ft),
                _ratio(wt, dt),
                " / ".join(_s(_t(x, "cpu_median_s") or _t(x, "cpu_s"), 1) for x in (f, w, d, b) if x),
                _s(_t(p, "ingest_s")),
                _s(_t(d, "total_s")),
                _s(_t(w, "peak_rss_mib"), 0),
                _s(_t(d, "peak_rss_mib"), 0),
                f"{quarantined:,} {ok}" if quarantined is not None else "—",
                " ".join(f"{x:.2f}" for x in (w.get("process_walls_s") or [])),
                " ".join(f"{x:.2f}" for x in ((d or {}).get("process_walls_s") or [])),
            ]
        )
    if rows:
        out.append(
            (
                "Whole processes — `cdv-etl ingest FILE` as a user runs it (imports, open, ingest, publish, "
                "printing) beside the floor's process and dlt's (`dlt[duckdb]`, Arrow table, amount and date "
                "typed, no rules)",
                [
                    "rows",
                    "floor process s",
                    "cdv-etl ingest s",
                    "dlt process s",
                    f"baseline ingest s {BASELINE}",
                    "ingest/floor",
                    "ingest/dlt",
                    "CPU s: floor / ingest / dlt / baseline",
                    "project in process s",
                    "dlt in process s",
                    "ingest RSS MiB",
                    "dlt RSS MiB",
                    "quarantined",
                    "ingest runs s",
                    "dlt runs s",
                ],
                rows,
            )
        )
    cli = res.get("cli")
    if cli:
        base = _t(cli.get(PY_DUCKDB), "median_s")
        out.append(
            (
                "Command-line start-up — whole processes, median of the runs (taken in turn)",
                ["command", "median s", "CPU s", "vs python + duckdb", "peak RSS MiB", "runs s"],
                [
                    [
                        f"`{name}`",
                        _tn(c, "median_s", 3),
                        _s(_t(c, "cpu_s"), 3),
                        _ratio(_t(c, "median_s"), base),
                        _s(_t(c, "peak_rss_mib"), 0),
                        " ".join(f"{x:.2f}" for x in c.get("times_s", [])),
                    ]
                    for name, c in cli.items()
                ],
            )
        )
    rows = []
    for r in res["xlsx"]:
        c, p = r["calamine"], r["project"]
        ct, pt = _t(c, "total_s"), _t(p, "ingest_s")
        quarantined = p.get("rows_quarantined") if p and "error" not in p else None
        ok = "✓" if quarantined == r["expected_quarantined"] else "✗"
        rows.append(
            [
                f"{r['rows']:,}",
                _s(r["file_mb"], 1),
                _tn(c, "total_s"),
                _tn(p, "ingest_s"),
                _s(_t(p, "publish_s")),
                _ratio(pt, ct),
                _s(_t(c, "peak_rss_mib"), 0),
                _s(_t(p, "peak_rss_mib"), 0),
                f"{quarantined:,} {ok}" if quarantined is not None else "—",
            ]
        )
    if rows:
        out.append(
            (
                "XLSX ingest — Banque des Territoires workbook (header on row 4, TOTAL footer)",
                [
                    "rows",
                    "file MB",
                    "calamine s",
                    "project s",
                    "publish s",
                    "project/calamine",
                    "calamine RSS MiB",
                    "project RSS MiB",
                    "quarantined",
                ],
                rows,
            )
        )
    n = res.get("nightly")
    if n and "error" not in n:
        p1 = _t(_project(res["csv"], "1M"), "ingest_s")
        ref = "1M" if p1 else (res["csv"][-1]["size"] if res["csv"] else None)
        pref = p1 or (_t(res["csv"][-1]["project"], "ingest_s") if res["csv"] else None)
        out.append(
            (
                f"Nightly run with nothing new — warehouse after the {n['size']} ingest "
                f"({n.get('warehouse_rows', 0):,} rows loaded)",
                [
                    "file",
                    "open s",
                    "ingest (stat or hash + ledger) s",
                    "close s",
                    "total s",
                    "process incl. imports s",
                    "peak RSS MiB",
                    f"vs {ref} ingest" if ref else "vs ingest",
                    "status",
                ],
                [
                    [
                        case,
                        _s(c["open_s"], 3),
                        _s(c["ingest_s"], 3),
                        _s(c["close_s"], 3),
                        _tn(c, "total_s", 3),
                        _s(c["process_wall_s"]),
                        _s(c["peak_rss_mib"], 0),
                        f"{100 * c['total_s'] / pref:.1f} %" if pref else "—",
                        f"{c['status']}, {'hashed' if c.get('hashed') else 'not read'}",
                    ]
                    for case, c in (
                        ("the same file, left in the inbox", n),
                        ("a re-delivered copy (new inode)", n.get("redelivered")),
                    )
                    if c and "error" not in c
                ],
            )
        )
    inc = res.get("incremental")
    if inc and "error" not in inc:
        base_row = _get(res["csv"], inc["size"])
        empty = base_row["project"] if base_row else None
        out.append(
            (
                f"Growth with the warehouse — the {inc['size']} file loaded into an empty warehouse "
                f"and into the {inc['into']} one",
                ["warehouse", "ingest s", "publish s", "peak RSS MiB", "warehouse MB after"],
                [
                    [
                        "empty",
                        _tn(empty, "ingest_s"),
                        _s(_t(empty, "publish_s")),
                        _s(_t(empty, "peak_rss_mib"), 0),
                        _s(_t(empty, "warehouse_mb"), 0),
                    ],
                    [
                        f"holding the {inc['into']} file",
                        _tn(inc, "ingest_s"),
                        _s(_t(inc, "publish_s")),
                        _s(_t(inc, "peak_rss_mib"), 0),
                        _s(_t(inc, "warehouse_mb"), 0),
                    ],
                ],
            )
        )
    v = res.get("views")
    if v and "views" in v:
        rows = [
            [
                name,
                f"{d['rows']:,}",
                _s(d["first_ms"], 1),
                _s(d["warm_median_ms"], 1),
                "consolidated" if name in CONSOLIDATED_VIEWS else "other",
            ]
            for name, d in v["views"].items()
        ]
        out.append(
            (
                f"Views on the published copy — {v['financing_rows']:,} current financing rows "
                f"({v['size']} file), read-only connection",
                ["view", "rows", "first query ms", "warm median ms", "kind"],
                rows,
            )
        )
    t = res.get("targets") or []
    if t:
        out.append(
            (
                "Targets (measured in this run; reported, never enforced)",
                ["target", "goal", "measured", "met"],
                [
                    [
                        x["target"],
                        x["goal"],
                        ("—" if x["measured"] is None else f"{x['measured']:,.2f} {x['unit']}".strip())
                        + (f" ({x['note']})" if x["note"] else ""),
                        {True: "yes", False: "**no**", None: "n/a"}[x["met"]],
                    ]
                    for x in t
                ],
            )
        )
    big = next((r for r in reversed(res["csv"]) if r["project"] and "error" not in r["project"]), None)
    if big:
        p = big["project"]
        total = p["ingest_s"] + p["publish_s"]
        stage_rows = [
            [k, _s(s, 3), f"{100 * s / total:.0f} %"] for k, s in sorted(p["stages"].items(), key=lambda kv: -kv[1])
        ]
        sql_rows = [
            [k, _s(s, 3), f"{100 * s / total:.0f} %"]
            for k, s in sorted(p["sql"].items(), key=lambda kv: -kv[1])
            if s >= 0.001
        ]
        out.append(
            (
                f"Where the project's time goes — CSV {big['size']} (ingest {p['ingest_s']:.2f} s "
                f"+ publish {p['publish_s']:.2f} s); stages nest (read ⊃ read.decode, validate ⊃ "
                "validate.pandera, load ⊃ its SQL)",
                ["stage", "s", "share"],
                stage_rows,
            )
        )
        out.append((f"SQL statements of that ingest — CSV {big['size']}", ["statement", "s", "share"], sql_rows))
    return out


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Measured {res['started']} with `{res['command']}` "
        f"({m['cores']} cores, {m['memory']}, {m['cpu'] or 'unknown CPU'}; Python {m['python']}, "
        f"DuckDB {m['duckdb']}, pandas {m['pandas']}, pandera {m['pandera']}, "
        f"python-calamine {m['python-calamine']}; core {res.get('core', '?')}). "
        "Times in seconds, median of the runs; "
        "RSS is each process's peak (a bare `import cdv_etl.pipeline` is "
        f"{_s(_t(res['import_baseline'], 'peak_rss_mib'), 0)} MiB). † marks a time measured while "
        "other processes used over 10 % of the CPUs.",
        "",
    ]
    for title, header, rows in tables(res):
        lines += [
            f"**{title}**",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def print_tables(res: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    for title, header, rows in tables(res):
        table = Table(title=title, title_justify="left", show_lines=False)
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
        for r in rows:
            table.add_row(*[c.replace("**", "") for c in r])
        console.print(table)


def update_readme(md: str) -> None:
    if not README.exists():
        return
    text = README.read_text(encoding="utf-8")
    if BEGIN_MARK not in text or END_MARK not in text:
        return
    head, rest = text.split(BEGIN_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    README.write_text(f"{head}{BEGIN_MARK}\n{md}\n{END_MARK}{tail}", encoding="utf-8")


def parse_repeat(text: str, ap: argparse.ArgumentParser) -> dict[str, int]:
    """``3`` → every size 3 runs; ``1M=5,5M=1`` → per size (others: the default)."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        size, _, n = part.rpartition("=")
        if not n.isdigit() or (size and size not in SIZES):
            ap.error(f"--repeat: {part!r} is neither N nor SIZE=N")
        out[size or "*"] = int(n)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m bench.harness", description="Ingest benchmarks: project vs DuckDB floor vs naive peer."
    )
    ap.add_argument("--sizes", default="10k,100k,1M,5M", help="CSV sizes (10k,100k,1M,5M)")
    ap.add_argument(
        "--xlsx-sizes", default=None, help=f"XLSX sizes (default: the CSV sizes up to {XLSX_MAX:,} rows; '' for none)"
    )
    ap.add_argument("--quick", action="store_true", help="10k and 100k only, one run each")
    ap.add_argument(
        "--repeat",
        default="",
        help="runs per measurement: N, or SIZE=N,… (e.g. 1M=5,5M=1; default: 3 up to 100k rows, 1 above)",
    )
    ap.add_argument(
        "--cli-repeat", type=int, default=9, help="runs of each command-line start-up case (0: leave them out)"
    )
    ap.add_argument("--skip-dlt", action="store_true", help="leave out the dlt peer")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an older checkout of the project (e.g. from git archive): its command-line start-up and "
        "whole-process ingest are measured too, in turn with this one's",
    )
    ap.add_argument("--skip-peer", action="store_true", help="leave out the naive pandas peer")
    ap.add_argument(
        "--profile",
        default=None,
        metavar="SIZE",
        help="also run the project's CSV ingest at SIZE under cProfile (bench/out/)",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per step")
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each step, wait up to SECONDS (default 60, 3 with --quick) for other "
        "processes to leave the CPUs idle (0: never wait); each step records the "
        "CPU share others used",
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the warehouses in bench/out/wh (several hundred MB at 5M rows)"
    )
    ap.add_argument(
        "--name", default=None, help="results name under bench/results/ (default: latest, or quick with --quick)"
    )
    args = ap.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.sizes = "10k,100k"
        args.repeat = args.repeat or "1"
        args.cli_repeat = min(args.cli_repeat, 3)
    args.repeat = parse_repeat(args.repeat, ap)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.xlsx_sizes is not None:
        args.xlsx_sizes = [s.strip() for s in args.xlsx_sizes.split(",") if s.strip()] or []
    for s in args.sizes + (args.xlsx_sizes or []) + ([args.profile] if args.profile else []):
        if s not in SIZES:
            ap.error(f"unknown size {s!r}: use {', '.join(SIZES)}")
    name = args.name or ("quick" if args.quick else "latest")
    SETTLE["max_s"] = args.settle if args.settle is not None else (3 if args.quick else 60)

    from rich.console import Console

    console = Console(width=max(140, Console().width))
    res = run(args, console)
    res["targets"] = targets(res)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    md = markdown(res)
    (RESULTS / f"{name}.md").write_text(md + "\n", encoding="utf-8")
    if name == "latest":
        update_readme(md)
    if not args.keep:
        shutil.rmtree(OUT / "wh", ignore_errors=True)
        for work in ("floor", "peer"):
            shutil.rmtree(OUT / work, ignore_errors=True)
    print_tables(res, console)
    errors = [r for r in json.dumps(res).split('"error": ')[1:]]
    console.print(
        f"[bold]written[/] bench/results/{name}.json and {name}.md in {res['seconds']} s"
        + (f" — [red]{len(errors)} step(s) failed[/], see bench/out/steps/*.log" if errors else "")
    )


if __name__ == "__main__":
    main()

"""Which Pandera backend runs the programme's rules fastest, keeping every row's failures?

The same canonical records — the project's own parse of the generated Action Logement CSV,
``canonical.parquet`` as the reader writes it — are validated by:

* **polars** — the project (``cdv_etl.validate.rules.find_failures``): the Pandera models of
  ``schemas/canonical.py`` on Polars, which reads the Parquet file in slices of 250k rows;
  the file rule (repeated ids) on the rows whose id's hash repeats;
* **polars-whole** — the same models on the whole file as one Polars frame;
* **pandas** — the design before: the same rules written for ``pandera.pandas``, on 250k-row
  pandas chunks of the same DuckDB reader, the repeated ids counted beforehand in SQL (as
  the parse did);
* **ibis** — the same rules written for ``pandera.ibis``, run by DuckDB itself on the table.
  ``ibis.duckdb.from_connection`` cannot wrap the reader's hardened connection (it runs
  ``SET timezone``, refused once the configuration is locked): the run records that
  refusal, then measures on a plain in-memory DuckDB with the same memory limit. Checks
  spanning columns must be DataFrame checks there (an Ibis column check sees its column
  alone), and rows are identified by the ``row_key`` in each failure case: Pandera's Ibis
  failure index is a position, and DuckDB does not promise the order of two scans.

Each run is a fresh process (peak RSS by ``os.wait4``, as in ``bench/harness.py``); runs are
interleaved; every backend must find exactly the project's (row_key, rule) pairs, and the
rows quarantined must equal the generator's count (``manifest.json``).

    python -m bench.backends --sizes 1M,5M --repeat 3     # ~10 min on 2 quiet cores

It writes ``bench/results/backends.json`` and ``backends.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "backends"
RESULTS = ROOT / "bench" / "results"
BACKENDS = ("polars", "polars-whole", "pandas", "ibis")
MEMORY_LIMIT = "1GB"
CHUNK_ROWS = 250_000


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the records every backend validates --------------------------------------------------------


def prepare(size: str) -> dict:
    """The generated file parsed by the project into ``OUT/<size>/canonical.parquet`` (once)."""
    from bench.generate import AL_EXTRACTION, ensure, parse_size

    entry = ensure("action_logement", parse_size(size))
    # The records depend on the file and on the parse: a change of either parses again.
    parse_code = (ROOT / "cdv_etl" / "validate" / "parse.py").read_bytes()
    key = hashlib.sha256(json.dumps(entry | {"seconds": None}, sort_keys=True).encode() + parse_code).hexdigest()
    work = OUT / size
    meta = work / "context.json"
    if meta.exists() and json.loads(meta.read_text())["key"] == key:
        return json.loads(meta.read_text())
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bench.backends", "--parse", entry["path"], "--workdir", str(work)], check=True
    )
    info = {
        "key": key,
        "rows": entry["rows"],
        "expected_quarantined": entry["expected_quarantined"],
        "extraction_date": AL_EXTRACTION.isoformat(),
    }
    meta.write_text(json.dumps(info))
    return info


def _parse(source: Path, workdir: Path) -> None:
    from cdv_etl.read import read_export
    from cdv_etl.read.sandbox import reader_connection
    from cdv_etl.specs import load_specs
    from cdv_etl.validate.parse import build_canonical

    spec = load_specs()["action_logement"]
    con = reader_connection(source, workdir, MEMORY_LIMIT)
    read_export(con, source, spec, workdir)
    build_canonical(con, spec, workdir)
    con.close()


def _context(info: dict) -> Any:
    from cdv_etl.load.reference import SAMPLE_REFERENCE, read_reference
    from cdv_etl.specs import load_specs
    from schemas.canonical import RuleContext

    spec = load_specs()["action_logement"]
    return RuleContext(
        communes=frozenset(read_reference(SAMPLE_REFERENCE)["insee_code"].dropna()),
        extraction_date=date.fromisoformat(info["extraction_date"]),
        statuses=frozenset(spec.status_counts()),
        has_date="engagement_date" in spec.fields,
        has_year="year" in spec.fields,
        names_instrument="instrument" in spec.fields,
    )


def _sandbox(work: Path) -> Any:
    """The reader's hardened DuckDB, holding the canonical view as after the parse."""
    from cdv_etl.read.sandbox import reader_connection
    from cdv_etl.validate.parse import CANONICAL_FILE, CANONICAL_TABLE

    con = reader_connection(work / CANONICAL_FILE, work, MEMORY_LIMIT)
    con.execute("SET VARIABLE cdv_canonical_file = ?", [str(work / CANONICAL_FILE)])
    con.execute(
        f"CREATE TEMP VIEW {CANONICAL_TABLE} AS SELECT * FROM read_parquet(getvariable('cdv_canonical_file'))"  # noqa: S608
    )
    return con


# -- the backends ------------------------------------------------------------------------------


def run_polars(work: Path, ctx: Any, chunk_rows: int) -> Any:
    from cdv_etl.validate.parse import CANONICAL_FILE
    from cdv_etl.validate.rules import find_failures

    return find_failures(work / CANONICAL_FILE, ctx, chunk_rows)


def run_pandas(work: Path, ctx: Any) -> Any:
    """The rules for pandera.pandas, on pandas chunks; repeated ids counted in SQL first."""
    import pandas as pd
    import pandera.pandas as pa
    import pyarrow as pa_arrow
    from pandera.errors import SchemaErrors

    from cdv_etl.validate.parse import CANONICAL_TABLE
    from schemas.canonical import AXES, MAX_LINE_EUR, PROGRAMME_START

    def check(rule: str, fn: Any) -> pa.Check:
        return pa.Check(fn, name=rule, ignore_na=False)

    start, end = pd.Timestamp(PROGRAMME_START), pd.Timestamp(ctx.extraction_date)
    communes, statuses = list(ctx.communes), list(ctx.statuses)
    columns = {
        "operation_id": pa.Column(nullable=True, checks=[check("operation_id_missing", lambda s: s.notna())]),
        "operation_id_rows": pa.Column(checks=[check("duplicate_operation_id", lambda s: s <= 1)]),
        "insee_code": pa.Column(
            nullable=True,
            checks=[
                check("commune_missing", lambda s: s.notna()),
                check("commune_not_acv", lambda s: s.isna() | s.isin(communes)),
            ],
        ),
        "axis": pa.Column(nullable=True, checks=[check("unknown_category", lambda s: s.isin(AXES))]),
        "amount_raw": pa.Column(nullable=True, checks=[check("amount_missing", lambda s: s.notna())]),
        "status": pa.Column(nullable=True, checks=[check("unknown_status", lambda s: s.isin(statuses))]),
    }
    cents = "amount_cents"
    frame_checks = [
        check("amount_unparseable", lambda df: df["amount_raw"].isna() | df[cents].notna()),
        check("amount_not_positive", lambda df: df[cents].isna() | (df[cents] > 0)),
        check("amount_implausible", lambda df: df[cents].isna() | (df[cents] <= MAX_LINE_EUR * 100)),
    ]
    if ctx.names_instrument:
        frame_checks.append(
            check("unknown_instrument", lambda df: df["instrument_label"].isna() | df["instrument"].notna())
        )
    if ctx.has_date:
        frame_checks += [
            check("date_missing", lambda df: df["date_raw"].notna()),
            check("date_unparseable", lambda df: df["date_raw"].isna() | df["engagement_date"].notna()),
            check("date_before_programme", lambda df: df["engagement_date"].isna() | (df["engagement_date"] >= start)),
            check("date_after_extraction", lambda df: df["engagement_date"].isna() | (df["engagement_date"] <= end)),
        ]
    assert not ctx.has_year  # the generated partner (Action Logement) gives no year
    schema = pa.DataFrameSchema(columns, checks=frame_checks, strict=False)

    con = _sandbox(work)
    reader = con.execute(
        f"""SELECT c.row_key, c.operation_id, coalesce(rep.n, 1) AS operation_id_rows, c.insee_code, c.axis,
                   c.amount_raw, CAST(c.amount_eur::DECIMAL(38, 2) * 100 AS BIGINT) AS amount_cents,
                   c.instrument_label, c.instrument, c.engagement_date, c.date_raw, c.status
            FROM {CANONICAL_TABLE} AS c
            LEFT JOIN (SELECT operation_id, count(*) AS n FROM {CANONICAL_TABLE} GROUP BY 1 HAVING count(*) > 1)
                 AS rep ON rep.operation_id IS NOT DISTINCT FROM c.operation_id"""  # noqa: S608
    ).to_arrow_reader(CHUNK_ROWS)
    ints = {pa_arrow.int8(), pa_arrow.int16(), pa_arrow.int32(), pa_arrow.int64()}
    found = []
    for batch in reader:
        frame = batch.to_pandas(types_mapper=lambda t: pd.Int64Dtype() if t in ints else None, date_as_object=False)
        frame = frame.set_index("row_key")
        frame["engagement_date"] = pd.to_datetime(frame["engagement_date"])
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as exc:
            cases = exc.failure_cases
            assert not cases["index"].isna().any(), cases.head()
            found.append(pd.DataFrame({"row_key": cases["index"].astype("int64"), "rule": cases["check"].astype(str)}))
    return pa_arrow.Table.from_pandas(pd.concat(found, ignore_index=True), preserve_index=False)


def probe_ibis_on_the_sandbox(work: Path) -> str:
    """Whether Ibis can wrap the reader's hardened connection."""
    import duckdb
    import ibis

    sandbox = _sandbox(work)
    try:
        ibis.duckdb.from_connection(sandbox)
        return "was accepted"
    except duckdb.Error as exc:
        return f"refused it: {exc}"
    finally:
        sandbox.close()


def run_ibis(work: Path, ctx: Any) -> Any:
    """The rules for pandera.ibis, executed by DuckDB on the canonical table."""
    import duckdb
    import ibis
    import pandas as pd
    import pandera.ibis as pa
    import pyarrow as pa_arrow
    from pandera.errors import SchemaErrors

    from cdv_etl.validate.parse import CANONICAL_FILE, CANONICAL_TABLE
    from schemas.canonical import AXES, MAX_LINE_EUR, PROGRAMME_START

    con = duckdb.connect(":memory:", config={"memory_limit": MEMORY_LIMIT})
    con.execute(
        f"CREATE VIEW {CANONICAL_TABLE} AS SELECT * FROM read_parquet('{work / CANONICAL_FILE}')"  # noqa: S608
    )
    t = ibis.duckdb.from_connection(con).table(CANONICAL_TABLE)
    start, end = PROGRAMME_START, ctx.extraction_date
    communes, statuses = sorted(ctx.communes), sorted(ctx.statuses)

    def check(rule: str, fn: Any) -> pa.Check:
        return pa.Check(lambda data: fn(data.table).fill_null(False), name=rule, ignore_na=False)

    # A window (count over the id) cannot sit under pandera's all(): repeated ids as a
    # subquery instead, rows without an id counting as one id (a placeholder, for this bench).
    def id_key(t: Any) -> Any:
        return t.operation_id.fill_null("<no id>")

    def repeated_ids(t: Any) -> Any:
        return t.group_by(k=id_key(t)).aggregate(n=ibis._.count()).filter(ibis._.n > 1)

    rules = [
        check("operation_id_missing", lambda t: t.operation_id.notnull()),
        check("duplicate_operation_id", lambda t: ~id_key(t).isin(repeated_ids(t).k)),
        check("commune_missing", lambda t: t.insee_code.notnull()),
        check("commune_not_acv", lambda t: t.insee_code.isnull() | t.insee_code.isin(communes)),
        check("unknown_category", lambda t: t.axis.isin(list(AXES))),
        check("amount_missing", lambda t: t.amount_raw.notnull()),
        check("amount_unparseable", lambda t: t.amount_raw.isnull() | t.amount_eur.notnull()),
        check("amount_not_positive", lambda t: t.amount_eur.isnull() | (t.amount_eur > 0)),
        check("amount_implausible", lambda t: t.amount_eur.isnull() | (t.amount_eur <= MAX_LINE_EUR)),
        check("unknown_status", lambda t: t.status.isin(statuses)),
        check("unknown_instrument", lambda t: t.instrument_label.isnull() | t.instrument.notnull()),
        check("date_missing", lambda t: t.date_raw.notnull()),
        check("date_unparseable", lambda t: t.date_raw.isnull() | t.engagement_date.notnull()),
        check("date_before_programme", lambda t: t.engagement_date.isnull() | (t.engagement_date >= start)),
        check("date_after_extraction", lambda t: t.engagement_date.isnull() | (t.engagement_date <= end)),
    ]
    assert not ctx.has_year and ctx.has_date and ctx.names_instrument  # Action Logement
    schema = pa.DataFrameSchema(checks=rules, strict=False)
    cols = [
        "row_key",
        "operation_id",
        "insee_code",
        "axis",
        "amount_raw",
        "amount_eur",
        "instrument_label",
        "instrument",
        "engagement_date",
        "date_raw",
        "status",
    ]
    try:
        schema.validate(t.select(cols), lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        errors = cases[[not isinstance(c, dict) for c in cases["failure_case"]]]
        assert errors.empty, errors.to_dict("records")
        keys = [case["row_key"] for case in cases["failure_case"]]
        found = pd.DataFrame({"row_key": pd.Series(keys, dtype="int64"), "rule": cases["check"].astype(str)})
    return pa_arrow.Table.from_pandas(found, preserve_index=False)


def child(backend: str, size: str, out: Path) -> None:
    """One measurement, in this fresh process: writes its figures and its failures."""
    import pyarrow.parquet as pq

    work = OUT / size
    info = json.loads((work / "context.json").read_text())
    ctx = _context(info)
    result: dict[str, Any] = {"backend": backend, "size": size}
    run: Callable[[], Any]
    # Imports are not validation: each backend's modules load before the clock starts.
    if backend in ("polars", "polars-whole"):
        import cdv_etl.validate.rules  # noqa: F401

        rows = info["rows"] if backend == "polars-whole" else CHUNK_ROWS
        result["sandbox"] = "none: Polars reads the Parquet file the reader wrote"
        run = partial(run_polars, work, ctx, rows)
    elif backend == "pandas":
        import pandas  # noqa: F401
        import pandera.pandas

        result["sandbox"] = "the reader's (hardened)"
        run = partial(run_pandas, work, ctx)
    elif backend == "ibis":
        import pandera.ibis  # noqa: F401

        result["sandbox"] = f"a plain one; the reader's {probe_ibis_on_the_sandbox(work)}"
        run = partial(run_ibis, work, ctx)
    else:
        raise ValueError(backend)
    result["rss_before_mib"] = _mib(_rss_kib())
    t0, c0 = time.perf_counter(), time.process_time()
    failures = run()
    result["validate_s"] = round(time.perf_counter() - t0, 3)
    result["validate_cpu_s"] = round(time.process_time() - c0, 3)
    pq.write_table(failures.select(["row_key", "rule"]), out.with_suffix(".parquet"))
    out.write_text(json.dumps(result))


# -- the run -------------------------------------------------------------------------------------


def measure(backend: str, size: str, run: int) -> dict:
    out = OUT / size / f"{backend}-{run}.json"
    out.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.backends", "--child", backend, "--size", size, "--out", str(out)]
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{backend} at {size} failed (status {status})")
    result = json.loads(out.read_text())
    result["peak_rss_mib"] = _mib(usage.ru_maxrss)
    result["failures_file"] = str(out.with_suffix(".parquet"))
    return result


def _pairs(path: str) -> set[tuple[int, str]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    return set(zip(t.column("row_key").to_pylist(), t.column("rule").to_pylist(), strict=True))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,5M")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="backends")
    ap.add_argument("--child")
    ap.add_argument("--size")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--parse", type=Path)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    if args.parse:
        _parse(args.parse, args.workdir)
        return
    if args.child:
        child(args.child, args.size, args.out)
        return

    backends = args.backends.split(",")
    runs: list[dict] = []
    summary: list[dict] = []
    for size in args.sizes.split(","):
        info = prepare(size)
        by_backend: dict[str, list[dict]] = {b: [] for b in backends}
        for run in range(args.repeat):
            for b in backends:
                r = measure(b, size, run)
                print(
                    f"{size:>4} {b:>13} run {run}: {r['validate_s']:7.2f} s, cpu {r['validate_cpu_s']:7.2f} s, "
                    f"peak {r['peak_rss_mib']:7.0f} MiB",
                    flush=True,
                )
                by_backend[b].append(r)
                runs.append(r)
        reference = _pairs(by_backend[backends[0]][0]["failures_file"])
        for b, rs in by_backend.items():
            pairs = _pairs(rs[0]["failures_file"])
            summary.append(
                {
                    "size": size,
                    "rows": info["rows"],
                    "backend": b,
                    "validate_s": statistics.median(r["validate_s"] for r in rs),
                    "validate_cpu_s": statistics.median(r["validate_cpu_s"] for r in rs),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                    "rss_before_mib": statistics.median(r["rss_before_mib"] for r in rs),
                    "failures": len(pairs),
                    "rows_quarantined": len({k for k, _ in pairs}),
                    "expected_quarantined": info["expected_quarantined"],
                    "same_as_project": pairs == reference,
                    "sandbox": rs[0]["sandbox"],
                }
            )
    meta = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.backends " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "versions": _versions(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    (RESULTS / f"{args.name}.md").write_text(markdown(meta, summary), encoding="utf-8")
    print(markdown(meta, summary))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("duckdb", "pandas", "pandera", "polars", "ibis-framework", "pyarrow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def markdown(meta: dict, summary: list[dict]) -> str:
    v = meta["versions"]
    load = ", ".join(f"{x:.1f}" for x in meta["load_average_at_end"])
    lines = [
        f"Measured {meta['measured']} with `{meta['command']}` ({meta['machine']}; Python {meta['python']}, "
        f"DuckDB {v['duckdb']}, pandas {v['pandas']}, pandera {v['pandera']}, Polars {v['polars']}, "
        f"Ibis {v['ibis-framework']}; load average at the end {load}). "
        "Validation of the canonical records only (the parse excluded), median of the runs; peak RSS is "
        "the largest of the runs' processes (imports included; `RSS before` is the process before validating).",
        "",
        "| rows | backend | validate s | CPU s | peak RSS MiB | RSS before MiB | rows quarantined "
        "| same (row_key, rule) as the project | DuckDB connection |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in summary:
        ok = (
            "✓" if s["rows_quarantined"] == s["expected_quarantined"] else f"✗ (expected {s['expected_quarantined']:,})"
        )
        lines.append(
            f"| {s['rows']:,} | {s['backend']} | {s['validate_s']:.2f} | {s['validate_cpu_s']:.2f} | "
            f"{s['peak_rss_mib']:,.0f} | {s['rss_before_mib']:,.0f} | {s['rows_quarantined']:,} {ok} | "
            f"{'yes' if s['same_as_project'] else 'NO'} | {s['sandbox']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""The measured steps, each run by the harness in a fresh Python process.

    python -m bench.steps STEP PARAMS.json RESULT.json

A fresh process per step gives each step a clean peak-RSS reading (the harness reads it with
``os.wait4`` for that child alone) and a cold Python heap; the file itself is in the page
cache (the harness reads it once before each size), for every contender alike. Times are
taken inside the step with ``time.perf_counter`` around the work, imports excluded (the
harness also records the whole process's wall time, imports included).

Steps:

* ``import``      — import the project, nothing else: the RSS every Python step starts from.
* ``setup``       — create a warehouse (migrations, views, the bundled 36-commune reference).
* ``project``     — the project's ingest: ``open_pipeline`` + ``Pipeline.ingest`` (read,
  validate, quarantine, load in one transaction), then the publish on leaving, timed apart.
  Each stage and each SQL statement is timed on the way (module attributes wrapped, the
  connection proxied; a few dozen calls, so the overhead is nil).
* ``floor_csv``   — what the machine can do for that work: DuckDB alone reading the CSV into a
  typed table with the same casts (``cdv_etl.validate.parse.parser_sql``), after the one
  transcode stock DuckDB 1.5 needs (its reader knows UTF-8, UTF-16 and Latin-1, and its
  Latin-1 refuses the byte 0x80, Windows-1252's €): a plain stdlib pass in 16 MiB chunks.
* ``floor_plan``  — the floor's typed select and the CSV's format, from the spec, once: the
  floor's and dlt's own processes then import nothing of the project.
* ``dlt_csv``     — the second peer: ``dlt[duckdb]`` loading a pyarrow table of the CSV, the
  amount and the date typed, into a new DuckDB file (telemetry off, its folders in the work
  folder).
* ``peer_csv``    — the naive peer: ``pandas.read_csv``, the same canonical fields computed
  with pandas string methods, the project's own Pandera schema (``schemas.canonical``)
  validated over the whole frame, then a DuckDB insert of the whole frame (valid rows and
  quarantine).
* ``calamine``    — python-calamine alone reading the workbook's sheet to Python rows.
* ``nightly``     — a nightly run with nothing new: ``open_pipeline`` + ``ingest`` of a file
  already in the ledger, then leaving. Two cases: the very file left where it was (its stat
  matches the ledger's: recognised without reading it) and a re-delivered copy under the
  same name elsewhere (a new inode: hashed, then found in the ledger).
* ``views``       — each public consolidated view, queried on the published copy read-only as
  an analyst does: the first query of a fresh connection, then the median of warm repeats.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- instrumentation of the project's ingest ---------------------------------------------------


class Timings:
    """Seconds per stage; a stage wrapped with ``nested`` is named after the stage it runs in."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = defaultdict(float)
        self.stages_cpu: dict[str, float] = defaultdict(float)
        self.sql: dict[str, float] = defaultdict(float)
        self.sql_cpu: dict[str, float] = defaultdict(float)
        self.sql_calls: dict[str, int] = defaultdict(int)
        self.stack: list[str] = []
        self.peak_rss_after: dict[str, float] = {}
        self.missing: list[str] = []

    def wrap(self, module: Any, name: str, label: str, nested: bool = False) -> None:
        fn = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            full = f"{self.stack[-1] if self.stack else 'other'}.{label}" if nested else label
            self.stack.append(full)
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stages[full] += time.perf_counter() - t
                self.stages_cpu[full] += time.process_time() - c
                self.peak_rss_after.setdefault(full, _rss_mib())  # high-water mark after its first call
                self.stack.pop()

        setattr(module, name, timed)


_SQL_LABELS = (
    ("read_csv(", "read: DuckDB read_csv → stg_file"),
    ("CREATE TEMP TABLE stg_sheet", "read: DuckDB read_xlsx → stg_sheet (non-blank rows)"),
    ("LIMIT ?", "read: read_xlsx title and header rows"),
    ("INSERT INTO stg_raw", "read: stg_sheet → stg_raw (header names, footer out)"),
    ("lower(coalesce(", "read: footer row"),
    ("CREATE TEMP TABLE stg_raw", "read: stg_file → stg_raw (row numbers)"),
    ("DESCRIBE stg_file", "read: other"),
    ("DROP TABLE stg_file", "read: other"),
    ("SELECT count(*) FROM stg_raw", "read: other"),
    ("COPY ( WITH s AS", "parse: stg_raw → canonical.parquet (SQL parsers)"),
    ("SELECT row_key, operation_id", "validate: SQL select for pandera"),
    ("SELECT row_key, rule FROM", "validate: the rules in SQL (proposal 60)"),
    ("INSERT INTO stg_failures", "outputs: failures frame → stg_failures"),
    ("FROM stg_failures AS f JOIN stg_rules", "outputs: failure messages → Arrow"),
    ("to_json(s)", "outputs: quarantined raw records → Arrow"),
    ("INSERT INTO quarantine_failures", "load: INSERT quarantine_failures"),
    ("INSERT INTO quarantine_rows", "load: INSERT quarantine_rows"),
    ("INSERT INTO engagement_rows", "load: INSERT engagement_rows"),
    ("WITH e AS (SELECT count(*)", "load: reconcile counts and amounts"),
    ("bitstring_agg(row_key", "load: reconcile distinct row keys"),
    ("count(DISTINCT row_key)", "load: reconcile distinct row keys"),
    ("SELECT coalesce(sum(amount_eur), 0) FROM stg_canonical", "outputs/load: amount read"),
    ("SELECT rule, count(*)", "load: by-rule summary"),
    ("COMMIT", "load: COMMIT"),
    ("CHECKPOINT", "publish: CHECKPOINT"),
    ("DROP TABLE IF EXISTS", "cleanup: drop temp tables"),
    ("SET ", "settings"),
    ("COPY (", "outputs: valid rows → Parquet"),
)


def _sql_label(sql: str) -> str:
    s = " ".join(sql.split())
    for needle, label in _SQL_LABELS:
        if needle in s:
            return label
    return "other SQL (small statements)"


class TimedConnection:
    """Times every statement of a DuckDB connection; everything else passes through."""

    def __init__(self, con: Any, timings: Timings, prefix: str = "") -> None:
        self._con = con
        self._t = timings
        self._prefix = prefix

    def _timed(self, label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        label = self._prefix + label
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self._t.sql[label] += time.perf_counter() - t
            self._t.sql_cpu[label] += time.process_time() - c
            self._t.sql_calls[label] += 1

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._timed(_sql_label(sql), self._con.execute, sql, *args, **kwargs)

    def executemany(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._timed("small: spec maps and rule table", self._con.executemany, sql, *args, **kwargs)

    def register(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("register (frame or Arrow)", self._con.register, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


# (module, attribute, label, nested): the stages timed when the core has them. A stage the
# core no longer has is skipped and listed in the result, so the harness survives refactors.
_STAGES = (
    ("cdv_etl.pipeline", "sha256_of", "hash (SHA-256 of the file)", False),
    ("cdv_etl.pipeline", "read_export", "read", False),
    ("cdv_etl.read.csv", "decode_to_utf8", "decode (encoding check + transcode, Python)", True),
    ("cdv_etl.read.xlsx", "check_container", "zip check", True),
    ("schemas.raw", "missing_columns", "header check", False),
    ("cdv_etl.pipeline", "build_canonical", "parse (SQL)", False),
    ("cdv_etl.pipeline", "reference_codes", "reference codes", False),
    ("cdv_etl.validate.rules", "find_failures", "validate", False),
    ("pandera.api.polars.container:DataFrameSchema", "validate", "pandera schema.validate", True),
    ("cdv_etl.validate.outputs", "build_outputs", "outputs (failures, quarantine → Arrow)", False),
    ("cdv_etl.pipeline", "load_export", "load (warehouse transaction)", False),
    ("cdv_etl.pipeline", "publish", "publish (CHECKPOINT + copy + fsync)", False),
    ("cdv_etl.pipeline", "is_stale", "published copy freshness check", False),
)


def _instrument() -> Timings:
    import importlib

    t = Timings()
    missing = []
    for where, attr, label, nested in _STAGES:
        mod_name, _, cls = where.partition(":")
        try:
            target = importlib.import_module(mod_name)
            target = getattr(target, cls) if cls else target
            getattr(target, attr)
        except (ImportError, AttributeError):
            missing.append(f"{where}.{attr}")
            continue
        t.wrap(target, attr, label, nested)
    # The hardened reader connection, when the core has one: its SQL is timed too.
    try:
        import cdv_etl.pipeline as pipeline

        make_reader = pipeline.reader_connection
    except AttributeError:
        pass
    else:

        def timed_reader(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            con = make_reader(*args, **kwargs)
            t.stages["reader connection (sandbox)"] += time.perf_counter() - start
            return TimedConnection(con, t, "reader › ")

        pipeline.reader_connection = timed_reader
    t.missing = missing
    return t


def _count(con: Any, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _today() -> date:
    from bench.generate import BDT_EXTRACTION

    return max(date.today(), BDT_EXTRACTION)


def step_import(p: dict) -> dict:
    t = time.perf_counter()
    import cdv_etl.pipeline
    import cdv_etl.validate.rules  # noqa: F401

    return {"import_s": time.perf_counter() - t}


def step_setup(p: dict) -> dict:
    from cdv_etl.config import Settings
    from cdv_etl.load.reference import SAMPLE_REFERENCE
    from cdv_etl.pipeline import open_pipeline

    t = time.perf_counter()
    warehouse = Path(p["warehouse"])
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    with open_pipeline(Settings(warehouse=warehouse), need_reference=False) as pipe:
        pipe.load_reference(SAMPLE_REFERENCE)
    return {"seconds": time.perf_counter() - t}


def step_project(p: dict) -> dict:
    from cdv_etl.config import Settings
    from cdv_etl.pipeline import open_pipeline

    timings = _instrument()
    path = Path(p["file"])
    settings = Settings(warehouse=Path(p["warehouse"]), memory_limit=p.get("memory_limit", "1GB"))
    t0 = time.perf_counter()
    cm = open_pipeline(settings)
    pipe = cm.__enter__()
    pipe.con = TimedConnection(pipe.con, timings, "warehouse › ")  # type: ignore[assignment]
    t1, c1 = time.perf_counter(), time.process_time()
    try:
        result = pipe.ingest(path, today=_today())
        t2, c2 = time.perf_counter(), time.process_time()
        rss_ingest = _rss_mib()
    except BaseException:
        cm.__exit__(*sys.exc_info())
        raise
    cm.__exit__(None, None, None)
    t3 = time.perf_counter()
    return {
        "open_s": t1 - t0,
        "ingest_s": t2 - t1,
        "publish_s": t3 - t2,
        "total_s": t3 - t0,
        "ingest_cpu_s": c2 - c1,
        "status": result.status,
        "rows_read": result.rows_read,
        "rows_loaded": result.rows_loaded,
        "rows_quarantined": result.rows_quarantined,
        "control_total_ok": result.control_total_ok,
        "rss_after_ingest_mib": rss_ingest,
        "stages": dict(timings.stages),
        "sql": dict(timings.sql),
        "sql_calls": dict(timings.sql_calls),
        "stages_cpu": dict(timings.stages_cpu),
        "sql_cpu": dict(timings.sql_cpu),
        "peak_rss_after_stage_mib": timings.peak_rss_after,
        "instrumentation_missing": timings.missing,
        "warehouse_mb": Path(p["warehouse"]).stat().st_size / 1e6,
    }


def step_nightly(p: dict) -> dict:
    from cdv_etl.config import Settings
    from cdv_etl.pipeline import open_pipeline

    timings = _instrument()
    settings = Settings(warehouse=Path(p["warehouse"]))
    path = Path(p["file"])
    if p.get("copy_to"):
        copy = Path(p["copy_to"]) / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.unlink(missing_ok=True)
        shutil.copyfile(path, copy)
        path = copy
    t0 = time.perf_counter()
    with open_pipeline(settings) as pipe:
        t1 = time.perf_counter()
        result = pipe.ingest(path, today=_today())
        t2 = time.perf_counter()
        rows = _count(pipe.con, "SELECT count(*) FROM engagement_rows")
    t3 = time.perf_counter()
    return {
        "open_s": t1 - t0,
        "ingest_s": t2 - t1,
        "close_s": t3 - t2,
        "total_s": t3 - t0,
        "status": result.status,
        "already_recorded": result.already_recorded,
        "hashed": "hash (SHA-256 of the file)" in timings.stages,
        "warehouse_rows": int(rows),
        "stages": dict(timings.stages),
    }


def _csv_contender(p: dict, database: str) -> tuple[Any, Any, Path, Path, Path]:
    """What the naive peer starts from: the partner's spec and CSV format, the file, a work
    folder and a fresh database file in it."""
    from cdv_etl.specs import CsvFormat, load_specs

    spec = load_specs()[p.get("partner", "action_logement")]
    fmt = spec.format
    assert isinstance(fmt, CsvFormat)
    work = Path(p["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    db = work / database
    db.unlink(missing_ok=True)
    return spec, fmt, Path(p["file"]), work, db


def floor_plan(partner: str = "action_logement") -> dict:
    """What the floor and dlt need to know of the partner's CSV, worked out from its spec once,
    so that their own processes import nothing of the project: the floor's typed select (the
    project's very casts, ``cdv_etl.validate.parse.parser_sql``) and the file's format."""
    from cdv_etl.specs import CsvFormat, load_specs
    from cdv_etl.sql import quote_ident
    from cdv_etl.validate.parse import parser_sql

    spec = load_specs()[partner]
    fmt = spec.format
    assert isinstance(fmt, CsvFormat)
    casts = [
        f"{parser_sql(f.parser, quote_ident(f.source_columns[0]), f.scale)} AS {name}"
        for name, f in spec.fields.items()
    ]
    return {
        "select": ", ".join(casts),
        "encoding": fmt.encoding,
        "delimiter": fmt.delimiter,
        "quote": fmt.quote,
        "amount_column": spec.fields["amount_eur"].source_columns[0],
        "date_column": spec.fields["engagement_date"].source_columns[0],
    }


def step_floor_plan(p: dict) -> dict:
    return floor_plan(p.get("partner", "action_logement"))


def step_floor_csv(p: dict) -> dict:
    import duckdb

    plan = p.get("plan") or floor_plan(p.get("partner", "action_logement"))
    src, work = Path(p["file"]), Path(p["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    db = work / "floor.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db), config={"memory_limit": p.get("memory_limit", "1GB")})
    t0, c0 = time.perf_counter(), time.process_time()
    if plan["encoding"] in ("utf-8", "utf-8-sig"):
        utf8 = src
    else:
        utf8 = work / (src.name + ".utf8")
        with (
            src.open("r", encoding=plan["encoding"], newline="") as fin,
            utf8.open("w", encoding="utf-8", newline="") as fout,
        ):
            while block := fin.read(16 << 20):
                fout.write(block)
    t1 = time.perf_counter()
    con.execute(
        f"CREATE TABLE typed AS SELECT {plan['select']} "  # noqa: S608 - identifiers from the spec
        "FROM read_csv(?, delim = ?, quote = ?, escape = ?, header = true, all_varchar = true)",
        [str(utf8), plan["delimiter"], plan["quote"], plan["quote"]],
    )
    t2 = time.perf_counter()
    rows = _count(con, "SELECT count(*) FROM typed")
    con.close()
    t3 = time.perf_counter()
    if utf8 != src:
        utf8.unlink()
    db.unlink(missing_ok=True)
    return {
        "transcode_s": t1 - t0,
        "duckdb_s": t2 - t1,
        "close_s": t3 - t2,
        "total_s": t3 - t0,
        "total_cpu_s": time.process_time() - c0,
        "rows": int(rows),
    }


def step_peer_csv(p: dict) -> dict:
    import duckdb
    import pandas as pd
    import polars as pl

    from bench.generate import AL_EXTRACTION
    from cdv_etl.load.reference import SAMPLE_REFERENCE, read_reference
    from schemas.canonical import CanonicalRecord, RuleContext, file_failures, record_failures

    spec, fmt, src, work, db = _csv_contender(p, "peer.duckdb")
    communes = frozenset(read_reference(SAMPLE_REFERENCE)["insee_code"].dropna())
    con = duckdb.connect(str(db), config={"memory_limit": p.get("memory_limit", "1GB")})
    t0, c0 = time.perf_counter(), time.process_time()
    raw = pd.read_csv(src, sep=fmt.delimiter, encoding=fmt.encoding, dtype=str, keep_default_na=False)
    t1 = time.perf_counter()

    def text(col: str) -> pd.Series:
        s = raw[col].str.strip()
        return s.mask(s == "")

    f = spec.fields
    frame = pd.DataFrame(index=raw.index)
    frame["source_row"] = raw.index + 2
    frame["row_key"] = raw.index
    frame["operation_id"] = text(f["operation_id"].source_columns[0])
    insee_raw = text(f["insee_code"].source_columns[0])
    frame["insee_raw"] = insee_raw
    code = insee_raw.str.upper().str.replace(r"\.0+$", "", regex=True)
    short = code.str.fullmatch(r"[0-9]{1,4}").fillna(False).astype(bool)
    frame["insee_code"] = code.where(~short, code.str.zfill(5))
    frame["commune_label"] = text(f["commune_label"].source_columns[0])
    frame["category"] = None
    frame["axis"] = spec.axis
    amount_raw = text(f["amount_eur"].source_columns[0])
    cleaned = amount_raw.str.replace(r"[ \t\u00a0\u202f\u2009€]|EUR", "", regex=True).str.replace(",", ".")
    amount = pd.to_numeric(cleaned, errors="coerce")
    frame["amount_raw"] = amount_raw
    frame["amount_eur"] = amount.round(2)
    label = text(f["instrument"].source_columns[0])
    instruments = {k.strip().lower(): v for k, v in spec.instruments.items()}
    frame["instrument_label"] = label
    frame["instrument"] = label.str.lower().map(instruments)
    date_raw = text(f["engagement_date"].source_columns[0])
    frame["date_raw"] = date_raw
    frame["engagement_date"] = pd.to_datetime(date_raw, format="%d/%m/%Y", errors="coerce")
    frame["year_raw"] = None
    frame["year_given"] = None
    frame["status"] = (spec.default_status or "").lower()
    frame["scheme"] = text(f["scheme"].source_columns[0])
    t2 = time.perf_counter()
    extracted = date.fromisoformat(p.get("extraction_date", AL_EXTRACTION.isoformat()))
    ctx = RuleContext(
        communes=communes,
        extraction_date=extracted,
        statuses=frozenset(spec.status_counts()),
        has_date=True,
        has_year=False,
        names_instrument=True,
    )
    # The project's own Pandera models run on Polars: the frame crosses over, typed as they say.
    types = {name: column.dtype.type for name, column in CanonicalRecord.to_schema().columns.items()}
    checked = pl.from_pandas(frame[list(types)]).cast(types)
    failed = (
        pl.concat([record_failures(checked, ctx), file_failures(checked, ctx)]).rename({"row_key": "row"}).to_pandas()
    )
    t3 = time.perf_counter()
    bad = frame.index.isin(failed["row"])
    valid = frame[~bad]
    rejected = raw[bad].assign(source_row=frame["source_row"][bad])  # noqa: F841 - read by DuckDB by name
    con.execute(
        "CREATE TABLE engagement_rows AS SELECT source_row, operation_id, insee_code, "
        "commune_label, axis::TINYINT AS axis, instrument, instrument_label, scheme, "
        "amount_eur::DECIMAL(18, 2) AS amount_eur, engagement_date::DATE AS engagement_date, "
        "status FROM valid"
    )
    con.execute("CREATE TABLE quarantine_failures AS SELECT * FROM failed")
    con.execute("CREATE TABLE quarantine_rows AS SELECT * FROM rejected")  # raw cells of the rows
    t4 = time.perf_counter()
    con.close()
    t5 = time.perf_counter()
    db.unlink(missing_ok=True)
    return {
        "read_csv_s": t1 - t0,
        "transform_s": t2 - t1,
        "pandera_s": t3 - t2,
        "insert_s": t4 - t3,
        "close_s": t5 - t4,
        "total_s": t5 - t0,
        "total_cpu_s": time.process_time() - c0,
        "rows_read": len(raw),
        "rows_loaded": int(len(valid)),
        "rows_quarantined": int(bad.sum()),
    }


def _all_text(path: Path, plan: dict) -> dict:
    import pyarrow as pa

    with path.open("r", encoding=plan["encoding"], newline="") as fh:
        header = fh.readline().rstrip("\r\n").split(plan["delimiter"])
    return {name: pa.string() for name in header}


def step_dlt_csv(p: dict) -> dict:
    """dlt (``dlt[duckdb]``) loading the CSV into DuckDB on its fast path: pyarrow reads the
    file, the amount and the date are typed with pyarrow compute kernels (the same cleaning as
    the project's parsers: no-break spaces and € out, decimal comma, ``dd/mm/yyyy``; what does
    not parse becomes NULL), and ``pipeline.run`` loads the Arrow table. None of the
    programme's rules, no quarantine, no ledger. Offline: telemetry off, its folders in the
    work folder."""
    work = Path(p["workdir"])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["DLT_DATA_DIR"] = str(work / "dlt-data")
    t0, c0 = time.perf_counter(), time.process_time()
    import dlt
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pa_csv

    t_import = time.perf_counter()
    plan = p["plan"]
    table = pa_csv.read_csv(
        Path(p["file"]),
        read_options=pa_csv.ReadOptions(encoding=plan["encoding"]),
        parse_options=pa_csv.ParseOptions(delimiter=plan["delimiter"], quote_char=plan["quote"] or False),
        # every column read as text, as the partner wrote it (no type guessing)
        convert_options=pa_csv.ConvertOptions(column_types=_all_text(Path(p["file"]), plan)),
    )
    t1 = time.perf_counter()
    amount_col, date_col = plan["amount_column"], plan["date_column"]
    cleaned = pc.replace_substring(
        pc.replace_substring_regex(table[amount_col], r"[ \t\x{00A0}\x{202F}\x{2009}€]|EUR", ""), ",", "."
    )
    number = pc.match_substring_regex(cleaned, r"^-?[0-9]{1,16}(\.[0-9]{1,2})?$")
    amount = pc.cast(pc.if_else(number, cleaned, pa.scalar(None, pa.string())), pa.decimal128(18, 2))
    day = pc.cast(pc.strptime(table[date_col], format="%d/%m/%Y", unit="s", error_is_null=True), pa.date32())
    typed = table.set_column(table.schema.get_field_index(amount_col), "amount_eur", amount)
    typed = typed.set_column(typed.schema.get_field_index(date_col), "engagement_date", day)
    t2 = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name="bench_dlt",
        pipelines_dir=str(work / "pipelines"),
        destination=dlt.destinations.duckdb(str(work / "dlt.duckdb")),
        dataset_name="action_logement",
    )
    info = pipeline.run(typed, table_name="engagements", write_disposition="replace")
    t3 = time.perf_counter()
    import duckdb

    con = duckdb.connect(str(work / "dlt.duckdb"), read_only=True)
    row = con.execute("SELECT count(*), count(amount_eur), sum(amount_eur) FROM action_logement.engagements").fetchone()
    kinds = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'engagements'"
        ).fetchall()
    )
    con.close()
    shutil.rmtree(work, ignore_errors=True)
    assert row is not None
    return {
        "import_s": t_import - t0,
        "read_csv_s": t1 - t_import,
        "typing_s": t2 - t1,
        "dlt_run_s": t3 - t2,
        "total_s": t3 - t0,
        "total_cpu_s": time.process_time() - c0,
        "rows": int(row[0]),
        "amounts": int(row[1]),
        "amount_sum": str(row[2]),
        "column_types": {"amount_eur": kinds.get("amount_eur"), "engagement_date": kinds.get("engagement_date")},
        "load_packages": len(info.loads_ids),
    }


def step_calamine(p: dict) -> dict:
    from python_calamine import CalamineWorkbook

    t0, c0 = time.perf_counter(), time.process_time()
    wb = CalamineWorkbook.from_path(p["file"])
    rows = wb.get_sheet_by_name(p.get("sheet", "Engagements")).to_python(skip_empty_area=False)
    t1 = time.perf_counter()
    return {"total_s": t1 - t0, "total_cpu_s": time.process_time() - c0, "rows": len(rows)}


def step_views(p: dict) -> dict:
    import duckdb

    views = p["views"]
    repeats = int(p.get("repeats", 5))
    t0 = time.perf_counter()
    con = duckdb.connect(p["database"], read_only=True)
    connect_s = time.perf_counter() - t0
    out: dict[str, Any] = {}
    for v in views:
        t = time.perf_counter()
        rows = con.execute(f'SELECT * FROM "{v}"').fetchall()  # noqa: S608 - names from the harness
        first = time.perf_counter() - t
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            con.execute(f'SELECT * FROM "{v}"').fetchall()  # noqa: S608
            warm.append(time.perf_counter() - t)
        out[v] = {
            "first_ms": first * 1000,
            "warm_median_ms": statistics.median(warm) * 1000,
            "warm_max_ms": max(warm) * 1000,
            "rows": len(rows),
        }
    current = _count(con, "SELECT count(*) FROM financing")
    stored = _count(con, "SELECT count(*) FROM engagement_rows")
    con.close()
    return {
        "connect_ms": connect_s * 1000,
        "views": out,
        "financing_rows": int(current),
        "engagement_rows": int(stored),
    }


def step_profile(p: dict) -> dict:
    """The project's ingest under cProfile; the stats go to p['pstats']."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    result = step_project(p)
    prof.disable()
    prof.dump_stats(p["pstats"])
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
    Path(p["pstats"]).with_suffix(".txt").write_text(buf.getvalue(), encoding="utf-8")
    return result


STEPS = {
    "import": step_import,
    "setup": step_setup,
    "project": step_project,
    "nightly": step_nightly,
    "floor_plan": step_floor_plan,
    "floor_csv": step_floor_csv,
    "peer_csv": step_peer_csv,
    "dlt_csv": step_dlt_csv,
    "calamine": step_calamine,
    "views": step_views,
    "profile": step_profile,
}


def main() -> None:
    step, params_path, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    params = json.loads(params_path.read_text(encoding="utf-8"))
    out = STEPS[step](params)
    out["rss_self_mib"] = _rss_mib()
    out["pid"] = os.getpid()
    result_path.write_text(json.dumps(out, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()

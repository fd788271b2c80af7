"""Tasks: each one calls the core for one piece of work and returns plain data.

No task takes a DuckDB connection or a DataFrame as input, and none is cached: each opens
the warehouse itself (the run's writer lock is re-entrant) and returns a dict. Retries only
where they help: the warehouse lock and file moves — never a validation failure.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from cdv_etl.config import Settings
from cdv_etl.errors import WarehouseBusy
from cdv_etl.load.loader import LoadResult
from cdv_etl.pipeline import open_pipeline


def _lock_busy(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the warehouse was locked by another writer."""
    try:
        state.result(raise_on_failure=True)
    except WarehouseBusy:
        return True
    except Exception:
        return False
    return False


def result_dict(r: LoadResult) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    d["control_total_ok"] = r.control_total_ok
    for k, v in d.items():
        if isinstance(v, Decimal):
            d[k] = str(v)
        elif hasattr(v, "isoformat"):
            d[k] = v.isoformat()
    return d


@task(
    name="ingest-file",
    task_run_name="ingest {path.name}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_lock_busy,
)
def ingest_file(settings: Settings, path: Path, partner: str | None = None, force: bool = False) -> dict[str, Any]:
    """Read, validate and load one export (one transaction); bad input ends 'rejected'."""
    with open_pipeline(settings, publish_on_exit=False) as pipe:
        return result_dict(pipe.ingest(path, partner=partner, force=force))


@task(
    name="load-reference",
    task_run_name="reference {path.name}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_lock_busy,
)
def load_reference(settings: Settings, path: Path) -> dict[str, Any]:
    """Load a new ANCT list of ACV communes (replaces the reference; financing stays)."""
    with open_pipeline(settings, need_reference=False, publish_on_exit=False) as pipe:
        return dataclasses.asdict(pipe.load_reference(path))


@task(name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_lock_busy)
def publish(settings: Settings) -> str:
    """Replace the analysts' read-only copy of the warehouse, atomically."""
    with open_pipeline(settings, need_reference=False, publish_on_exit=False) as pipe:
        return str(pipe.publish())


def published_is_stale(settings: Settings) -> bool:
    """Whether the analysts' copy lags the warehouse (a run killed before publishing)."""
    import duckdb

    from cdv_etl.publish.snapshot import is_stale

    if not settings.warehouse.exists():
        return True
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return is_stale(con, settings.published_path)
    finally:
        con.close()


def _free_name(target: Path) -> Path:
    if not target.exists():
        return target
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
    return target.with_name(f"{target.stem}.{stamp}{target.suffix}")


@task(name="move-file", task_run_name="move {path.name}", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def move_file(path: Path, folder: Path, reason: str | None = None) -> str:
    """Move a processed file to ``folder`` (never overwriting); a reason file goes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder / path.name)
    shutil.move(str(path), target)
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return str(target)

"""Tasks: the steps of an inbox run (``cdv_etl.inbox``) wrapped as Prefect tasks.

None is cached: each opens the warehouse itself (the run's writer lock is re-entrant).
Retries only where they help: the warehouse lock and file moves — never a validation failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.task_runners import ThreadPoolTaskRunner

from cdv_etl import inbox
from cdv_etl.errors import WarehouseBusy


def _lock_busy(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the warehouse was locked by another writer."""
    try:
        state.result(raise_on_failure=True)
    except WarehouseBusy:
        return True
    except Exception:
        return False
    return False


ingest_file = task(
    name="ingest-file",
    task_run_name="ingest {path.name}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_lock_busy,
)(inbox.ingest_file)
load_reference = task(
    name="load-reference",
    task_run_name="reference {path.name}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_lock_busy,
)(inbox.load_reference)
publish = task(name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_lock_busy)(
    inbox.publish
)
move_file = task(
    name="move-file",
    task_run_name="move {path.name}",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=2,
)(inbox.move_file)


def fan_out(
    work: Callable[[list[Path]], list[inbox.FileOutcome]], groups: list[list[Path]], workers: int
) -> list[list[inbox.FileOutcome]]:
    """A lake's partner groups side by side on Prefect's ``ThreadPoolTaskRunner``: one task run
    per group (its files' ingest and move tasks inside it), ``workers`` at a time."""

    def partner_files(files: str, paths: list[Path]) -> list[inbox.FileOutcome]:
        return work(paths)

    group_task = task(name="partner-files", task_run_name="{files}", cache_policy=NO_CACHE)(partner_files)
    pool: Any = ThreadPoolTaskRunner(max_workers=workers)  # (its submit's overloads type only coroutines)
    with pool as runner:
        futures = [
            runner.submit(group_task, parameters={"files": ", ".join(p.name for p in g), "paths": g}) for g in groups
        ]
        return [f.result() for f in futures]


PARTNER_DEPLOYMENT = "ingest-partner/ingest-partner"
"""The deployment a lake's nightly run hands each partner's exports to (``flows.ingest_partner``),
unless ``CDV_PARTNER_DEPLOYMENT`` names another (``<flow>/<deployment>``)."""
POLL_S = 1.0
"""How often the nightly run asks the server whether a partner's run has finished."""


def pool_fan_out(parameters: dict[str, str | None]) -> inbox.FanOut:
    """A lake's partner groups across machines: one run of the ``ingest-partner`` deployment per
    group, taken by whichever worker of its pool is free, ``workers`` of them in flight at once,
    each a subflow of the nightly run. ``parameters``: the nightly run's inbox, lake and folders.
    A group whose run does not complete fails each of its files, naming the run."""

    def fan_out(
        work: Callable[[list[Path]], list[inbox.FileOutcome]], groups: list[list[Path]], workers: int
    ) -> list[list[inbox.FileOutcome]]:
        deployment = os.environ.get("CDV_PARTNER_DEPLOYMENT") or PARTNER_DEPLOYMENT

        def hand_out(paths: list[Path]) -> list[inbox.FileOutcome]:
            run = run_deployment(  # (sync: no event loop in this thread)
                deployment,
                parameters={**parameters, "paths": [str(p) for p in paths]},
                timeout=None,
                poll_interval=POLL_S,
            )
            assert isinstance(run, FlowRun)
            state = run.state
            if state is not None and state.is_completed():
                return [inbox.FileOutcome.from_dict(d) for d in state.result()]
            ended = f"{state.name}: {state.message}" if state is not None else "without a state"
            why = f"its {deployment} run {run.name!r} ended {ended}"
            return [inbox.FileOutcome(p.name, None, None, why) for p in paths]

        return inbox.in_threads(hand_out, groups, workers)

    return fan_out


STEPS = inbox.Steps(reference=load_reference, ingest=ingest_file, move=move_file, publish=publish, fan_out=fan_out)
"""The inbox run's steps as tasks: one task run per file, per move, for the publish, and on a lake
per partner's group of files."""

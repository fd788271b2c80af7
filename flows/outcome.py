"""How a run ends and what it logs, so that a rejection shows where people look.

Each reference and each export gets one log line in the run's logs: at INFO with its counts
(read, loaded, quarantined, engaged €), or at WARNING (held) or ERROR (rejected, failed) with
its reason. A run with an export that needs attention (``cdv_etl.load.loader.NEEDS_ATTENTION``, or an
ingest that raised) does not end green: it ends ``Failed``, its state message naming each
such file, its status and reason, and what to do next. So does a run stopped by an error a
person can fix (a path that does not exist, a busy warehouse): its message is that error's
message and advice, not a traceback. Prefect emits ``prefect.flow-run.Failed`` for both, the
event an automation matches (README, "Be told when a night fails").
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.states import Failed, State

from cdv_etl.errors import CdvError
from cdv_etl.inbox import LEFT_IN_INBOX, FileOutcome
from cdv_etl.load.reference import ReferenceResult
from cdv_etl.publish.tables import euros
from flows.artifacts import count

LEVEL = {"held": logging.WARNING, "rejected": logging.ERROR, "failed": logging.ERROR}
"""The level of the log line of a file that needs attention (each status of ``NEXT_STEP``); INFO otherwise."""


def file_line(f: FileOutcome) -> tuple[int, str]:
    """(level, text) of an export's one log line."""
    r = f.result
    ledger = f", file {r.file_id}" if r and r.file_id else ""
    head = f"{f.file_name} ({r.partner or '?'}{ledger}): {f.status}" if r else f"{f.file_name}: {f.status}"
    if f.needs_attention:
        where = LEFT_IN_INBOX if r is None else f"moved to {f.moved_to}" if f.moved_to else ""
        return LEVEL[f.status], f"{head} — {f.reason}" + (f" ({where})" if where else "")
    if f.status == "loaded" and r is not None:
        counts = (
            f"{count(r.rows_read)} rows read, {count(r.rows_loaded)} loaded, {count(r.rows_quarantined)} quarantined, "
            f"{euros(r.engaged_amount_eur)} engaged"
        )
        return logging.INFO, f"{head} — {counts}" + (f", moved to {f.moved_to}" if f.moved_to else "")
    return logging.INFO, f"{head} — {f.reason}"


def log_step(log: Any, step: ReferenceResult | FileOutcome) -> None:
    """The one log line of a reference or an export (``run_inbox``'s ``finished``)."""
    if isinstance(step, ReferenceResult):
        log.info(step.summary())
    else:
        log.log(*file_line(step))


def failed(log: Any, error: CdvError, *, data: BaseException | None = None, logged: bool = False) -> State[Any]:
    """A Failed state whose message is ``error`` (what, then « → » what to do), logged once at ERROR
    unless its files were (``logged``). ``data``: what a caller in the same process gets raised
    (default: ``error`` itself)."""
    message = str(error)
    if not logged:
        log.error(" ".join(message.split()))
    return Failed(message=message, data=data if data is not None else error)

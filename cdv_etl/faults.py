"""Fault injection for the crash test: the process kills itself (SIGKILL) at a named point.

``CDV_FAULT_POINT=load.rows cdv-etl ingest FILE`` dies, as a power cut or ``kill -9`` would,
right after the load's rows are inserted and before its commit. ``tests/test_crash_safety.py``
runs a load killed at each point of ``POINTS`` in turn and checks that the warehouse and the
published copy hold the state before or after the file, never a third one, and that the next
run finishes the work. The variable is read once, at import: unset, ``checkpoint`` costs one
comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "read",  # the file is read into the reader sandbox
    "validated",  # the rules have run; the loader's outputs are written, nothing in the warehouse yet
    "load.ledger",  # in the load's transaction: the file's ledger row
    "load.quarantine",  # ... and its quarantined rows and their failures
    "load.rows",  # ... and its loaded rows and totals
    "load.reconciled",  # ... counts checked and written to the ledger row, just before COMMIT
    "load.committed",  # after COMMIT, before the publication
    "publish.checkpointed",  # the warehouse checkpointed, nothing copied yet
    "publish.copied",  # the copy written and synced beside the published file, not renamed yet
    "publish.renamed",  # the copy renamed over the published file, its folder not synced yet
)
"""Every point where ``checkpoint`` is called, in the order a load passes them."""

_ARMED = os.environ.get("CDV_FAULT_POINT") or None
if _ARMED is not None and _ARMED not in POINTS:
    raise ValueError(f"CDV_FAULT_POINT={_ARMED!r} names no fault point; known points: {', '.join(POINTS)}")


def checkpoint(name: str) -> None:
    """Die here (SIGKILL, no clean-up of any kind) when ``CDV_FAULT_POINT`` names this point."""
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)

"""Fault injection for the crash and concurrency tests: the process stops at a named point.

``CDV_FAULT_POINT=load.rows cdv-etl ingest FILE`` dies, as a power cut or ``kill -9`` would,
right after the load's rows are inserted and before its commit. A kill before the commit
leaves the file's claim behind; the next ingest of its bytes takes it over (its process is
gone). ``tests/test_crash_safety.py`` runs a load killed at each point of ``POINTS`` in turn and
checks that the warehouse and the published copy hold the state before or after the file,
never a third one, and that the next run finishes the work.

With ``CDV_FAULT_PAUSE=<folder>`` as well, the process pauses there instead: it writes
``<folder>/<point>.reached`` (a line per arrival: several loads of one run can wait there at
once) and waits for ``<folder>/<point>.go`` to exist. A test uses the
two files as a barrier (another writer commits while this one is inside its transaction), not
a sleep. The variables are read once, at import: unset, ``checkpoint`` costs one comparison.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

POINTS = (
    "claimed",  # the file's id claimed (committed), nothing of it read or in the figures yet
    "read",  # the file is read into the reader sandbox
    "validated",  # the rules have run; the loader's outputs are written, none of them in the warehouse yet
    "load.quarantine",  # in the load's transaction: the file's quarantined rows and their failures
    "load.rows",  # ... and its loaded rows and totals
    "load.reconciled",  # ... every row read counted in exactly one place
    "load.ledger",  # ... and, last, the file's ledger row with its counts, just before COMMIT
    "load.committed",  # after COMMIT, before the publication
    "publish.checkpointed",  # the warehouse checkpointed, nothing copied yet
    "publish.copied",  # the copy written and synced beside the published file, not renamed yet
    "publish.renamed",  # the copy renamed over the published file, its folder not synced yet
)
"""Every point where ``checkpoint`` is called, in the order a load passes them."""

_ARMED = os.environ.get("CDV_FAULT_POINT") or None
if _ARMED is not None and _ARMED not in POINTS:
    raise ValueError(f"CDV_FAULT_POINT={_ARMED!r} names no fault point; known points: {', '.join(POINTS)}")
_PAUSE = Path(os.environ["CDV_FAULT_PAUSE"]) if os.environ.get("CDV_FAULT_PAUSE") else None


def checkpoint(name: str) -> None:
    """Die here (SIGKILL, no clean-up of any kind) when ``CDV_FAULT_POINT`` names this point, or
    pause here when ``CDV_FAULT_PAUSE`` names a folder."""
    if name != _ARMED:
        return
    if _PAUSE is None:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    with (_PAUSE / f"{name}.reached").open("a", encoding="utf-8") as reached:  # one line per arrival
        reached.write(f"{os.getpid()} {threading.get_ident()}\n")
    go = _PAUSE / f"{name}.go"
    while not go.exists():
        time.sleep(0.01)

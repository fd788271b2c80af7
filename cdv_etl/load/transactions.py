"""Write transactions that several writers may run at once: retried whole on a commit conflict.

A DuckLake's concurrency is optimistic and table-grained: transactions that only insert never
conflict, but one that updates or deletes rows of a table fails at COMMIT when another
transaction wrote that table since it began (``duckdb.TransactionException``, "Transaction
conflict"). Nothing of the loser is applied. ``in_transaction`` runs a unit of work in
``BEGIN … COMMIT`` and, on such a conflict only, runs the whole unit again after a jittered
pause: the unit re-reads whatever it decided on, so the retry decides on what the winner wrote.
Any other error goes up at once (an unreachable catalog or a full disk must be seen).

A DuckDB file has one writer process, and its own conflicts between two connections of a process
are raised at the statement, not at COMMIT: there the wrapper runs the unit once, as before.

A failed COMMIT has already ended the transaction: a ROLLBACK after it would raise "no
transaction is active" and hide the conflict, so none is sent then.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cdv_etl.errors import CdvError
from cdv_etl.load.backend import is_commit_conflict

if TYPE_CHECKING:
    import duckdb

_log = logging.getLogger("cdv_etl")

T = TypeVar("T")

TRIES = 8
"""How many times a unit runs before its conflicts are given up on."""
FIRST_PAUSE_S = 0.05
"""The pause after a unit's first conflict; it doubles at each further one (jittered ±50 %)."""
LONGEST_PAUSE_S = 2.0


class CommitConflict(CdvError):
    """A unit kept conflicting with other writers' commits: nothing of it was applied."""


def in_transaction(
    con: duckdb.DuckDBPyConnection,
    unit: Callable[[duckdb.DuckDBPyConnection], T],
    *,
    what: str,
    tries: int = TRIES,
) -> T:
    """``unit(con)`` in one transaction, committed; run again whole on a commit conflict.

    ``what`` names the work in the log and in the error (``"load of anah_2026.csv"``). After
    ``tries`` conflicts, raises ``CommitConflict``: nothing of the unit was changed.
    """
    attempt = 0
    while True:
        attempt += 1
        con.execute("BEGIN TRANSACTION")
        committing = False
        try:
            result = unit(con)
            committing = True
            con.execute("COMMIT")
            return result
        except BaseException as exc:
            if not committing:
                con.execute("ROLLBACK")
            if not is_commit_conflict(exc):
                raise
            if attempt == tries:
                raise CommitConflict(
                    f"the {what} conflicted with other writers' commits {tries} times in a row; "
                    "nothing of it was changed",
                    "run it again once the other writers are done (cdv-etl ingest is safe to repeat)",
                ) from exc
            pause = min(FIRST_PAUSE_S * 2 ** (attempt - 1), LONGEST_PAUSE_S) * random.uniform(0.5, 1.5)
            _log.info(
                "the %s conflicted with another writer's commit (attempt %d of %d), run again in %.2f s: %s",
                what,
                attempt,
                tries,
                pause,
                " ".join(str(exc).split()),
            )
            time.sleep(pause)

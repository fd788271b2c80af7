"""The ledger's decision about a file's bytes, kept true with several writers and no constraints.

What the ledger relies on: one ``files`` row per file name and bytes, at most one loaded (or
held) row per sha256 (later copies are ``duplicate`` rows pointing at it), and file ids that
are never used twice. A DuckLake has no UNIQUE constraint or sequence to keep them, and it does
not detect that a transaction read ``files`` while another inserted into it. So every
transaction that decides about bytes and writes a ledger row first UPDATEs the one row of
``id_counters`` (``serialise``): two such transactions conflict at commit, and the loser runs
again (``cdv_etl.load.transactions.in_transaction``), deciding on what the winner wrote.

A file to load is *claimed* in such a short transaction (its id taken, a ``file_claims`` row
written) before it is read; the long load transaction that follows only inserts, and writes
the file's ``files`` row last. A claim without a ``files`` row is a load in flight: the same
bytes ingested meanwhile elsewhere are refused as being loaded (``BeingLoaded``). A claim goes
stale when its process is gone (same host) or when it is older than ``CDV_CLAIM_TIMEOUT``;
the next ingest of those bytes takes it over, with a new file id.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import duckdb

_log = logging.getLogger("cdv_etl")

SPEC_REJECTIONS = ("unknown_partner", "spec_invalid")
"""Rejections the specs decided, not the file's bytes: such a file is tried again without --force."""


def claimant() -> str:
    """Who claims: ``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@dataclass(frozen=True)
class InFlight:
    """A claim whose file has no ledger row yet."""

    file_id: int
    file_name: str
    claimed_by: str
    claimed_at: datetime
    age_s: float

    def stale(self, timeout_s: float) -> bool:
        """Its process is gone (it ran on this host), or it is older than ``timeout_s``."""
        host, _, pid = self.claimed_by.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and _process_gone(int(pid)):
            return True
        return self.age_s > timeout_s

    def describe(self) -> str:
        since = f"{self.claimed_at:%Y-%m-%d %H:%M:%S}"
        return f"file {self.file_id} ({self.file_name}), claimed by {self.claimed_by} since {since}"


@dataclass(frozen=True)
class Decision:
    """What the ledger says about a file's bytes.

    - ``already``: this file (name and bytes) is in the ledger as ``file_id``; nothing to write;
    - ``duplicate``: the bytes are loaded (or held) as ``file_id`` under another name: the file is
      recorded as its duplicate;
    - ``busy``: another writer is loading these bytes (``in_flight``); nothing to write;
    - ``new``: the file is to be read; ``file_id`` is its ledger row written again in place
      (``--force``, or a spec fixed since it was refused), None for a new row; ``stale`` are the
      dead claims on these bytes to take over.
    """

    action: Literal["already", "duplicate", "busy", "new"]
    file_id: int | None = None
    original_name: str | None = None
    original_partner: str | None = None
    in_flight: InFlight | None = None
    stale: tuple[InFlight, ...] = ()


def decide(
    con: duckdb.DuckDBPyConnection, *, sha: str, file_name: str, loadable: bool, force: bool, timeout_s: float
) -> Decision:
    """The ledger's decision for ``file_name`` with bytes ``sha`` (``loadable``: a valid spec takes it).

    A file the specs refused (none recognised it, or its spec was invalid) is tried again
    without --force once a valid spec takes it: its ledger row is written again in place, one
    row per file. Met again with nothing new, it changes nothing."""
    known = con.execute(
        "SELECT file_id, file_name, status, partner FROM files WHERE sha256 = ? "
        "ORDER BY (status IN ('loaded', 'held')) DESC, file_id LIMIT 1",
        [sha],
    ).fetchone()
    same_name = con.execute(
        "SELECT file_id, status, reason FROM files WHERE sha256 = ? AND file_name = ? ORDER BY file_id LIMIT 1",
        [sha, file_name],
    ).fetchone()
    retry = same_name is not None and same_name[1] == "rejected" and same_name[2] in SPEC_REJECTIONS and loadable
    if known and not force:
        if same_name and not retry:
            return Decision("already", int(same_name[0]))
        if known[2] in ("loaded", "held"):  # its rows are in the ledger: the same bytes load nothing new
            return Decision("duplicate", int(known[0]), original_name=str(known[1]), original_partner=known[3])
    if same_name and (force or retry):
        return Decision("new", int(same_name[0]))
    in_flight = [
        InFlight(int(r[0]), str(r[1]), str(r[2]), r[3], float(r[4]))
        for r in con.execute(
            """SELECT c.file_id, c.file_name, c.claimed_by, c.claimed_at,
                      epoch(CAST(current_timestamp AS TIMESTAMP) - c.claimed_at)
               FROM file_claims AS c
               WHERE c.sha256 = ? AND NOT EXISTS (SELECT 1 FROM files AS f WHERE f.file_id = c.file_id)
               ORDER BY c.file_id""",
            [sha],
        ).fetchall()
    ]
    live = [c for c in in_flight if not c.stale(timeout_s)]
    if live:
        return Decision("busy", live[0].file_id, in_flight=live[0])
    return Decision("new", None, stale=tuple(in_flight))


def serialise(con: duckdb.DuckDBPyConnection) -> None:
    """Make this transaction conflict with every other one that decides about bytes or keys:
    the first statement of each (an UPDATE that changes nothing but writes the row)."""
    con.execute("UPDATE id_counters SET next_file_id = next_file_id")


def take_file_id(con: duckdb.DuckDBPyConnection) -> int:
    """The next file id (in a transaction that ``serialise``\\ d first)."""
    con.execute("UPDATE id_counters SET next_file_id = next_file_id + 1")
    row = con.execute("SELECT next_file_id - 1 FROM id_counters").fetchone()
    assert row is not None, "id_counters has no row: the warehouse was not migrated (cdv-etl init)"
    return int(row[0])


def take_reference_load_id(con: duckdb.DuckDBPyConnection) -> int:
    """The next reference-load id (the UPDATE serialises the reference loads too)."""
    con.execute("UPDATE id_counters SET next_reference_load_id = next_reference_load_id + 1")
    row = con.execute("SELECT next_reference_load_id - 1 FROM id_counters").fetchone()
    assert row is not None, "id_counters has no row: the warehouse was not migrated (cdv-etl init)"
    return int(row[0])


@dataclass(frozen=True)
class Claim:
    """A file id this process writes: a new one (its claim row written), or a ledger row it
    writes again in place (``replaces``)."""

    file_id: int
    replaces: bool
    by: str


def claim_new(con: duckdb.DuckDBPyConnection, *, sha: str, file_name: str, stale: tuple[InFlight, ...]) -> Claim:
    """Take the stale claims over, then a new file id and its claim (in the serialised transaction)."""
    for dead in stale:
        _log.warning("taking over the stale claim of %s: its process is gone, or its lease expired", dead.describe())
        con.execute("DELETE FROM file_claims WHERE file_id = ?", [dead.file_id])
    claim = Claim(take_file_id(con), replaces=False, by=claimant())
    con.execute(
        "INSERT INTO file_claims (file_id, sha256, file_name, claimed_by) VALUES (?, ?, ?, ?)",
        [claim.file_id, sha, file_name, claim.by],
    )
    return claim


def held_by(con: duckdb.DuckDBPyConnection, claim: Claim) -> str | None:
    """Who holds the claim now: ``claim.by`` while it is ours, another writer after a takeover,
    None when it is gone (always ``claim.by`` for a row written again in place)."""
    if claim.replaces:
        return claim.by
    row = con.execute("SELECT claimed_by FROM file_claims WHERE file_id = ?", [claim.file_id]).fetchone()
    return str(row[0]) if row else None


def release(con: duckdb.DuckDBPyConnection, claim: Claim) -> None:
    """Give a new file id's claim back when its load failed (in the caller's transaction): the same
    bytes may then be ingested again at once. A claim that got its ledger row stays: it is history."""
    if not claim.replaces:
        con.execute(
            "DELETE FROM file_claims WHERE file_id = ? AND claimed_by = ? "
            "AND NOT EXISTS (SELECT 1 FROM files WHERE file_id = ?)",
            [claim.file_id, claim.by, claim.file_id],
        )

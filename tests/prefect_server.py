"""A real Prefect server for tests: a free port, its own PREFECT_HOME, the embedded SQLite.

Everything goes through Prefect's REST API (httpx), so the test process's own Prefect
settings never mix with the server's.

One server serves a whole session, whatever the number of pytest-xdist workers: the first
process that needs it starts it (``shared_server``, under a file lock in a folder all the
session's processes share) and writes where it listens to a state file; the others read it and
attach. The session's controller stops it at the very end (``stop_shared_server``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock

BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DEPLOYMENTS = (
    "nightly/nightly",
    "ingest-export/ingest-export",
    "reference-refresh/reference-refresh",
    "accept-export/accept-export",
)
"""What ``cdv-etl serve`` serves."""
POLL_S = 0.5
"""How often a wait asks the server again (each answer costs the server some 20 ms of CPU)."""
RETRY_503_S = 300
STATE = "prefect-server.json"
"""In the session's shared folder: the server's port, home and process ids, once it is up."""
IDLE_SERVICES = (
    "LATE_RUNS",
    "FOREMAN",
    "PAUSE_EXPIRATIONS",
    "CANCELLATION_CLEANUP",
    "DB_VACUUM",
    "CLEANUP_RECONCILER",
)
"""Server services no test needs (each is a loop that wakes the server every few seconds): marking
runs Late, workers offline, paused runs expired, cancelled runs' children cancelled, the database
vacuumed, cleanup leases reconciled. The scheduler is off too (see ``PrefectServer.env``). What
the tests use stays on: the triggers and actions (the README's automation), the task-run recorder
(task runs), the event persister, the repossessor (concurrency leases)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrefectServer:
    home: Path
    port: int
    proc: subprocess.Popen[bytes] | None
    """The server's process, in the process that started it (None in those that attached)."""
    log: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """What this process started on the server (`cdv-etl serve`, a test's workers): stopped by ``stop``."""
    reports_port: int | None = None
    """The port ``cdv-etl serve`` serves the reports folder on, once the fixture has started it."""
    pids: Path | None = None
    """While the session's server starts (``shared_server``): where each process started is written, at once."""
    _http: httpx.Client | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.Client:
        """One HTTP client for all the calls (a client of its own per call would build a TLS
        context each time: some 60 ms of CPU, more than the server takes to answer). A new
        connection for each call: a kept-alive one could be closed by the server as it is reused."""
        if self._http is None:
            no_keepalive = httpx.Limits(max_keepalive_connections=0)
            self._http = httpx.Client(base_url=self.api, timeout=120, limits=no_keepalive)
        return self._http

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api,
                "PREFECT_UI_API_URL": self.api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
                # No scheduled runs: the nightly deployment's 02:00 schedule must not start a run
                # in the middle of the tests (nor add runs to what a test counts).
                "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in IDLE_SERVICES},
                # Waits that are idle time in a test (Prefect's defaults, in seconds: 10, 30, 30):
                # how often `cdv-etl serve` asks for runs to start, when a run refused by its
                # deployment's concurrency limit is tried again, and the longest Retry-After the
                # server gives a run waiting for the writers' slot. What waits for what is unchanged.
                "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
                "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
                "DO_NOT_TRACK": "1",
                "PREFECT_LOGGING_LEVEL": "INFO",
            }
        )
        env.update(extra)
        return env

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call of the REST API. A 503 is the server's "busy, retry" (its SQLite locked by
        another writer): retried, as Prefect's own client does, for up to RETRY_503_S."""
        deadline = time.monotonic() + RETRY_503_S
        while True:
            r = self.http.request(method, path, **kwargs)
            if r.status_code != 503 or time.monotonic() > deadline:
                r.raise_for_status()
                return r.json() if r.content else None
            time.sleep(1)

    def start_child(self, args: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=cwd, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.children.append(proc)
        self._record(proc)
        return proc

    def _record(self, proc: subprocess.Popen[bytes]) -> None:
        if self.pids is not None:
            with self.pids.open("a", encoding="utf-8") as out:
                out.write(f"{proc.pid}\n")

    def deployment_id(self, name: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return str(self.request("GET", f"/deployments/name/{name}")["id"])
            except httpx.HTTPStatusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S)

    def run_deployment(self, name: str, parameters: dict[str, Any]) -> str:
        dep = self.deployment_id(name)
        run = self.request("POST", f"/deployments/{dep}/create_flow_run", json={"parameters": parameters})
        return str(run["id"])

    def wait(self, flow_run_id: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.request("GET", f"/flow_runs/{flow_run_id}")
            if run["state_type"] in TERMINAL:
                return dict(run)
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} still {run['state_type']} after {timeout} s")
            time.sleep(POLL_S)

    def artifacts(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        return list(self.request("POST", "/artifacts/filter", json=body))

    def stop(self) -> None:
        """What this process started: the children first (`cdv-etl serve` and its runs, a test's
        workers: a process group each), then the server if this process started it."""
        for group in (self.children, [self.proc] if self.proc is not None else []):
            by_pid: dict[int, subprocess.Popen[bytes]] = {p.pid: p for p in group}

            def ended(pid: int, by_pid: dict[int, subprocess.Popen[bytes]] = by_pid) -> bool:
                return by_pid[pid].poll() is not None

            stop_groups(list(by_pid), ended=ended)
        if self._http is not None:
            self._http.close()
            self._http = None


def _pid_ended(pid: int) -> bool:
    """Whether process ``pid`` (not necessarily a child of this one) has ended: gone, or a zombie."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # a child of this process: reaped
            return True
    except ChildProcessError:  # not a child of this process
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def stop_groups(pids: list[int], ended: Callable[[int], bool] = _pid_ended, grace_s: float = 20) -> None:
    """SIGTERM to the process group of each of ``pids`` (each started in a session of its own),
    SIGKILL to those still there after ``grace_s``."""
    live = [pid for pid in pids if not ended(pid)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live:
        live = [pid for pid in live if not ended(pid)]
        if live and time.monotonic() > deadline:
            for pid in live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            deadline = float("inf")  # a SIGKILLed process ends: wait for it
        time.sleep(0.05)


def start_server(
    home: Path, timeout: float = 600, template: Path | None = None, pids: Path | None = None
) -> PrefectServer:
    """A new server on a free port, its database in ``home``. With ``template``: a copy of it as the
    database when it exists (a migrated, empty database: no migration to run), else the new
    database, once migrated, is saved there for the next session. With ``pids``: the server's
    process id, and those of the children started on it, are written there as they start."""
    home.mkdir(parents=True, exist_ok=True)
    if template is not None and template.exists():
        shutil.copyfile(template, home / "prefect.db")
        template = None
    port = free_port()
    log = home / "server.log"
    server = PrefectServer(home, port, None, log, pids=pids)
    with log.open("wb") as out:
        server.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server._record(server.proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if server.http.get("/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"Prefect server did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(POLL_S)
    if template is not None:  # migrated, nothing of a test in it yet: a consistent copy (SQLite's backup)
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f"{template.name}.{os.getpid()}.tmp")
        with sqlite3.connect(home / "prefect.db") as live, sqlite3.connect(partial) as copy:
            live.backup(copy)
        live.close()
        copy.close()
        os.replace(partial, template)
    return server


_SESSION_PROCESSES: list[subprocess.Popen[bytes]] = []
PIDS = "prefect-server.pids"
"""In the session's shared folder: the process ids of the server and `cdv-etl serve`, each written as
it starts, so that the controller stops them even when the session ends while they start."""


def shared_server(
    folder: Path, start: Callable[[Path, Path], PrefectServer], owner: list[PrefectServer]
) -> tuple[PrefectServer, Path]:
    """The session's one server and its work folder (``folder / "prefect"``): started by
    ``start(work, pids)`` in the first process that asks (under ``folder``'s lock, so the others
    wait for it), its process ids written to ``pids`` as they start and its state to
    ``folder / STATE`` once it serves; attached to in the others. The process that started it
    finds its ``PrefectServer`` in ``owner``."""
    state = folder / STATE
    with FileLock(folder / f"{STATE}.lock"):
        if owner:
            return owner[0], folder / "prefect"
        if not state.exists():
            work = folder / "prefect"
            work.mkdir(exist_ok=True)  # (made by an earlier try that failed)
            try:
                server = start(work, folder / PIDS)
            except BaseException:  # what it started is stopped (a process id could be reused later)
                (folder / PIDS).unlink(missing_ok=True)
                raise
            owner.append(server)
            info = {"port": server.port, "home": str(server.home), "reports_port": server.reports_port}
            state.write_text(json.dumps(info), encoding="utf-8")
            # the session's processes, stopped by stop_shared_server at its end; what this process's
            # tests start on the server from now on is theirs (``PrefectServer.stop``)
            _SESSION_PROCESSES.extend(p for p in (server.proc, *server.children) if p is not None)
            server.proc, server.children, server.pids = None, [], None
            return server, work
        info = json.loads(state.read_text(encoding="utf-8"))
    home = Path(info["home"])
    server = PrefectServer(home, info["port"], None, home / "server.log", reports_port=info["reports_port"])
    return server, folder / "prefect"


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` and of its children it has waited for (Linux's /proc), in seconds;
    0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def stop_shared_server(folder: Path) -> float | None:
    """Stop the session's server and what was started with it (`cdv-etl serve`), if it was started
    (or is starting): the CPU seconds they used (with the flow runs `cdv-etl serve` ran), or None.
    (They outlive the process that started them: no pytest process counts their CPU as its children's.)"""
    pids_file = folder / PIDS
    if not pids_file.exists():
        return None
    # (a start still under way in this process's thread finishes first: a worker's died with it)
    with FileLock(folder / f"{STATE}.lock"):
        pids = [int(line) for line in pids_file.read_text(encoding="utf-8").split()]
        used = sum(cpu_seconds(pid) for pid in pids)
        stop_groups(list(reversed(pids)))  # `cdv-etl serve` first, then the server
        pids_file.unlink()
        (folder / STATE).unlink(missing_ok=True)
    return used

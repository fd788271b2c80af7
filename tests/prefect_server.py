"""A real Prefect server for tests: a free port, its own PREFECT_HOME, the embedded SQLite.

Everything goes through Prefect's REST API (httpx), so the test process's own Prefect
settings never mix with the server's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrefectServer:
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    reports_port: int | None = None
    """The port ``cdv-etl serve`` serves the reports folder on, once the fixture has started it."""
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
        return proc

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
        """The children first (`cdv-etl serve` and its runs: a process group each), then the server."""
        for group in (self.children, [self.proc]):
            for proc in group:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self._http is not None:
            self._http.close()


def start_server(home: Path, timeout: float = 600) -> PrefectServer:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    server = PrefectServer(home, port, None, log)  # type: ignore[arg-type]
    with log.open("wb") as out:
        server.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if server.http.get("/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"Prefect server did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(POLL_S)

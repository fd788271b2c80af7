"""The reports folder over HTTP, for the Prefect UI's link to the steering committee's report.

A browser refuses to open a ``file://`` link from a web page, so ``cdv-etl serve`` also serves
``reports/`` (beside the warehouse) on 127.0.0.1 only, read-only (GET and HEAD: the standard
library's ``SimpleHTTPRequestHandler``), on ``CDV_REPORTS_PORT`` (default 4201). It tells the
flow runs it starts where, with ``CDV_REPORTS_URL``: Prefect's runner starts each run in a
spawned subprocess that inherits ``os.environ``. A run with no report server (a work-pool
worker, a run outside ``serve``) has no URL and writes the report's key figures instead.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cdv_etl.errors import CdvError

HOST = "127.0.0.1"
PORT_ENV = "CDV_REPORTS_PORT"
DEFAULT_PORT = 4201
URL_ENV = "CDV_REPORTS_URL"
"""Set by ``cdv-etl serve`` for the runs it starts: the base URL of the reports folder."""


class _QuietHandler(SimpleHTTPRequestHandler):
    """Files of the folder, GET and HEAD only; one log line per request would drown serve's log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def reports_port() -> int:
    raw = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise CdvError(f"{PORT_ENV}={raw!r} is not a port number", f"set {PORT_ENV} to a free port, e.g. 4201")
    return port


def start_report_server(folder: Path, port: int) -> ThreadingHTTPServer:
    """Serve ``folder`` on http://127.0.0.1:``port``/ from a daemon thread; the server is returned."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        server = ThreadingHTTPServer((HOST, port), partial(_QuietHandler, directory=str(folder)))
    except OSError as exc:
        raise CdvError(
            f"cannot serve the reports folder {folder} on {HOST}:{port}: {exc}",
            f"set {PORT_ENV} to a free port (another `cdv-etl serve` may be running)",
        ) from exc
    threading.Thread(target=server.serve_forever, name="cdv-reports", daemon=True).start()
    return server


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"


def report_url(report: Path, folder: Path) -> str | None:
    """The report's address on the report server, or None when no server serves ``folder``."""
    base = os.environ.get(URL_ENV)
    if not base or report.resolve().parent != folder.resolve():
        return None
    return base.rstrip("/") + "/" + report.name

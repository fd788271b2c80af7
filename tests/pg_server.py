"""A throwaway PostgreSQL server for the DuckLake tests.

Debian's ``postgresql`` package (PostgreSQL 15 on bookworm) gives ``initdb`` and ``pg_ctl`` under
``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, and CI runs as root: the
server then runs as the package's ``postgres`` user (``runuser``), in a folder made outside pytest's
``tmp_path`` (which is private to root). It listens on a Unix socket only (``listen_addresses=''``,
no TCP), in its own folder; the free port only names the socket, so parallel runs never clash.
Trust authentication, for the user ``cdv``: nothing but this machine's processes reach the socket.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "cdv"


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest Debian install; None when PostgreSQL is absent."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running server: its folder (the socket is there), port and binaries."""

    root: Path
    port: int
    bindir: Path
    run_as: list[str]

    def libpq(self, dbname: str) -> str:
        """libpq parameters for ``dbname``, as ``ducklake:postgres:`` takes them."""
        return f"host={self.root} port={self.port} dbname={dbname} user={SUPERUSER}"

    def createdb(self, name: str) -> str:
        """A new, empty database; its libpq parameters."""
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER, name],
            check=True,
            capture_output=True,
        )
        return self.libpq(name)

    def clone(self, template: str, name: str) -> str:
        """A new database ``name``, a copy of ``template`` (``createdb --template``: no session may be
        connected to ``template``); its libpq parameters."""
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER]
            + ["--template", template, name],
            check=True,
            capture_output=True,
        )
        return self.libpq(name)

    def psql(self, dbname: str, sql: str) -> str:
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER]
            + ["-d", dbname, "-Atc", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def stop(self) -> None:
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"]
        subprocess.run([*self.run_as, *pg_ctl], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> PgServer:
    """initdb and start a server; the caller stops it (``PgServer.stop``)."""
    bindir = bin_dir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    root = Path(tempfile.mkdtemp(prefix="cdv-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust"]
            + ["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log")]
            + ["-o", options, "-w", "start"],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        detail = (exc.stderr or b"").decode(errors="replace") + (log.read_text() if log.exists() else "")
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {detail.strip()[-2000:]}") from exc
    return PgServer(root, port, bindir, run_as)

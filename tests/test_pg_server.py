"""The throwaway PostgreSQL server the DuckLake tests use."""

from __future__ import annotations

import socket

import pg_server
import pytest
from conftest import skip_or_fail


def test_a_private_server_starts_answers_and_is_gone_after_stop() -> None:
    if pg_server.bin_dir() is None:
        skip_or_fail("PostgreSQL is not installed (apt-get install -y postgresql)")
    server = pg_server.start()
    try:
        libpq = server.createdb("acv")
        assert libpq == f"host={server.root} port={server.port} dbname=acv user=cdv"
        assert server.psql("acv", "SELECT current_database() || ' ' || current_user") == "acv cdv"
        assert server.psql("acv", "SHOW listen_addresses") == ""
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", server.port))  # socket only: no TCP
        assert (server.root / f".s.PGSQL.{server.port}").exists()
    finally:
        server.stop()
    assert not server.root.exists()

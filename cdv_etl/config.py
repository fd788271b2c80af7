"""Settings from command-line options and ``CDV_*`` environment variables.

Every setting has a default that works out of the box in a clone of the project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from cdv_etl.load.backend import Backend, DuckDBFile, DuckLake, parse_warehouse

DEFAULT_WAREHOUSE = Path("warehouse/cdv.duckdb")


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class Settings:
    """Where things live and the limits the pipeline works within."""

    warehouse: Path = field(default_factory=lambda: DEFAULT_WAREHOUSE)
    """The writable warehouse when it is a DuckDB file (``CDV_WAREHOUSE``, the default). With a lake,
    it only places what stays local beside it (the reports folder)."""
    lake: DuckLake | None = None
    """The DuckLake ``CDV_WAREHOUSE`` names instead (``ducklake:...``), with its data path
    (``CDV_DATA_PATH``); ``None`` for the DuckDB file. ``backend`` is whichever of the two is used."""
    published: Path | None = None
    """Read-only copy for analysts (``CDV_PUBLISHED``); default: ``<warehouse>.published.duckdb``
    beside the warehouse."""
    inbox: Path = field(default_factory=lambda: Path("inbox"))
    """Where partners' exports arrive (``CDV_INBOX``)."""
    archive: Path | None = None
    """Processed files, by partner (``CDV_ARCHIVE``); default ``archive/`` beside the inbox."""
    rejected: Path | None = None
    """Refused files with a reason file (``CDV_REJECTED``); default ``rejected/`` beside the inbox."""
    specs_dir: Path | None = None
    """Partner specs (``CDV_SPECS``); default: the project's ``schemas/partners``."""
    lock_timeout_s: float = 60.0
    """How long to wait for the warehouse's write lock (``CDV_LOCK_TIMEOUT``)."""
    max_file_mb: float = 2048.0
    """Files larger than this are refused unread (``CDV_MAX_FILE_MB``)."""
    memory_limit: str = "1GB"
    """DuckDB memory limit while loading (``CDV_MEMORY_LIMIT``)."""
    claim_timeout_s: float = 1800.0
    """After how long a claimed file with no ledger row is taken over by the next ingest of its
    bytes (``CDV_CLAIM_TIMEOUT``); a claim whose process is gone, on the same host, at once."""

    @classmethod
    def from_env(cls, warehouse: str | Path | None = None) -> Settings:
        """The settings of the environment; ``warehouse`` (the ``-w`` option) overrides ``CDV_WAREHOUSE``.

        The warehouse URL is parsed here, so a bad one fails before anything runs.
        """

        def opt(name: str) -> Path | None:
            v = os.environ.get(name)
            return Path(v).expanduser() if v else None

        url = str(warehouse) if warehouse is not None else os.environ.get("CDV_WAREHOUSE") or str(DEFAULT_WAREHOUSE)
        backend = parse_warehouse(url, os.environ.get("CDV_DATA_PATH") or None)
        return cls(
            warehouse=backend.path if isinstance(backend, DuckDBFile) else DEFAULT_WAREHOUSE,
            lake=backend if isinstance(backend, DuckLake) else None,
            published=opt("CDV_PUBLISHED"),
            inbox=_env_path("CDV_INBOX", Path("inbox")),
            archive=opt("CDV_ARCHIVE"),
            rejected=opt("CDV_REJECTED"),
            specs_dir=opt("CDV_SPECS"),
            lock_timeout_s=_env_float("CDV_LOCK_TIMEOUT", 60.0),
            max_file_mb=_env_float("CDV_MAX_FILE_MB", 2048.0),
            memory_limit=os.environ.get("CDV_MEMORY_LIMIT", "1GB"),
            claim_timeout_s=_env_float("CDV_CLAIM_TIMEOUT", 1800.0),
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with the given settings changed; ``None`` values are ignored.

        A ``warehouse`` path given without a ``lake`` names a DuckDB file: the lake, if any, is dropped.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        if "warehouse" in given and "lake" not in given:
            given["lake"] = None
        return replace(self, **given)  # type: ignore[arg-type]

    @property
    def backend(self) -> Backend:
        """The warehouse to connect to: the lake, or else the DuckDB file."""
        return self.lake if self.lake is not None else DuckDBFile(self.warehouse)

    @property
    def data_path(self) -> str | None:
        """Where the lake's Parquet files go (``CDV_DATA_PATH``); ``None`` for a DuckDB file, or a lake that
        keeps the data path recorded in its catalog."""
        return self.lake.data_path if self.lake is not None else None

    def read_target(self, live: bool = False) -> Path | DuckLake:
        """What the analysts' commands read: a lake itself (attached read-only: no copy, never blocked),
        else the published copy of the DuckDB file (``live``: the file itself)."""
        if self.lake is not None:
            return self.lake
        return self.warehouse if live else self.published_path

    @property
    def published_path(self) -> Path:
        if self.published is not None:
            return self.published
        return self.warehouse.with_name(self.warehouse.stem + ".published.duckdb")

    @property
    def archive_dir(self) -> Path:
        return self.archive or self.inbox.parent / "archive"

    @property
    def rejected_dir(self) -> Path:
        return self.rejected or self.inbox.parent / "rejected"

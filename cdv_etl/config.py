"""Settings from command-line options and ``CDV_*`` environment variables.

Every setting has a default that works out of the box in a clone of the project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from cdv_etl.errors import CdvError
from cdv_etl.load.backend import Backend, DuckDBFile, DuckLake, parse_warehouse

DEFAULT_WAREHOUSE = Path("warehouse/cdv.duckdb")


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


FAN_OUTS = ("threads", "pool")
"""The values of ``CDV_FAN_OUT``, the default first."""


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or choices[0]
    if value not in choices:
        raise CdvError(
            f"{name}={value!r} is not one of {', '.join(choices)}", f"set {name} to one of them, or unset it"
        )
    return value


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    if not value.strip().isdigit() or int(value) < 1:
        raise CdvError(
            f"{name}={value!r} is not a whole number of at least 1", f"set {name} to 1, 2, 3, ... or unset it"
        )
    return int(value)


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
    reports: Path | None = None
    """The steering committee's HTML reports and the feedback workbooks (``CDV_REPORTS``); default:
    ``reports/`` beside the warehouse file (on a lake, ``warehouse/reports`` under the working folder)."""
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
    parallel_files: int = 2
    """On a DuckLake, how many partners' exports an inbox run loads at once (``CDV_PARALLEL_FILES``;
    each load has its own memory limit, so the run may use this many times ``memory_limit``). A
    DuckDB file has one writer: its exports load one at a time whatever this says."""
    fan_out: str = "threads"
    """How a lake's nightly run spreads its partners' loads (``CDV_FAN_OUT``): ``threads`` in its own
    process, or ``pool``: one ``ingest-partner`` run per partner on the work pool's workers (Prefect)."""

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
            reports=opt("CDV_REPORTS"),
            inbox=_env_path("CDV_INBOX", Path("inbox")),
            archive=opt("CDV_ARCHIVE"),
            rejected=opt("CDV_REJECTED"),
            specs_dir=opt("CDV_SPECS"),
            lock_timeout_s=_env_float("CDV_LOCK_TIMEOUT", 60.0),
            max_file_mb=_env_float("CDV_MAX_FILE_MB", 2048.0),
            memory_limit=os.environ.get("CDV_MEMORY_LIMIT", "1GB"),
            claim_timeout_s=_env_float("CDV_CLAIM_TIMEOUT", 1800.0),
            parallel_files=_env_int("CDV_PARALLEL_FILES", 2),
            fan_out=_env_choice("CDV_FAN_OUT", FAN_OUTS),
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
    def writers(self) -> int:
        """How many exports an inbox run loads at once: ``parallel_files`` on a lake, one on a DuckDB file."""
        return max(1, self.parallel_files) if self.lake is not None else 1

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

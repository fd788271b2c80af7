"""Which warehouse ``CDV_WAREHOUSE`` (or ``-w``) names, and how DuckDB attaches it.

Three forms are accepted:

- a path (``warehouse/cdv.duckdb``): one DuckDB file, the embedded default, unchanged;
- ``ducklake:postgres:<libpq parameters>``: a DuckLake whose catalog is a PostgreSQL database,
  e.g. ``ducklake:postgres:host=/run/pg port=5432 dbname=acv user=cdv``; several processes
  and machines may write it at once;
- ``ducklake:<file>``: a DuckLake whose catalog is a local DuckDB file (one process at a time,
  readers included: DuckDB locks the catalog file while it is attached).

A lake's Parquet files go under ``CDV_DATA_PATH`` (a directory or an ``s3://`` URL); a lake that
exists already knows its data path, so only the run that creates it needs one (DuckLake puts a
local lake's files in ``<file>.files/`` beside its catalog when none is given).

Nothing here connects: parsing is pure, so a bad URL fails before any extension is loaded.
The password of a libpq string never appears in a message (``Backend.display``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cdv_etl.errors import CdvError

ACCEPTED_FORMS = (
    "warehouse/cdv.duckdb (a DuckDB file), "
    "ducklake:postgres:host=/run/pg port=5432 dbname=acv user=cdv (a DuckLake with its catalog in PostgreSQL), "
    "ducklake:lake/acv.ducklake (a DuckLake with its catalog in a local file)"
)

LIBPQ_KEYWORDS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "gssencmode",
        "sslmode",
        "sslnegotiation",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
    }
)
"""The connection keywords of libpq (PostgreSQL 15-17), to catch a misspelt one before connecting."""

_SECRET_KEYWORDS = frozenset({"password", "sslpassword"})
_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


@dataclass(frozen=True)
class DuckDBFile:
    """The embedded warehouse: one DuckDB file."""

    path: Path

    @property
    def display(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return self.display


@dataclass(frozen=True)
class DuckLake:
    """A DuckLake: its catalog (``postgres`` with libpq parameters, or a local ``duckdb`` file) and data path."""

    catalog: str  # "postgres" | "duckdb"
    target: str  # libpq parameters, or the catalog file's path
    data_path: str | None = None

    @property
    def display(self) -> str:
        """The URL as a person may see it: libpq passwords masked."""
        if self.catalog == "postgres":
            shown = " ".join(
                f"{k}=***" if k in _SECRET_KEYWORDS else f"{k}={v}" for k, v in parse_libpq(self.target).items()
            )
            return f"ducklake:postgres:{shown}"
        return f"ducklake:{self.target}"

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:  # tracebacks and logs show Settings: never the password
        return f"DuckLake({self.display!r}, data_path={self.data_path!r})"

    @property
    def attach_target(self) -> str:
        """What follows ``ATTACH``: the ``ducklake:`` string DuckDB parses."""
        return f"ducklake:postgres:{self.target}" if self.catalog == "postgres" else f"ducklake:{self.target}"

    def attach_sql(self, alias: str = "lake", *, read_only: bool = False) -> str:
        """The ``ATTACH`` statement (ATTACH takes no parameters: values are quoted here)."""
        options = []
        if self.data_path is not None:
            options.append(f"DATA_PATH {_literal(self.data_path)}")
        if read_only:
            options.append("READ_ONLY")
        opts = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {_literal(self.attach_target)} AS {_ident(alias)}{opts}"

    def extensions(self) -> tuple[str, ...]:
        """The DuckDB extensions this lake needs, in load order (each from its pinned wheel)."""
        needed = ["ducklake"]
        if self.catalog == "postgres":
            needed.append("postgres_scanner")
        if self.data_path is not None and self.data_path.startswith("s3://"):
            needed.append("httpfs")
        return tuple(needed)


Backend = DuckDBFile | DuckLake


def parse_warehouse(url: str, data_path: str | None = None) -> Backend:
    """The backend ``url`` names; a CdvError showing the accepted forms when it names none."""
    text = url.strip()
    if not text:
        raise _bad(url, "it is empty")
    if text.startswith(("postgres://", "postgresql://")):
        raise _bad(url, "a PostgreSQL URL alone names no lake; prefix its libpq parameters with ducklake:postgres:")
    if not text.startswith("ducklake:"):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text):
            raise _bad(url, "a URL is not a warehouse file")
        if data_path:
            raise CdvError(
                f"CDV_DATA_PATH ({data_path}) is set, but the warehouse {text} is a DuckDB file, "
                "which holds its own data",
                "unset CDV_DATA_PATH, or point CDV_WAREHOUSE at a lake (ducklake:...)",
            )
        return DuckDBFile(Path(text).expanduser())
    rest = text[len("ducklake:") :]
    if data_path is not None:
        data_path = _data_path(data_path)
    if rest.startswith("postgres:"):
        params = rest[len("postgres:") :].strip()
        if not params:
            raise _bad(url, "ducklake:postgres: needs libpq parameters (dbname=... at least)")
        if params.startswith(("postgres://", "postgresql://")):
            return DuckLake("postgres", params, data_path)
        pairs = parse_libpq(params, url)
        if "dbname" not in pairs and "service" not in pairs:
            raise _bad(url, "name the catalog database: dbname=... (or a service=... from pg_service.conf)")
        return DuckLake("postgres", params, data_path)
    scheme = re.match(r"^([A-Za-z]+):", rest)
    if scheme and len(scheme.group(1)) > 1:  # C:\... on Windows is a path, not a scheme
        raise _bad(url, f"{scheme.group(1)} is not a catalog cdv-etl supports (postgres, or a local file)")
    if not rest:
        raise _bad(url, "ducklake: needs a catalog: postgres:<libpq parameters> or a file")
    catalog = Path(rest).expanduser()
    if catalog.suffix == ".duckdb":
        raise _bad(
            url,
            "a lake's catalog file is not a warehouse file: name it <name>.ducklake, "
            "or drop the ducklake: prefix to use the DuckDB file itself",
        )
    return DuckLake("duckdb", str(catalog), data_path)


def parse_libpq(params: str, url: str | None = None) -> dict[str, str]:
    """``key=value`` pairs of a libpq connection string (values may be single-quoted)."""
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(params):
        if params[pos:].strip() == "":
            break
        m = _PAIR.match(params, pos)
        if not m:
            raise _bad(url or params, f"cannot read the libpq parameters from {params[pos:].strip()[:40]!r}")
        key, value = m.group(1), m.group(2)
        if key not in LIBPQ_KEYWORDS:
            raise _bad(url or params, f"{key} is not a libpq connection parameter")
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
        pos = m.end()
    return pairs


def _data_path(value: str) -> str:
    text = value.strip()
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text) and not text.startswith("s3://"):
        raise CdvError(
            f"CDV_DATA_PATH {value} is neither a directory nor an s3:// URL",
            "set CDV_DATA_PATH to a directory (/srv/acv/lake/) or an s3:// URL (s3://bucket/acv/)",
        )
    if not text.startswith("s3://"):
        text = str(Path(text).expanduser())
    return text if text.endswith("/") else text + "/"


def _bad(url: str, why: str) -> CdvError:
    return CdvError(
        f"cannot use CDV_WAREHOUSE / -w {mask_secrets(url)!r}: {why}",
        f"accepted forms: {ACCEPTED_FORMS}",
    )


def mask_secrets(text: str) -> str:
    """``text`` with every libpq ``password=`` / ``sslpassword=`` value replaced by ``***`` (for messages)."""
    # An unquoted value ends at a blank or a double quote (DuckDB's messages quote the libpq string).
    return re.sub(r"((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"]+)", r"\1***", text)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_commit_conflict(exc: BaseException) -> bool:
    """True for DuckLake's optimistic-concurrency failure, which a retry of the whole transaction may pass.

    DuckDB 1.5.5 raises ``duckdb.TransactionException`` with ``Failed to commit DuckLake transaction.
    Transaction conflict - attempting to <insert into|delete from|...> table ... but another
    transaction has <deleted inlined data from|inserted into|altered|...> it``. Other commit
    failures (the catalog unreachable, a disk full) are not conflicts: retrying hides them.
    """
    import duckdb

    return isinstance(exc, duckdb.TransactionException) and "Transaction conflict" in str(exc)

"""The hardened DuckDB that reads a partner's file.

Partner files come from outside. They are parsed in an in-memory DuckDB of their own, which
may touch only that file and a private work folder (``allowed_paths``,
``allowed_directories``, then ``enable_external_access = false``), within a memory limit,
with its configuration locked so that nothing read from the file can loosen it. The
warehouse itself is never attached there: the loader receives the canonical records as a
Parquet file the parse wrote in the work folder, and the quarantine as Arrow tables.

Workbooks are read by DuckDB's ``excel`` extension (``read_xlsx``). Nothing is downloaded:
the extension's binary comes from the ``duckdb-extension-excel`` wheel, pinned to the exact
DuckDB version, and is loaded from that file before the configuration is locked (no
extension can be loaded after).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from cdv_etl.errors import CdvError


def extension(name: str) -> Path:
    """A DuckDB extension's binary for the installed DuckDB, from its pinned wheel (``duckdb-extension-<name>``).

    ``excel`` reads workbooks; ``ducklake`` and ``postgres_scanner`` open a DuckLake warehouse.
    Nothing is downloaded: a missing binary is an error that says which wheel to install.
    """
    from importlib.resources import files

    wheel = "duckdb-extension-" + name.replace("_", "-")
    try:
        package = files("duckdb_extension_" + name)
    except ModuleNotFoundError:
        package = None
    binary = f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"
    path = Path(str(package.joinpath(*binary.split("/")))) if package else None
    # is_file() matters: once an extension of that name is loaded, DuckDB's load_extension of a
    # path that does not exist succeeds silently.
    if path is None or not path.is_file():
        raise CdvError(
            f"DuckDB's {name} extension for DuckDB {duckdb.__version__} is not installed"
            + (f" ({path})" if path else f" (no {wheel} wheel)"),
            f"reinstall the project (make install), or pip install {wheel}=={duckdb.__version__}: "
            f"duckdb and {wheel} must be the same version",
        )
    return path


def reader_connection(
    source: Path, workdir: Path, memory_limit: str, *, excel: bool = False
) -> duckdb.DuckDBPyConnection:
    spill = workdir / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": memory_limit,
            "temp_directory": str(spill),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        if excel:
            con.load_extension(str(extension("excel")))
        con.execute("SET allowed_directories = ?", [[str(workdir.resolve()) + "/"]])
        con.execute("SET allowed_paths = ?", [[str(source.resolve())]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except Exception:
        con.close()
        raise
    return con

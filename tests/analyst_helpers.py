"""Helpers for the analyst tests: partner exports written as partners write them, demo warehouses."""

from __future__ import annotations

import atexit
import contextlib
import csv
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path

from conftest import copy_warehouse, sample_warehouse, shared_temp
from filelock import FileLock

from cdv_etl.config import Settings
from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.load.loader import LoadResult
from cdv_etl.pipeline import accept_held, ingest_files

AL_HEADER = [
    "Référence opération",
    "Code commune",
    "Nom commune",
    "Type d'opération",
    "Produit",
    "Nb logements",
    "Montant engagé",
    "Date décision CE",
]
EPF_HEADER = ["id_intervention", "insee", "commune", "vocation", "date_acte", "montant_keur", "surface_m2"]
ANAH_HEADER = [
    "numero_dossier",
    "code_insee",
    "annee_engagement",
    "type_intervention",
    "nb_logements",
    "montant_aide",
    "date_engagement",
    "statut",
]


def al_export(folder: Path, month: str, rows: list[dict[str, str]]) -> Path:
    """An Action Logement export (Windows-1252, ';', CRLF, French numbers), properly quoted.

    Each row: ref, insee, amount ("1 234,56"), day ("dd/mm/yyyy"), and optionally commune,
    kind (Type d'opération, which the pipeline loads as ``scheme``), product.
    """
    path = folder / f"AL_ACV_export_{month}.csv"
    with path.open("w", encoding="cp1252", newline="") as fh:
        w = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        w.writerow(AL_HEADER)
        for r in rows:
            w.writerow(
                [
                    r["ref"],
                    r["insee"],
                    r.get("commune", "Commune"),
                    r.get("kind", "Construction neuve"),
                    r.get("product", "Prêt"),
                    "10",
                    r["amount"],
                    r["day"],
                ]
            )
    return path


def epf_export(folder: Path, name: str, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """An EPF export (UTF-8, tab-separated, k€): (id, insee, vocation, ISO date, amount in k€) rows."""
    path = folder / f"epf_interventions_acv_{name}.tsv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(EPF_HEADER)
        for ident, insee, vocation, day, keur in rows:
            w.writerow([ident, insee, "Commune", vocation, day, keur, "1000"])
    return path


def anah_export(folder: Path, year: int, rows: list[tuple[str, str, str, str, str]]) -> Path:
    """An Anah export (UTF-8 with BOM, ','): (dossier, insee, amount, ISO date, statut) rows."""
    path = folder / f"anah_acv_{year}.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh, delimiter=",", lineterminator="\n")
        w.writerow(ANAH_HEADER)
        for ident, insee, amount, day, status in rows:
            w.writerow([ident, insee, day[:4], "Propriétaire occupant", "1", amount, day, status])
    return path


def _settings_in(folder: Path) -> Settings:
    return Settings(warehouse=folder / "wh" / "cdv.duckdb", inbox=folder / "inbox", lock_timeout_s=60)


def fresh_settings(folder: Path) -> Settings:
    """A warehouse in ``folder`` holding the bundled sample reference (and published)."""
    return sample_warehouse(_settings_in(folder))


_DEMO_WAREHOUSES: dict[int, Settings] = {}


def demo_warehouse(folder: Path, loads: int = 1) -> Settings:
    """A published warehouse in ``folder`` with ``loads`` rounds of the five demo exports
    (different days and seeds): built once per session for each ``loads``, then copied. Under
    pytest-xdist the workers share one build (the first to ask builds it, under a file lock, in
    the run's temporary folder; the others wait for it and copy it)."""
    if loads not in _DEMO_WAREHOUSES:
        shared = shared_temp()
        if shared is None:
            build = Path(tempfile.mkdtemp(prefix=f"cdv-demo-{loads}-"))
            atexit.register(shutil.rmtree, build, True)
            _DEMO_WAREHOUSES[loads] = _build_demo(build, loads)
        else:
            build = shared / f"cdv-demo-{loads}"
            with FileLock(f"{build}.lock"):
                done = build / "built"
                if not done.exists():
                    shutil.rmtree(build, ignore_errors=True)  # what a worker that died while building left
                    _build_demo(build, loads)
                    done.touch()
            _DEMO_WAREHOUSES[loads] = _settings_in(build)
    return copy_warehouse(_DEMO_WAREHOUSES[loads], _settings_in(folder))


def _build_demo(build: Path, loads: int) -> Settings:
    s = fresh_settings(build)
    for i in range(loads):
        exports = generate_demo_exports(build / f"inbox{i}", today=date(2025, 3 + 3 * i, 15), seed=2026 + i)
        results = accepting_held(s, ingest_files(s, exports))
        assert all(r.status == "loaded" for r in results), [(r.file_name, r.message) for r in results]
    return s


def accepting_held(settings: Settings, results: list[LoadResult]) -> list[LoadResult]:
    """``results``, each held export accepted (the demo's rounds are drawn afresh: each withdraws
    most of the one before, as a truncated export would)."""
    for r in results:
        if r.status == "held":
            assert r.file_id is not None
            accept_held(settings, r.file_id)
            r.status = "loaded"
    return results


def never_holding_specs(folder: Path) -> Path:
    """The project's partner specs, copied into ``folder`` with ``hold_threshold_pct: 100``: for
    tests whose next exports are drawn afresh (each would withdraw most of the one before)."""
    from conftest import ROOT

    folder.mkdir(parents=True, exist_ok=True)
    for spec in (ROOT / "schemas" / "partners").glob("*.yaml"):
        text = spec.read_text(encoding="utf-8").rstrip("\n")
        (folder / spec.name).write_text(text + "\nhold_threshold_pct: 100\n", encoding="utf-8")
    return folder


def run_cli(
    args: list[str], cwd: Path, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``cdv-etl ARGS`` in this process (Typer's runner on the command line's own app), from
    the folder ``cwd`` with ``env`` added to the environment: its exit code, standard output and
    standard error, as a child's. As a fresh process starts it: the warnings about broken specs,
    given once per process, are forgotten first."""
    from typer.testing import CliRunner

    from cdv_etl.cli import app
    from cdv_etl.specs import _WARNED

    _WARNED.clear()
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **(env or {})}, catch_exceptions=False)
    proc = subprocess.CompletedProcess(["cdv-etl", *args], result.exit_code, result.stdout, result.stderr)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc

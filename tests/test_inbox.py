"""The inbox run in the core (``cdv_etl.inbox``), without Prefect, on real DuckDB files.

One first night is run for the module; each test that goes on from it works on its own copy.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from conftest import one_worker

from cdv_etl.config import Settings
from cdv_etl.demo_data import generate_demo_exports
from cdv_etl.errors import CdvError
from cdv_etl.inbox import InboxFailed, InboxRun, Steps, ingest_file, run_inbox
from cdv_etl.load.loader import LoadResult
from cdv_etl.load.reference import SAMPLE_REFERENCE
from cdv_etl.pipeline import Progress, open_pipeline

pytestmark = one_worker(__name__)


def settings_in(base: Path) -> Settings:
    """inbox/, archive/, rejected/ and wh/ (the warehouse, its published copy, reports/) in ``base``."""
    return Settings(warehouse=base / "wh" / "cdv.duckdb", inbox=base / "inbox", lock_timeout_s=5)


class Recorder:
    """The run's progress messages; each call also checks that the warehouse lock is held."""

    def __init__(self, warehouse: Path) -> None:
        self.lock = str(warehouse.resolve()) + ".lock"
        self.messages: list[tuple[int, int, str]] = []

    def __call__(self, done: int, total: int, message: str) -> None:
        fd = os.open(self.lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # another open of the lock file cannot take it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        self.messages.append((done, total, message))


def fill(inbox: Path) -> list[Path]:
    """Two demo exports (Action Logement's CSV, the EPF's TSV), a file no partner spec recognises,
    and the sample reference: the newest file, loaded first all the same. Returns the exports."""
    exports = []
    for p in generate_demo_exports(inbox):
        if p.name.startswith(("AL_", "epf_")):
            exports.append(p)
        else:
            p.unlink()
    stray = inbox / "notes_partenaire.csv"
    stray.write_text("bonjour;\n1;2\n", encoding="utf-8")
    ref = inbox / SAMPLE_REFERENCE.name
    shutil.copyfile(SAMPLE_REFERENCE, ref)
    for i, p in enumerate([*exports, stray, ref]):  # oldest first
        os.utime(p, (1_800_000_000 + i, 1_800_000_000 + i))
    return [*exports, stray]


def ledger(settings: Settings) -> list[tuple[str, str]]:
    con = duckdb.connect(str(settings.published_path), read_only=True)
    try:
        return con.execute("SELECT file_name, status FROM file_loads ORDER BY file_id").fetchall()
    finally:
        con.close()


@dataclass
class Night:
    base: Path
    files: list[Path]
    run: InboxRun
    progress: Recorder

    def copy(self, to: Path) -> Settings:
        """The state after this night, in ``to``: a run there cannot touch this one."""
        shutil.copytree(self.base, to)
        return settings_in(to)


@pytest.fixture(scope="module")
def first_night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    base = tmp_path_factory.mktemp("first-night")
    s = settings_in(base)
    files = fill(s.inbox)
    progress = Recorder(s.warehouse)
    return Night(base, files, run_inbox(s, progress=progress), progress)


def test_a_night_reference_first_then_each_file_moved_published_and_reported(first_night: Night) -> None:
    s, run, files = settings_in(first_night.base), first_night.run, first_night.files
    assert [r.file_name for r in run.references] == [SAMPLE_REFERENCE.name] and run.references[0].changed
    assert [f.file_name for f in run.files] == [p.name for p in files]  # oldest first
    assert dict(run.counts) == {"loaded": 2, "rejected": 1}
    assert run.summary_line() == "1 reference(s), 2 file(s) loaded, 0 duplicate, 1 rejected, 0 failed"
    assert list(s.inbox.iterdir()) == []
    assert (s.archive_dir / "reference" / SAMPLE_REFERENCE.name).exists()
    for f in run.files[:2]:
        assert f.result is not None and f.result.rows_loaded > 0  # judged against the new reference
        assert f.moved_to == s.archive_dir / str(f.result.partner) / f.file_name and f.moved_to.exists()
    stray = run.files[2]
    assert stray.status == "rejected" and stray.moved_to == s.rejected_dir / "notes_partenaire.csv"
    reason = (s.rejected_dir / "notes_partenaire.csv.reason.txt").read_text(encoding="utf-8")
    assert "no partner spec recognises" in reason and stray.result and reason == stray.result.message + "\n"

    assert run.published == s.published_path
    assert ledger(s) == [(f.file_name, f.status) for f in run.files]
    assert run.report is not None and run.report.parent == s.warehouse.parent / "reports"
    assert (run.report.parent / "latest.html").read_bytes() == run.report.read_bytes()
    assert "<html" in run.report.read_text(encoding="utf-8").lower()

    # Progress: the listing, the reference before any export, each file, then the publish.
    messages = [m for _, _, m in first_night.progress.messages]
    done = [d for d, _, _ in first_night.progress.messages]
    assert done == sorted(done) and done[-1] == 4 and {t for _, t, _ in first_night.progress.messages} == {4}
    assert messages[0].endswith("1 reference file(s), 3 export(s)")
    assert messages[1] == f"reference {SAMPLE_REFERENCE.name}"
    assert any(m.startswith(f"{files[0].name}: reading") for m in messages)  # the ingest's own steps
    last_file = max(i for i, m in enumerate(messages) if m.startswith(files[-1].name))
    assert messages[last_file + 1 :] == ["publishing", "writing the report"]

    # Plain data and back, as the nightly flow returns it.
    assert InboxRun.from_dict(run.as_dict()) == run


def test_a_night_with_nothing_new_changes_nothing(first_night: Night, tmp_path: Path) -> None:
    s = first_night.copy(tmp_path / "night")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "night").rglob("*") if p.name != "cdv.duckdb.lock"}

    run = run_inbox(s)
    assert run == InboxRun([], [], s.published_path, None)
    assert dict(run.counts) == {} and run.summary_line() == (
        "0 reference(s), 0 file(s) loaded, 0 duplicate, 0 rejected, 0 failed"
    )
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "night").rglob("*") if p.name != "cdv.duckdb.lock"}
    assert after == before  # nothing published again, no report written, nothing moved


def test_a_file_seen_again_is_a_duplicate_and_never_overwrites_the_archived_one(
    first_night: Night, tmp_path: Path
) -> None:
    s = first_night.copy(tmp_path / "night")
    name = first_night.files[0].name
    archived = s.archive_dir / "action_logement" / name
    s.inbox.mkdir(exist_ok=True)
    shutil.copyfile(archived, s.inbox / name)
    (s.inbox / "notes_partenaire.csv").write_text("bonjour;\n1;2\n", encoding="utf-8")

    run = run_inbox(s)
    assert [(f.file_name, f.status) for f in run.files] == [(name, "duplicate"), ("notes_partenaire.csv", "rejected")]
    assert list(s.inbox.iterdir()) == []
    al = sorted((s.archive_dir / "action_logement").iterdir())
    assert len(al) == 2 and archived in al and run.files[0].moved_to in al
    rejected = sorted(p.name for p in s.rejected_dir.iterdir())
    assert len(rejected) == 4 and rejected.count("notes_partenaire.csv.reason.txt") == 1  # two files, two reasons
    assert {p.with_name(p.name + ".reason.txt").exists() for p in s.rejected_dir.glob("*.csv")} == {True}
    assert [status for _, status in ledger(s)].count("loaded") == 2


def crashing_on(name: str) -> Steps:
    """The default steps, but the ingest of ``name`` raises (a bug, a disk error: not a rejection)."""

    def ingest(
        settings: Settings,
        path: Path,
        partner: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> LoadResult:
        if path.name == name:
            raise OSError(f"disk error reading {path.name}")
        return ingest_file(settings, path, partner, force, progress)

    return Steps(ingest=ingest)


def test_a_file_whose_ingest_raises_stays_in_the_inbox_and_the_run_fails_at_the_end(
    first_night: Night, tmp_path: Path
) -> None:
    s = first_night.copy(tmp_path / "night")
    crashing, after = generate_demo_exports(s.inbox)[2:4]  # Anah's CSV, then the State's workbook
    for p in s.inbox.iterdir():
        if p not in (crashing, after):
            p.unlink()
    os.utime(after, (crashing.stat().st_mtime + 1,) * 2)
    with pytest.raises(InboxFailed) as caught:
        run_inbox(s, steps=crashing_on(crashing.name))
    run = caught.value.run
    assert f"{crashing.name}: OSError: disk error reading {crashing.name}" in caught.value.message
    assert "left in the inbox" in caught.value.message and caught.value.hint
    assert [f.file_name for f in run.failures] == [crashing.name]
    assert run.files[0].moved_to is None and run.files[0].status == "failed"
    assert [(f.file_name, f.status) for f in run.files[1:]] == [(after.name, "loaded")]  # the next file ran
    assert list(s.inbox.iterdir()) == [crashing]
    assert ledger(s)[-1] == (after.name, "loaded") and crashing.name not in dict(ledger(s))  # published
    assert run.report is not None and run.report.exists()
    assert run.as_dict()["files"][0] == {
        "file_name": crashing.name,
        "status": "failed",
        "message": f"OSError: disk error reading {crashing.name}",
        "moved_to": "left in the inbox",
    }

    again = run_inbox(s)  # the cause fixed: the file goes through the next night
    assert [(f.file_name, f.status) for f in again.files] == [(crashing.name, "loaded")]
    assert list(s.inbox.iterdir()) == []


def test_a_stale_published_copy_is_published_even_with_nothing_new(first_night: Night, tmp_path: Path) -> None:
    s = first_night.copy(tmp_path / "night")
    late = generate_demo_exports(tmp_path / "late")[2]
    with open_pipeline(s, publish_on_exit=False) as pipe:  # a run killed before its publish
        assert pipe.ingest(late).status == "loaded"
    assert len(ledger(s)) == 3

    run = run_inbox(s)
    assert run.files == [] and run.references == []
    assert ledger(s)[-1] == (late.name, "loaded")
    assert run.report is not None and run.report.exists()


def test_without_a_reference_every_export_fails_and_stays(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    exports = fill(s.inbox)
    (s.inbox / SAMPLE_REFERENCE.name).unlink()
    with pytest.raises(InboxFailed) as caught:
        run_inbox(s)
    assert [f.file_name for f in caught.value.run.failures] == [p.name for p in exports]
    assert "no ACV reference communes" in caught.value.message
    assert sorted(s.inbox.iterdir()) == sorted(exports)


def test_a_reference_that_fails_to_load_stops_the_run_before_any_export(tmp_path: Path) -> None:
    s = settings_in(tmp_path)
    exports = fill(s.inbox)
    (s.inbox / SAMPLE_REFERENCE.name).unlink()
    bad = s.inbox / "acv_communes_2026-01.csv"
    bad.write_text("not;a;reference\n1;2;3\n", encoding="utf-8")
    with pytest.raises(CdvError, match="acv_communes_2026-01.csv: reference columns missing"):
        run_inbox(s)
    assert sorted(s.inbox.iterdir()) == sorted([*exports, bad])
    assert not s.archive_dir.exists()


def test_the_command_line_nightly_runs_the_core_without_prefect(first_night: Night, tmp_path: Path) -> None:
    """No PREFECT_API_URL: no server, not even an import of prefect; the results, exit code 1."""
    s = first_night.copy(tmp_path / "night")
    late = generate_demo_exports(tmp_path / "late")[2]
    s.inbox.mkdir(exist_ok=True)
    shutil.copyfile(late, s.inbox / late.name)
    (s.inbox / "notes.csv").write_text("bonjour;\n1;2\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from cdv_etl.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code, 'prefect' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [sys.executable, "-c", code, "nightly", "--inbox", str(s.inbox), "-w", str(s.warehouse)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.stdout.rstrip().endswith("exit 1 False"), proc.stdout + proc.stderr  # a file rejected
    assert late.name in proc.stdout and "loaded" in proc.stdout
    assert "notes.csv" in proc.stderr and "rejected" in proc.stdout
    assert f"published for analysts: {s.published_path}" in proc.stdout and "report:" in proc.stdout
    assert list(s.inbox.iterdir()) == [] and (s.rejected_dir / "notes.csv.reason.txt").exists()

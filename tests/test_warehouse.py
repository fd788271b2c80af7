"""The warehouse: migrations, current state by extraction date, history, idempotence, --force."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from conftest import sample_warehouse, table_snapshot

from cdv_etl.config import Settings
from cdv_etl.errors import ReconciliationError
from cdv_etl.load.claims import Claim, claimant
from cdv_etl.load.loader import load_export
from cdv_etl.load.warehouse import PUBLIC_VIEWS, init_warehouse, migrate, migrations
from cdv_etl.pipeline import Pipeline, open_pipeline
from cdv_etl.read import SETTLED_NS, RawExport
from cdv_etl.specs import load_specs
from cdv_etl.validate.outputs import Outputs

AL_HEADER = (
    "Référence opération;Code commune;Nom commune;Type d'opération;Produit;Nb logements;Montant engagé;Date décision CE"
)


def al_export(folder: Path, month: str, rows: list[tuple[str, str, str, str]]) -> Path:
    """An Action Logement export: (reference, INSEE code, amount, dd/mm/yyyy date) rows."""
    lines = [AL_HEADER] + [
        f"{ref};{code};Commune;Construction neuve;Prêt;10;{amount};{day}" for ref, code, amount, day in rows
    ]
    path = folder / f"AL_ACV_export_{month}.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return path


def test_init_is_idempotent_and_records_migrations(tmp_path: Path) -> None:
    specs = load_specs()
    first = init_warehouse(tmp_path / "w.duckdb", specs)
    assert [m.name for m in migrations()] == [a for a in first if a != "views"]
    assert init_warehouse(tmp_path / "w.duckdb", specs) == []
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrations())
    assert con.execute("SELECT count(*) FROM axes").fetchone()[0] == 5


def test_older_warehouse_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    first = migrations()[0]
    con.execute(first.sql)  # a warehouse built by the first release only
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "checksum VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    con.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
        [first.version, first.name, first.checksum],
    )
    con.execute("INSERT INTO conventions VALUES ('ACV999', 'kept')")
    applied = migrate(con)
    assert applied[: len(migrations()) - 1] == [m.name for m in migrations()[1:]]
    assert con.execute("SELECT label FROM conventions").fetchall() == [("kept",)]
    assert con.execute("SELECT count(*) FROM partners").fetchone()[0] == 5


def test_every_public_view_and_column_is_commented(pipe: Pipeline) -> None:
    views = dict(pipe.con.execute("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
    for view in PUBLIC_VIEWS:
        assert views.get(view), f"view {view} has no comment"
    missing = pipe.con.execute(
        "SELECT c.table_name || '.' || c.column_name FROM duckdb_columns() AS c "
        "LEFT JOIN schema_docs AS d ON d.kind = 'column' AND d.name = c.table_name AND d.column_name = c.column_name "
        "WHERE c.table_name IN (SELECT unnest(?)) AND (d.comment IS NULL OR d.comment = '')",
        [list(PUBLIC_VIEWS)],
    ).fetchall()
    assert missing == []


def test_money_is_exact_decimal(pipe: Pipeline) -> None:
    types = dict(
        pipe.con.execute(
            "SELECT table_name || '.' || column_name, data_type FROM duckdb_columns() "
            "WHERE column_name LIKE '%_eur' AND table_name IN (SELECT unnest(?))",
            [list(PUBLIC_VIEWS)],
        ).fetchall()
    )
    assert types and {t for k, t in types.items() if not k.endswith("used_pct")} == {"DECIMAL(18,2)"}


def test_latest_export_by_extraction_date_not_arrival(pipe: Pipeline, tmp_path: Path) -> None:
    october = al_export(
        tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020"), ("AL2", "62498", "200,00", "01/02/2021")]
    )
    september = al_export(tmp_path, "2024-09", [("AL1", "47001", "90,00", "01/02/2020")])
    assert pipe.ingest(october).status == "loaded"
    assert pipe.ingest(september).status == "loaded"  # arrives late: history, not current
    assert pipe.con.execute("SELECT sum(amount_eur) FROM financing").fetchone()[0] == Decimal("300.00")
    hist = pipe.con.execute(
        "SELECT extraction_date::VARCHAR, count(*), bool_or(is_current) FROM financing_history GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert hist == [("2024-09-30", 1, False), ("2024-10-31", 2, True)]
    november = al_export(tmp_path, "2024-11", [("AL2", "62498", "250,00", "01/02/2021")])
    held = pipe.ingest(november)  # AL1 withdrawn, half the stock: held until accepted
    assert held.status == "held" and held.file_id is not None
    pipe.accept(held.file_id)
    assert pipe.con.execute("SELECT operation_id, amount_eur FROM financing").fetchall() == [("AL2", Decimal("250.00"))]


def test_same_bytes_under_another_name_is_a_duplicate(pipe: Pipeline, tmp_path: Path) -> None:
    a = al_export(tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020")])
    b = tmp_path / "AL_ACV_export_2024-10 (copie).csv"
    b.write_bytes(a.read_bytes())
    first = pipe.ingest(a)
    dup = pipe.ingest(b, partner="action_logement")
    assert dup.status == "duplicate" and not dup.already_recorded
    rows = pipe.con.execute("SELECT file_name, status, duplicate_of FROM file_loads ORDER BY file_id").fetchall()
    assert rows == [(a.name, "loaded", None), (b.name, "duplicate", first.file_id)]
    before = table_snapshot(pipe.con)
    assert pipe.ingest(b, partner="action_logement").already_recorded
    assert table_snapshot(pipe.con) == before
    assert pipe.con.execute("SELECT count(*) FROM engagement_rows").fetchone()[0] == 1


def test_force_reingests_and_replaces_the_files_rows(pipe: Pipeline, tmp_path: Path) -> None:
    path = al_export(
        tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020"), ("AL2", "75056", "200,00", "01/02/2021")]
    )
    first = pipe.ingest(path)
    assert (first.rows_loaded, first.rows_quarantined) == (1, 1)
    pipe.con.execute(
        "INSERT INTO communes (insee_code, name, convention_id, department, region_code, region) "
        "VALUES ('75056', 'Paris', 'ACV000', '75', '11', 'Île-de-France')"
    )  # the reference is fixed
    again = pipe.ingest(path, force=True)
    assert again.file_id == first.file_id
    assert (again.rows_loaded, again.rows_quarantined) == (2, 0)
    assert pipe.con.execute("SELECT count(*), sum(amount_eur) FROM financing").fetchone() == (2, Decimal("300.00"))
    assert pipe.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0
    assert pipe.con.execute("SELECT forced_reloads FROM file_loads").fetchone()[0] == 1


def _unreconciled_load(pipe: Pipeline, tmp_path: Path, forge: Callable[[RawExport, Outputs], tuple]) -> None:
    """A file of two rows (one quarantined) read and validated as the pipeline does, whose
    loader inputs ``forge`` alters: the load must fail its reconciliation and write nothing."""
    from cdv_etl.read import read_export, sha256_of
    from cdv_etl.read.sandbox import reader_connection
    from cdv_etl.validate.outputs import build_outputs
    from cdv_etl.validate.parse import build_canonical
    from cdv_etl.validate.rules import find_failures
    from schemas.canonical import RuleContext

    pipe.ingest(al_export(tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020")]))
    before = table_snapshot(pipe.con)
    path = al_export(
        tmp_path, "2024-11", [("AL2", "47001", "5,00", "01/02/2020"), ("AL3", "99999", "6,00", "01/02/2020")]
    )
    spec = pipe.specs["action_logement"]
    reader = reader_connection(path, tmp_path, "500MB")
    raw = read_export(reader, path, spec, tmp_path)
    canonical = build_canonical(reader, spec, tmp_path)
    ctx = RuleContext(frozenset({"47001"}), date(2024, 11, 30), frozenset({"engagé"}), True, False, True)
    failures = find_failures(canonical, ctx)
    assert raw.rows_read == 2 and len(failures) == 1
    outputs = build_outputs(reader, spec, failures, date(2024, 11, 30), canonical)
    raw, outputs, loaded, quarantined = forge(raw, outputs)
    with pytest.raises(
        ReconciliationError, match=rf"{raw.rows_read} rows read but {loaded} loaded \+ {quarantined} quarantined"
    ):
        load_export(
            pipe.con,
            claim=Claim(99, replaces=False, by=claimant()),
            spec=spec,
            path=path,
            sha=sha256_of(path),
            size=1,
            extraction_date=date(2024, 11, 30),
            raw=raw,
            outputs=outputs,
        )
    assert table_snapshot(pipe.con) == before


def test_a_load_with_fewer_rows_than_read_is_rolled_back(pipe: Pipeline, tmp_path: Path) -> None:
    """rows_read must equal loaded + quarantined before commit: a row lost is a bug, nothing is written."""
    _unreconciled_load(pipe, tmp_path, lambda raw, outputs: (dataclasses.replace(raw, rows_read=3), outputs, 1, 1))


def test_a_load_with_more_rows_than_read_is_rolled_back(pipe: Pipeline, tmp_path: Path) -> None:
    """A row loaded twice (as a join that matched it twice would give) breaks the count too."""

    def duplicate_rows(raw: RawExport, outputs: Outputs) -> tuple:
        doubled = tmp_path / "doubled.parquet"
        src = str(outputs.rows)
        duckdb.execute(
            "COPY (SELECT * FROM read_parquet($src) UNION ALL SELECT * FROM read_parquet($src)) "
            "TO $dst (FORMAT parquet)",
            {"src": src, "dst": str(doubled)},
        )
        return raw, dataclasses.replace(outputs, rows=doubled), 2, 1

    _unreconciled_load(pipe, tmp_path, duplicate_rows)


@pytest.mark.parametrize("keys", ["dense", "sparse"])
def test_a_row_in_both_places_is_caught_though_the_counts_match(
    pipe: Pipeline, tmp_path: Path, keys: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quarantined row given the loaded row's key: 1 loaded + 1 quarantined = 2 read, but one
    row is in both places and the other in neither, so the distinct keys (1) betray it, counted
    in a bitmap (a CSV's dense keys) or by a hash table (``DENSE_KEYS = 0`` forces that way)."""
    import pyarrow.compute as pc

    from cdv_etl.load import loader

    if keys == "sparse":
        monkeypatch.setattr(loader, "DENSE_KEYS", 0)

    def same_key(raw: RawExport, outputs: Outputs) -> tuple:
        q = outputs.quarantined
        loaded_key = pc.min(q.column("row_key")).as_py() - 1  # AL2 is the row read before AL3
        q = q.set_column(q.schema.get_field_index("row_key"), "row_key", pc.subtract(q.column("row_key"), 1))
        assert pc.min(q.column("row_key")).as_py() == loaded_key
        return raw, dataclasses.replace(outputs, quarantined=q), 1, 1

    _unreconciled_load(pipe, tmp_path, same_key)


def test_published_copy_is_readable_while_the_warehouse_is_open(settings: Settings, tmp_path: Path) -> None:
    path = al_export(tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020")])
    with open_pipeline(sample_warehouse(settings)) as p:
        p.ingest(path)
        p.publish()
        ro = duckdb.connect(str(settings.published_path), read_only=True)
        assert ro.execute("SELECT sum(amount_eur) FROM financing").fetchone()[0] == Decimal("100.00")
        ro.close()


def _bytes_read() -> int:
    """Bytes this process has read through read(2) so far (Linux /proc accounting)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_file_met_again_unchanged_is_recognised_without_reading_it(pipe: Pipeline, tmp_path: Path) -> None:
    big = tmp_path / "export_inconnu.bin"
    big.write_bytes(os.urandom(32 * 1024 * 1024))
    time.sleep(SETTLED_NS / 1e9 + 0.2)  # a file still being written is not trusted by its stat
    first = pipe.ingest(big)
    assert first.status == "rejected" and first.reason == "unknown_partner"
    stat = pipe.con.execute(
        "SELECT stat_inode, stat_mtime_ns, size_bytes FROM files WHERE file_id = ?", [first.file_id]
    ).fetchone()
    assert stat == (big.stat().st_ino, big.stat().st_mtime_ns, big.stat().st_size)

    before, snapshot = _bytes_read(), table_snapshot(pipe.con)
    again = pipe.ingest(big)
    assert again.already_recorded and again.file_id == first.file_id
    assert _bytes_read() - before < 4 * 1024 * 1024, "an unchanged file was read again"
    assert table_snapshot(pipe.con) == snapshot

    # Touched: its modification time moved, so it is hashed again (and still the same bytes).
    os.utime(big, ns=(big.stat().st_atime_ns, big.stat().st_mtime_ns + 1_000_000_000))
    before = _bytes_read()
    assert pipe.ingest(big).already_recorded
    assert _bytes_read() - before >= 32 * 1024 * 1024


def test_a_rewrite_that_keeps_size_and_mtime_is_not_mistaken_for_the_same_bytes(pipe: Pipeline, tmp_path: Path) -> None:
    path = al_export(tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020")])
    time.sleep(SETTLED_NS / 1e9 + 0.2)
    first = pipe.ingest(path)
    assert first.status == "loaded" and first.engaged_amount_eur == Decimal("100.00")
    assert pipe.con.execute("SELECT stat_ctime_ns FROM files WHERE file_id = ?", [first.file_id]).fetchone()[0]
    st = path.stat()
    # Same length, same modification time put back: only the change time tells.
    path.write_bytes(path.read_bytes().replace(b"100,00", b"900,00"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    second = pipe.ingest(path)
    assert second.status == "loaded" and not second.already_recorded
    assert second.engaged_amount_eur == Decimal("900.00")


def test_engagement_rows_rebuilt_without_index_keep_their_rows_and_constraints(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "checksum VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    for m in [m for m in migrations() if m.version < 5]:
        con.execute(m.sql)
        con.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)", [m.version, m.name, m.checksum]
        )
    con.execute(
        "INSERT INTO engagement_rows VALUES (1, 7, 9, NULL, 'anah', 'OP1', '47001', 'Agen', 2, 'Habitat', "
        "2024, DATE '2024-02-01', 'subvention', NULL, NULL, NULL, 1234.56, 'engagé', true)"
    )
    assert "005_engagement_rows_without_index" in migrate(con)
    assert con.execute("SELECT row_key, amount_eur FROM engagement_rows").fetchall() == [(7, Decimal("1234.56"))]
    assert con.execute(
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'engagement_rows' "
        "AND constraint_type = 'PRIMARY KEY'"
    ).fetchone() == (0,)
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO engagement_rows (file_id, row_key) VALUES (1, 8)")


def test_a_file_hashed_while_fresh_keeps_no_stat(pipe: Pipeline, tmp_path: Path) -> None:
    """Written a moment ago, a file could be rewritten within the same clock tick without its
    times moving: its stat is not kept, so it is hashed whenever it is met again."""
    path = al_export(tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020")])
    r = pipe.ingest(path)
    assert r.status == "loaded"
    assert pipe.con.execute("SELECT stat_inode FROM files WHERE file_id = ?", [r.file_id]).fetchone() == (None,)


def test_a_file_refused_unread_is_hashed_once_the_limit_allows_it(settings: Settings, tmp_path: Path) -> None:
    """Too large, a file is refused without being hashed (its ledger key is a placeholder).
    Once the limit is raised, the placeholder must not stand in for its hash: it is read,
    loaded, and a copy of the same bytes is then a duplicate."""
    path = al_export(tmp_path, "2024-10", [("AL1", "47001", "100,00", "01/02/2020")])
    time.sleep(SETTLED_NS / 1e9 + 0.2)
    small = dataclasses.replace(settings, max_file_mb=path.stat().st_size / 2 / 1024 / 1024)
    with open_pipeline(sample_warehouse(small)) as p:
        refused = p.ingest(path)
    assert (refused.status, refused.reason) == ("rejected", "too_large")
    with open_pipeline(settings) as p:
        loaded = p.ingest(path)
        assert (loaded.status, loaded.rows_loaded) == ("loaded", 1), loaded.message
        copy = tmp_path / "copie" / path.name
        copy.parent.mkdir()
        copy.write_bytes(path.read_bytes())
        again = p.ingest(copy, partner="action_logement")
        assert again.status == "duplicate"
        assert p.con.execute("SELECT count(*) FROM engagement_rows").fetchone() == (1,)

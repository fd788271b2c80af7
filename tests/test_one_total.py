"""One total everywhere: after any sequence of loads (some held: they withdraw too much of their
partner's stock), held exports accepted, forced reloads and reference changes (in either
direction), every consolidated view sums to the same engaged total, and each file holds exactly
what its rows give under the current reference.

A Hypothesis state machine drives random sequences on a real DuckDB file: small generated
exports of two partners (Action Logement's monthly CSV, Anah's yearly CSV with its withdrawn
grants, which do not count as engaged), and three vintages of the reference that differ by a
few communes carrying rows. The oracle is the rows each file was generated with: a row counts
when its amount is positive, its commune is in the current vintage and its status counts.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import sample_warehouse, table_snapshot
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_reference import AL_HEADER, vintage_file

from cdv_etl.config import Settings
from cdv_etl.load.reference import SAMPLE_REFERENCE, ReferenceRefused, read_reference
from cdv_etl.pipeline import Pipeline, open_pipeline

VIEWS = (
    "v_financing_by_axis",
    "v_financing_by_partner",
    "v_financing_by_year",
    "v_financing_by_commune",
    "v_financing_by_convention",
    "v_financing_axis_partner_year",
    "v_envelope_consumption",
)
"""Every consolidated view: each sums to the engaged total (the envelopes' with the partners
that have none)."""

# Communes that carry rows: in every vintage (Agen), in some only, in none (99999 is no ACV commune).
CODES = ("47001", "80001", "34003", "75056", "92012", "99999")
VINTAGES = {
    "2024-04": None,  # the sample itself
    "2025-01": (frozenset({"80001"}), ("75056",)),
    "2025-06": (frozenset({"34003", "80001"}), ("75056", "92012")),
}
"""Each vintage: (communes dropped from, communes added to) the sample reference."""
CODES_OF: dict[str, frozenset[str]] = {}
"""Each vintage's INSEE codes (read once)."""
AMOUNTS = (Decimal("1.00"), Decimal("2.50"), Decimal("100.00"), Decimal("-3.00"))


@dataclass(frozen=True)
class Row:
    insee: str
    amount: Decimal
    engaged: bool
    """Anah's withdrawn grant (annulé) is loaded but does not count."""

    def counts(self, communes: frozenset[str]) -> Decimal:
        return self.amount if self.amount > 0 and self.insee in communes and self.engaged else Decimal("0.00")


rows_strategy = st.lists(
    st.builds(Row, st.sampled_from(CODES), st.sampled_from(AMOUNTS), st.booleans()), min_size=1, max_size=4
)


def export(folder: Path, partner: str, period: int, rows: list[Row]) -> Path:
    """A partner's export of the ``period``-th month (Action Logement) or year (Anah)."""
    folder.mkdir(parents=True)
    if partner == "action_logement":
        path = folder / f"AL_ACV_export_2021-{period + 1:02d}.csv"
        lines = [AL_HEADER] + [
            f"OP{i};{r.insee};X;Construction neuve;Prêt;3;{str(r.amount).replace('.', ',')};01/02/2020"
            for i, r in enumerate(rows)
        ]
        path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
        return path
    path = folder / f"anah_acv_{2021 + period}.csv"
    lines = [
        "numero_dossier,code_insee,annee_engagement,type_intervention,nb_logements,montant_aide,date_engagement,statut"
    ]
    lines += [
        f"D{i},{r.insee},2020,Propriétaire bailleur,2,{r.amount},2020-03-01,{'engagé' if r.engaged else 'annulé'}"
        for i, r in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    return path


class OneTotal(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.work = Path(tempfile.mkdtemp(prefix="cdv-one-total-"))
        self.stack = ExitStack()
        self.stack.callback(shutil.rmtree, self.work, True)
        s = Settings(warehouse=self.work / "wh" / "cdv.duckdb", inbox=self.work / "inbox", lock_timeout_s=5)
        self.pipe: Pipeline = self.stack.enter_context(open_pipeline(sample_warehouse(s), publish_on_exit=False))
        self.references = {
            v: vintage_file(self.work, f"acv_communes_{v}.csv", drop=change[0], add=change[1])
            if change is not None
            else SAMPLE_REFERENCE
            for v, change in VINTAGES.items()
        }
        for v, path in self.references.items():
            CODES_OF.setdefault(v, frozenset(read_reference(path)["insee_code"]))
        self.vintage = "2024-04"
        self.files: dict[int, tuple[Path, list[Row]]] = {}
        """Each loaded file: its path and the rows it was generated with."""
        self.made = 0

    def teardown(self) -> None:
        self.stack.close()

    def communes(self) -> frozenset[str]:
        return CODES_OF[self.vintage]

    @rule(partner=st.sampled_from(["action_logement", "anah"]), period=st.integers(0, 2), rows=rows_strategy)
    def load(self, partner: str, period: int, rows: list[Row]) -> None:
        self.made += 1
        if partner == "action_logement":  # no status: every line counts
            rows = [Row(r.insee, r.amount, True) for r in rows]
        result = self.pipe.ingest(export(self.work / f"export{self.made}", partner, period, rows))
        if result.file_id is not None and result.rows_read:  # a file with rows, current or not
            self.files[result.file_id] = (self.work / f"export{self.made}", rows)

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def forced_reload(self, data: st.DataObject) -> None:
        file_id = data.draw(st.sampled_from(sorted(self.files)))
        folder, _ = self.files[file_id]
        (path,) = folder.iterdir()
        result = self.pipe.ingest(path, force=True)
        assert result.file_id == file_id and result.rows_read, result

    @rule(vintage=st.sampled_from(sorted(VINTAGES)), force=st.booleans())
    def change_reference(self, vintage: str, force: bool) -> None:
        path = self.references[vintage]
        if vintage < self.vintage and not force:
            before = table_snapshot(self.pipe.con)
            with pytest.raises(ReferenceRefused):
                self.pipe.load_reference(path)
            assert table_snapshot(self.pipe.con) == before
            return
        self.pipe.load_reference(path, force=force)
        self.vintage = vintage

    def held(self) -> list[int]:
        return [int(r[0]) for r in self.pipe.con.execute("SELECT file_id FROM files WHERE status = 'held'").fetchall()]

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def accept_held(self, data: st.DataObject) -> None:
        """A held export (one that withdrew too much of its partner's stock) accepted: loaded,
        and current when it is its partner's latest."""
        file_id = data.draw(st.sampled_from(self.held()))
        self.pipe.accept(file_id)
        assert self.pipe.con.execute("SELECT status FROM files WHERE file_id = ?", [file_id]).fetchone() == ("loaded",)

    @invariant()
    def every_view_sums_to_the_same_total(self) -> None:
        con = self.pipe.con
        (lines,) = con.execute(
            "SELECT coalesce(sum(amount_eur), 0) FROM financing WHERE counts_as_engaged"
        ).fetchone() or (None,)
        for view in VIEWS:
            (total,) = con.execute(f"SELECT coalesce(sum(engaged_eur), 0) FROM {view}").fetchone() or (None,)
            assert total == lines, (view, total, lines)
        communes = self.communes()
        current = [int(r[0]) for r in con.execute("SELECT file_id FROM current_files").fetchall()]
        expected = sum((r.counts(communes) for f in current for r in self.files[f][1]), Decimal("0.00"))
        assert lines == expected

    @invariant()
    def each_file_holds_what_its_rows_give_under_the_current_reference(self) -> None:
        con = self.pipe.con
        communes = self.communes()
        assert con.execute(
            "SELECT count(*) FROM engagement_rows WHERE insee_code NOT IN (SELECT insee_code FROM communes)"
        ).fetchone() == (0,)
        for file_id, (_, rows) in self.files.items():
            valid = [r for r in rows if r.amount > 0 and r.insee in communes]
            ledger = con.execute(
                """SELECT rows_read, rows_loaded, rows_quarantined, engaged_amount_eur,
                     (SELECT count(*) FROM engagement_rows WHERE file_id = $1),
                     (SELECT count(*) FROM quarantine_rows WHERE file_id = $1),
                     (SELECT coalesce(sum(lines), 0) FROM financing_totals WHERE file_id = $1),
                     (SELECT count(DISTINCT row_key) FROM quarantine_failures
                      WHERE file_id = $1 AND rule = 'commune_not_acv')
                   FROM files WHERE file_id = $1""",
                [file_id],
            ).fetchone()
            engaged = sum((r.counts(communes) for r in rows), Decimal("0.00"))
            outside = sum(r.insee not in communes for r in rows)
            assert ledger == (
                len(rows), len(valid), len(rows) - len(valid), engaged, len(valid), len(rows) - len(valid), len(valid),
                outside,
            ), (file_id, self.vintage)  # fmt: skip


OneTotal.TestCase.settings = settings(
    max_examples=4, stateful_step_count=6, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_one_total = OneTotal.TestCase

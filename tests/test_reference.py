"""The ANCT reference: real quirks of real data, and a newer vintage replacing an older one."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import ANCT_REFERENCE, needs_shared

from cdv_etl.errors import CdvError
from cdv_etl.load.reference import SAMPLE_REFERENCE, read_reference
from cdv_etl.pipeline import Pipeline


def test_sample_reference_is_small_real_and_clean() -> None:
    ref = read_reference(SAMPLE_REFERENCE)
    assert 24 <= len(ref) <= 60
    assert ref["insee_code"].str.len().eq(5).all()
    assert set(ref.loc[ref["convention_id"] == "ACV113", "name"]) == {"Lens", "Liévin"}


def test_csv_with_numbers_that_lost_their_zeros(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text(
        "insee_com;id_acv;lib_com;insee_dep;insee_reg;lib_reg;pop\n"
        "1004;ACV008;Ambérieu-en-Bugey;1;84;Auvergne-Rhône-Alpes;14854\n"
        "2A004;ACV004;Ajaccio;2A;94;Corse;73822\n"
        "97105;ACV023;Basse-Terre;971;1;Guadeloupe;9779\n",
        encoding="utf-8",
    )
    ref = read_reference(path)
    assert list(ref["insee_code"]) == ["01004", "2A004", "97105"]
    assert list(ref["department"]) == ["01", "2A", "971"]
    assert list(ref["region_code"]) == ["84", "94", "01"]


def test_invalid_reference_is_refused_whole(pipe: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    path.write_text("insee_com,id_acv,lib_com,insee_dep\n123456,ACV1,X,12\n", encoding="utf-8")
    before = pipe.con.execute("SELECT count(*) FROM communes").fetchone()
    with pytest.raises(CdvError, match="invalid INSEE code"):
        pipe.load_reference(path)
    assert pipe.con.execute("SELECT count(*) FROM communes").fetchone() == before


@needs_shared
def test_newer_vintage_updates_reference_and_keeps_financing(pipe: Pipeline, tmp_path: Path) -> None:
    agen = tmp_path / "AL_ACV_export_2024-10.csv"
    agen.write_bytes(
        (
            "Référence opération;Code commune;Nom commune;Type d'opération;Produit;Nb logements;"
            "Montant engagé;Date décision CE\r\nAL1;47001;Agen;Construction neuve;Prêt;3;10,00;"
            "01/02/2020\r\n"
        ).encode("cp1252")
    )
    pipe.ingest(agen)
    doc = json.loads(ANCT_REFERENCE.read_text(encoding="utf-8"))
    newer = tmp_path / "acv_communes_2025-01.geojson"
    for f in doc["features"]:
        if f["properties"]["insee_com"] == 47001:
            f["properties"]["lib_com"] = "Agen (nouveau nom)"
    newer.write_text(json.dumps(doc), encoding="utf-8")
    r = pipe.load_reference(newer)
    assert (r.communes, r.conventions, r.changed) == (244, 230, True)
    assert pipe.con.execute("SELECT count(*) FROM reference_loads").fetchone()[0] == 2
    assert pipe.con.execute("SELECT commune, amount_eur FROM financing").fetchall() == [
        ("Agen (nouveau nom)", Decimal("10.00"))
    ]
    assert pipe.load_reference(newer).changed is False

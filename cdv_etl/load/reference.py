"""The ANCT reference of ACV communes (GeoJSON, or CSV with the same property names).

Each commune's position (longitude and latitude in degrees, for the report's map) is the
feature's Point geometry in GeoJSON, the ``longitude`` and ``latitude`` columns in CSV; a
reference without positions loads, and the map shows what it has. ANCT's cartography places
the overseas communes in insets off the Atlantic coast, their relative positions kept.

Real data, real quirks: codes given as numbers lose their leading zero (1004 is 01004),
Corsica is 2A/2B, overseas codes are 97xxx, department codes may be numbers, and several
communes share one convention (ACV113 = Lens + Liévin). A newer vintage replaces the
reference; loaded financing and its history stay as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cdv_etl.errors import CdvError
from cdv_etl.read import sha256_of

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

SAMPLE_REFERENCE = Path(__file__).resolve().parent.parent / "sample" / "acv_communes_sample.csv"
REQUIRED = ("insee_com", "id_acv", "lib_com", "insee_dep")


@dataclass
class ReferenceResult:
    file_name: str
    communes: int
    conventions: int
    changed: bool


def _code(series: pd.Series, width: int) -> pd.Series:
    """Numbers that lost their leading zeros regain them; 2a004 → 2A004."""
    text = series.astype("string").str.strip().str.replace(r"\.0+$", "", regex=True).str.upper()
    digits = text.str.fullmatch(r"\d+").fillna(False).astype(bool)
    return text.where(~digits, text.str.zfill(width))


def _point(geometry: object) -> tuple[object, object]:
    """(longitude, latitude) of a GeoJSON Point; (None, None) for any other geometry."""
    if isinstance(geometry, dict) and geometry.get("type") == "Point":
        coordinates = geometry.get("coordinates") or []
        if len(coordinates) >= 2:
            return coordinates[0], coordinates[1]
    return None, None


def _degrees(frame: pd.DataFrame, column: str, limit: int, path: Path, hint: str) -> pd.Series | None:
    """A coordinate column as floats (NULL where empty), or a CdvError naming the first value
    that is not a number of degrees; None when the reference has no such column."""
    import pandas as pd

    if column not in frame:
        return None
    text = frame[column].astype("string").str.strip().str.replace(",", ".", regex=False).replace("", None)
    degrees = pd.to_numeric(text, errors="coerce").astype("Float64")
    wrong = (text.notna() & degrees.isna()) | (degrees.abs() > limit).fillna(False)
    if wrong.any():
        at = int(wrong.to_numpy().nonzero()[0][0])
        raise CdvError(
            f"{path.name}: {column} {frame[column].iloc[at]!r} of commune {frame['insee_com'].iloc[at]} "
            f"(feature {at + 1}) is not a number of degrees within ±{limit}; the reference was not loaded",
            hint,
        )
    return degrees


def read_reference(path: Path) -> pd.DataFrame:
    import pandas as pd

    """The reference as a frame of normalised text columns, or a CdvError naming the problem."""
    hint = "use the ANCT list of ACV communes (GeoJSON or CSV with its property names)"
    try:
        if path.suffix.lower() in (".geojson", ".json"):
            doc = json.loads(path.read_text(encoding="utf-8"))
            features = doc.get("features", [])
            frame = pd.DataFrame([f.get("properties") or {} for f in features], dtype=object)
            points = [_point(f.get("geometry")) for f in features]
            frame["longitude"] = [p[0] for p in points]
            frame["latitude"] = [p[1] for p in points]
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=None, engine="python")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CdvError(f"{path.name}: cannot read the reference: {exc}", hint) from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CdvError(f"{path.name}: reference columns missing: {', '.join(missing)}", hint)
    out = pd.DataFrame(
        {
            "insee_code": _code(frame["insee_com"], 5),
            "convention_id": frame["id_acv"].astype("string").str.strip(),
            "name": frame["lib_com"].astype("string").str.strip(),
            "department": _code(frame["insee_dep"], 2),
            "region_code": _code(frame["insee_reg"], 2) if "insee_reg" in frame else None,
            "region": frame["lib_reg"].astype("string").str.strip() if "lib_reg" in frame else None,
            "epci_siren": _code(frame["siren_epci"], 9) if "siren_epci" in frame else None,
            "population": (pd.to_numeric(frame["pop"], errors="coerce").astype("Int64") if "pop" in frame else None),
            "longitude": _degrees(frame, "longitude", 180, path, hint),
            "latitude": _degrees(frame, "latitude", 90, path, hint),
        }
    )
    bad = out[~out["insee_code"].fillna("").str.fullmatch(r"[0-9]{5}|2[AB][0-9]{3}")]
    if len(bad):
        raise CdvError(
            f"{path.name}: {len(bad)} invalid INSEE code(s), e.g. {bad['insee_code'].iloc[0]!r} "
            f"(feature {int(bad.index[0]) + 1}); the reference was not loaded",
            hint,
        )
    dupes = out[out["insee_code"].duplicated()]
    if len(dupes):
        raise CdvError(
            f"{path.name}: INSEE code {dupes['insee_code'].iloc[0]} appears twice; the reference was not loaded", hint
        )
    if out["convention_id"].isna().any() or out["name"].isna().any():
        raise CdvError(f"{path.name}: a commune has no id_acv or no name; not loaded", hint)
    return out


def load_reference(con: duckdb.DuckDBPyConnection, path: Path) -> ReferenceResult:
    """Replace the reference communes and conventions, in one transaction."""
    sha = sha256_of(path)
    last = con.execute("SELECT sha256 FROM reference_loads ORDER BY reference_load_id DESC LIMIT 1").fetchone()
    frame = read_reference(path)
    n_conv = int(frame["convention_id"].nunique())
    if last and last[0] == sha:
        return ReferenceResult(path.name, len(frame), n_conv, changed=False)
    con.execute("BEGIN TRANSACTION")
    try:
        row = con.execute(
            "INSERT INTO reference_loads (file_name, sha256, communes, conventions) "
            "VALUES (?, ?, ?, ?) RETURNING reference_load_id",
            [path.name, sha, len(frame), n_conv],
        ).fetchone()
        assert row is not None
        con.register("ref_frame", frame)
        con.execute("DELETE FROM communes")
        con.execute(
            "INSERT INTO communes (insee_code, name, convention_id, department, region_code, region, "
            "epci_siren, population, longitude, latitude, reference_load_id) "
            "SELECT insee_code, name, convention_id, department, region_code, region, epci_siren, "
            "population, longitude, latitude, ? FROM ref_frame",
            [row[0]],
        )
        con.execute("DELETE FROM conventions")
        con.execute(
            "INSERT INTO conventions SELECT convention_id, string_agg(name, ' + ' ORDER BY name) "
            "FROM ref_frame GROUP BY convention_id"
        )
        con.unregister("ref_frame")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return ReferenceResult(path.name, len(frame), n_conv, changed=True)


def reference_codes(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    return frozenset(r[0] for r in con.execute("SELECT insee_code FROM communes").fetchall())

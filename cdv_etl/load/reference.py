"""The ANCT reference of ACV communes (GeoJSON, or CSV with the same property names), by vintage.

Each commune's position (longitude and latitude in degrees, for the report's map) is the
feature's Point geometry in GeoJSON, the ``longitude`` and ``latitude`` columns in CSV; a
reference without positions loads, and the map shows what it has. ANCT's cartography places
the overseas communes in insets off the Atlantic coast, their relative positions kept.

Real data, real quirks: codes given as numbers lose their leading zero (1004 is 01004),
Corsica is 2A/2B, overseas codes are 97xxx, department codes may be numbers, several
communes share one convention (ACV113 = Lens + Liévin), and the 2018 list names its regions
by INSEE code only (``insee_reg``, no ``lib_reg``).

Vintages. Each list is dated (``--vintage`` or its file name) and every vintage loaded is
kept (``reference_communes``); ``communes`` is the current one. An older vintage than the
current one is refused unless forced. After the change, every loaded export is revalidated
against the new list in the same transaction (``cdv_etl.load.revalidate``): rows move in or
out of quarantine, and the reference load records what moved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdv_etl.errors import CdvError
from cdv_etl.load.claims import take_reference_load_id
from cdv_etl.load.transactions import in_transaction
from cdv_etl.read import sha256_of

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from cdv_etl.load.revalidate import Moves
    from cdv_etl.specs import PartnerSpec

SAMPLE_REFERENCE = Path(__file__).resolve().parent.parent / "sample" / "acv_communes_sample_2024-04.csv"
"""A few communes of the April 2024 ANCT list (its vintage in its name, as ANCT's files have)."""
REQUIRED = ("insee_com", "id_acv", "lib_com", "insee_dep")
FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".csv": "CSV"}
"""The reference's formats, by file suffix."""
VINTAGE_IN_NAME = re.compile(r"(?<!\d)(\d{4})-(\d{2})(?:-(\d{2}))?(?!\d)")
"""A vintage in a file name: ``acv_communes_2024-04.geojson``, ``…_2024-04-15.csv``."""

INSEE_REGIONS = {
    "01": "Guadeloupe",
    "02": "Martinique",
    "03": "Guyane",
    "04": "La Réunion",
    "06": "Mayotte",
    "11": "Île-de-France",
    "24": "Centre-Val de Loire",
    "27": "Bourgogne-Franche-Comté",
    "28": "Normandie",
    "32": "Hauts-de-France",
    "44": "Grand Est",
    "52": "Pays de la Loire",
    "53": "Bretagne",
    "75": "Nouvelle-Aquitaine",
    "76": "Occitanie",
    "84": "Auvergne-Rhône-Alpes",
    "93": "Provence-Alpes-Côte d'Azur",
    "94": "Corse",
}
"""The 18 regions by official INSEE code (since 2016): a reference's region names when it gives
``insee_reg`` without ``lib_reg``."""

_HINT = "use the ANCT list of ACV communes (GeoJSON or CSV with its property names)"


class ReferenceRefused(CdvError):
    """A reference refused for its vintage (none found, or older than the current one): nothing changed."""


@dataclass
class ReferenceResult:
    file_name: str
    communes: int
    conventions: int
    changed: bool
    vintage: date | None = None
    previous_vintage: date | None = None
    forced: bool = False
    communes_added: int = 0
    communes_removed: int = 0
    moves: Moves | None = None
    """What revalidating the loaded exports moved (None when nothing changed)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data (dates and euros as text): for flow results and artifacts."""
        d: dict[str, Any] = {
            "file_name": self.file_name,
            "communes": self.communes,
            "conventions": self.conventions,
            "changed": self.changed,
            "vintage": self.vintage.isoformat() if self.vintage else None,
            "previous_vintage": self.previous_vintage.isoformat() if self.previous_vintage else None,
            "forced": self.forced,
            "communes_added": self.communes_added,
            "communes_removed": self.communes_removed,
            "moves": self.moves.as_dict() if self.moves is not None else None,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceResult:
        from cdv_etl.load.revalidate import Moves

        values = dict(d)
        for k in ("vintage", "previous_vintage"):
            if isinstance(values.get(k), str):
                values[k] = date.fromisoformat(values[k])
        if values.get("moves") is not None:
            values["moves"] = Moves.from_dict(values["moves"])
        return cls(**values)

    def summary(self) -> str:
        """One line: what the load did."""
        if not self.changed:
            return (
                f"reference {self.file_name}: {self.communes} communes, {self.conventions} conventions — "
                "unchanged (same file as the current reference)"
            )
        since = f" (was {self.previous_vintage})" if self.previous_vintage else ""
        forced = ", forced over a newer vintage" if self.forced else ""
        return (
            f"reference {self.file_name}: vintage {self.vintage}{since}{forced}, {self.communes} communes "
            f"(+{self.communes_added} −{self.communes_removed}), {self.conventions} conventions — loaded"
        )


def vintage_of(path: Path, given: str | date | None = None) -> date:
    """The reference's vintage: ``given`` (``YYYY-MM`` or ``YYYY-MM-DD``), else the date in its
    file name; a month stands for its first day. A ReferenceRefused when there is none."""
    if isinstance(given, date):
        return given
    hint = (
        "give its date: --vintage YYYY-MM (or YYYY-MM-DD), or name the file after it as ANCT does "
        "(acv_communes_2024-04.geojson)"
    )
    text = given
    if text is None:
        m = VINTAGE_IN_NAME.search(path.name)
        if m is None:
            raise ReferenceRefused(f"{path.name}: the reference has no date (vintage); nothing was changed", hint)
    else:
        m = re.fullmatch(r"\s*(\d{4})-(\d{2})(?:-(\d{2}))?\s*", text)
        if m is None:
            raise ReferenceRefused(f"vintage {text!r} is not a date YYYY-MM or YYYY-MM-DD; nothing was changed", hint)
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3) or 1))
    except ValueError:
        raise ReferenceRefused(
            f"{path.name}: vintage {m.group(0)!r} is not a real date; nothing was changed", hint
        ) from None


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


def _regions(frame: pd.DataFrame, region_code: pd.Series | None, path: Path) -> pd.Series | None:
    """``lib_reg`` where given, else the name of the INSEE region code; a CdvError for a code
    that is none of the 18 regions' where a name is needed."""
    named = frame["lib_reg"].astype("string").str.strip().replace("", None) if "lib_reg" in frame else None
    if region_code is None:
        return named
    from_code = region_code.map(INSEE_REGIONS, na_action="ignore").astype("string")
    needed = region_code.notna() & from_code.isna() & (named.isna() if named is not None else True)
    if needed.any():
        at = int(needed.to_numpy().nonzero()[0][0])
        raise CdvError(
            f"{path.name}: insee_reg {region_code.iloc[at]!r} of commune {frame['insee_com'].iloc[at]} "
            f"(feature {at + 1}) is not one of the 18 INSEE region codes, and no lib_reg names it; "
            "the reference was not loaded",
            f"the region codes: {', '.join(f'{k} {v}' for k, v in INSEE_REGIONS.items())}",
        )
    return named.fillna(from_code) if named is not None else from_code


def read_reference(path: Path) -> pd.DataFrame:
    """The reference as a frame of normalised text columns, or a CdvError naming the problem."""
    import pandas as pd

    hint = _HINT
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CdvError(
            f"{path.name}: unknown reference format {path.suffix or '(no suffix)'!r}; the reference was not loaded",
            f"give the ANCT list as {', '.join(sorted(FORMATS))} (GeoJSON, or CSV with its property names)",
        )
    try:
        if kind == "GeoJSON":
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
                raise CdvError(f"{path.name}: not a GeoJSON FeatureCollection; the reference was not loaded", hint)
            features = doc.get("features") or []
            frame = pd.DataFrame([f.get("properties") or {} for f in features], dtype=object)
            points = [_point(f.get("geometry")) for f in features]
            frame["longitude"] = [p[0] for p in points]
            frame["latitude"] = [p[1] for p in points]
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", sep=None, engine="python")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CdvError(f"{path.name}: cannot read the reference ({exc}); the reference was not loaded", hint) from exc
    if len(frame) == 0:
        raise CdvError(f"{path.name}: the reference has no communes; the reference was not loaded", hint)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CdvError(
            f"{path.name}: reference columns missing: {', '.join(missing)}; the reference was not loaded", hint
        )
    region_code = _code(frame["insee_reg"], 2) if "insee_reg" in frame else None
    out = pd.DataFrame(
        {
            "insee_code": _code(frame["insee_com"], 5),
            "convention_id": frame["id_acv"].astype("string").str.strip(),
            "name": frame["lib_com"].astype("string").str.strip(),
            "department": _code(frame["insee_dep"], 2),
            "region_code": region_code,
            "region": _regions(frame, region_code, path),
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
            f"{path.name}: INSEE code {dupes['insee_code'].iloc[0]} appears twice "
            f"(features {int(out.index[out['insee_code'] == dupes['insee_code'].iloc[0]][0]) + 1} and "
            f"{int(dupes.index[0]) + 1}); the reference was not loaded",
            hint,
        )
    if out["convention_id"].isna().any() or out["name"].isna().any():
        raise CdvError(f"{path.name}: a commune has no id_acv or no name; the reference was not loaded", hint)
    return out


def load_reference(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    specs: Mapping[str, PartnerSpec],
    *,
    vintage: str | date | None = None,
    force: bool = False,
) -> ReferenceResult:
    """Make ``path`` the current reference, keep it as a vintage, and revalidate every loaded
    export against it: one transaction (a failure leaves everything as it was), run again whole
    when another writer's commit conflicts with it (it moves rows of every file: any concurrent
    load conflicts with it).

    Refused (ReferenceRefused, nothing changed) without a vintage, or when it is older than the
    current one unless ``force``. The same bytes as the current reference change nothing.
    """
    dated = vintage_of(path, vintage)
    frame = read_reference(path)
    sha = sha256_of(path)
    con.register("ref_frame", frame)
    try:
        return in_transaction(
            con,
            lambda c: _change_reference(c, path, frame, specs, sha=sha, dated=dated, force=force),
            what=f"reference load of {path.name}",
        )
    finally:
        con.unregister("ref_frame")


def _change_reference(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    frame: pd.DataFrame,
    specs: Mapping[str, PartnerSpec],
    *,
    sha: str,
    dated: date,
    force: bool,
) -> ReferenceResult:
    """``load_reference``'s transaction (its caller begins and commits it; ``ref_frame`` is registered).

    What it decides on is read in the transaction; its id then comes from ``id_counters`` (that
    UPDATE serialises it with every other reference load, which decided on the same rows), and
    its ``reference_loads`` row is written last, whole."""
    from cdv_etl.load.revalidate import revalidate

    n_conv = int(frame["convention_id"].nunique())
    last = con.execute(
        "SELECT sha256, vintage, file_name FROM reference_loads ORDER BY reference_load_id DESC LIMIT 1"
    ).fetchone()
    if last and last[0] == sha:
        return ReferenceResult(path.name, len(frame), n_conv, changed=False, vintage=last[1], previous_vintage=last[1])
    previous, previous_name = (last[1], last[2]) if last else (None, None)
    older = previous is not None and dated < previous
    if older and not force:
        raise ReferenceRefused(
            f"{path.name}: vintage {dated} is older than the current reference's ({previous}, {previous_name}); "
            "nothing was changed",
            "load the newer list, or pass --force to go back to this vintage on purpose",
        )
    load_id = take_reference_load_id(con)
    changes = con.execute(
        """SELECT
             (SELECT count(*) FROM ref_frame WHERE insee_code NOT IN (SELECT insee_code FROM communes)),
             (SELECT count(*) FROM communes WHERE insee_code NOT IN (SELECT insee_code FROM ref_frame))"""
    ).fetchone()
    assert changes is not None
    columns = "insee_code, name, convention_id, department, region_code, region, epci_siren, population, "
    columns += "longitude, latitude"
    con.execute(
        f"INSERT INTO reference_communes (reference_load_id, {columns}) SELECT ?, {columns} FROM ref_frame",  # noqa: S608
        [load_id],
    )
    con.execute("DELETE FROM communes")
    con.execute(
        f"INSERT INTO communes ({columns}, reference_load_id) "  # noqa: S608 - constant column list
        f"SELECT {columns}, reference_load_id FROM reference_communes WHERE reference_load_id = ?",
        [load_id],
    )
    con.execute("DELETE FROM conventions")
    con.execute(
        "INSERT INTO conventions SELECT convention_id, string_agg(name, ' + ' ORDER BY name) "
        "FROM ref_frame GROUP BY convention_id"
    )
    moves = revalidate(con, specs)
    for f in moves.files:
        con.execute(
            "INSERT INTO reference_moves VALUES (?, ?, ?, ?, ?, ?)",
            [load_id, f.file_id, f.rows_to_quarantine, f.eur_to_quarantine]
            + [f.rows_from_quarantine, f.eur_from_quarantine],
        )
    con.execute(
        "INSERT INTO reference_loads (reference_load_id, file_name, sha256, communes, conventions, vintage, forced, "
        "communes_added, communes_removed, rows_to_quarantine, eur_to_quarantine, rows_from_quarantine, "
        "eur_from_quarantine) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            load_id,
            path.name,
            sha,
            len(frame),
            n_conv,
            dated,
            older,
            changes[0],
            changes[1],
            moves.rows_to_quarantine,
            moves.eur_to_quarantine,
            moves.rows_from_quarantine,
            moves.eur_from_quarantine,
        ],
    )
    return ReferenceResult(
        path.name,
        len(frame),
        n_conv,
        changed=True,
        vintage=dated,
        previous_vintage=previous,
        forced=older,
        communes_added=int(changes[0]),
        communes_removed=int(changes[1]),
        moves=moves,
    )


def current_reference(con: duckdb.DuckDBPyConnection) -> int | None:
    """The current reference's load id (None before the first): a load checks that the reference
    it validated against is still current when it commits."""
    row = con.execute("SELECT max(reference_load_id) FROM reference_loads").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def reference_codes(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    return frozenset(r[0] for r in con.execute("SELECT insee_code FROM communes").fetchall())

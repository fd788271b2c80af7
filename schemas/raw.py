"""Raw schema per partner: the structure of its file, built from its spec.

Every column the spec reads must be present; they hold text, any of it possibly empty.
A file that fails this schema is rejected whole, and the message names the missing columns.
The header alone is validated, as an empty frame of Pandera's Polars backend (the one the
canonical rules use: no pandas frame is built for it).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from cdv_etl.specs import PartnerSpec


def raw_schema(spec: PartnerSpec) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {col: pa.Column(nullable=True, required=True) for col in spec.required_columns},
        name=f"raw_{spec.partner}",
        strict=False,
    )


def missing_columns(spec: PartnerSpec, columns: list[str]) -> list[str]:
    """Columns the spec needs that the file lacks (validated on the header alone)."""
    # A frame's names are unique; a name the header repeats is present all the same.
    header = pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    try:
        raw_schema(spec).validate(header, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        return [str(c) for c in cases.filter(pl.col("check") == "column_in_dataframe").get_column("failure_case")]
    return []

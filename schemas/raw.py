"""Raw schema per partner: the structure of its file, built from its spec.

Every column the spec reads must be present; they hold text, any of it possibly empty.
A file that fails this schema is rejected whole, and the message names the missing columns.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
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
    header = pd.DataFrame(columns=columns, dtype=object)
    try:
        raw_schema(spec).validate(header, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        return [str(c) for c in cases.loc[cases["check"] == "column_in_dataframe", "failure_case"]]
    return []

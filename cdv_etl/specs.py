"""Declarative partner specs: one YAML file per partner under ``schemas/partners/``.

A spec says how to recognise a partner's files, how to read them, how each canonical
field is taken out of the partner's columns, and how categories, instruments and
statuses map to the programme's vocabulary. Adding a partner whose files fit these
building blocks is one new YAML file; the code below is written once.
"""

from __future__ import annotations

import re
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdv_etl.errors import SpecError

# Value parsers a field may name. Each one is compiled to a DuckDB SQL expression in
# ``cdv_etl.validate.parse``; the list lives here so that a spec is checked on load.
Parser = Literal[
    "text",  # trimmed text, empty → NULL
    "upper",  # trimmed, upper-cased text
    "insee",  # INSEE code: numbers regain their leading zero, 2a004 → 2A004
    "insee_in_brackets",  # the code taken out of "Agen (47001)"
    "french_number",  # 1 234 567,89 € (space, no-break or narrow no-break space)
    "decimal",  # 1234567.89
    "date_dmy",  # 31/12/2024
    "date_iso",  # 2024-12-31
    "date_excel",  # a date cell, an ISO date or an Excel serial number
    "year",  # 2024, or the first four-digit year found in the text
]

# Readers add these columns to every raw frame: the source row a person sees in the file
# (spreadsheet row, CSV line) and, for workbooks, the sheet's name.
SOURCE_ROW_COLUMN = "_source_row"
ROW_KEY_COLUMN = "_row_key"  # unique per file: reading order across sheets
SHEET_COLUMN = "_sheet"

CANONICAL_FIELDS = (
    "operation_id",
    "insee_code",
    "commune_label",
    "category",
    "instrument",
    "amount_eur",
    "engagement_date",
    "year",
    "status",
    "project_label",
    "scheme",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Model):
    """Where a canonical field comes from: one column, several joined, a constant or the sheet."""

    column: str | None = None
    columns: list[str] | None = None
    constant: str | int | None = None
    sheet: bool = False
    parser: Parser = "text"
    scale: int = Field(1, description="Multiply the parsed number (1000 for amounts in k€).")

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        sources = [self.column is not None, self.columns is not None, self.constant is not None, self.sheet]
        if sum(sources) != 1:
            raise ValueError("give exactly one of column, columns, constant or sheet")
        return self

    @property
    def source_columns(self) -> list[str]:
        if self.sheet:
            return [SHEET_COLUMN]
        if self.column is not None:
            return [self.column]
        return list(self.columns or [])


class CsvFormat(_Model):
    type: Literal["csv"]
    encoding: Literal["utf-8", "utf-8-sig", "cp1252", "utf-16", "latin-1"] = "utf-8"
    delimiter: str = ","
    quote: str = '"'
    header_line: int = Field(1, ge=1, description="Line of the header (1 = first line).")


class XlsxFormat(_Model):
    type: Literal["xlsx"]
    sheets: Literal["first", "all"] | list[str] = "first"
    header_row: int = Field(1, ge=1, description="Spreadsheet row of the header (1-based).")
    footer_label: str | None = Field(None, description="First-cell label of the footer total row, e.g. TOTAL.")


class JsonFormat(_Model):
    type: Literal["json"]
    records_path: str = Field("", description="Dotted path to the list of records; '' = root.")
    encoding: Literal["utf-8", "utf-8-sig", "utf-16"] = "utf-8"


FormatSpec = Annotated[CsvFormat | XlsxFormat | JsonFormat, Field(discriminator="type")]


DateParser = Literal["date_iso", "date_dmy", "date_excel"]
"""The field parsers that give a date; an extraction date read from the file's data uses one."""


# The keys each extraction date source takes (all needed but ``parser``, which defaults to date_iso).
_EXTRACTION_DATE_KEYS: dict[str, tuple[str, ...]] = {
    "filename": ("pattern", "format"),
    "cell": ("pattern", "format"),
    "field": ("field", "parser"),
    "column": ("column", "parser"),
    "received": (),
}


class ExtractionDateSpec(_Model):
    """How the export's extraction date is known.

    ``filename``: a regex group of the file name, parsed with ``format``; a month or a year
    stands for its last day. ``cell``: a regex over the first rows of a spreadsheet.
    ``field``: a JSON file's field, top-level or nested (``extraction``, ``meta.extraction``),
    parsed with ``parser``. ``column``: a CSV or XLSX column that holds the same date on every
    row (``Date d'extraction``), parsed with ``parser``; a file whose rows give different dates
    is rejected. ``received``: the day the file is ingested (for partners that date nothing).
    In every case the date is never later than the day the file is ingested.
    """

    source: Literal["filename", "cell", "field", "column", "received"] = Field(
        description="Where the date is: the file name, a title cell, a JSON field, a column, or the day received."
    )
    pattern: str | None = Field(
        None, description="filename and cell: regex whose first group is the date, e.g. 'export_(\\d{8})'."
    )
    format: str | None = Field(
        None, description="filename and cell: strptime format of that group, e.g. '%Y%m%d', '%Y-%m' (month's last day)."
    )
    field: str | None = Field(
        None, description="field: dotted path of the date in the JSON document, e.g. 'extraction' or 'meta.extraction'."
    )
    column: str | None = Field(
        None, description='column: the column holding the extraction date on every row, e.g. "Date d\'extraction".'
    )
    parser: DateParser | None = Field(
        None, description="field and column: the date parser of the value (date_iso when not given)."
    )

    @model_validator(mode="after")
    def _keys_of_source(self) -> ExtractionDateSpec:
        takes = _EXTRACTION_DATE_KEYS[self.source]
        missing = [k for k in takes if k != "parser" and getattr(self, k) is None]
        if missing:
            raise ValueError(f"extraction_date from {self.source} needs {' and '.join(missing)}")
        given = [k for k in ("pattern", "format", "field", "column", "parser") if getattr(self, k) is not None]
        extra = [k for k in given if k not in takes]
        if extra:
            allowed = ", ".join(takes) or "no other key"
            raise ValueError(f"extraction_date from {self.source} takes {allowed}, not {', '.join(extra)}")
        return self

    @property
    def date_parser(self) -> DateParser:
        return self.parser or "date_iso"


class StatusSpec(_Model):
    counts_as_engaged: bool = True


class PartnerSpec(_Model):
    partner: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    description: str = ""
    file_pattern: str = Field(description="Regex matched against the file name (full match).")
    format: FormatSpec
    extraction_date: ExtractionDateSpec
    fields: dict[str, FieldSpec]
    axis_map: dict[str, int] | None = Field(
        None, description="Category label → axis, matched ignoring case and surrounding spaces."
    )
    axis_pattern: str | None = Field(
        None, description="Regex whose first group is the axis number, e.g. '^Axe\\s*(\\d+)'."
    )
    axis: int | None = Field(None, description="Every row of this partner is on this axis.")
    axis_code: bool = Field(
        False,
        description="The category holds the axis itself: 5, '5', 'Axe 5' or 'axe 5 - équipements' (case and spaces "
        "ignored, a label after a dash ignored); any other value maps to no axis.",
    )
    instruments: dict[str, str] = Field(
        default_factory=dict, description="Partner's instrument label → instrument code."
    )
    default_instrument: str | None = None
    statuses: dict[str, StatusSpec] = Field(
        default_factory=lambda: {"engagé": StatusSpec()},
        description="Statuses the partner uses, and whether each counts as engaged.",
    )
    default_status: str | None = Field("engagé", description="Status of rows when the file has no status column.")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        unknown = sorted(set(v) - set(CANONICAL_FIELDS))
        if unknown:
            raise ValueError(f"unknown canonical fields {unknown}; known: {CANONICAL_FIELDS}")
        for needed in ("insee_code", "amount_eur", "operation_id"):
            if needed not in v:
                raise ValueError(f"field {needed!r} is required")
        if "engagement_date" not in v and "year" not in v:
            raise ValueError("give engagement_date or year")
        return v

    @model_validator(mode="after")
    def _axis_source(self) -> PartnerSpec:
        given = [self.axis_map is not None, self.axis_pattern is not None, self.axis is not None, self.axis_code]
        if sum(given) != 1:
            raise ValueError("give exactly one of axis_map, axis_pattern, axis_code or axis")
        if self.axis is None and "category" not in self.fields:
            raise ValueError("axis_map, axis_pattern and axis_code need a 'category' field")
        return self

    @model_validator(mode="after")
    def _extraction_date_fits_format(self) -> PartnerSpec:
        source = self.extraction_date.source
        if source == "field" and self.format.type != "json":
            raise ValueError("extraction_date from field is for JSON files; for CSV and XLSX use source: column")
        if source == "column" and self.format.type == "json":
            raise ValueError("extraction_date from column is for CSV and XLSX files; for JSON use source: field")
        if source == "cell" and self.format.type != "xlsx":
            raise ValueError("extraction_date from cell reads a workbook's title rows; it is for XLSX files")
        return self

    @cached_property
    def file_regex(self) -> re.Pattern[str]:
        return re.compile(self.file_pattern, re.IGNORECASE)

    def matches(self, file_name: str) -> bool:
        return self.file_regex.fullmatch(file_name) is not None

    @property
    def required_columns(self) -> list[str]:
        """Source columns the file must carry (the raw schema's structure)."""
        cols: list[str] = []
        for f in self.fields.values():
            for c in f.source_columns:
                if c not in cols and not c.startswith("_"):
                    cols.append(c)
        return cols

    def status_counts(self) -> dict[str, bool]:
        return {k.strip().casefold(): v.counts_as_engaged for k, v in self.statuses.items()}


def default_specs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "schemas" / "partners"


def load_spec(path: Path) -> PartnerSpec:
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PartnerSpec.model_validate(data)
    except Exception as exc:  # pydantic or YAML error: name the file
        raise SpecError(f"partner spec {path} is invalid: {exc}") from exc


def load_specs(specs_dir: Path | None = None) -> dict[str, PartnerSpec]:
    directory = specs_dir or default_specs_dir()
    specs: dict[str, PartnerSpec] = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = load_spec(path)
        if spec.partner in specs:
            raise SpecError(f"partner {spec.partner!r} is declared twice (in {path})")
        specs[spec.partner] = spec
    if not specs:
        raise SpecError(f"no partner spec (*.yaml) in {directory}")
    return specs


def recognise(file_name: str, specs: dict[str, PartnerSpec]) -> PartnerSpec | None:
    """The partner whose file pattern matches this file name, or None."""
    found = [s for s in specs.values() if s.matches(file_name)]
    if len(found) > 1:
        names = ", ".join(s.partner for s in found)
        raise SpecError(f"{file_name} matches several partner specs ({names}); pass --partner")
    return found[0] if found else None


def last_day(d: date, fmt: str) -> date:
    """A date parsed from a month-only or year-only format stands for the period's last day."""
    import calendar

    if "%d" in fmt:
        return d
    if "%m" in fmt:
        return d.replace(day=calendar.monthrange(d.year, d.month)[1])
    return d.replace(month=12, day=31)

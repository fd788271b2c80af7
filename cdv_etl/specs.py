"""Declarative partner specs: one YAML file per partner under ``schemas/partners/``.

A spec says how to recognise a partner's files, how to read them, how each canonical
field is taken out of the partner's columns, and how categories, instruments and
statuses map to the programme's vocabulary. Adding a partner whose files fit these
building blocks is one new YAML file; the code below is written once.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdv_etl.errors import SpecError

# Readers add these columns to every raw frame: the source row a person sees in the file
# (spreadsheet row, CSV line) and, for workbooks, the sheet's name.
SOURCE_ROW_COLUMN = "_source_row"
ROW_KEY_COLUMN = "_row_key"  # unique per file: reading order across sheets
SHEET_COLUMN = "_sheet"

# The canonical record every partner's rows become: field → what it holds.
CANONICAL_MEANINGS: dict[str, str] = {
    "operation_id": "The partner's id of the operation (unique in a file; several columns may make it).",
    "insee_code": "INSEE code of the commune (5 characters); must be an ACV commune of the reference.",
    "commune_label": "The commune's name as the partner writes it (kept, not checked).",
    "category": "The partner's category: mapped to an axis by axis_map, axis_pattern or axis_code.",
    "instrument": "The partner's instrument label: mapped by instruments to an instrument code.",
    "amount_eur": "The amount engaged, in euros (exact to the cent; scale for k€).",
    "engagement_date": "The date of the engagement.",
    "year": "The year of the engagement, when there is no date (or to check it).",
    "status": "The partner's status: one of statuses, which says whether it counts as engaged.",
    "project_label": "The project's title (kept, not checked).",
    "scheme": "The partner's scheme or programme (kept, not checked).",
}
CANONICAL_FIELDS = tuple(CANONICAL_MEANINGS)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Model):
    """Where a canonical field comes from: one column, several joined, a constant or the sheet."""

    column: str | None = Field(
        None, description="The partner's column (its header, exactly); in JSON a dotted path such as commune.insee."
    )
    columns: list[str] | None = Field(
        None,
        description="Several columns joined with ' | ' (an operation id made of several columns); "
        "_sheet is the sheet's name.",
    )
    constant: str | int | None = Field(None, description="The same value on every row.")
    sheet: bool = Field(False, description="The workbook sheet's name (a year per sheet, with parser: year).")
    parser: str = Field("text", description="How the text is read: one of the parsers below.")
    scale: int = Field(1, description="Multiply the parsed number (1000 for amounts in k€).")

    @field_validator("parser")
    @classmethod
    def _known_parser(cls, v: str) -> str:
        from cdv_etl.validate.parse import PARSERS  # the registry compiles them; it imports this module

        if v not in PARSERS:
            raise ValueError(f"unknown parser {v!r}{did_you_mean(v, PARSERS)} (allowed: {', '.join(PARSERS)})")
        return v

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
    """A CSV or TSV text file, read by DuckDB after its encoding is checked."""

    type: Literal["csv"] = Field(description="csv for CSV and TSV files.")
    encoding: Literal["utf-8", "utf-8-sig", "cp1252", "utf-16", "latin-1"] = Field(
        "utf-8", description="The file's encoding: utf-8-sig for a byte-order mark, cp1252 for Windows exports."
    )
    delimiter: str = Field(",", description="Column separator: ',', ';' or \"\\t\" (TSV).")
    quote: str = Field('"', description="Quote character around values that hold the delimiter.")
    header_line: int = Field(1, ge=1, description="Line of the header (1 = first line).")


class XlsxFormat(_Model):
    """An Excel workbook, read by DuckDB's excel extension after its container is checked."""

    type: Literal["xlsx"] = Field(description="xlsx for Excel workbooks.")
    sheets: Literal["first", "all"] | list[str] = Field(
        "first", description="Which sheets hold data: first, all (same header on each), or a list of sheet names."
    )
    header_row: int = Field(1, ge=1, description="Spreadsheet row of the header (1-based).")
    footer_label: str | None = Field(None, description="First-cell label of the footer total row, e.g. TOTAL.")


class JsonFormat(_Model):
    """A JSON document holding a list of records; nested objects are reached by dotted paths."""

    type: Literal["json"] = Field(description="json for JSON documents.")
    records_path: str = Field("", description="Dotted path to the list of records; '' = root.")
    encoding: Literal["utf-8", "utf-8-sig", "utf-16"] = Field("utf-8", description="The document's encoding.")


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
    stands for its last day (the month or year under way: the day the file is ingested).
    ``cell``: a regex over the first rows of a spreadsheet.
    ``field``: a JSON file's field, top-level or nested (``extraction``, ``meta.extraction``),
    parsed with ``parser``. ``column``: a CSV or XLSX column that holds the same date on every
    row (``Date d'extraction``), parsed with ``parser``; a file whose rows give different dates
    is rejected. ``received``: the day the file is ingested (for partners that date nothing).
    In every case an export dated after the day it is ingested (a day, month or year still to
    come) is rejected whole (``extraction_date_in_future``): a date is never moved.
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

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
        return v

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
    """One of the partner's statuses."""

    counts_as_engaged: bool = Field(
        default=True, description="Whether a row with this status counts in the engaged amounts (false: annulé)."
    )


HOLD_THRESHOLD_PCT = Decimal(10)
"""How much of a partner's current export (% of its operations, or of its engaged euros) a new
export may withdraw before it is held rather than made current (a spec may set its own)."""


class PartnerSpec(_Model):
    """One partner: how its files are recognised and read, and how their columns map."""

    partner: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The partner's code in the warehouse: lower case, digits and _ (e.g. region_grand_est).",
    )
    name: str = Field(description="The partner's name, as analysts read it.")
    description: str = Field("", description="Free text: what the partner's files look like.")
    file_pattern: str = Field(description="Regex matched against the file name (full match, case ignored).")
    format: FormatSpec = Field(description="How the file is read: one of the format blocks below, by its type.")
    extraction_date: ExtractionDateSpec = Field(description="How the export's extraction date is known.")
    fields: dict[str, FieldSpec] = Field(
        description="Canonical field → where it comes from. operation_id, insee_code, amount_eur and "
        "engagement_date or year are required."
    )
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
        default_factory=dict,
        description="Partner's instrument label → instrument code (grant, loan, equity, engineering, land).",
    )
    default_instrument: str | None = Field(
        None, description="Instrument code of rows without an instrument (or of every row with no instrument field)."
    )
    statuses: dict[str, StatusSpec] = Field(
        default_factory=lambda: {"engagé": StatusSpec()},
        description="Statuses the partner uses, and whether each counts as engaged.",
    )
    default_status: str | None = Field("engagé", description="Status of rows when the file has no status column.")
    hold_threshold_pct: Decimal = Field(
        HOLD_THRESHOLD_PCT,
        ge=0,
        le=100,
        description="A new export that withdraws more than this share (%) of the current export's operations, or "
        "of its engaged euros, is held (loaded into history, not current) until accepted: cdv-etl accept FILE_ID.",
    )

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        unknown = sorted(set(v) - set(CANONICAL_FIELDS))
        if unknown:
            hints = "".join(did_you_mean(u, CANONICAL_FIELDS) for u in unknown)
            raise ValueError(
                f"unknown canonical field(s) {', '.join(unknown)}{hints} (allowed: {', '.join(CANONICAL_FIELDS)})"
            )
        for needed in ("insee_code", "amount_eur", "operation_id"):
            if needed not in v:
                raise ValueError(f"field {needed!r} is required")
        if "engagement_date" not in v and "year" not in v:
            raise ValueError("give engagement_date or year")
        return v

    @field_validator("file_pattern", "axis_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
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
        dated = self.extraction_date.column
        if dated is not None and dated not in cols:
            cols.append(dated)
        return cols

    def status_counts(self) -> dict[str, bool]:
        return {k.strip().casefold(): v.counts_as_engaged for k, v in self.statuses.items()}


def default_specs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "schemas" / "partners"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """ "; did you mean X?" when ``word`` is close to one of ``options`` (a misspelt key or value)."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from exc


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _format_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """The models of a union discriminated by ``type``, by their tag (the format blocks)."""
    found: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            for tag in get_args(member.model_fields["type"].annotation):
                found[tag] = member
    return found


def _walk(loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """(key path as a person writes it, the model holding the last key) of a pydantic error."""
    shown: list[str] = []
    current: Any = PartnerSpec
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
            shown.append(str(part))
        elif get_origin(current) is dict:
            current = get_args(current)[1]
            shown.append(str(part))
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
            shown[-1:] = [f"{shown[-1] if shown else ''}[{part}]"]
        elif str(part) in _format_members(current):
            current = _format_members(current)[str(part)]  # the tag pydantic puts in the path
        elif "[" in str(part):
            current = None  # a branch of a plain union, e.g. literal['first','all']
        else:
            current = None
            shown.append(str(part))
    model = _unwrap(current)
    return ".".join(shown), model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _quoted(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error: Any) -> str:
    """One pydantic error as a sentence: key path, what is wrong, the allowed keys or values."""
    loc = tuple(error["loc"])
    path, _ = _walk(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        _, parent = _walk(loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        keys = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown key{did_you_mean(str(loc[-1]), allowed)}{keys}"
    if kind == "missing":
        return f"{path}: required key missing"
    if kind == "literal_error":
        allowed = _quoted(str(ctx.get("expected", "")))
        value = str(error["input"])
        return f"{path}: {value!r} is not allowed{did_you_mean(value, allowed)} (allowed: {', '.join(allowed)})"
    if kind == "union_tag_invalid":
        allowed = _quoted(str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag", ""))
        return f"{path}.type: {tag!r} is not a format{did_you_mean(tag, allowed)} (allowed: {', '.join(allowed)})"
    if kind == "union_tag_not_found":
        return f"{path}: needs a type ({', '.join(_quoted(str(ctx.get('expected_tags', ''))))})"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{path}: {message}" if path else message
    return f"{path or 'spec'}: {error['msg']} (got {_short(error['input'])})"


def spec_error(path: Path, problems: list[str]) -> SpecError:
    lines = "\n".join(f"  {p}" for p in dict.fromkeys(problems))
    return SpecError(
        f"partner spec {path} is invalid:\n{lines}",
        f"fix it (every key and value: docs/partner-specs.md), then try it: cdv-etl spec check {path} SAMPLE_FILE",
    )


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, parsed by libyaml when PyYAML has it (every opening of the
    warehouse reads the specs and the column docs: ~10× faster). A text libyaml refuses is parsed
    again by the pure-Python parser, whose error (the message quoted to people) it raises."""
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return yaml.safe_load(text)


def _read_yaml(path: Path) -> Any:
    try:
        return safe_yaml(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise spec_error(path, [f"not valid YAML: {where}{exc.problem}"]) from exc
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise spec_error(path, [f"cannot be read: {exc}"]) from exc


def load_spec(path: Path) -> PartnerSpec:
    """The spec of one YAML file, or a SpecError naming the file, each key path and what is wrong."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        keys = ", ".join(PartnerSpec.model_fields)
        raise spec_error(path, [f"a spec is a YAML mapping of keys ({keys}), not {type(data).__name__}"])
    try:
        return PartnerSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(path, [_problem(e) for e in exc.errors()]) from None


@dataclass(frozen=True)
class BrokenSpec:
    """A spec file that does not load: its partner is unavailable until it is fixed."""

    path: Path
    error: SpecError
    partner: str | None = None
    """The partner code the file declares, when it can be read."""
    file_pattern: str | None = None
    """Its file pattern, when it is a valid regex: the partner's files are still recognised."""

    def matches(self, file_name: str) -> bool:
        return self.file_pattern is not None and re.fullmatch(self.file_pattern, file_name, re.IGNORECASE) is not None

    @classmethod
    def of(cls, path: Path, error: SpecError) -> BrokenSpec:
        try:
            data = safe_yaml(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            return cls(path, error)
        if not isinstance(data, dict):
            return cls(path, error)
        partner = data.get("partner") if isinstance(data.get("partner"), str) else None
        pattern = data.get("file_pattern") if isinstance(data.get("file_pattern"), str) else None
        try:
            _compile(pattern or "")
        except ValueError:
            pattern = None
        return cls(path, error, partner, pattern)


class Specs(dict[str, PartnerSpec]):
    """The valid specs of a folder by partner code; ``broken`` holds the files that do not load."""

    def __init__(
        self,
        valid: dict[str, PartnerSpec] | None = None,
        broken: list[BrokenSpec] | None = None,
        paths: dict[str, Path] | None = None,
    ) -> None:
        super().__init__(valid or {})
        self.broken = list(broken or [])
        self.paths = dict(paths or {})
        """The file of each valid spec."""

    def broken_for(self, file_name: str | None = None, partner: str | None = None) -> BrokenSpec | None:
        """The broken spec of this partner code, or whose file pattern matches this file name."""
        for b in self.broken:
            if (partner is not None and b.partner == partner) or (file_name is not None and b.matches(file_name)):
                return b
        return None


_WARNED: set[tuple[Path, str]] = set()


def load_specs(specs_dir: Path | None = None, *, warn: bool = True) -> Specs:
    """Every spec of the folder: the valid ones, and the broken ones beside them.

    A broken spec makes only its own partner unavailable; with ``warn`` it is reported on
    stderr, once per process (a nightly run opens the specs for every file).
    """
    directory = specs_dir or default_specs_dir()
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise SpecError(f"no partner spec (*.yaml) in {directory}", "add one file per partner (docs/partner-specs.md)")
    specs = Specs()
    for path in paths:
        try:
            spec = load_spec(path)
            if spec.partner in specs:
                first = specs.paths[spec.partner]
                raise spec_error(path, [f"partner: {spec.partner!r} is already declared in {first}"])
        except SpecError as exc:
            specs.broken.append(BrokenSpec.of(path, exc))
            continue
        specs[spec.partner] = spec
        specs.paths[spec.partner] = path
    if warn:
        for b in specs.broken:
            if (b.path, b.error.message) not in _WARNED:
                _WARNED.add((b.path, b.error.message))
                sys.stderr.write(
                    f"warning: {b.error.message}\n  → its partner's files are rejected until it is fixed; "
                    "the other partners work (cdv-etl specs lists every spec)\n"
                )
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

"""The canonical record and the programme's rules: each rule stated once, in a Pandera model.

A row breaking any rule is quarantined; validation is lazy, so every failure of every row is
collected. Each rule is one named check of ``CanonicalRecord`` (rules about one row) or
``CanonicalFile`` (rules about the file as a whole), declared with ``@_rule``:

* its **id** is the check's name (the method's name), recorded in ``quarantine.rule``;
* the **column** it is attached to holds the value as the partner wrote it, which the
  quarantine reports; that column's ``Field(metadata=...)`` gives the canonical **field**
  (whose partner columns the quarantine names) and the rule's **order** (the quarantine lists
  a row's failures in that order);
* its **message** (English, ``{value}`` the raw value, ``{extraction_date}`` the export's
  date) is the quarantine's message, and its **explanation** (plain French, for people) the
  report's label.

``RULES`` is read back from the two models; the quarantine (``cdv_etl.validate.outputs``), the
report and the README's rule list (``rules_markdown``, checked by ``tests/test_rules.py``)
derive from it.

Design. The parse (``cdv_etl/validate/parse.py``) only turns text into typed values beside
the raw text (a value that does not parse is NULL; a category becomes an axis through the
spec's map); whether a value is acceptable — the axis among 1–5 included — is decided here and
nowhere else, repeated ids too. The backend is Pandera's Polars one, reading the canonical
Parquet file the reader wrote (no pandas), in slices for the row rules and once over the whole
file for the file rule (``cdv_etl/validate/rules.py``); ``bench/backends.py`` measured it
against pandas chunks (3–4× the CPU) and Ibis on DuckDB (which cannot use the reader's locked
connection, and was slower still). The context a rule needs besides the row — the
reference's communes, the extraction date, the partner's statuses, which fields the partner
has — is a ``RuleContext`` that the checks read while ``record_failures``/``file_failures``
validate; a rule about a field the partner lacks passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.errors import SchemaErrors

PROGRAMME_START = date(2018, 1, 1)
MAX_LINE_EUR = 1_000_000_000
"""No single engagement line of a 5 bn€ programme reaches 1 bn€: above, it is a typing mistake
(cents typed without their comma, a phone number in the amount column)."""
AXES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class RuleContext:
    """What the rules depend on besides the row: the reference and the export."""

    communes: frozenset[str]
    extraction_date: date
    statuses: frozenset[str]
    has_date: bool
    has_year: bool
    names_instrument: bool


_CONTEXT: ContextVar[RuleContext] = ContextVar("cdv_rule_context")


@contextmanager
def _context(ctx: RuleContext) -> Iterator[None]:
    token = _CONTEXT.set(ctx)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _rule(
    column: str,
    explanation: str,
    message: str,
    applies: Callable[[RuleContext], bool] = lambda ctx: True,
) -> Callable[[Callable[[RuleContext], pl.Expr]], Any]:
    """Declare a rule: the decorated function gives, from the context, the expression that is
    true for a row that keeps the rule; its name is the rule's id. Where ``applies`` is false
    (a field the partner does not have), every row keeps it."""

    def declare(fn: Callable[[RuleContext], pl.Expr]) -> Any:
        def check(cls: type, data: PolarsData) -> pl.LazyFrame:
            ctx = _CONTEXT.get(None)
            if ctx is None:
                raise RuntimeError("the rules need a RuleContext: validate with record_failures or file_failures")
            keeps = fn(ctx) if applies(ctx) else pl.repeat(True, pl.len())
            return data.lazyframe.select(keeps.fill_null(False).alias(fn.__name__))

        check.__name__ = fn.__name__
        return pa.check(column, name=fn.__name__, title=explanation, description=message, ignore_na=False)(check)

    return declare


def _field(field: str, order: int) -> Any:
    """A column whose value, as the partner wrote it, the quarantine reports for ``field``."""
    return pa.Field(nullable=True, metadata={"field": field, "order": order})


def _typed() -> Any:
    """A parsed value the rules read (NULL where the text did not parse)."""
    return pa.Field(nullable=True)


col = pl.col


class CanonicalRecord(pa.DataFrameModel):
    """One canonical record as the rules read it: the parsed values beside the raw text."""

    row_key: int
    insee_raw: str = _field("insee_code", 1)
    insee_code: str = _typed()
    category: str = _field("category", 2)
    axis: pl.Int32 = _typed()
    amount_raw: str = _field("amount_eur", 3)
    amount_eur: Annotated[pl.Decimal, 18, 2] = _typed()
    date_raw: str = _field("engagement_date", 4)
    engagement_date: date = _typed()
    year_raw: str = _field("year", 4)
    year_given: pl.Int16 = _typed()
    status: str = _field("status", 5)
    instrument_label: str = _field("instrument", 5)
    instrument: str = _typed()
    operation_id: str = _field("operation_id", 6)

    class Config:
        name = "canonical"
        strict = False

    @_rule("insee_raw", "code commune absent", "no INSEE code in '{value}'")
    def commune_missing(ctx: RuleContext) -> pl.Expr:
        return col("insee_code").is_not_null()

    @_rule(
        "insee_raw",
        "code commune absent de la liste Action Cœur de Ville",
        "INSEE code '{value}' is not a commune of the ACV reference",
    )
    def commune_not_acv(ctx: RuleContext) -> pl.Expr:
        return col("insee_code").is_null() | col("insee_code").is_in(sorted(ctx.communes))

    @_rule("category", "catégorie qui ne correspond à aucun des axes 1 à 5", "category '{value}' maps to no axis 1-5")
    def unknown_category(ctx: RuleContext) -> pl.Expr:
        return col("axis").is_in(AXES)

    @_rule("amount_raw", "montant absent", "the amount is missing")
    def amount_missing(ctx: RuleContext) -> pl.Expr:
        return col("amount_raw").is_not_null()

    @_rule("amount_raw", "montant illisible", "'{value}' is not an amount")
    def amount_unparseable(ctx: RuleContext) -> pl.Expr:
        return col("amount_raw").is_null() | col("amount_eur").is_not_null()

    @_rule("amount_raw", "montant nul ou négatif", "amount '{value}' is zero or negative")
    def amount_not_positive(ctx: RuleContext) -> pl.Expr:
        return col("amount_eur").is_null() | (col("amount_eur") > 0)

    @_rule(
        "amount_raw",
        "montant de plus d'un milliard d'euros pour une seule ligne : une faute de frappe ?",
        "amount '{value}' is over 1 000 000 000 € for one line: a typing mistake?",
    )
    def amount_implausible(ctx: RuleContext) -> pl.Expr:
        return col("amount_eur").is_null() | (col("amount_eur") <= Decimal(MAX_LINE_EUR))

    @_rule("date_raw", "date d'engagement absente", "the engagement date is missing", lambda ctx: ctx.has_date)
    def date_missing(ctx: RuleContext) -> pl.Expr:
        return col("date_raw").is_not_null()

    @_rule("date_raw", "date d'engagement illisible", "'{value}' is not a date", lambda ctx: ctx.has_date)
    def date_unparseable(ctx: RuleContext) -> pl.Expr:
        return col("date_raw").is_null() | col("engagement_date").is_not_null()

    @_rule(
        "date_raw",
        "date d'engagement antérieure au début du programme (1er janvier 2018)",
        "engagement date '{value}' is before the programme (2018-01-01)",
        lambda ctx: ctx.has_date,
    )
    def date_before_programme(ctx: RuleContext) -> pl.Expr:
        return col("engagement_date").is_null() | (col("engagement_date") >= PROGRAMME_START)

    @_rule(
        "date_raw",
        "date d'engagement postérieure à la date d'extraction du fichier",
        "engagement date '{value}' is after the export's extraction date ({extraction_date})",
        lambda ctx: ctx.has_date,
    )
    def date_after_extraction(ctx: RuleContext) -> pl.Expr:
        return col("engagement_date").is_null() | (col("engagement_date") <= ctx.extraction_date)

    @_rule(
        "year_raw",
        "année absente ou illisible",
        "the year is missing or unreadable ('{value}')",
        lambda ctx: ctx.has_year,
    )
    def year_missing(ctx: RuleContext) -> pl.Expr:
        return col("year_given").is_not_null()

    @_rule(
        "year_raw",
        "année hors du programme (de 2018 à l'année de l'extraction)",
        "year '{value}' is outside the programme (2018 to the extraction year)",
        lambda ctx: ctx.has_year and not ctx.has_date,
    )
    def year_out_of_programme(ctx: RuleContext) -> pl.Expr:
        return col("year_given").is_null() | col("year_given").is_between(
            PROGRAMME_START.year, ctx.extraction_date.year
        )

    @_rule(
        "year_raw",
        "année différente de celle de la date d'engagement",
        "year '{value}' differs from the year of the engagement date",
        lambda ctx: ctx.has_year and ctx.has_date,
    )
    def year_date_mismatch(ctx: RuleContext) -> pl.Expr:
        return (
            col("year_given").is_null()
            | col("engagement_date").is_null()
            | (col("year_given") == col("engagement_date").dt.year())
        )

    @_rule(
        "status",
        "statut que la fiche du partenaire ne connaît pas",
        "status '{value}' is not one the partner's spec knows",
    )
    def unknown_status(ctx: RuleContext) -> pl.Expr:
        return col("status").is_in(sorted(ctx.statuses))

    @_rule(
        "instrument_label",
        "instrument (prêt, subvention…) que la fiche du partenaire ne connaît pas",
        "instrument '{value}' is not one the partner's spec knows",
        lambda ctx: ctx.names_instrument,
    )
    def unknown_instrument(ctx: RuleContext) -> pl.Expr:
        return col("instrument_label").is_null() | col("instrument").is_not_null()

    @_rule("operation_id", "identifiant d'opération absent", "the operation id is missing")
    def operation_id_missing(ctx: RuleContext) -> pl.Expr:
        return col("operation_id").is_not_null()


class CanonicalFile(pa.DataFrameModel):
    """The rules about the file as a whole, checked on one column of every row at once."""

    row_key: int
    operation_id: str = _field("operation_id", 6)

    class Config:
        name = "canonical_file"
        strict = False

    @_rule(
        "operation_id",
        "identifiant d'opération porté par plusieurs lignes du fichier",
        "operation id '{value}' is carried by several rows of this file",
    )
    def duplicate_operation_id(ctx: RuleContext) -> pl.Expr:
        # Every row carrying a repeated id fails, the first too; rows without an id count as
        # carrying one same id (NULL is one group to ``over``). A count over the id costs
        # less than ``is_duplicated`` (0.3 s against 0.5 s of CPU at 1M rows).
        return pl.len().over("operation_id") <= 1


MODELS: tuple[type[pa.DataFrameModel], ...] = (CanonicalRecord, CanonicalFile)


@dataclass(frozen=True)
class Rule:
    """A rule as the quarantine, the report and the README see it (read from ``MODELS``)."""

    id: str
    order: int
    field: str
    """Canonical field whose partner columns the quarantine names."""
    column: str
    """Canonical table column holding the value as the partner wrote it (``{value}``)."""
    message: str
    """English template; {value} is the raw value, {extraction_date} the export's date."""
    explanation: str
    """Plain French, for people: the report's label, the partner's feedback."""


def _read_rules() -> dict[str, Rule]:
    rules: list[Rule] = []
    for model in MODELS:
        for name, column in model.to_schema().columns.items():
            for check in column.checks:
                meta = column.metadata or {}
                assert check.name and check.title and check.description, (model, name, check)
                rules.append(Rule(check.name, meta["order"], meta["field"], name, check.description, check.title))
    return {r.id: r for r in sorted(rules, key=lambda r: r.order)}


RULES: dict[str, Rule] = _read_rules()
"""Every rule, by id, in quarantine order."""


def _failures(model: type[pa.DataFrameModel], frame: pl.DataFrame, ctx: RuleContext) -> pl.DataFrame:
    try:
        with _context(ctx):
            model.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        unexpected = cases.filter(~pl.col("check").is_in(list(RULES)) | pl.col("index").is_null())
        if len(unexpected):
            raise RuntimeError(
                f"the canonical records do not fit the {model.__name__} schema (a parse bug, not the "
                f"partner's): {unexpected.head(5).to_dicts()}"
            ) from exc
        keys = frame.get_column("row_key").gather(cases.get_column("index"))
        return pl.DataFrame({"row_key": keys, "rule": cases.get_column("check")})
    return pl.DataFrame(schema={"row_key": pl.Int64, "rule": pl.String})


def record_failures(frame: pl.DataFrame, ctx: RuleContext) -> pl.DataFrame:
    """(row_key, rule) of every row rule the records of ``frame`` break."""
    return _failures(CanonicalRecord, frame, ctx)


def file_failures(frame: pl.DataFrame, ctx: RuleContext) -> pl.DataFrame:
    """(row_key, rule) of every file rule broken; ``frame`` holds every row of the file."""
    return _failures(CanonicalFile, frame, ctx)


def one_rule_failures(rule_id: str, frame: pl.DataFrame, ctx: RuleContext) -> pl.DataFrame:
    """(row_key, rule) of the rows of ``frame`` that break the one row rule ``rule_id``: the same
    check ``record_failures`` runs, alone (a reference change revalidates the stored rows' INSEE
    codes against the new list with ``commune_not_acv`` only). ``frame`` holds ``row_key`` and
    the columns that rule reads."""
    rule = RULES[rule_id]
    column = CanonicalRecord.to_schema().columns[rule.column]
    schema = pa.DataFrameSchema(
        {"row_key": pa.Column(int), rule.column: column.set_checks([c for c in column.checks if c.name == rule_id])},
        name=f"canonical.{rule_id}",
    )
    try:
        with _context(ctx):
            schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("check") == rule_id)
        keys = frame.get_column("row_key").gather(cases.get_column("index"))
        return pl.DataFrame({"row_key": keys, "rule": cases.get_column("check")})
    return pl.DataFrame(schema={"row_key": pl.Int64, "rule": pl.String})


def rules_markdown() -> str:
    """The README's table of the rules (between its ``rules:start`` and ``rules:end`` markers)."""
    lines = [
        "| order | rule (`quarantine.rule`) | field | message (`quarantine.message`) "
        "| explanation (the report's label) |",
        "|---:|---|---|---|---|",
    ]
    lines += [
        f"| {r.order} | `{r.id}` | `{r.field}` | {r.message.replace('|', '∣')} | {r.explanation} |"
        for r in RULES.values()
    ]
    return "\n".join(lines)

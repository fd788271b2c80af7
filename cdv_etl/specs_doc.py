"""The partner spec reference, ``docs/partner-specs.md``, generated from the spec model.

Every key (type, default, meaning) comes from the pydantic models of ``cdv_etl.specs``, every
parser from the registry of ``cdv_etl.validate.parse``; the prose, the examples and the
walkthrough live in ``docs/partner-specs.template.md``, whose ``{{ name }}`` markers are
replaced here. ``tests/test_specs.py`` regenerates the reference and fails when the file
differs: regenerate it with ``cdv-etl specs --reference > docs/partner-specs.md``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cdv_etl.specs import (
    CANONICAL_MEANINGS,
    CsvFormat,
    ExtractionDateSpec,
    FieldSpec,
    JsonFormat,
    PartnerSpec,
    StatusSpec,
    XlsxFormat,
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "docs" / "partner-specs.template.md"
REFERENCE = ROOT / "docs" / "partner-specs.md"
REGENERATE = "cdv-etl specs --reference > docs/partner-specs.md"

# The blocks of a spec, in the order the reference shows them: (heading, where it sits, model).
BLOCKS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("The spec file", "the top level", PartnerSpec),
    ("format: csv", "format", CsvFormat),
    ("format: xlsx", "format", XlsxFormat),
    ("format: json", "format", JsonFormat),
    ("extraction_date", "extraction_date", ExtractionDateSpec),
    ("A field", "fields.<canonical field>", FieldSpec),
    ("A status", "statuses.<status>", StatusSpec),
)

_NAMES = {str: "text", int: "integer", bool: "true/false", type(None): "null"}


def type_name(annotation: Any) -> str:
    """A key's type as a spec writer reads it: text, integer, 'a' | 'b', list of text, map…"""
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return "one of the format blocks"
        return " or ".join(type_name(m) for m in members)
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map of {type_name(key)} → {type_name(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        heading = next((h for h, _, m in BLOCKS if m is annotation), annotation.__name__)
        return f"{heading.lower()} (below)"
    if get_args(annotation):  # Annotated[...]
        return type_name(get_args(annotation)[0])
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"`{k}`" for k in value) or "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`" if value == "" else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def keys_table(model: type[BaseModel]) -> str:
    """The table of a model's keys: key, type, default, meaning. Every key must say what it means."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description: add Field(description=...)")
        lines.append(f"| `{name}` | {type_name(field.annotation)} | {_default(field)} | {_cell(field.description)} |")
    return "\n".join(lines)


def _docstring(model: type[BaseModel]) -> str:
    text = inspect.cleandoc(model.__doc__ or "")
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def keys_section() -> str:
    parts = []
    for heading, where, model in BLOCKS:
        at = where if where.startswith("the ") else f"`{where}`"
        parts.append(f"### {heading}\n\nWhere: {at}. {_docstring(model)}\n\n{keys_table(model)}")
    return "\n\n".join(parts)


def parsers_section() -> str:
    from cdv_etl.validate.parse import PARSERS

    lines = ["| parser | reads |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(p.meaning)} |" for name, p in PARSERS.items()]
    return "\n".join(lines)


def canonical_section() -> str:
    lines = ["| field | holds |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in CANONICAL_MEANINGS.items()]
    return "\n".join(lines)


def rules_section() -> str:
    from schemas.canonical import RULES

    lines = ["| rule | field | message |", "|---|---|---|"]
    lines += [f"| `{r.id}` | `{r.field}` | {_cell(r.message)} |" for r in sorted(RULES.values(), key=lambda r: r.order)]
    return "\n".join(lines)


SECTIONS = {
    "keys": keys_section,
    "parsers": parsers_section,
    "canonical_fields": canonical_section,
    "rules": rules_section,
}


def render_reference(template: Path = TEMPLATE) -> str:
    """The reference: the template with each ``{{ section }}`` marker replaced by its generated text."""
    text = template.read_text(encoding="utf-8")

    def section(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in SECTIONS:
            raise ValueError(f"{template}: unknown section {{{{ {name} }}}}; known: {', '.join(SECTIONS)}")
        return SECTIONS[name]()

    body = re.sub(r"\{\{\s*(\w+)\s*\}\}", section, text)
    banner = (
        f"<!-- Generated from cdv_etl/specs.py and {TEMPLATE.relative_to(ROOT)} by `{REGENERATE}`: "
        "edit those, not this file. -->\n"
    )
    return banner + body

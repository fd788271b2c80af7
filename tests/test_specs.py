"""Partner specs written from the reference alone: the reference is generated from the model,
its examples run, invalid specs teach and stop only their own partner, ``spec check`` dry-runs
a spec on every format, and a file the specs refused is retried without --force."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from analyst_helpers import run_cli
from conftest import ROOT, sample_warehouse

from cdv_etl.cli_specs import dry_run, reference_communes
from cdv_etl.config import Settings
from cdv_etl.errors import SpecError
from cdv_etl.pipeline import open_pipeline
from cdv_etl.specs import CsvFormat, JsonFormat, XlsxFormat, load_spec, load_specs
from cdv_etl.specs_doc import REFERENCE, REGENERATE, render_reference
from cdv_etl.validate.parse import PARSERS

BLOCK = re.compile(r"^```(\w+) ([^\n]*)\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
MISSPELT = "format.records: unknown key; did you mean records_path? (allowed keys: type, records_path, encoding)"
ANAH_CSV = (
    "numero_dossier,code_insee,annee_engagement,type_intervention,montant_aide,date_engagement,statut\n"
    "ANAH-1,47001,2025,Réhabilitation,15000.00,2025-03-01,engagé\n"
    "ANAH-2,62498,2025,Réhabilitation,8000.50,2025-04-01,annulé\n"
)


@dataclass
class Block:
    lang: str
    attrs: dict[str, str]
    text: str


def doc_blocks() -> list[Block]:
    text = REFERENCE.read_text(encoding="utf-8")
    return [
        Block(m.group(1), dict(a.split("=", 1) for a in m.group(2).split()), m.group(3)) for m in BLOCK.finditer(text)
    ]


def examples() -> dict[str, Block]:
    return {b.attrs["example"]: b for b in doc_blocks() if "example" in b.attrs}


def _cell(text: str) -> object:
    if text == "":
        return None
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]+\.[0-9]+", text):
        return float(text)
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return dt.datetime.fromisoformat(text)
    return text


def build_sample(name: str, folder: Path) -> Path:
    """The example's sample file, written from the doc: text as shown, XLSX samples as workbooks."""
    parts = [b for b in doc_blocks() if b.attrs.get("sample") == name]
    assert parts, f"no sample for example {name}"
    path = folder / parts[0].attrs["file"]
    if path.suffix == ".xlsx":
        import openpyxl

        wb = openpyxl.Workbook()
        wb.remove(wb.active)
        for part in parts:
            sheet = wb.create_sheet(part.attrs["sheet"])
            for line in part.text.split("\n"):
                sheet.append([_cell(c) for c in line.split(";")] if line else [])
        wb.save(path)
    else:
        path.write_text(parts[0].text + "\n", encoding="utf-8")
    return path


def write_spec(folder: Path, name: str, text: str | None = None) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text if text is not None else examples()[name].text, encoding="utf-8")
    return path


def specs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    for f in (ROOT / "schemas" / "partners").glob("*.yaml"):
        (folder / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


# -- the reference ---------------------------------------------------------------------------


def test_the_reference_is_generated_from_the_model() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render_reference(), (
        f"docs/partner-specs.md is not what the model and the template give: regenerate it with `{REGENERATE}`"
    )


def test_the_reference_lists_every_parser_and_the_readme_points_to_it() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for name in PARSERS:
        assert f"| `{name}` |" in text, name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Partner specs", 1)[1].split("\n## ", 1)[0]
    assert "docs/partner-specs.md" in section and len(section) < 1500


def test_the_reference_has_an_example_of_every_format(tmp_path: Path) -> None:
    """CSV and TSV; XLSX: one sheet, all sheets, title rows, footer total; JSON: nested records, date from a field."""
    specs = {name: load_spec(write_spec(tmp_path, name)) for name in examples()}
    kinds = {
        name: "tsv" if isinstance(s.format, CsvFormat) and s.format.delimiter == "\t" else s.format.type
        for name, s in specs.items()
    }
    assert set(kinds.values()) == {"csv", "tsv", "xlsx", "json"}, kinds
    xlsx = [s.format for s in specs.values() if isinstance(s.format, XlsxFormat)]
    assert {"first", "all"} <= {f.sheets for f in xlsx if isinstance(f.sheets, str)}
    assert any(f.footer_label for f in xlsx) and any(f.header_row > 1 for f in xlsx)
    json_specs = [s for s in specs.values() if isinstance(s.format, JsonFormat)]
    assert all(s.extraction_date.source == "field" for s in json_specs)
    assert any("." in s.format.records_path for s in json_specs if isinstance(s.format, JsonFormat))
    assert any("." in (f.column or "") for s in json_specs for f in s.fields.values())


@pytest.mark.parametrize("name", sorted(examples()))
def test_each_example_of_the_reference_runs_on_its_sample(name: str, tmp_path: Path) -> None:
    block = examples()[name]
    spec = load_spec(write_spec(tmp_path, name))
    sample = build_sample(name, tmp_path)
    assert spec.matches(sample.name), (spec.file_pattern, sample.name)
    communes, reference = reference_communes(None)
    r = dry_run(spec, sample, communes=communes, reference=reference)
    assert r.rejected is None, r.rejected
    assert (r.rows_loaded, r.rows_quarantined) == (int(block.attrs["loads"]), int(block.attrs["quarantined"])), (
        r.by_rule
    )


def test_the_walkthrough_ends_in_a_loaded_warehouse(tmp_path: Path) -> None:
    folder = specs_dir(tmp_path)
    write_spec(folder, "region_occitanie")
    sample = build_sample("region_occitanie", tmp_path)
    s = Settings(warehouse=tmp_path / "wh" / "cdv.duckdb", specs_dir=folder, lock_timeout_s=5)
    with open_pipeline(sample_warehouse(s)) as pipe:
        r = pipe.ingest(sample)
        rules = pipe.con.execute("SELECT rule, value FROM quarantine").fetchall()
        axes = pipe.con.execute("SELECT operation_id, axis FROM financing ORDER BY 1").fetchall()
    assert (r.status, r.partner, r.rows_read, r.rows_loaded, r.rows_quarantined) == (
        "loaded",
        "region_occitanie",
        4,
        3,
        1,
    ), r.message
    assert r.extraction_date == dt.date(2026, 5, 31)
    assert rules == [("unknown_category", None)]
    assert axes == [("OCC-2025-001", 1), ("OCC-2025-002", 4), ("OCC-2026-004", 5)]


# -- spec errors -------------------------------------------------------------------------------


def test_a_misspelt_key_names_the_file_the_key_path_and_the_close_match(tmp_path: Path) -> None:
    text = examples()["region_occitanie"].text.replace("records_path:", "records:")
    path = write_spec(tmp_path, "region_occitanie", text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message and MISSPELT in message
    assert MISSPELT in REFERENCE.read_text(encoding="utf-8")  # the reference shows the real message
    assert "pydantic" not in message and "https://" not in message


def test_misspelt_values_and_fields_get_their_close_match(tmp_path: Path) -> None:
    text = (
        examples()["region_grand_est"]
        .text.replace("parser: date_dmy", "parser: date_dmj")
        .replace("type: csv", "type: cvs")
        .replace("  commune_label:", "  commune_lable:")
    )
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "region_grand_est", text))
    message = caught.value.message
    assert "format.type: 'cvs' is not a format; did you mean csv? (allowed: csv, xlsx, json)" in message
    assert "fields.engagement_date.parser: unknown parser 'date_dmj'; did you mean date_dmy?" in message
    text = examples()["region_grand_est"].text.replace("  commune_label:", "  commune_lable:")
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "region_grand_est", text))
    assert "fields: unknown canonical field(s) commune_lable; did you mean commune_label?" in caught.value.message
    with pytest.raises(SpecError) as caught:
        load_spec(write_spec(tmp_path, "bad_yaml", "partner: [x\n"))
    assert "not valid YAML: line 2, column 1" in caught.value.message


def test_load_specs_keeps_the_valid_specs_beside_the_broken_one(tmp_path: Path) -> None:
    folder = specs_dir(tmp_path)
    write_spec(folder, "region_occitanie", examples()["region_occitanie"].text.replace("records_path:", "records:"))
    specs = load_specs(folder, warn=False)
    assert set(specs) == {"action_logement", "anah", "bdt", "epf", "etat"}
    [broken] = specs.broken
    assert (broken.path.name, broken.partner) == ("region_occitanie.yaml", "region_occitanie")
    assert broken.matches("region_occitanie_aides_2026-05.json") and MISSPELT in broken.error.message


def test_an_invalid_spec_leaves_the_other_partners_working(tmp_path: Path) -> None:
    """init, reference load, nightly and ingest work for the others; the broken partner's file is
    rejected with the spec's error, and loads without --force once the spec is fixed."""
    folder = specs_dir(tmp_path)
    good = examples()["region_occitanie"].text
    write_spec(folder, "region_occitanie", good.replace("records_path:", "records:"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "anah_acv_2025.csv").write_text(ANAH_CSV, encoding="utf-8-sig")
    build_sample("region_occitanie", inbox)
    wh = tmp_path / "wh" / "cdv.duckdb"
    env = {"CDV_SPECS": str(folder), "CDV_WAREHOUSE": str(wh)}

    for args in (["init"], ["reference", "load", "--sample"]):
        p = run_cli(args, tmp_path, ok=False, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stderr.count("warning: partner spec") == 1 and MISSPELT in p.stderr, p.stderr

    earlier = tmp_path / "anah_acv_2024.csv"
    earlier.write_text(ANAH_CSV.replace("2025", "2024"), encoding="utf-8-sig")
    p = run_cli(["ingest", str(earlier)], tmp_path, ok=False, env=env)
    assert p.returncode == 0 and p.stderr.count("warning: partner spec") == 1, p.stdout + p.stderr

    p = run_cli(["nightly", "--inbox", str(inbox)], tmp_path, ok=False, env=env)
    assert p.returncode == 1, p.stdout + p.stderr  # a file was rejected
    assert p.stderr.count("warning: partner spec") == 1, p.stderr  # once, though each file opens the specs
    assert (tmp_path / "archive" / "anah" / "anah_acv_2025.csv").exists()
    rejected = tmp_path / "rejected" / "region_occitanie_aides_2026-05.json"
    reason = (tmp_path / "rejected" / "region_occitanie_aides_2026-05.json.reason.txt").read_text(encoding="utf-8")
    assert "its partner's spec is invalid" in reason and MISSPELT in reason

    p = run_cli(["specs"], tmp_path, ok=False, env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = {line.split("│")[1].strip(): line for line in p.stdout.splitlines() if line.count("│") > 4}
    assert "│ ok " in lines["anah"] and "│ error " in lines["region_occitanie"], p.stdout
    assert "format.records: unknown key; did you mean records_path?" in p.stdout

    write_spec(folder, "region_occitanie", good)  # the fix
    p = run_cli(["specs"], tmp_path, ok=False, env=env)
    assert p.returncode == 0 and "error" not in p.stdout, p.stdout
    p = run_cli(["ingest", str(rejected)], tmp_path, ok=False, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    with duckdb.connect(str(wh), read_only=True) as con:
        ledger = con.execute(
            "SELECT partner, file_name, status, rows_loaded, rows_quarantined, forced_reloads FROM file_loads "
            "ORDER BY file_id"
        ).fetchall()
    assert ledger == [
        ("anah", "anah_acv_2024.csv", "loaded", 2, 0, 0),
        ("anah", "anah_acv_2025.csv", "loaded", 2, 0, 0),
        ("region_occitanie", "region_occitanie_aides_2026-05.json", "loaded", 3, 1, 0),
    ]


# -- spec check ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "extraction"),
    [
        ("region_grand_est", "csv", "extraction date: 2026-06-30 (from the file name"),
        ("epf_normandie", "csv", f"extraction date: {dt.date.today()} (the day the file is received)"),
        ("region_bretagne", "xlsx", "extraction date: 2026-09-15 (from the title rows"),
        ("region_occitanie", "json", "extraction date: 2026-05-31 (from the JSON field 'extraction'"),
    ],
)
def test_spec_check_dry_runs_a_spec_on_every_format(name: str, fmt: str, extraction: str, tmp_path: Path) -> None:
    block = examples()[name]
    spec = write_spec(tmp_path, name)
    sample = build_sample(name, tmp_path)
    p = run_cli(["spec", "check", str(spec), str(sample)], tmp_path, ok=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert f"format {fmt}" in out and "columns found" in out and extraction in out, out
    assert "the bundled sample reference" in out
    loads, quarantined = int(block.attrs["loads"]), int(block.attrs["quarantined"])
    assert f"{loads + quarantined} rows read: {loads} would load, {quarantined} would be quarantined" in out
    assert "First " in out and "Quarantined rows by their first rule" in out
    assert not (tmp_path / "warehouse").exists()  # no warehouse created or touched


def test_spec_check_of_the_walkthrough_prints_what_the_reference_says(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "region_occitanie")
    sample = build_sample("region_occitanie", tmp_path)
    p = run_cli(["spec", "check", str(spec), str(sample)], tmp_path, ok=False)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = "4 rows read: 3 would load, 1 would be quarantined"
    assert summary in p.stdout and summary in REFERENCE.read_text(encoding="utf-8")
    mapping = [line for line in p.stdout.splitlines() if "commune.insee" in line and "│" in line]
    assert mapping and "insee_code" in mapping[0] and "insee" in mapping[0] and "yes" in mapping[0], p.stdout
    assert "unknown_category" in p.stdout


def test_spec_check_uses_the_warehouses_reference_and_says_so(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "region_grand_est")
    sample = build_sample("region_grand_est", tmp_path)
    wh = tmp_path / "wh" / "cdv.duckdb"
    with open_pipeline(sample_warehouse(Settings(warehouse=wh, lock_timeout_s=5))) as pipe:
        before = pipe.con.execute("SELECT count(*) FROM files").fetchone()
    p = run_cli(["spec", "check", str(spec), str(sample), "-w", str(wh)], tmp_path, ok=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"the reference of the warehouse {wh} (36 communes)" in p.stdout
    with duckdb.connect(str(wh), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM files").fetchone() == before == (0,)


def test_spec_check_says_why_a_file_would_be_rejected_and_an_invalid_spec_teaches(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "region_grand_est", examples()["region_grand_est"].text.replace('"N° dossier"', "Ref"))
    sample = build_sample("region_grand_est", tmp_path)
    p = run_cli(["spec", "check", str(spec), str(sample)], tmp_path, ok=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "missing: Ref" in p.stdout and "would be rejected whole (missing_columns)" in p.stderr
    bad = write_spec(tmp_path, "bad", examples()["region_occitanie"].text.replace("records_path:", "records:"))
    p = run_cli(["spec", "check", str(bad), str(sample)], tmp_path, ok=False)
    assert p.returncode == 2 and MISSPELT in p.stderr, p.stderr


@pytest.mark.parametrize("command", ["specs", "spec check"])
def test_spec_commands_have_help(command: str, tmp_path: Path) -> None:
    p = run_cli([*command.split(), "--help"], tmp_path, ok=False)
    assert p.returncode == 0 and "Usage" in p.stdout and len(p.stdout) > 200


# -- --partner after a rejection -------------------------------------------------------------------


def test_a_file_no_spec_recognised_is_retried_with_partner_without_force(tmp_path: Path) -> None:
    odd = tmp_path / "copie_anah_acv_2025.csv"  # the year is there, the name is not the usual one
    odd.write_text(ANAH_CSV, encoding="utf-8-sig")
    s = Settings(warehouse=tmp_path / "wh" / "cdv.duckdb", lock_timeout_s=5)
    with open_pipeline(sample_warehouse(s)) as pipe:
        first = pipe.ingest(odd)
        assert (first.status, first.reason) == ("rejected", "unknown_partner")
        assert "pass --partner" in first.message
        same = pipe.ingest(odd)  # nothing new: still no spec for this name, nothing changes
        assert (same.status, same.already_recorded, same.file_id) == ("rejected", True, first.file_id)
        assert "pass --partner" in same.message and "--force" not in same.message
        again = pipe.ingest(odd, partner="anah")
        assert (again.status, again.file_id, again.rows_loaded) == ("loaded", first.file_id, 2), again.message
        third = pipe.ingest(odd, partner="anah")  # loaded: the same bytes change nothing
        assert (third.status, third.already_recorded) == ("duplicate", True)
        assert "use --force" in third.message
        forced = pipe.ingest(odd, partner="anah", force=True)
        assert (forced.status, forced.file_id) == ("loaded", first.file_id)
        ledger = pipe.con.execute(
            "SELECT file_id, partner, status, reason, forced_reloads FROM file_loads ORDER BY file_id"
        ).fetchall()
    assert ledger == [(first.file_id, "anah", "loaded", None, 1)]  # one row per file; one forced reload


def test_a_file_rejected_for_its_broken_spec_loads_once_the_spec_is_fixed(tmp_path: Path) -> None:
    folder = specs_dir(tmp_path)
    good = examples()["region_grand_est"].text
    spec = write_spec(folder, "region_grand_est", good.replace("delimiter:", "delimitor:"))
    sample = build_sample("region_grand_est", tmp_path)
    s = Settings(warehouse=tmp_path / "wh" / "cdv.duckdb", specs_dir=folder, lock_timeout_s=5)
    with open_pipeline(sample_warehouse(s)) as pipe:
        first = pipe.ingest(sample)
        named = pipe.ingest(sample, partner="region_grand_est")  # named: the same broken spec
    assert (first.status, first.reason, first.partner) == ("rejected", "spec_invalid", "region_grand_est")
    assert "format.delimitor: unknown key; did you mean delimiter?" in first.message
    assert (named.status, named.reason, named.file_id) == ("rejected", "spec_invalid", first.file_id)
    assert named.already_recorded  # the spec is still broken: nothing new to try
    spec.write_text(good, encoding="utf-8")
    with open_pipeline(s) as pipe:
        fixed = pipe.ingest(sample)
        ledger = pipe.con.execute("SELECT status, rows_loaded, forced_reloads FROM file_loads").fetchall()
    assert (fixed.status, fixed.file_id) == ("loaded", first.file_id), fixed.message
    assert ledger == [("loaded", 3, 0)]

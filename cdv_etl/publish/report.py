"""The steering committee's report: one self-contained HTML page, charts included.

``build_report(con_or_path)`` reads the public views of a warehouse (normally the published
copy) and returns the page: totals by axis, partner and year, the axis × partner matrix,
envelope consumption, the conventions that receive most and least, what changed since each
partner's previous export, and data quality (files, rejected rows per rule and partner).

Self-contained: the charts are SVG drawn by matplotlib (text as paths, so no font is
needed) inlined as ``data:`` URIs, the CSS is inline, and a Content-Security-Policy forbids
the page any other source: opening it fetches nothing from the network. Tables show exact
amounts (``DECIMAL``); charts plot them as floats, which a picture may round.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cdv_etl.publish.reader import read_only
from cdv_etl.publish.tables import euros

AXIS_COLOURS = {1: "#1f5f8b", 2: "#e07b39", 3: "#3a9d5d", 4: "#8e5ea2", 5: "#c9a227"}
PARTNER_COLOURS = ("#00496f", "#e4572e", "#29a07c", "#f3a712", "#7d5ba6", "#5c8001", "#a23b72", "#3f88c5")
CHANGE_LABELS = {"added": "ajoutées", "withdrawn": "retirées", "revised": "révisées"}
_RC: dict[Any, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.titlesize": 10,
    "svg.fonttype": "path",  # text drawn as paths: the SVG needs no font
    "svg.hashsalt": "cdv-etl",  # stable element ids: the same data gives the same page
}


# -- formatting -------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _meur(value: float) -> str:
    """12 345,6 M€ (French grouping, one decimal)."""
    return f"{value / 1e6:,.1f}".replace(",", "\u202f").replace(".", ",") + " M€"


def _int(value: Any) -> str:
    return f"{int(value or 0):,}".replace(",", "\u202f")


def _pct(value: Any) -> str:
    return "—" if value is None else f"{Decimal(value):.1f}".replace(".", ",") + " %"


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    return "—" if value is None else str(value)


def short_partner(name: str) -> str:
    """The partner's name without its parenthesis: 'Anah (Agence nationale de l'habitat)' → 'Anah'."""
    return name.split(" (")[0].strip()


# -- data ---------------------------------------------------------------------------------------

Rows = list[dict[str, Any]]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Rows:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@dataclass
class ReportData:
    """Everything the page shows, read once from the warehouse's public views."""

    partners: Rows
    axes: Rows
    years: Rows
    cube: Rows
    envelopes: Rows
    conventions_top: Rows
    conventions_bottom: Rows
    conventions_count: int
    conventions_financed: int
    communes_count: int
    communes_financed: int
    changes: Rows
    files: Rows
    files_total: int
    rejected: Rows


def read_report_data(con: duckdb.DuckDBPyConnection, ranking: int = 10, files_shown: int = 30) -> ReportData:
    """``ranking`` conventions at each end; the current files and the latest others, ``files_shown`` in all."""
    conventions = _rows(
        con, "SELECT count(*) AS n, count(*) FILTER (WHERE engaged_eur > 0) AS financed FROM v_financing_by_convention"
    )[0]
    communes = _rows(
        con, "SELECT count(*) AS n, count(*) FILTER (WHERE engaged_eur > 0) AS financed FROM v_financing_by_commune"
    )[0]
    return ReportData(
        partners=_rows(
            con,
            "SELECT partner, partner_name, engaged_eur, operations, file_id, extraction_date "
            "FROM v_financing_by_partner ORDER BY engaged_eur DESC, partner",
        ),
        axes=_rows(
            con,
            "SELECT axis, axis_label, short_label, engaged_eur, operations, share_pct "
            "FROM v_financing_by_axis ORDER BY axis",
        ),
        years=_rows(
            con,
            "SELECT year, partner, sum(engaged_eur) AS engaged_eur, sum(operations) AS operations "
            "FROM v_financing_axis_partner_year GROUP BY ALL ORDER BY year, partner",
        ),
        cube=_rows(
            con,
            "SELECT axis, partner, sum(engaged_eur) AS engaged_eur "
            "FROM v_financing_axis_partner_year GROUP BY ALL ORDER BY axis, partner",
        ),
        envelopes=_rows(
            con,
            "SELECT partner, partner_name, envelope, envelope_label, envelope_eur, engaged_eur, "
            "used_pct FROM v_envelope_consumption ORDER BY partner, envelope",
        ),
        conventions_top=_rows(
            con,
            "SELECT convention_id, communes, department, region, engaged_eur, operations, "
            "partners FROM v_financing_by_convention "
            "ORDER BY engaged_eur DESC, convention_id LIMIT ?",
            [ranking],
        ),
        conventions_bottom=_rows(
            con,
            "SELECT convention_id, communes, department, region, engaged_eur, "
            "operations, partners FROM v_financing_by_convention "
            "ORDER BY engaged_eur, convention_id LIMIT ?",
            [ranking],
        ),
        conventions_count=int(conventions["n"]),
        conventions_financed=int(conventions["financed"]),
        communes_count=int(communes["n"]),
        communes_financed=int(communes["financed"]),
        changes=_rows(
            con,
            "SELECT partner, from_file_name, from_extraction_date, to_file_name, to_extraction_date, "
            "count(*) FILTER (WHERE change = 'added') AS added, "
            "count(*) FILTER (WHERE change = 'withdrawn') AS withdrawn, "
            "count(*) FILTER (WHERE change = 'revised') AS revised, "
            "sum(engaged_delta_eur) AS engaged_delta_eur "
            "FROM v_changes WHERE to_is_current GROUP BY ALL ORDER BY partner",
        ),
        files=_rows(
            con,
            "SELECT file_id, partner, file_name, status, extraction_date, loaded_at, rows_read, "
            "rows_loaded, rows_quarantined, engaged_amount_eur, control_total_ok, is_current, message "
            "FROM file_loads ORDER BY is_current DESC, CASE WHEN is_current THEN partner END, "
            "file_id DESC LIMIT ?",
            [files_shown],
        ),
        files_total=int(_rows(con, "SELECT count(*) AS n FROM file_loads")[0]["n"]),
        rejected=_rows(
            con,
            "SELECT partner, rule, rows_quarantined FROM v_quarantine_summary WHERE is_current ORDER BY partner, rule",
        ),
    )


# -- charts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    title: str
    svg: bytes
    alt: str

    def html(self) -> str:
        data = base64.b64encode(self.svg).decode("ascii")
        return (
            f'<figure class="chart"><img src="data:image/svg+xml;base64,{data}" alt="{_esc(self.alt)}">'
            f"<figcaption>{_esc(self.title)}</figcaption></figure>"
        )


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _chart(title: str, alt: str, draw: Callable[[], Figure]) -> Chart:
    """Draw and save one figure under the report's style (a plain Figure: no pyplot, no GUI backend)."""
    with matplotlib.rc_context(_RC):
        fig = draw()
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})  # no date: same data, same bytes
        return Chart(title, buf.getvalue(), alt)


def _meur_axis(ax: Any, which: str = "x") -> None:
    fmt = FuncFormatter(lambda v, _pos: f"{v / 1e6:,.0f}".replace(",", "\u202f"))
    (ax.xaxis if which == "x" else ax.yaxis).set_major_formatter(fmt)
    (ax.set_xlabel if which == "x" else ax.set_ylabel)("M€")


def _hbars(
    labels: list[str],
    values: list[float],
    colours: list[str],
    notes: list[str] | None = None,
    height: float | None = None,
) -> Figure:
    fig = _figure(7.5, height or max(1.6, 0.45 * len(labels) + 0.8))
    ax = fig.add_subplot()
    positions = list(range(len(labels)))[::-1]
    bars = ax.barh(positions, values, color=colours, height=0.65)
    ax.set_yticks(positions, labels)
    _meur_axis(ax)
    top = max(values, default=0) or 1.0
    ax.set_xlim(0, top * 1.3)
    for bar, note in zip(bars, notes or [_meur(v) for v in values], strict=True):
        ax.text(
            bar.get_width() + top * 0.01,
            bar.get_y() + bar.get_height() / 2,
            note,
            va="center",
            fontsize=8,
            color="#333333",
        )
    ax.grid(axis="x", color="#e5e5e5")
    ax.set_axisbelow(True)
    return fig


def _partner_colours(partners: Sequence[str]) -> dict[str, str]:
    return {p: PARTNER_COLOURS[i % len(PARTNER_COLOURS)] for i, p in enumerate(sorted(partners))}


def chart_axes(d: ReportData) -> Chart:
    labels = [r["short_label"] for r in d.axes]
    values = [float(r["engaged_eur"]) for r in d.axes]
    notes = [f"{_meur(v)} · {_pct(r['share_pct'])}" for v, r in zip(values, d.axes, strict=True)]
    colours = [AXIS_COLOURS.get(int(r["axis"]), "#777777") for r in d.axes]
    return _chart(
        "Montants engagés par axe",
        "Diagramme en barres des montants engagés par axe",
        lambda: _hbars(labels, values, colours, notes),
    )


def chart_partners(d: ReportData, names: dict[str, str], colours: dict[str, str]) -> Chart:
    rows = d.partners
    return _chart(
        "Montants engagés par partenaire",
        "Diagramme en barres des montants engagés par partenaire",
        lambda: _hbars(
            [names[r["partner"]] for r in rows],
            [float(r["engaged_eur"]) for r in rows],
            [colours[r["partner"]] for r in rows],
        ),
    )


def chart_years(d: ReportData, names: dict[str, str], colours: dict[str, str]) -> Chart:
    years = sorted({int(r["year"]) for r in d.years})
    partners = sorted({r["partner"] for r in d.years})

    def draw() -> Figure:
        fig = _figure(7.5, 3.4)
        ax = fig.add_subplot()
        bottom = [0.0] * len(years)
        for p in partners:
            values = [0.0] * len(years)
            for r in d.years:
                if r["partner"] == p:
                    values[years.index(int(r["year"]))] = float(r["engaged_eur"])
            ax.bar([str(y) for y in years], values, bottom=bottom, color=colours[p], label=names[p], width=0.7)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        _meur_axis(ax, "y")
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
        if partners:
            ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=2)
        return fig

    return _chart(
        "Montants engagés par année et partenaire",
        "Histogramme empilé des montants engagés par année, par partenaire",
        draw,
    )


def chart_matrix(d: ReportData, names: dict[str, str], axis_labels: dict[int, str], partners: list[str]) -> Chart:
    axes = sorted(axis_labels)
    grid = [[0.0] * len(partners) for _ in axes]
    for r in d.cube:
        if r["partner"] in partners and int(r["axis"]) in axis_labels:
            grid[axes.index(int(r["axis"]))][partners.index(r["partner"])] = float(r["engaged_eur"])

    def draw() -> Figure:
        fig = _figure(7.5, 0.5 * len(axes) + 1.6)
        ax = fig.add_subplot()
        ax.imshow(grid, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(partners)), [names[p] for p in partners], rotation=20, ha="right")
        ax.set_yticks(range(len(axes)), [axis_labels[a] for a in axes])
        top = max((v for row in grid for v in row), default=0) or 1.0
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    _meur(v) if v else "—",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if v > top * 0.55 else "#222222",
                )
        ax.spines[:].set_visible(False)
        ax.tick_params(length=0)
        return fig

    return _chart(
        "Matrice axe × partenaire (montants engagés)",
        "Carte de chaleur des montants engagés par axe et par partenaire",
        draw,
    )


def chart_envelopes(d: ReportData, names: dict[str, str]) -> Chart | None:
    rows = [r for r in d.envelopes if r["envelope_eur"]]
    if not rows:
        return None
    labels = [f"{names.get(r['partner'], r['partner'])} — {r['envelope_label']}" for r in rows]
    used = [float(r["used_pct"] or 0) for r in rows]

    def draw() -> Figure:
        fig = _figure(7.5, max(1.6, 0.5 * len(rows) + 0.9))
        ax = fig.add_subplot()
        positions = list(range(len(rows)))[::-1]
        ax.barh(positions, [100.0] * len(rows), color="#e8eef4", height=0.6)
        bars = ax.barh(
            positions,
            [min(u, 100.0) for u in used],
            height=0.6,
            color=["#c0392b" if u > 100 else "#1f5f8b" for u in used],
        )
        ax.set_yticks(positions, labels)
        ax.set_xlim(0, max(110.0, max(used, default=0) * 1.1))
        ax.axvline(100, color="#555555", linewidth=0.8, linestyle="--")
        ax.set_xlabel("% de l'enveloppe nationale engagé")
        for bar, r, u in zip(bars, rows, used, strict=True):
            ax.text(
                min(u, 100.0) + 1,
                bar.get_y() + bar.get_height() / 2,
                f"{_pct(r['used_pct'])} de {_meur(float(r['envelope_eur']))}",
                va="center",
                fontsize=8,
            )
        return fig

    return _chart(
        "Consommation des enveloppes nationales",
        "Barres de progression : part de chaque enveloppe nationale engagée",
        draw,
    )


def chart_conventions(d: ReportData) -> Chart:
    def label(r: dict[str, Any]) -> str:
        communes = str(r["communes"] or "")
        return f"{communes[:28]}{'…' if len(communes) > 28 else ''} ({r['convention_id']})"

    def draw() -> Figure:
        n = max(len(d.conventions_top), len(d.conventions_bottom), 1)
        fig = _figure(7.5, 0.32 * n + 1.2)
        left, right = fig.subplots(1, 2)
        for ax, rows, colour, title in (
            (left, d.conventions_top, "#1f5f8b", "Les plus financées"),
            (right, d.conventions_bottom, "#c0392b", "Les moins financées"),
        ):
            positions = list(range(len(rows)))[::-1]
            ax.barh(positions, [float(r["engaged_eur"]) for r in rows], color=colour, height=0.6)
            ax.set_yticks(positions, [label(r) for r in rows], fontsize=7)
            ax.set_title(title)
            _meur_axis(ax)
            ax.grid(axis="x", color="#e5e5e5")
            ax.set_axisbelow(True)
        return fig

    return _chart(
        "Conventions ACV : les plus et les moins financées",
        "Deux diagrammes en barres : conventions les plus et les moins financées",
        draw,
    )


def rule_label(rule: str) -> str:
    """A rule's label: its plain-French explanation (``schemas.canonical``), capitalised."""
    from schemas.canonical import RULES  # Pandera and Polars load only when a report is built

    r = RULES.get(rule)
    return r.explanation[:1].upper() + r.explanation[1:] if r else rule


def chart_rejected(d: ReportData, names: dict[str, str], colours: dict[str, str]) -> Chart | None:
    if not d.rejected:
        return None
    from schemas.canonical import RULES

    order = list(RULES)
    rules = sorted({r["rule"] for r in d.rejected}, key=lambda x: order.index(x) if x in RULES else len(order))
    partners = sorted({r["partner"] for r in d.rejected})

    def draw() -> Figure:
        fig = _figure(7.5, max(1.8, 0.4 * len(rules) + 1.0))
        ax = fig.add_subplot()
        positions = list(range(len(rules)))[::-1]
        left = [0.0] * len(rules)
        for p in partners:
            values = [0.0] * len(rules)
            for r in d.rejected:
                if r["partner"] == p:
                    values[rules.index(r["rule"])] = float(r["rows_quarantined"])
            ax.barh(positions, values, left=left, color=colours.get(p, "#777777"), label=names.get(p, p), height=0.6)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(positions, [textwrap.fill(rule_label(r), 36) for r in rules])
        ax.set_xlabel("lignes rejetées (exports courants)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="lower right", fontsize=8, frameon=False)
        ax.grid(axis="x", color="#e5e5e5")
        ax.set_axisbelow(True)
        return fig

    return _chart(
        "Lignes rejetées par règle et partenaire",
        "Barres empilées du nombre de lignes rejetées par règle, par partenaire",
        draw,
    )


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1d2733; --muted: #5b6b7b; --line: #dfe5ec; --accent: #1f5f8b; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); line-height: 1.45; font-size: 14px; }
header { background: var(--accent); color: white; padding: 28px 40px 22px; }
header h1 { margin: 0 0 6px; font-size: 24px; font-weight: 650; }
header p { margin: 2px 0; opacity: .9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 24px 48px; }
section { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 20px 24px; margin: 20px 0; }
h2 { font-size: 18px; margin: 0 0 12px; color: var(--accent); }
h3 { font-size: 15px; margin: 18px 0 8px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 14px; }
.kpi { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; }
.kpi .value { font-size: 22px; font-weight: 650; }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
figure.chart { margin: 8px 0 16px; }
figure.chart img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { text-align: center; color: var(--muted); font-size: 12px; margin-top: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 6px 0 4px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef2f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 650; border-top: 2px solid var(--ink); }
.two { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 20px; }
.scroll { overflow-x: auto; }
.file { overflow-wrap: anywhere; }
.note { color: var(--muted); font-size: 12px; }
.ok { color: #1e7b45; } .bad { color: #b03a2e; } .warn { color: #a86b00; }
footer { max-width: 1100px; margin: 0 auto; padding: 0 24px 32px; color: var(--muted); font-size: 12px; }
@media (max-width: 800px) { .two { grid-template-columns: 1fr; }
  header, main { padding-left: 14px; padding-right: 14px; } }
@media print { body { background: white; } section { break-inside: avoid; border: none; } }
"""

Cell = tuple[str, bool]  # (html, numeric)


def _table(
    headers: Sequence[str | tuple[str, bool]], rows: Sequence[Sequence[Cell]], total: Sequence[Cell] | None = None
) -> str:
    def th(h: str | tuple[str, bool]) -> str:
        text, num = (h, False) if isinstance(h, str) else h
        return f'<th class="num">{_esc(text)}</th>' if num else f"<th>{_esc(text)}</th>"

    def tr(cells: Sequence[Cell], cls: str = "") -> str:
        tds = "".join(f'<td class="num">{c}</td>' if num else f"<td>{c}</td>" for c, num in cells)
        return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"

    body = "".join(tr(r) for r in rows)
    if total is not None:
        body += tr(total, "total")
    head = "".join(th(h) for h in headers)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _eur(v: Any) -> Cell:
    return (_esc(euros(Decimal(v)) if v is not None else "—"), True)


def _num(v: Any) -> Cell:
    return (_int(v), True)


def _txt(v: Any) -> Cell:
    return (_esc("—" if v is None else v), False)


def _file(name: Any, day: Any = None) -> Cell:
    """A file name that may wrap anywhere (names have no spaces), with its extraction date below."""
    below = f'<br><span class="note">{_esc(_day(day))}</span>' if day is not None else ""
    return (f'<span class="file">{_esc(name)}</span>{below}', False)


def _section(title: str, *parts: str, anchor: str = "") -> str:
    ident = f' id="{anchor}"' if anchor else ""
    return f"<section{ident}><h2>{_esc(title)}</h2>{''.join(parts)}</section>"


def render(d: ReportData, *, source: str = "", generated_at: datetime | None = None) -> str:
    """The page for ``d``: pure formatting, no database."""
    generated_at = generated_at or datetime.now()
    names = {r["partner"]: short_partner(str(r["partner_name"])) for r in d.partners}
    for r in d.envelopes:
        names.setdefault(r["partner"], short_partner(str(r["partner_name"])))
    for r in [*d.years, *d.cube, *d.rejected, *d.changes]:
        names.setdefault(r["partner"], r["partner"])
    colours = _partner_colours(list(names))
    axis_labels = {int(r["axis"]): str(r["short_label"]) for r in d.axes}
    with_data = [r["partner"] for r in d.partners if r["file_id"] is not None]
    total = sum((Decimal(r["engaged_eur"]) for r in d.partners), Decimal("0.00"))
    operations = sum(int(r["operations"] or 0) for r in d.partners)

    charts = {
        "axes": chart_axes(d),
        "partners": chart_partners(d, names, colours),
        "years": chart_years(d, names, colours),
        "matrix": chart_matrix(d, names, axis_labels, sorted(with_data or names)),
        "envelopes": chart_envelopes(d, names),
        "conventions": chart_conventions(d),
        "rejected": chart_rejected(d, names, colours),
    }

    def chart(key: str) -> str:
        c = charts[key]
        return c.html() if c else '<p class="note">Aucune donnée.</p>'

    exports = (
        ", ".join(
            f"{_esc(names[r['partner']])} ({_day(r['extraction_date'])})"
            for r in d.partners
            if r["file_id"] is not None
        )
        or "aucun export chargé"
    )
    kpis = "".join(
        f'<div class="kpi"><div class="label">{_esc(label)}</div><div class="value">{_esc(value)}</div></div>'
        for label, value in [
            ("Montant engagé", euros(total)),
            ("Opérations engagées", _int(operations)),
            ("Communes financées", f"{d.communes_financed} / {d.communes_count}"),
            ("Conventions financées", f"{d.conventions_financed} / {d.conventions_count}"),
        ]
    )

    axes_table = _table(
        ["Axe", "Libellé", ("Engagé", True), ("Opérations", True), ("Part", True)],
        [
            [
                _txt(r["axis"]),
                _txt(r["axis_label"]),
                _eur(r["engaged_eur"]),
                _num(r["operations"]),
                (_pct(r["share_pct"]), True),
            ]
            for r in d.axes
        ],
        [_txt(""), _txt("Total"), _eur(total), _num(operations), ("100,0 %" if total else "—", True)],
    )
    partners_table = _table(
        ["Partenaire", ("Engagé", True), ("Opérations", True), "Export courant", "Extraction"],
        [
            [
                _txt(r["partner_name"]),
                _eur(r["engaged_eur"]),
                _num(r["operations"]),
                _txt(r["file_id"]),
                _txt(_day(r["extraction_date"])),
            ]
            for r in d.partners
        ],
        [_txt("Total"), _eur(total), _num(operations), _txt(""), _txt("")],
    )
    year_totals: dict[int, Decimal] = {}
    year_ops: dict[int, int] = {}
    for r in d.years:
        year_totals[int(r["year"])] = year_totals.get(int(r["year"]), Decimal(0)) + Decimal(r["engaged_eur"])
        year_ops[int(r["year"])] = year_ops.get(int(r["year"]), 0) + int(r["operations"])
    years_table = _table(
        ["Année", ("Engagé", True), ("Opérations", True)],
        [[_txt(y), _eur(v), _num(year_ops[y])] for y, v in sorted(year_totals.items())],
    )
    matrix_partners = sorted(with_data or names)
    cube = {(int(r["axis"]), r["partner"]): Decimal(r["engaged_eur"]) for r in d.cube}
    matrix_table = _table(
        ["Axe", *[(names[p], True) for p in matrix_partners], ("Total", True)],
        [
            [
                _txt(axis_labels[a]),
                *[_eur(cube.get((a, p), Decimal(0))) for p in matrix_partners],
                _eur(sum((cube.get((a, p), Decimal(0)) for p in matrix_partners), Decimal(0))),
            ]
            for a in sorted(axis_labels)
        ],
    )
    envelopes_table = _table(
        ["Partenaire", "Enveloppe", ("Montant de l'enveloppe", True), ("Engagé", True), ("Consommé", True)],
        [
            [
                _txt(names.get(r["partner"], r["partner"])),
                _txt(r["envelope_label"] or "pas d'enveloppe nationale"),
                _eur(r["envelope_eur"]),
                _eur(r["engaged_eur"]),
                (_pct(r["used_pct"]), True),
            ]
            for r in d.envelopes
        ],
    )

    def conventions_table(rows: Rows) -> str:
        return _table(
            ["Convention", "Communes", ("Engagé", True), ("Partenaires", True)],
            [
                [_txt(r["convention_id"]), _txt(r["communes"]), _eur(r["engaged_eur"]), _num(r["partners"])]
                for r in rows
            ],
        )

    changes_html = (
        _table(
            [
                "Partenaire",
                "Export précédent",
                "Export courant",
                ("Ajoutées", True),
                ("Retirées", True),
                ("Révisées", True),
                ("Variation de l'engagé", True),
            ],
            [
                [
                    _txt(names.get(r["partner"], r["partner"])),
                    _file(r["from_file_name"], r["from_extraction_date"]),
                    _file(r["to_file_name"], r["to_extraction_date"]),
                    _num(r["added"]),
                    _num(r["withdrawn"]),
                    _num(r["revised"]),
                    _eur(r["engaged_delta_eur"]),
                ]
                for r in d.changes
            ],
        )
        if d.changes
        else '<p class="note">Aucun partenaire n\'a encore deux exports chargés.</p>'
    )

    def status(r: dict[str, Any]) -> Cell:
        cls = {"loaded": "ok", "duplicate": "warn", "rejected": "bad"}.get(r["status"], "")
        label = {"loaded": "chargé", "duplicate": "doublon", "rejected": "rejeté"}.get(r["status"], r["status"])
        return (f'<span class="{cls}">{_esc(label)}</span>', False)

    def control(v: Any) -> Cell:
        return ("—" if v is None else ('<span class="ok">✓</span>' if v else '<span class="bad">✗</span>'), False)

    files_table = _table(
        [
            "Fichier",
            "Partenaire",
            "Statut",
            "Extraction",
            ("Lues", True),
            ("Chargées", True),
            ("Rejetées", True),
            ("Engagé", True),
            "Total de contrôle",
            "Courant",
        ],
        [
            [
                _file(r["file_name"]),
                _txt(names.get(r["partner"], r["partner"]) if r["partner"] else "?"),
                status(r),
                _txt(_day(r["extraction_date"])),
                _num(r["rows_read"]),
                _num(r["rows_loaded"]),
                _num(r["rows_quarantined"]),
                _eur(r["engaged_amount_eur"]),
                control(r["control_total_ok"]),
                _txt("oui" if r["is_current"] else ""),
            ]
            for r in d.files
        ],
    )
    rejected_table = _table(
        ["Partenaire", "Règle", "Code", ("Lignes rejetées", True)],
        [
            [
                _txt(names.get(r["partner"], r["partner"])),
                _txt(rule_label(r["rule"])),
                (f"<code>{_esc(r['rule'])}</code>", False),
                _num(r["rows_quarantined"]),
            ]
            for r in d.rejected
        ],
    )
    read = sum(int(r["rows_read"] or 0) for r in d.files if r["is_current"])
    quarantined = sum(int(r["rows_quarantined"] or 0) for r in d.files if r["is_current"])
    quality_note = (
        f"Exports courants : {_int(read)} lignes lues, {_int(quarantined)} rejetées "
        f"({_pct(Decimal(100 * quarantined) / read if read else None)}). Chaque ligne rejetée est "
        "conservée avec la règle enfreinte : <code>cdv-etl quarantine</code> en donne la liste à "
        "renvoyer au partenaire."
    )

    files_note = (
        f'<p class="note">Les {len(d.files)} fichiers les plus récents sur {d.files_total} : '
        "<code>cdv-etl files</code> les liste tous.</p>"
        if d.files_total > len(d.files)
        else ""
    )
    body = "".join(
        [
            f'<div class="kpis">{kpis}</div>',
            _section("Montants engagés par axe", chart("axes"), axes_table, anchor="axes"),
            _section("Montants engagés par partenaire", chart("partners"), partners_table, anchor="partenaires"),
            _section("Montants engagés par année", chart("years"), years_table, anchor="annees"),
            _section("Matrice axe × partenaire", chart("matrix"), matrix_table, anchor="matrice"),
            _section(
                "Consommation des enveloppes nationales",
                chart("envelopes"),
                envelopes_table,
                '<p class="note">Enveloppes nationales 2018–2022. Les partenaires sans enveloppe nationale '
                "sont listés avec leur montant engagé.</p>",
                anchor="enveloppes",
            ),
            _section(
                "Conventions : les plus et les moins financées",
                chart("conventions"),
                f'<div class="two"><div><h3>Les {len(d.conventions_top)} plus financées</h3>'
                f"{conventions_table(d.conventions_top)}</div><div><h3>Les {len(d.conventions_bottom)} moins "
                f"financées</h3>{conventions_table(d.conventions_bottom)}</div></div>",
                anchor="conventions",
            ),
            _section(
                "Évolutions depuis l'export précédent",
                changes_html,
                '<p class="note">Opérations ajoutées, retirées ou révisées (montant, axe, commune, année, '
                "instrument ou statut) entre les deux derniers exports de chaque partenaire : "
                "<code>cdv-etl changes --partner …</code> en donne le détail.</p>",
                anchor="evolutions",
            ),
            _section(
                "Qualité des données",
                f'<p class="note">{quality_note}</p>',
                chart("rejected"),
                "<h3>Lignes rejetées par règle (exports courants)</h3>",
                rejected_table,
                "<h3>Fichiers reçus</h3>",
                files_table,
                files_note,
                anchor="qualite",
            ),
        ]
    )
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return f"""<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cdv-etl">
<title>Action Cœur de Ville — financements des partenaires</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>Action Cœur de Ville — financements des partenaires</h1>
<p>Point de situation pour le comité de pilotage, établi le {_esc(_day(generated_at))}.</p>
<p>Exports courants : {exports}.</p>
</header>
<main>
{body}
</main>
<footer>
<p>Montant engagé : somme des lignes qui comptent comme engagées (une aide annulée est conservée mais non
comptée). Les tableaux sont exacts au centime ; les graphiques arrondissent.</p>
<p>Source : {_esc(source) or "entrepôt cdv-etl"} — vues publiques <code>v_financing_*</code>,
<code>v_envelope_consumption</code>, <code>v_changes</code>, <code>file_loads</code>,
<code>v_quarantine_summary</code>.</p>
</footer>
</body>
</html>
"""


def build_report(con_or_path: duckdb.DuckDBPyConnection | Path | str, *, generated_at: datetime | None = None) -> str:
    """The report's HTML, from an open connection or a warehouse file (opened read-only)."""
    if isinstance(con_or_path, str | Path):
        path = Path(con_or_path)
        with read_only(path) as con:
            return render(read_report_data(con), source=str(path), generated_at=generated_at)
    row = con_or_path.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return render(read_report_data(con_or_path), source=str(row[0] or "") if row else "", generated_at=generated_at)

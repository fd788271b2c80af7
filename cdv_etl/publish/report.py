"""The steering committee's report: one self-contained HTML page, charts included.

``build_report(con_or_path)`` reads the public views of a warehouse (normally the published
copy) and returns the page: totals by axis, partner and year, the axis × partner matrix,
a map of the ACV communes, envelope consumption, the conventions that receive most and
least, what changed since each partner's previous export (operations added and withdrawn
per axis, those that only moved out of or into quarantine, the trend of the quarantine), and
data quality (files, how each control total reconciles, rejected rows per rule and partner).

Self-contained: the charts are SVG drawn by matplotlib (text as paths, so no font is
needed) inlined as ``data:`` URIs, the CSS is inline, and a Content-Security-Policy forbids
the page any other source: opening it fetches nothing from the network. Tables show exact
amounts (``DECIMAL``); charts plot them as floats, which a picture may round.

Readable from a phone to a wide screen: each chart is drawn twice, for a wide and for a
narrow column (a ``<picture>`` picks one by the width of the screen), tables scroll inside
their card, and no figure or table is wider than the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG, RendererSVG
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FuncFormatter, MaxNLocator

from cdv_etl.load.backend import DuckLake, mask_secrets
from cdv_etl.publish.reader import read_only
from cdv_etl.publish.tables import euros

AXIS_COLOURS = {1: "#1f5f8b", 2: "#e07b39", 3: "#3a9d5d", 4: "#8e5ea2", 5: "#c9a227"}
PARTNER_COLOURS = ("#00496f", "#e4572e", "#29a07c", "#f3a712", "#7d5ba6", "#5c8001", "#a23b72", "#3f88c5")
METROPOLE = "France métropolitaine"
"""The territory of every commune outside INSEE 97xxx (v_commune_map.territory)."""
WIDE_IN, NARROW_IN = 7.5, 3.6
"""Chart widths in inches (96 px each): the wide column of a screen, and a phone's (390 px)."""
NARROW_MEDIA = "(max-width: 640px)"
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
# One French number style: digits grouped by narrow no-break spaces, a decimal comma, the unit
# after a space (1 234 567,89 €, 12,5 %): amounts to the cent through tables.euros, millions
# in charts through _meur. In the page an amount never wraps (the .amount class, td.num).


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _meur(value: float, decimals: int = 1) -> str:
    """12 345,6 M€ (French grouping, one decimal)."""
    return f"{value / 1e6:,.{decimals}f}".replace(",", "\u202f").replace(".", ",") + "\u202fM€"


def _meur_cell(value: float) -> str:
    """A chart's label for an amount: 0 is 0 € (not a dash: a dash is for no data)."""
    if value == 0:
        return "0\u202f€"
    return _meur(value) if abs(value) >= 50_000 else "< 0,1\u202fM€"


def _int(value: Any) -> str:
    return f"{int(value or 0):,}".replace(",", "\u202f")


def _pct(value: Any) -> str:
    return "—" if value is None else f"{Decimal(value):.1f}".replace(".", ",") + "\u202f%"


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%d/%m/%Y %H:%M")
    if isinstance(value, date):
        return value.strftime("%d/%m/%Y")
    return "—" if value is None else str(value)


def _money(value: Any) -> str:
    """An exact amount in the page's text, kept on one line."""
    return f'<span class="amount">{_esc(euros(None if value is None else Decimal(value)))}</span>'


def short_partner(name: str) -> str:
    """The partner's name without its parenthesis: 'Anah (Agence nationale de l'habitat)' → 'Anah'."""
    return name.split(" (")[0].strip()


def _wrap(label: str, width: int) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


# -- data ---------------------------------------------------------------------------------------

Rows = list[dict[str, Any]]


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Rows:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


CHANGES_BY_AXIS_SQL = """
SELECT partner, coalesce(new_axis, old_axis) AS axis,
       count(*) FILTER (WHERE change = 'added') AS added,
       coalesce(sum(new_amount_eur) FILTER (WHERE change = 'added'), 0)::DECIMAL(18, 2) AS added_eur,
       count(*) FILTER (WHERE change = 'withdrawn') AS withdrawn,
       coalesce(sum(old_amount_eur) FILTER (WHERE change = 'withdrawn'), 0)::DECIMAL(18, 2) AS withdrawn_eur,
       count(*) FILTER (WHERE change = 'revised') AS revised,
       count(*) FILTER (WHERE change = 'newly_valid') AS newly_valid,
       count(*) FILTER (WHERE change = 'newly_quarantined') AS newly_quarantined,
       sum(engaged_delta_eur)::DECIMAL(18, 2) AS engaged_delta_eur
FROM v_changes WHERE to_is_current
GROUP BY ALL ORDER BY partner, axis
"""
"""Since each partner's previous export, per axis (a revised operation counts under its new axis)."""

QUARANTINE_TREND_SQL = """
WITH exports AS (
    SELECT partner, file_name, extraction_date, rows_read, rows_quarantined,
           row_number() OVER (PARTITION BY partner
                              ORDER BY extraction_date DESC NULLS LAST, loaded_at DESC, file_id DESC) AS rank
    FROM file_loads WHERE status = 'loaded'
)
SELECT c.partner, c.file_name, c.extraction_date, c.rows_read, c.rows_quarantined,
       p.file_name AS previous_file_name, p.extraction_date AS previous_extraction_date,
       p.rows_read AS previous_rows_read, p.rows_quarantined AS previous_rows_quarantined
FROM exports AS c
LEFT JOIN exports AS p ON p.partner = c.partner AND p.rank = 2
WHERE c.rank = 1
ORDER BY c.partner
"""
"""Rows quarantined in each partner's current export and in the one before (current_files' order)."""


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
    communes: Rows
    changes: Rows
    changes_by_axis: Rows
    quarantine_trend: Rows
    files: Rows
    files_total: int
    control_totals: Rows
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
        communes=_rows(
            con,
            "SELECT insee_code, commune, territory, population, longitude, latitude, engaged_eur, "
            "eur_per_inhabitant FROM v_commune_map ORDER BY engaged_eur DESC, insee_code",
        ),
        changes=_rows(
            con,
            "SELECT partner, from_file_name, from_extraction_date, to_file_name, to_extraction_date, "
            "count(*) FILTER (WHERE change = 'added') AS added, "
            "count(*) FILTER (WHERE change = 'withdrawn') AS withdrawn, "
            "count(*) FILTER (WHERE change = 'revised') AS revised, "
            "count(*) FILTER (WHERE change = 'newly_valid') AS newly_valid, "
            "count(*) FILTER (WHERE change = 'newly_quarantined') AS newly_quarantined, "
            "sum(engaged_delta_eur) AS engaged_delta_eur "
            "FROM v_changes WHERE to_is_current GROUP BY ALL ORDER BY partner",
        ),
        changes_by_axis=_rows(con, CHANGES_BY_AXIS_SQL),
        quarantine_trend=_rows(con, QUARANTINE_TREND_SQL),
        files=_rows(
            con,
            "SELECT file_id, partner, file_name, status, extraction_date, loaded_at, rows_read, "
            "rows_loaded, rows_quarantined, engaged_amount_eur, control_total_eur, control_total_ok, "
            "control_total_diff_eur, is_current, message "
            "FROM file_loads ORDER BY is_current DESC, CASE WHEN is_current THEN partner END, "
            "file_id DESC LIMIT ?",
            [files_shown],
        ),
        files_total=int(_rows(con, "SELECT count(*) AS n FROM file_loads")[0]["n"]),
        control_totals=_rows(
            con,
            "SELECT file_id, partner, file_name, extraction_date, is_current, control_total_eur, "
            "engaged_amount_eur, not_engaged_amount_eur, quarantined_amount_eur, control_total_diff_eur, "
            "rows_quarantined FROM v_control_totals WHERE is_current ORDER BY partner",
        ),
        rejected=_rows(
            con,
            "SELECT partner, rule, rows_quarantined FROM v_quarantine_summary WHERE is_current ORDER BY partner, rule",
        ),
    )


# -- charts -------------------------------------------------------------------------------------

Draw = Callable[[float], Figure]
"""Draws a chart for a column ``width`` inches wide (WIDE_IN or NARROW_IN)."""


@dataclass(frozen=True)
class Chart:
    title: str
    wide: bytes
    narrow: bytes
    alt: str

    def html(self) -> str:
        def uri(svg: bytes) -> str:
            return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")

        return (
            f'<figure class="chart"><picture><source media="{NARROW_MEDIA}" srcset="{uri(self.narrow)}">'
            f'<img src="{uri(self.wide)}" alt="{_esc(self.alt)}"></picture>'
            f"<figcaption>{_esc(self.title)}</figcaption></figure>"
        )


class _Canvas(FigureCanvasSVG):
    """An SVG canvas on which the layout measures text with one renderer kept for the process:
    matplotlib caches text metrics per renderer, so a label measured for one chart is not
    measured again for the next."""

    measure = RendererSVG(0, 0, io.StringIO())

    def get_renderer(self) -> RendererSVG:
        return self.measure


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    _Canvas(fig)
    return fig


def _svg(fig: Figure) -> bytes:
    """The figure laid out, then drawn once (savefig would draw it twice: once to lay it out)."""
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.dpi = 72  # the SVG's unit, a point, as savefig draws it (images keep the figure's dpi)
        engine.execute(fig)
        fig.set_layout_engine(None)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # no date: same data, same bytes
    return buf.getvalue()


def _chart(title: str, alt: str, draw: Draw) -> Chart:
    """Draw one figure twice, wide and narrow, under the report's style (a plain Figure: no
    pyplot, no GUI backend)."""
    with matplotlib.rc_context(_RC):
        return Chart(title, _svg(draw(WIDE_IN)), _svg(draw(NARROW_IN)), alt)


def _narrow(width: float) -> bool:
    return width < WIDE_IN


def _meur_tick(value: float, _pos: int | None = None) -> str:
    """An axis tick in millions: 1 500, or 2,5 when the step is a fraction of a million."""
    text = f"{value / 1e6:,.1f}".replace(",", "\u202f").replace(".", ",")
    return text.removesuffix(",0")


def _meur_axis(ax: Any, which: str = "x") -> None:
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(_meur_tick))
    (ax.set_xlabel if which == "x" else ax.set_ylabel)("M€")
    if which == "x":
        axis.set_major_locator(MaxNLocator(5, steps=[1, 2, 5, 10]))


def _legend_below(fig: Figure, handles: list[Any], labels: list[str], width: float) -> None:
    """A legend under the plot, outside it: it never covers data."""
    fig.legend(
        handles,
        [_wrap(label, 20) for label in labels] if _narrow(width) else labels,
        loc="outside lower center",
        ncols=2 if _narrow(width) else min(len(labels), 5),
        fontsize=8,
        frameon=False,
    )


def _hbars(
    width: float,
    labels: list[str],
    values: list[float],
    colours: list[str],
    notes: list[str] | None = None,
) -> Figure:
    narrow = _narrow(width)
    labels = [_wrap(label, 16) if narrow else label for label in labels]
    fig = _figure(width, max(1.6, (0.55 if narrow else 0.45) * len(labels) + 0.8))
    ax = fig.add_subplot()
    positions = list(range(len(labels)))[::-1]
    bars = ax.barh(positions, values, color=colours, height=0.65)
    ax.set_yticks(positions, labels, fontsize=8 if narrow else 9)
    _meur_axis(ax)
    top = max(values, default=0) or 1.0
    ax.set_xlim(0, top * (1.75 if narrow else 1.3))
    for bar, note in zip(bars, notes or [_meur(v) for v in values], strict=True):
        ax.text(
            bar.get_width() + top * 0.02,
            bar.get_y() + bar.get_height() / 2,
            note.replace(" · ", "\n") if narrow else note,
            va="center",
            fontsize=7 if narrow else 8,
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
        lambda w: _hbars(w, labels, values, colours, notes),
    )


def chart_partners(d: ReportData, names: dict[str, str], colours: dict[str, str]) -> Chart:
    rows = d.partners
    return _chart(
        "Montants engagés par partenaire",
        "Diagramme en barres des montants engagés par partenaire",
        lambda w: _hbars(
            w,
            [names[r["partner"]] for r in rows],
            [float(r["engaged_eur"]) for r in rows],
            [colours[r["partner"]] for r in rows],
        ),
    )


def chart_years(d: ReportData, names: dict[str, str], colours: dict[str, str]) -> Chart:
    years = sorted({int(r["year"]) for r in d.years})
    partners = sorted({r["partner"] for r in d.years})

    def draw(width: float) -> Figure:
        fig = _figure(width, 3.9 if _narrow(width) else 3.6)
        ax = fig.add_subplot()
        bottom = [0.0] * len(years)
        handles = []
        for p in partners:
            values = [0.0] * len(years)
            for r in d.years:
                if r["partner"] == p:
                    values[years.index(int(r["year"]))] = float(r["engaged_eur"])
            handles.append(ax.bar([str(y) for y in years], values, bottom=bottom, color=colours[p], width=0.7))
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        _meur_axis(ax, "y")
        if _narrow(width):
            ax.tick_params(axis="x", labelrotation=90, labelsize=8)
        ax.grid(axis="y", color="#e5e5e5")
        ax.set_axisbelow(True)
        if partners:
            _legend_below(fig, handles, [names[p] for p in partners], width)
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

    def draw(width: float) -> Figure:
        narrow = _narrow(width)
        fig = _figure(width, (0.62 if narrow else 0.5) * len(axes) + 1.8)
        ax = fig.add_subplot()
        ax.imshow(grid, cmap="Blues", aspect="auto")
        ax.set_xticks(
            range(len(partners)),
            [_wrap(names[p], 12) if narrow else names[p] for p in partners],
            rotation=90 if narrow else 20,
            ha="center" if narrow else "right",
            fontsize=7 if narrow else 9,
        )
        ax.set_yticks(
            range(len(axes)),
            [_wrap(axis_labels[a], 14) if narrow else axis_labels[a] for a in axes],
            fontsize=7 if narrow else 9,
        )
        top = max((v for row in grid for v in row), default=0) or 1.0
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                text = _meur_cell(v)
                ax.text(
                    j,
                    i,
                    text.replace("\u202fM€", "\nM€") if narrow else text,
                    ha="center",
                    va="center",
                    fontsize=6 if narrow else 8,
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

    def draw(width: float) -> Figure:
        narrow = _narrow(width)
        fig = _figure(width, max(1.6, (0.75 if narrow else 0.5) * len(rows) + 0.9))
        ax = fig.add_subplot()
        positions = list(range(len(rows)))[::-1]
        ax.barh(positions, [100.0] * len(rows), color="#e8eef4", height=0.6)
        bars = ax.barh(
            positions,
            [min(u, 100.0) for u in used],
            height=0.6,
            color=["#c0392b" if u > 100 else "#1f5f8b" for u in used],
        )
        ax.set_yticks(
            positions, [_wrap(label, 18) if narrow else label for label in labels], fontsize=7 if narrow else 9
        )
        ax.set_xlim(0, max(110.0, max(used, default=0) * 1.1) * (1.6 if narrow else 1.0))
        ax.axvline(100, color="#555555", linewidth=0.8, linestyle="--")
        ax.set_xlabel("% de l'enveloppe nationale engagé")
        for bar, r, u in zip(bars, rows, used, strict=True):
            note = f"{_pct(r['used_pct'])} de {_meur(float(r['envelope_eur']), 0)}"
            ax.text(
                min(u, 100.0) + 1 if not narrow else 101,
                bar.get_y() + bar.get_height() / 2,
                note.replace(" de ", "\nde ") if narrow else note,
                va="center",
                fontsize=7 if narrow else 8,
            )
        return fig

    return _chart(
        "Consommation des enveloppes nationales",
        "Barres de progression : part de chaque enveloppe nationale engagée",
        draw,
    )


def chart_conventions(d: ReportData) -> Chart:
    def label(r: dict[str, Any], width: int) -> str:
        communes = str(r["communes"] or "")
        return f"{communes[:width]}{'…' if len(communes) > width else ''} ({r['convention_id']})"

    def draw(width: float) -> Figure:
        narrow = _narrow(width)
        n = max(len(d.conventions_top), len(d.conventions_bottom), 1)
        fig = _figure(width, (0.32 * n + 1.2) * (2 if narrow else 1))
        first, second = fig.subplots(2, 1) if narrow else fig.subplots(1, 2)
        for ax, rows, colour, title in (
            (first, d.conventions_top, "#1f5f8b", "Les plus financées"),
            (second, d.conventions_bottom, "#c0392b", "Les moins financées"),
        ):
            positions = list(range(len(rows)))[::-1]
            ax.barh(positions, [float(r["engaged_eur"]) for r in rows], color=colour, height=0.6)
            ax.set_yticks(positions, [label(r, 20 if narrow else 28) for r in rows], fontsize=7)
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

    def draw(width: float) -> Figure:
        narrow = _narrow(width)
        fig = _figure(width, max(2.2, (0.45 if narrow else 0.4) * len(rules) + 1.3))
        ax = fig.add_subplot()
        positions = list(range(len(rules)))[::-1]
        left = [0.0] * len(rules)
        handles = []
        for p in partners:
            values = [0.0] * len(rules)
            for r in d.rejected:
                if r["partner"] == p:
                    values[rules.index(r["rule"])] = float(r["rows_quarantined"])
            shown = [i for i, v in enumerate(values) if v]  # a partner's bars only where it has rows
            handles.append(
                ax.barh(
                    [positions[i] for i in shown],
                    [values[i] for i in shown],
                    left=[left[i] for i in shown],
                    color=colours.get(p, "#777777"),
                    height=0.6,
                )
            )
            left = [a + b for a, b in zip(left, values, strict=True)]
        labels = [rule_label(r) for r in rules]
        ax.set_yticks(positions, [_wrap(label, 18) if narrow else label for label in labels], fontsize=8)
        ax.set_xlabel("lignes rejetées (exports courants)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="x", color="#e5e5e5")
        ax.set_axisbelow(True)
        _legend_below(fig, handles, [names.get(p, p) for p in partners], width)
        return fig

    return _chart(
        "Lignes rejetées par règle et partenaire",
        "Barres empilées du nombre de lignes rejetées par règle, par partenaire",
        draw,
    )


def _nice(value: float) -> float:
    """The round number (1, 2 or 5 × 10ⁿ) at or below ``value``."""
    if value <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(value))
    return max(m * power for m in (1, 2, 5) if m * power <= value)


MAP_CMAP = "YlOrRd"
MAINLAND_EXTENT = (-5.2, 9.7, 41.2, 51.2)
"""Mainland France and Corsica, in degrees (west, east, south, north): the main panel shows at least this."""


def chart_map(d: ReportData) -> Chart | None:
    """The ACV communes where the reference places them: a bubble's area is the commune's engaged
    amount, its colour the euros per inhabitant. Mainland France in the main panel, each overseas
    territory in its own inset (ANCT's positions, which keep the communes' relative places)."""
    placed = [r for r in d.communes if r["longitude"] is not None and r["latitude"] is not None]
    if not placed:
        return None
    territories = sorted({str(r["territory"]) for r in placed} - {METROPOLE})
    mainland = [r for r in placed if r["territory"] == METROPOLE]
    top = max((float(r["engaged_eur"]) for r in placed), default=0.0) or 1.0
    per_head = [float(r["eur_per_inhabitant"]) for r in placed if r["eur_per_inhabitant"] is not None]
    # The colour scale stops at the 95th percentile: one commune far above the others would
    # otherwise leave every other bubble the palest colour (the colour bar says "and more").
    per_head.sort()
    ceiling = per_head[int(0.95 * (len(per_head) - 1))] if per_head else 0.0
    vmax = ceiling or max(per_head, default=0.0) or 1.0
    norm = Normalize(0, vmax)
    beyond = bool(per_head) and per_head[-1] > vmax
    cmap = matplotlib.colormaps[MAP_CMAP]
    colours = ScalarMappable(norm=norm, cmap=cmap)
    funded = any(float(r["engaged_eur"]) > 0 for r in placed)
    legend_values = sorted({_nice(top), _nice(top / 4), _nice(top / 16)} - {0.0}, reverse=True) if funded else []

    def draw(width: float) -> Figure:
        narrow = _narrow(width)
        biggest = 150.0 if narrow else 320.0  # points² of the most financed commune

        def area(v: float) -> float:
            return biggest * v / top

        def plot(ax: Any, rows: Rows, name: str | None) -> None:
            funded = [r for r in rows if float(r["engaged_eur"]) > 0]
            unfunded = [r for r in rows if float(r["engaged_eur"]) <= 0]
            ax.scatter(
                [r["longitude"] for r in unfunded],
                [r["latitude"] for r in unfunded],
                s=8,
                facecolors="none",
                edgecolors="#8a96a3",
                linewidths=0.6,
                clip_on=False,
            )
            funded.sort(key=lambda r: -float(r["engaged_eur"]))  # small bubbles drawn over big ones
            ax.scatter(
                [r["longitude"] for r in funded],
                [r["latitude"] for r in funded],
                s=[max(area(float(r["engaged_eur"])), 4.0) for r in funded],
                c=[
                    cmap(norm(float(r["eur_per_inhabitant"]))) if r["eur_per_inhabitant"] is not None else "#b0b0b0"
                    for r in funded
                ],
                edgecolors="#3a3a3a",
                linewidths=0.4,
                alpha=0.9,
                clip_on=False,  # a bubble at the edge of a panel is drawn whole
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("#f3f6f9")
            for side in ("top", "right", "bottom", "left"):
                ax.spines[side].set_visible(True)
                ax.spines[side].set_color("#c5ced8")
            if name:
                ax.set_title(name, fontsize=7 if narrow else 8, pad=2)

        def frame(ax: Any, rows: Rows, pad: float, extent: tuple[float, float, float, float] | None = None) -> None:
            """Limits around ``rows`` (at least ``extent``: west, east, south, north), one degree of
            longitude drawn cos(latitude) as wide as one of latitude."""
            lons = [float(r["longitude"]) for r in rows]
            lats = [float(r["latitude"]) for r in rows]
            if extent is None:
                half = max(max(lons) - min(lons), max(lats) - min(lats)) / 2 + pad
                mid_lon, mid_lat = (min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2
                extent = (mid_lon - half, mid_lon + half, mid_lat - half, mid_lat + half)
            west, east = min(extent[0], min(lons) - pad), max(extent[1], max(lons) + pad)
            south, north = min(extent[2], min(lats) - pad), max(extent[3], max(lats) + pad)
            ax.set_xlim(west, east)
            ax.set_ylim(south, north)
            ax.set_aspect(1 / math.cos(math.radians((south + north) / 2)), adjustable="box")

        fig = _figure(width, 5.6 if narrow else 6.2)
        grid = fig.add_gridspec(2, max(len(territories), 5), height_ratios=[3.6 if narrow else 4.2, 1])
        main = fig.add_subplot(grid[0, :])
        insets = [fig.add_subplot(grid[1, i]) for i in range(len(territories))]
        plot(main, mainland, None)
        if mainland:
            frame(main, mainland, 0.3, MAINLAND_EXTENT)
        for name in (r["commune"] for r in sorted(mainland, key=lambda r: -float(r["engaged_eur"]))[:5]):
            r = next(x for x in mainland if x["commune"] == name)
            if float(r["engaged_eur"]) > 0:
                main.annotate(
                    str(name),
                    (r["longitude"], r["latitude"]),
                    xytext=(5, 5),
                    textcoords="offset points",
                    fontsize=6.5 if narrow else 7.5,
                    color="#1d2733",
                    path_effects=[withStroke(linewidth=2, foreground="white")],  # legible over bubbles
                )
        for ax, territory in zip(insets, territories, strict=True):
            rows = [r for r in placed if r["territory"] == territory]
            plot(ax, rows, territory)
            frame(ax, rows, 0.15)
        if funded:  # no colour to explain when nothing is engaged
            fig.colorbar(
                colours,
                ax=[main, *insets],
                location="bottom" if narrow else "right",
                shrink=0.8 if narrow else 0.45,
                aspect=30 if narrow else 20,
                extend="max" if beyond else "neither",
                label="€ engagés par habitant",
            )
        handles = [
            Line2D(
                [],
                [],
                linestyle="",
                marker="o",
                markersize=math.sqrt(area(v)),
                markerfacecolor="#dddddd",
                markeredgecolor="#3a3a3a",
                markeredgewidth=0.4,
            )
            for v in legend_values
        ]
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="o",
                markersize=math.sqrt(8),
                markerfacecolor="none",
                markeredgecolor="#8a96a3",
            )
        )
        labels = [_meur(v, 0 if v >= 1e6 else 1) for v in legend_values] + ["rien d'engagé"]
        fig.legend(
            handles,
            labels,
            loc="outside lower center" if narrow else "outside right center",
            ncols=len(labels) if narrow else 1,
            fontsize=7 if narrow else 8,
            frameon=False,
            title="Montant engagé (aire des bulles)",
            title_fontsize=7 if narrow else 8,
            columnspacing=1.0,
            handlelength=2.2,
            handletextpad=0.5,
            labelspacing=1.2,
            borderpad=0.8,
        )
        return fig

    best = max(placed, key=lambda r: float(r["engaged_eur"]))
    return _chart(
        "Carte des communes ACV : montant engagé (taille) et euros par habitant (couleur)",
        f"Carte des {len(placed)} communes Action Cœur de Ville, dont {len(placed) - len(mainland)} "
        f"outre-mer en encarts ({', '.join(territories) or 'aucune'}). Chaque bulle a une aire proportionnelle au "
        f"montant engagé dans la commune et une couleur selon les euros engagés par habitant. La plus financée : "
        f"{best['commune']}, {euros(Decimal(best['engaged_eur']))}. Le tableau des communes, sous la carte, "
        "donne les mêmes chiffres.",
        draw,
    )


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1d2733; --muted: #5b6b7b; --line: #dfe5ec; --accent: #1f5f8b; --bg: #f6f8fa; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); line-height: 1.45; font-size: 14px; overflow-wrap: break-word; }
header { background: var(--accent); color: white; padding: 28px 40px 22px; }
header h1 { margin: 0 0 6px; font-size: 24px; font-weight: 650; }
header p { margin: 2px 0; opacity: .9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 24px 48px; }
section { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 20px 24px; margin: 20px 0;
          min-width: 0; }
h2 { font-size: 18px; margin: 0 0 12px; color: var(--accent); }
h3 { font-size: 15px; margin: 18px 0 8px; }
.kpis { display: grid; grid-template-columns: minmax(0, 1fr); gap: 14px; }
@media (min-width: 641px) { .kpis { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .kpi.wide { grid-column: span 2; } }
@media (min-width: 1000px) { .kpis { grid-template-columns: minmax(0, 1.6fr) repeat(3, minmax(0, 1fr)); }
  .kpi.wide { grid-column: auto; } }
.kpi { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; min-width: 0; }
.kpi .value { font-size: 22px; font-weight: 650; white-space: nowrap; }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.amount { white-space: nowrap; }
figure.chart { margin: 8px 0 16px; }
figure.chart img { display: block; width: 100%; max-width: 720px; height: auto; margin: 0 auto; }
figcaption { text-align: center; color: var(--muted); font-size: 12px; margin-top: 4px; }
.scroll { overflow-x: auto; max-width: 100%;
  background: linear-gradient(to right, white 30%, rgba(255,255,255,0)),
              linear-gradient(to left, white 30%, rgba(255,255,255,0)) 100% 0,
              radial-gradient(farthest-side at 0 50%, rgba(0,0,0,.18), rgba(0,0,0,0)),
              radial-gradient(farthest-side at 100% 50%, rgba(0,0,0,.18), rgba(0,0,0,0)) 100% 0;
  background-repeat: no-repeat; background-size: 40px 100%, 40px 100%, 12px 100%, 12px 100%;
  background-attachment: local, local, scroll, scroll; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 6px 0 4px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef2f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.long { min-width: 14em; }
tr.total td { font-weight: 650; border-top: 2px solid var(--ink); }
.two { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 20px; }
.two > div { min-width: 0; }
.file { overflow-wrap: normal; }
.note { color: var(--muted); font-size: 12px; }
.sum { margin: 6px 0 10px; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
.ok { color: #1e7b45; } .bad { color: #b03a2e; } .warn { color: #a86b00; }
footer { max-width: 1100px; margin: 0 auto; padding: 0 24px 32px; color: var(--muted); font-size: 12px; }
@media (max-width: 800px) { .two { grid-template-columns: minmax(0, 1fr); }
  header, main, footer { padding-left: 14px; padding-right: 14px; } }
@media (max-width: 640px) { header { padding-top: 20px; padding-bottom: 16px; } header h1 { font-size: 20px; }
  section { padding: 14px 12px; margin: 14px 0; } table { font-size: 12px; } th, td { padding: 4px 6px; }
  figure.chart img { max-width: 360px; } }
@media print { body { background: white; } section { break-inside: avoid; border: none; } }
"""

Cell = tuple[str, str]  # (html, class: "num" for a number, "long" for a long text, "" otherwise)


def _table(
    headers: Sequence[str | tuple[str, bool]], rows: Sequence[Sequence[Cell]], total: Sequence[Cell] | None = None
) -> str:
    """A table in a wrapper that scrolls sideways when the table is wider than its card."""

    def th(h: str | tuple[str, bool]) -> str:
        text, num = (h, False) if isinstance(h, str) else h
        return f'<th scope="col" class="num">{_esc(text)}</th>' if num else f'<th scope="col">{_esc(text)}</th>'

    def tr(cells: Sequence[Cell], cls: str = "") -> str:
        tds = "".join(f'<td class="{kind}">{c}</td>' if kind else f"<td>{c}</td>" for c, kind in cells)
        return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"

    body = "".join(tr(r) for r in rows)
    if total is not None:
        body += tr(total, "total")
    head = "".join(th(h) for h in headers)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _eur(v: Any) -> Cell:
    return (_esc(euros(None if v is None else Decimal(v))), "num")


def _num(v: Any) -> Cell:
    return (_int(v), "num")


def _txt(v: Any, long: bool = False) -> Cell:
    return (_esc("—" if v is None else v), "long" if long else "")


def _file(name: Any, day: Any = None) -> Cell:
    """A file name that may wrap after its underscores and hyphens, with its extraction date below."""
    below = f'<br><span class="note">{_esc(_day(day))}</span>' if day is not None else ""
    return (f'<span class="file">{_breakable(name)}</span>{below}', "")


def _breakable(name: Any) -> str:
    """A file name that may break after its underscores and hyphens (it has no spaces)."""
    return _esc(name).replace("_", "_<wbr>").replace("-", "-<wbr>")


def _section(title: str, *parts: str, anchor: str = "") -> str:
    ident = f' id="{anchor}"' if anchor else ""
    return f"<section{ident}><h2>{_esc(title)}</h2>{''.join(parts)}</section>"


def _signed(v: Decimal | int) -> str:
    return ("+" if v > 0 else "") + (_int(v) if isinstance(v, int) else euros(v)).replace("-", "−")


def _trend(r: dict[str, Any]) -> Cell:
    """Quarantined rows now against the previous export: ↑ more, ↓ fewer, = as many; red when the
    share of rows quarantined grew, green when it fell (a bigger export may reject more rows)."""
    if r["previous_rows_quarantined"] is None:
        return ("premier export", "")
    delta = int(r["rows_quarantined"]) - int(r["previous_rows_quarantined"])
    now = Decimal(int(r["rows_quarantined"])) / int(r["rows_read"]) if r["rows_read"] else Decimal(0)
    before = (
        Decimal(int(r["previous_rows_quarantined"])) / int(r["previous_rows_read"])
        if r["previous_rows_read"]
        else Decimal(0)
    )
    cls = "bad" if now > before else "ok" if now < before else ""
    text = "= inchangé" if delta == 0 else f"{'↑' if delta > 0 else '↓'} {_signed(delta)}"
    return (f'<span class="{cls}">{_esc(text)}</span>' if cls else _esc(text), "num")


def _share(quarantined: Any, read: Any) -> str:
    return _pct(Decimal(100 * int(quarantined)) / int(read) if read else None)


def reconciliation(r: dict[str, Any]) -> str:
    """One file's control total in words, from the parts of v_control_totals (which add up to it)."""
    parts = (
        f"engagé {_money(r['engaged_amount_eur'])} + chargé non engagé {_money(r['not_engaged_amount_eur'])} + "
        f"lu dans les {_int(r['rows_quarantined'])} lignes en quarantaine {_money(r['quarantined_amount_eur'])}"
    )
    diff = Decimal(r["control_total_diff_eur"])
    read = Decimal(r["control_total_eur"]) - diff
    if diff == 0:
        return f'{parts} = {_money(read)}, le total de contrôle <span class="ok">✓</span>.'
    return (
        f"{parts} = {_money(read)} ; le total de contrôle, {_money(r['control_total_eur'])}, compte "
        f'<span class="bad">{_money(abs(diff))} de {"plus" if diff > 0 else "moins"}</span> qu\'aucune ligne '
        "ne donne : écart à voir avec le partenaire."
    )


def render(d: ReportData, *, source: str = "", generated_at: datetime | None = None) -> str:
    """The page for ``d``: pure formatting, no database."""
    generated_at = generated_at or datetime.now()
    names = {r["partner"]: short_partner(str(r["partner_name"])) for r in d.partners}
    for r in d.envelopes:
        names.setdefault(r["partner"], short_partner(str(r["partner_name"])))
    for r in [*d.years, *d.cube, *d.rejected, *d.changes, *d.quarantine_trend]:
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
        "map": chart_map(d),
        "envelopes": chart_envelopes(d, names),
        "conventions": chart_conventions(d),
        "rejected": chart_rejected(d, names, colours),
    }

    def chart(key: str) -> str:
        c = charts[key]
        return c.html() if c else '<p class="note">Aucune donnée.</p>'

    def partner(code: Any) -> Cell:
        return _txt(names.get(code, code) if code else "?")

    exports = (
        ", ".join(
            f"{_esc(names[r['partner']])} ({_day(r['extraction_date'])})"
            for r in d.partners
            if r["file_id"] is not None
        )
        or "aucun export chargé"
    )
    kpis = "".join(
        f'<div class="kpi{" wide" if label == "Montant engagé" else ""}"><div class="label">{_esc(label)}</div>'
        f'<div class="value">{_esc(value)}</div></div>'
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
                _txt(r["axis_label"], long=True),
                _eur(r["engaged_eur"]),
                _num(r["operations"]),
                (_pct(r["share_pct"]), "num"),
            ]
            for r in d.axes
        ],
        [_txt(""), _txt("Total"), _eur(total), _num(operations), (_pct(100) if total else "—", "num")],
    )
    partners_table = _table(
        ["Partenaire", ("Engagé", True), ("Opérations", True), "Export courant", "Extraction"],
        [
            [
                _txt(r["partner_name"], long=True),
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
        [_txt("Total"), _eur(sum(year_totals.values(), Decimal("0.00"))), _num(sum(year_ops.values()))],
    )
    matrix_partners = sorted(with_data or names)
    cube = {(int(r["axis"]), r["partner"]): Decimal(r["engaged_eur"]) for r in d.cube}

    def cell(a: int, p: str) -> Decimal:
        return cube.get((a, p), Decimal("0.00"))

    matrix_table = _table(
        ["Axe", *[(names[p], True) for p in matrix_partners], ("Total", True)],
        [
            [
                _txt(axis_labels[a]),
                *[_eur(cell(a, p)) for p in matrix_partners],
                _eur(sum((cell(a, p) for p in matrix_partners), Decimal("0.00"))),
            ]
            for a in sorted(axis_labels)
        ],
        [
            _txt("Total"),
            *[_eur(sum((cell(a, p) for a in axis_labels), Decimal("0.00"))) for p in matrix_partners],
            _eur(sum((cell(a, p) for a in axis_labels for p in matrix_partners), Decimal("0.00"))),
        ],
    )
    communes_table = _table(
        ["Commune", "Code INSEE", "Territoire", ("Population", True), ("Engagé", True), ("Par habitant", True)],
        [
            [
                _txt(r["commune"]),
                _txt(r["insee_code"]),
                _txt(r["territory"]),
                _num(r["population"]) if r["population"] is not None else _txt(None),
                _eur(r["engaged_eur"]),
                _eur(r["eur_per_inhabitant"]),
            ]
            for r in d.communes
        ],
    )
    unplaced = sum(r["longitude"] is None or r["latitude"] is None for r in d.communes)
    map_note = (
        '<p class="note">Positions des communes : référentiel ANCT, qui place les communes d\'outre-mer en '
        "encarts (leurs positions relatives sont conservées). Couleur grise : population inconnue."
        + (
            f" {unplaced} commune(s) sans position dans le référentiel ne figurent pas sur la carte."
            if unplaced
            else ""
        )
        + "</p>"
    )
    envelopes_table = _table(
        ["Partenaire", "Enveloppe", ("Montant de l'enveloppe", True), ("Engagé", True), ("Consommé", True)],
        [
            [
                partner(r["partner"]),
                _txt(r["envelope_label"] or "pas d'enveloppe nationale", long=True),
                _eur(r["envelope_eur"]),
                _eur(r["engaged_eur"]),
                (_pct(r["used_pct"]), "num"),
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
                ("Sorties de quarantaine", True),
                ("Mises en quarantaine", True),
                ("Variation de l'engagé", True),
            ],
            [
                [
                    partner(r["partner"]),
                    _file(r["from_file_name"], r["from_extraction_date"]),
                    _file(r["to_file_name"], r["to_extraction_date"]),
                    _num(r["added"]),
                    _num(r["withdrawn"]),
                    _num(r["revised"]),
                    _num(r["newly_valid"]),
                    _num(r["newly_quarantined"]),
                    (_esc(_signed(Decimal(r["engaged_delta_eur"]))), "num"),
                ]
                for r in d.changes
            ],
        )
        if d.changes
        else '<p class="note">Aucun partenaire n\'a encore deux exports chargés.</p>'
    )
    changes_axis_html = (
        _table(
            [
                "Partenaire",
                "Axe",
                ("Ajoutées", True),
                ("Montant ajouté", True),
                ("Retirées", True),
                ("Montant retiré", True),
                ("Révisées", True),
                ("Sorties de quarantaine", True),
                ("Mises en quarantaine", True),
                ("Variation de l'engagé", True),
            ],
            [
                [
                    partner(r["partner"]),
                    _txt(axis_labels.get(int(r["axis"]), r["axis"])),
                    _num(r["added"]),
                    _eur(r["added_eur"]),
                    _num(r["withdrawn"]),
                    _eur(r["withdrawn_eur"]),
                    _num(r["revised"]),
                    _num(r["newly_valid"]),
                    _num(r["newly_quarantined"]),
                    (_esc(_signed(Decimal(r["engaged_delta_eur"]))), "num"),
                ]
                for r in d.changes_by_axis
            ],
            [
                _txt("Total"),
                _txt(""),
                _num(sum(int(r["added"]) for r in d.changes_by_axis)),
                _eur(sum((Decimal(r["added_eur"]) for r in d.changes_by_axis), Decimal("0.00"))),
                _num(sum(int(r["withdrawn"]) for r in d.changes_by_axis)),
                _eur(sum((Decimal(r["withdrawn_eur"]) for r in d.changes_by_axis), Decimal("0.00"))),
                _num(sum(int(r["revised"]) for r in d.changes_by_axis)),
                _num(sum(int(r["newly_valid"]) for r in d.changes_by_axis)),
                _num(sum(int(r["newly_quarantined"]) for r in d.changes_by_axis)),
                (
                    _esc(_signed(sum((Decimal(r["engaged_delta_eur"]) for r in d.changes_by_axis), Decimal("0.00")))),
                    "num",
                ),
            ],
        )
        if d.changes_by_axis
        else ""
    )
    trend_table = _table(
        [
            "Partenaire",
            "Export précédent",
            ("Rejetées", True),
            "Export courant",
            ("Rejetées", True),
            ("Évolution", True),
        ],
        [
            [
                partner(r["partner"]),
                _file(r["previous_file_name"], r["previous_extraction_date"])
                if r["previous_file_name"]
                else _txt(None),
                (
                    f"{_int(r['previous_rows_quarantined'])} / {_int(r['previous_rows_read'])}<br>"
                    f'<span class="note">{_share(r["previous_rows_quarantined"], r["previous_rows_read"])}</span>',
                    "num",
                )
                if r["previous_file_name"]
                else _txt(None),
                _file(r["file_name"], r["extraction_date"]),
                (
                    f"{_int(r['rows_quarantined'])} / {_int(r['rows_read'])}<br>"
                    f'<span class="note">{_share(r["rows_quarantined"], r["rows_read"])}</span>',
                    "num",
                ),
                _trend(r),
            ]
            for r in d.quarantine_trend
        ],
    )

    def status(r: dict[str, Any]) -> Cell:
        cls = {"loaded": "ok", "duplicate": "warn", "rejected": "bad"}.get(r["status"], "")
        label = {"loaded": "chargé", "duplicate": "doublon", "rejected": "rejeté"}.get(r["status"], r["status"])
        return (f'<span class="{cls}">{_esc(label)}</span>', "")

    def control(r: dict[str, Any]) -> Cell:
        if r["control_total_eur"] is None:
            return ("—", "num")
        mark = (
            '<span class="ok">✓</span>'
            if r["control_total_ok"]
            else f'<span class="bad">✗ écart {_esc(euros(Decimal(r["control_total_diff_eur"])))}</span>'
        )
        return (f"{_esc(euros(Decimal(r['control_total_eur'])))}<br>{mark}", "num")

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
            ("Total de contrôle", True),
            "Courant",
        ],
        [
            [
                _file(r["file_name"]),
                partner(r["partner"]),
                status(r),
                _txt(_day(r["extraction_date"])),
                _num(r["rows_read"]),
                _num(r["rows_loaded"]),
                _num(r["rows_quarantined"]),
                _eur(r["engaged_amount_eur"]),
                control(r),
                _txt("oui" if r["is_current"] else ""),
            ]
            for r in d.files
        ],
    )
    control_html = (
        "<h3>Totaux de contrôle des exports courants</h3>"
        + "".join(
            f'<p class="sum"><strong>{_esc(names.get(r["partner"], r["partner"]))}</strong> '
            f'(<span class="file">{_esc(r["file_name"])}</span>) : {reconciliation(r)}</p>'
            for r in d.control_totals
        )
        + _table(
            [
                "Fichier",
                ("Total de contrôle", True),
                ("Engagé", True),
                ("Chargé non engagé", True),
                ("En quarantaine", True),
                ("Écart non expliqué", True),
            ],
            [
                [
                    _file(r["file_name"], r["extraction_date"]),
                    _eur(r["control_total_eur"]),
                    _eur(r["engaged_amount_eur"]),
                    _eur(r["not_engaged_amount_eur"]),
                    _eur(r["quarantined_amount_eur"]),
                    _eur(r["control_total_diff_eur"]),
                ]
                for r in d.control_totals
            ],
        )
        + '<p class="note">Le total de contrôle est la ligne de total du fichier. Il se décompose exactement en '
        "lignes chargées (engagées ou non), montants lus dans les lignes mises en quarantaine (une ligne sans "
        "montant lisible n'en apporte aucun) et un écart : ce que le total compte sans qu'aucune ligne le donne "
        "(vue <code>v_control_totals</code>).</p>"
        if d.control_totals
        else ""
    )
    rejected_table = _table(
        ["Partenaire", "Règle", "Code", ("Lignes rejetées", True)],
        [
            [
                partner(r["partner"]),
                _txt(rule_label(r["rule"])),
                (f"<code>{_esc(r['rule'])}</code>", ""),
                _num(r["rows_quarantined"]),
            ]
            for r in d.rejected
        ],
    )
    read = sum(int(r["rows_read"] or 0) for r in d.files if r["is_current"])
    quarantined = sum(int(r["rows_quarantined"] or 0) for r in d.files if r["is_current"])
    quality_note = (
        f"Exports courants : {_int(read)} lignes lues, {_int(quarantined)} rejetées "
        f"({_share(quarantined, read)}). Chaque ligne rejetée est "
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
                "Carte des communes",
                chart("map"),
                map_note,
                f"<details><summary>Les {len(d.communes)} communes en tableau</summary>{communes_table}</details>",
                anchor="carte",
            ),
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
                "<h3>Opérations ajoutées et retirées, par partenaire et par axe</h3>" if changes_axis_html else "",
                changes_axis_html,
                '<p class="note">Pour chaque partenaire, son export courant comparé au précédent : opérations '
                "ajoutées, retirées ou révisées (montant, axe, commune, année, instrument ou statut ; une opération "
                "révisée compte sous son nouvel axe). <code>cdv-etl changes --partner …</code> en donne le "
                "détail.</p>",
                "<h3>Lignes rejetées : export courant et export précédent</h3>",
                trend_table,
                anchor="evolutions",
            ),
            _section(
                "Qualité des données",
                f'<p class="note">{quality_note}</p>',
                chart("rejected"),
                "<h3>Lignes rejetées par règle (exports courants)</h3>",
                rejected_table,
                control_html,
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
<code>v_commune_map</code>, <code>v_envelope_consumption</code>, <code>v_changes</code>, <code>file_loads</code>,
<code>v_control_totals</code>, <code>v_quarantine_summary</code>.</p>
</footer>
</body>
</html>
"""


def build_report(
    con_or_path: duckdb.DuckDBPyConnection | Path | str | DuckLake, *, generated_at: datetime | None = None
) -> str:
    """The report's HTML, from an open connection, a warehouse file or a lake (opened read-only)."""
    if isinstance(con_or_path, str | Path | DuckLake):
        target = con_or_path if isinstance(con_or_path, DuckLake) else Path(con_or_path)
        with read_only(target) as con:
            return render(read_report_data(con), source=str(target), generated_at=generated_at)
    row = con_or_path.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    source = mask_secrets(str(row[0] or "")) if row else ""  # a lake's path is its libpq string
    return render(read_report_data(con_or_path), source=source, generated_at=generated_at)

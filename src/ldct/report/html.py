"""Render :class:`ReportData` as ONE self-contained static HTML file.

Everything is inline: CSS, the viewer's JavaScript, figures as base64 PNG, and the viewer's slices as
raw int16 HU (rounded) compressed with zlib and base64-encoded; the browser inflates them with
``DecompressionStream`` and applies the chosen window on a canvas, so window presets (soft tissue, lung,
bone, brain) cost nothing extra in file size. The page loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from ldct import __version__
from ldct.atomic import atomic_file
from ldct.hu import DISPLAY_WINDOWS
from ldct.report.data import PANELS, Figure, MetricTable, ReportData, ViewerCase

#: window of the difference panel (HU)
DIFF_WINDOW = (-100.0, 100.0)

#: characters that must not appear literally in JSON inside a <script> element: "<" would let a label
#: such as "<!--<script>" or "</script>" change how the HTML parser reads the element; ">" and "&" for
#: good measure, U+2028/2029 because older JavaScript parsers end lines there. JSON decodes them back.
_JSON_IN_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_for_script(obj: object) -> str:
    """``obj`` as compact JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(obj, separators=(",", ":"))
    for ch, esc in _JSON_IN_HTML.items():
        text = text.replace(ch, esc)
    return text


def _static(name: str) -> str:
    return (resources.files("ldct.report") / name).read_text(encoding="utf-8")


def encode_slice(hu: np.ndarray) -> str:
    """(y, x) HU -> base64 of zlib-compressed little-endian int16 (HU rounded and clipped to int16)."""
    q = np.clip(np.rint(hu), -32768, 32767).astype("<i2")
    return base64.b64encode(zlib.compress(q.tobytes(), 6)).decode("ascii")


def viewer_payload(cases: list[ViewerCase], default_window: str = "soft") -> dict:
    """The JSON the viewer script reads (``<script type="application/json" id="viewer-data">``)."""
    out = []
    for c in cases:
        z, h, w = next(iter(c.panels.values())).shape
        order = [p for p in PANELS if p in c.panels]
        titles = {p: c.titles.get(p, PANELS[p]) for p in order}
        diff = c.difference
        if diff:
            titles["difference"] = c.titles.get("difference", f"{titles[diff[0]]} \u2212 {titles[diff[1]]}"
                                                f" [{DIFF_WINDOW[0]:g}, {DIFF_WINDOW[1]:g}] HU")
        res = c.residual
        if res:
            titles["residual"] = c.titles.get("residual", f"removed: {titles[res[0]]} \u2212 {titles[res[1]]}"
                                              f" [{DIFF_WINDOW[0]:g}, {DIFF_WINDOW[1]:g}] HU")
        out.append({
            "name": c.name, "slices": z, "height": h, "width": w, "order": order, "titles": titles,
            "difference": list(diff) if diff else None, "residual": list(res) if res else None,
            "slice_labels": [str(s) for s in c.slice_labels] + [""] * (z - len(c.slice_labels)),
            "slice_notes": [str(s) for s in c.slice_notes] + [""] * (z - len(c.slice_notes)),
            "panels": {p: [encode_slice(c.panels[p][k]) for k in range(z)] for p in order},
        })
    return {
        "cases": out,
        "windows": {k: [w.lo, w.hi] for k, w in DISPLAY_WINDOWS.items()},
        "default_window": default_window,
        "diff_window": list(DIFF_WINDOW),
    }


def _fmt(v: object, scale: float | None = None) -> str:
    """A cell; floats of one column share one format, chosen by the column's largest magnitude ``scale``."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "\u2013"
        a = abs(v) if scale is None else scale
        return f"{v:.4f}" if a < 1 else f"{v:.2f}" if a < 1000 else f"{v:.4g}"
    return str(v)


def _column_scales(t: MetricTable) -> list[float | None]:
    out: list[float | None] = []
    for j in range(len(t.columns)):
        vals = [abs(r[j]) for r in t.rows if isinstance(r[j], float) and math.isfinite(r[j])]
        out.append(max(vals) if vals else None)
    return out


def _best_cells(t: MetricTable) -> set[tuple[int, int]]:
    """(row, col) of the best value per column within each group (see MetricTable.better)."""
    best: set[tuple[int, int]] = set()
    gcol = t.columns.index(t.group_by) if t.group_by in t.columns else None
    groups: dict[object, list[int]] = {}
    for i, row in enumerate(t.rows):
        groups.setdefault(row[gcol] if gcol is not None else None, []).append(i)
    if "n" in t.columns:  # compare only rows scored on the same slices (BM3D often runs on fewer)
        ncol = t.columns.index("n")
        for key, rows in list(groups.items()):
            counts = [t.rows[i][ncol] for i in rows]
            common = max(set(counts), key=counts.count)
            groups[key] = [i for i in rows if t.rows[i][ncol] == common]
    for j, col in enumerate(t.columns):
        sign = t.better.get(col)
        if not sign:
            continue
        for rows in groups.values():
            vals = [(t.rows[i][j], i) for i in rows if isinstance(t.rows[i][j], (int, float))
                    and not (isinstance(t.rows[i][j], float) and math.isnan(t.rows[i][j]))]
            if len(vals) > 1:
                target = max(v for v, _ in vals) if sign > 0 else min(v for v, _ in vals)
                best.update((i, j) for v, i in vals if v == target)
    return best


def render_table(t: MetricTable) -> str:
    best = _best_cells(t)
    scales = _column_scales(t)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, v in enumerate(row):
            cls = ' class="num best"' if (i, j) in best else ' class="num"' if isinstance(v, (int, float)) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v, scales[j]))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    table = (f'<div class="scroll"><table class="metrics"><thead><tr>{head}</tr></thead>'
             f"<tbody>{''.join(body)}</tbody></table></div>")
    if t.collapsed:
        return f"<details><summary>{html.escape(t.title)}</summary>{note}{table}</details>"
    return f"<h3>{html.escape(t.title)}</h3>{note}{table}"


def render_viewer(cases: list[ViewerCase]) -> str:
    if not cases:
        return '<p class="note">No images to show (this folder has no saved slices).</p>'
    opts = "".join(f'<option value="{i}">{html.escape(c.name)}</option>' for i, c in enumerate(cases))
    wins = "".join(f'<button type="button" data-window="{k}" title="{html.escape(w.describe())}">{k}</button>'
                   for k, w in DISPLAY_WINDOWS.items())
    panels = "".join(
        f'<figure class="panel" data-panel="{p}"><figcaption class="panel-title">{html.escape(t)}</figcaption>'
        f'<canvas data-panel="{p}"></canvas></figure>'
        for p, t in list(PANELS.items()) + [("difference", "difference"), ("residual", "removed")]
    )
    return (
        '<div id="viewer"><div class="controls">'
        f'<label>case <select id="v-case">{opts}</select></label>'
        f'<span id="v-windows">window {wins}</span>'
        f'<label class="slider">slice <input type="range" id="v-slice" min="0" max="0" value="0" step="1"></label>'
        '<span id="v-slice-label"></span></div>'
        f'<div class="panels">{panels}</div><p id="v-note" class="note"></p></div>'
    )


def _figure(f: Figure) -> str:
    caption = html.escape(f.title) + (" \u2014 " + html.escape(f.caption) if f.caption else "")
    src = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
    return f'<figure class="plot"><img alt="{html.escape(f.title)}" src="{src}"><figcaption>{caption}</figcaption></figure>'


def render_html(data: ReportData, *, default_window: str = "soft") -> str:
    """The complete HTML document (str)."""
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in data.facts)
    tables = "".join(render_table(t) for t in data.tables) or '<p class="note">No metrics found.</p>'
    figs = "".join(_figure(f) for f in data.figures) or (
        '<p class="note">No training logs or per-slice metrics to plot.</p>'
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    payload = json_for_script(viewer_payload(data.cases, default_window))
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(data.title)}</title>
<style>{_static("report.css")}</style></head>
<body>
<header><h1>{html.escape(data.title)}</h1>
<p class="note">{html.escape(data.source)} &middot; ldct {__version__} &middot; {stamp}</p></header>
<section id="facts"><table class="facts">{facts}</table></section>
<section id="metrics"><h2>Metrics</h2>{tables}</section>
<section id="images"><h2>Images</h2>{render_viewer(data.cases)}</section>
<section id="plots"><h2>Curves and plots</h2><div class="plots">{figs}</div></section>
{f'<section id="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else ""}
<script type="application/json" id="viewer-data">{payload}</script>
<script>{_static("viewer.js")}</script>
</body></html>
"""


def write_report(data: ReportData, out: str | Path, *, overwrite: bool = True) -> Path:
    """Write the report atomically; returns its path."""
    out = Path(out)
    text = render_html(data)
    with atomic_file(out, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out

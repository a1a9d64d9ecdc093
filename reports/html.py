"""The self-contained HTML report: tables plus figures embedded as base64 PNG, no external resources.

A tiny inline script marks ``<body data-images-ok="k/n">`` once every image has decoded
(naturalWidth > 0), so a headless browser test can check the page rendered, not only parsed.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from reports.collect import prompt_label
from reports.render import format_n, format_value
from reports.tables import Cell, Table

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .86rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.src { text-align: left; }
thead th { background: #f3f3f3; }
tr.measured td:first-child { font-weight: 600; }
tr.reported, tr.derived { background: #f6f8fc; color: #334; }
tr.not-reported { background: #fafafa; color: #888; font-style: italic; }
.ci { color: #666; font-size: .78rem; display: block; }
.notes { font-size: .82rem; color: #444; } .notes li { margin: .15rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.meta { font-size: .8rem; color: #555; } code { font-size: .8rem; }
"""

_IMAGES_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', ok + '/' + imgs.length);
});
"""


def _cell_html(cell: Cell) -> str:
    if cell.text is not None or cell.value is None or cell.fmt != "score":
        return html.escape(format_value(cell))
    main = f"{cell.value:.{cell.digits}f}"
    extra = []
    if cell.ci_low is not None and cell.ci_high is not None:
        extra.append(f"[{cell.ci_low:.{cell.digits}f}, {cell.ci_high:.{cell.digits}f}]")
    if n := format_n(cell):
        extra.append(n)
    return html.escape(main) + (f'<span class="ci">{html.escape(" ".join(extra))}</span>' if extra else "")


def table_html(table: Table) -> str:
    labels = [table.row_header, *(["source"] if table.show_source else []), *(c.label for c in table.columns)]
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = []
    for row in table.rows:
        css = row.source.replace(" ", "-")
        title = f' title="{html.escape(row.reference)}"' if row.reference else ""
        label = html.escape(row.label) + (f'<span class="ci">{html.escape(row.note)}</span>' if row.note else "")
        cells = "".join(f"<td>{_cell_html(row.cells.get(c.key, Cell(text='—')))}</td>" for c in table.columns)
        source = f'<td class="src">{html.escape(row.source)}</td>' if table.show_source else ""
        body.append(f'<tr class="{css}"{title}><td>{label}</td>{source}{cells}</tr>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
    return (
        f'<h2 id="{html.escape(table.key)}">{html.escape(table.title)}</h2>\n'
        f'<table data-table="{html.escape(table.key)}"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>\n' + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
    )


def figure_html(png: bytes, caption: str, name: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" data-figure="{html.escape(name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>\n'
    )


def report_html(title: str, preamble: Sequence[str], tables: Sequence[Table], figures: Sequence[tuple[str, bytes, str]], provenance: Sequence[dict]) -> str:
    """``figures``: (name, png bytes, caption)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style><script>{_IMAGES_SCRIPT}</script></head>",
        f"<body><h1>{html.escape(title)}</h1>",
        "".join(f'<p class="meta">{html.escape(p)}</p>' for p in preamble),
        '<p class="meta">Rows marked <b>measured</b> were computed from this run\'s files; <i>reported</i> rows are '
        "the paper's printed numbers; <i>not reported</i> means the paper shows the system only as a bar.</p>",
    ]
    for table in tables:
        parts.append(table_html(table))
    if figures:
        parts.append('<h2 id="figures">Figures</h2>')
        parts += [figure_html(png, caption, name) for name, png, caption in figures]
    if provenance:
        parts.append('<h2 id="provenance">Measured systems</h2><table data-table="provenance"><thead><tr>'
                     "<th>system</th><th>role</th><th>model id</th><th>backend</th><th>model args</th><th>prompt</th><th>git</th><th>tasks (n of N, version)</th></tr></thead><tbody>")
        for p in provenance:
            tasks = "; ".join(f"{t} {v['n']}/{v['of']} v{v['version']}" for t, v in p["tasks"].items())
            args = ", ".join(f"{k}={v}" for k, v in (p.get("model_args") or {}).items())
            parts.append(
                "<tr>" + "".join(f'<td class="src">{html.escape(str(x or ""))}</td>' for x in (
                    p["label"], p["role"], p["model_id"], p.get("backend"), args, prompt_label(p), p.get("git_hash"), tasks,
                )) + "</tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

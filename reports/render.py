"""Text renderings of the report tables: Markdown (PRs), long-format CSV (spreadsheets), rich (terminal)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table as RichTable

from reports.tables import MEASURED, Cell, Table

CSV_FIELDS = (
    "table", "row", "source", "reference", "column", "value", "ci_low", "ci_high", "n", "n_of", "n_failed", "text", "note",
)


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_n(cell: Cell) -> str:
    if cell.n is None:
        return ""
    n = f"n={cell.n}" + (f"/{cell.n_of}" if cell.n_of and cell.n_of != cell.n else "")
    if cell.n_failed:
        n += f", {cell.n_failed} failed"
    return n


def format_value(cell: Cell, *, ci: bool = True, n: bool = True) -> str:
    if cell.text is not None:
        return cell.text
    if cell.value is None:
        # e.g. a judged comparison whose every judgment failed: say how many, not just "—"
        return "—" + (f" ({suffix})" if n and (suffix := format_n(cell)) else "")
    if cell.fmt == "count":
        return str(int(cell.value))
    if cell.fmt == "p":
        return format_p(cell.value)
    if cell.fmt == "signed":
        return "0.000" if round(cell.value, 3) == 0 else f"{cell.value:+.3f}"
    out = f"{cell.value:.{cell.digits}f}"
    if ci and cell.ci_low is not None and cell.ci_high is not None:
        out += f" [{cell.ci_low:.{cell.digits}f}, {cell.ci_high:.{cell.digits}f}]"
    if n and (suffix := format_n(cell)):
        out += f" ({suffix})"
    return out


def _source_label(source: str) -> str:
    return "**measured**" if source == MEASURED else source


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    header = [table.row_header, *(["source"] if table.show_source else []), *(c.label for c in table.columns)]
    lines = [f"### {table.title}", "", "| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        values = [format_value(row.cells.get(c.key, Cell(text="—"))) for c in table.columns]
        label = row.label + (f" ({row.note})" if row.note and row.source != MEASURED else "")
        source = [_source_label(row.source)] if table.show_source else []
        lines.append("| " + " | ".join(_md_escape(v) for v in [label, *source, *values]) + " |")
    notes = [f"{row.label}: {row.note}" for row in table.rows if row.note and row.source == MEASURED]
    if table.notes or notes:
        lines.append("")
        lines += [f"- {_md_escape(n)}" for n in [*table.notes, *notes]]
    return "\n".join(lines) + "\n"


def report_markdown(title: str, preamble: Sequence[str], tables: Sequence[Table], figures: Sequence[tuple[str, str]], appendix: str) -> str:
    parts = [f"# {title}", "", *preamble, ""]
    for table in tables:
        parts.append(table_markdown(table))
    if figures:
        parts.append("### Figures\n")
        parts += [f"![{caption}]({path})\n" for path, caption in figures]
    parts.append(appendix)
    return "\n".join(parts)


def report_csv(tables: Sequence[Table]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for table in tables:
        for row in table.rows:
            for column in table.columns:
                cell = row.cells.get(column.key)
                if cell is None:
                    continue
                writer.writerow({
                    "table": table.key, "row": row.label, "source": row.source, "reference": row.reference,
                    "column": column.key, "value": cell.value, "ci_low": cell.ci_low, "ci_high": cell.ci_high,
                    "n": cell.n, "n_of": cell.n_of, "n_failed": cell.n_failed, "text": cell.text, "note": row.note,
                })
    return buffer.getvalue()


def print_rich(tables: Sequence[Table], console=None) -> None:
    """The measured rows of every table, compactly (value and interval); the files have everything."""
    console = console or Console()
    for table in tables:
        rows = [r for r in table.rows if r.source == MEASURED]
        if not rows:
            continue
        rt = RichTable(title=table.title, title_justify="left")
        rt.add_column(table.row_header)
        for c in table.columns:
            rt.add_column(c.label, justify="right")
        for row in rows:
            rt.add_row(row.label, *(_compact(row.cells.get(c.key, Cell(text="—"))) for c in table.columns))
        console.print(rt)


def _compact(cell: Cell) -> str:
    text = format_value(cell, ci=False, n=False)
    if cell.text is None and cell.value is not None and cell.ci_low is not None and cell.ci_high is not None and cell.fmt == "score":
        text += f"\n[{cell.ci_low:.2f}, {cell.ci_high:.2f}]"
    elif cell.value is None and cell.n_failed:
        text += f"\n{cell.n_failed} failed"
    return text

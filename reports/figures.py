"""The report's figures (matplotlib, Agg backend): per-stage progression, HHH categories, Vicuna win/tie/lose.

Each function takes the already-built tables, so a figure shows exactly the table's numbers and
intervals; it returns PNG bytes, or None when the table has nothing to draw.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on CI or servers; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402

from reports.tables import MEASURED, REPORTED, Cell, Table  # noqa: E402

DPI = 110


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _has_number(cell: Cell | None) -> bool:
    return cell is not None and cell.text is None and cell.value is not None


def _errors(cells: list[Cell]) -> list[list[float]]:
    """matplotlib's asymmetric yerr from the cells' intervals (0 where there is none)."""
    low = [c.value - c.ci_low if c.ci_low is not None else 0.0 for c in cells]
    high = [c.ci_high - c.value if c.ci_high is not None else 0.0 for c in cells]
    return [low, high]


def progression(summary: Table) -> bytes | None:
    """Headline numbers per checkpoint, with 95% intervals: accuracies left, Vicuna relative score right."""
    labels = [r.label for r in summary.rows]

    def series(cols):
        out = []
        for col in cols:
            points = [(i, r.cells.get(col.key)) for i, r in enumerate(summary.rows)]
            points = [(i, c) for i, c in points if _has_number(c)]
            if points:
                out.append((col, points))
        return out

    panels = [
        (s, ylabel) for s, ylabel in (
            (series([c for c in summary.columns if not c.key.startswith("vicuna:")]), "accuracy"),
            (series([c for c in summary.columns if c.key.startswith("vicuna:")]), "relative score"),
        ) if s
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False)
    for ax, (lines, ylabel) in zip(axes[0], panels, strict=True):
        for offset, (col, points) in enumerate(lines):
            xs = [i + (offset - (len(lines) - 1) / 2) * 0.06 for i, _ in points]  # dodge overlapping bars
            cells = [c for _, c in points]
            ax.errorbar(xs, [c.value for c in cells], yerr=_errors(cells), marker="o", capsize=4, label=col.label)
        ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
        ax.set_ylabel(ylabel + " (95% CI)")
        ax.grid(axis="y", alpha=0.3)
        if ylabel == "accuracy":
            ax.set_ylim(0, 1)
        else:
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")  # parity with the opponent
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Per-stage progression (measured)")
    return _png(fig)


def hhh_categories(table: Table) -> bytes | None:
    """Grouped bars per HHH category: measured systems (solid, 95% CI) and reported rows (hatched)."""
    keys = [c.key for c in table.columns]
    rows = [r for r in table.rows if r.source == MEASURED and any(_has_number(r.cells.get(k)) for k in keys)]
    rows += [r for r in table.rows if r.source == REPORTED and all(_has_number(r.cells.get(k)) for k in keys)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(keys) + 0.25 * len(rows) * len(keys)), 4.4))
    width = 0.8 / len(rows)
    for j, row in enumerate(rows):
        xs, cells = [], []
        for i, k in enumerate(keys):
            cell = row.cells.get(k)
            if _has_number(cell):
                xs.append(i - 0.4 + width * (j + 0.5))
                cells.append(cell)
        measured = row.source == MEASURED
        ax.bar(
            xs, [c.value for c in cells], width, label=f"{row.label} ({row.source})",
            yerr=_errors(cells) if measured else None, capsize=3,
            hatch=None if measured else "//", alpha=1.0 if measured else 0.55, edgecolor="black", linewidth=0.4,
        )
    ax.set_xticks(range(len(keys)), [c.label for c in table.columns])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")  # chance on a two-option item
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.set_title("HHH Eval per category (measured: solid, 95% CI; paper-reported: hatched)")
    return _png(fig)


def vicuna_outcomes(table: Table) -> bytes | None:
    """Stacked win/tie/lose bars per judged comparison (measured rows only)."""
    # comparisons with no validly judged question have nothing to draw (their n_failed is in the table)
    rows = [r for r in table.rows if r.source == MEASURED and _has_number(r.cells.get("wins")) and r.cells["wins"].n]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * len(rows) + 1.6))
    colors = {"wins": "#4c9f50", "ties": "#bdbdbd", "losses": "#d9534f"}
    for i, row in enumerate(rows):
        left = 0.0
        for key, color in colors.items():
            value = row.cells[key].value or 0
            ax.barh(i, value, left=left, color=color, label=key if i == 0 else None)
            if value:
                ax.text(left + value / 2, i, str(int(value)), ha="center", va="center", fontsize=8)
            left += value
    ax.set_yticks(range(len(rows)), [r.label for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("questions")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title("Vicuna-80 judged outcomes (failed judgments excluded)")
    return _png(fig)

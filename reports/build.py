"""``selfalign report``: run directories in, ``report.{md,csv,html,json}`` + ``figures/*.png`` out.

Output layout of ``--output DIR``:
``report.md``    the tables for a PR (measured rows beside reported ones, intervals, n, paired tests)
``report.csv``   the same cells in long format (table, row, source, column, value, ci_low, ci_high, n, ...)
``report.html``  self-contained page: tables + figures embedded as base64 PNG
``report.json``  the tables and the measured systems' provenance, for scripts
``figures/``     progression.png, hhh_categories.png, vicuna_outcomes.png (those with data)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.common import stats
from harness.common.dirlock import output_lock
from harness.common.errors import UserError
from harness.common.jsonl import write_json_atomic
from harness.common.preflight import check_output_dir
from harness.common.provenance import git_hash
from reports import figures as figs
from reports.baselines import load_paper_reported
from reports.collect import collect, prompt_label
from reports.html import report_html
from reports.render import print_rich, report_csv, report_markdown
from reports.tables import MEASURED, Table, build_tables

REPORT_VERSION = "1"


@dataclass
class ReportOptions:
    title: str = "SELF-ALIGN evaluation report"
    baseline_ids: list[str] = field(default_factory=list)  # measured model ids that are baselines
    include_reported: bool = True  # the paper's rows beside ours
    terminal: bool = True  # print the tables with rich


@dataclass
class ReportOutputs:
    directory: Path
    markdown: Path
    csv: Path
    html: Path
    json: Path
    figures: list[Path]
    tables: list[Table]


def _figures(tables: list[Table]) -> list[tuple[str, bytes, str]]:
    by_key = {t.key: t for t in tables}
    made = []
    for name, key, draw, caption in (
        ("progression", "summary", figs.progression, "Per-stage progression of the headline scores (95% CI)."),
        ("hhh_categories", "hhh", figs.hhh_categories, "HHH Eval per category: measured (solid, 95% CI) vs paper-reported (hatched)."),
        ("vicuna_outcomes", "vicuna80", figs.vicuna_outcomes, "Vicuna-80 judged wins / ties / losses per comparison."),
    ):
        if key in by_key and (png := draw(by_key[key])) is not None:
            made.append((name, png, caption))
    return made


def _appendix_markdown(systems: list[dict], notes: list[str]) -> str:
    lines = ["### Measured systems", "", "| system | role | model id | backend | model args | prompt | git | tasks (n of N, version) |", "|---|---|---|---|---|---|---|---|"]
    for p in systems:
        tasks = "; ".join(f"{t} {v['n']}/{v['of']} v{v['version']}" for t, v in p["tasks"].items())
        args = ", ".join(f"{k}={v}" for k, v in (p.get("model_args") or {}).items())
        cells = [p["label"], p["role"], p["model_id"], p.get("backend") or "", args, prompt_label(p), p.get("git_hash") or "", tasks]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def build_report(inputs: Sequence[str | Path], output: str | Path, options: ReportOptions | None = None) -> ReportOutputs:
    options = options or ReportOptions()
    out = check_output_dir(output)
    collection = collect(list(inputs), options.baseline_ids)
    reported = load_paper_reported() if options.include_reported else None
    tables = build_tables(collection, reported)
    if not _has_measurements(tables):
        raise UserError(
            f"no scores to report in {', '.join(map(str, inputs))}: the systems found ({', '.join(s.model_id for s in collection.systems)}) "
            "have no scored results (answers alone need `selfalign judge` first)"
        )
    with output_lock(out, "selfalign report"):
        return _write_report(inputs, out, options, collection, tables)


def _has_measurements(tables: list[Table]) -> bool:
    return any(
        row.source == MEASURED and any(cell.value is not None for cell in row.cells.values())
        for table in tables
        for row in table.rows
    )


def _write_report(inputs, out: Path, options: ReportOptions, collection, tables: list[Table]) -> ReportOutputs:
    (out / "figures").mkdir(parents=True, exist_ok=True)
    made = _figures(tables)
    figure_paths = []
    for name, png, _ in made:
        path = out / "figures" / f"{name}.png"
        path.write_bytes(png)
        figure_paths.append(path)

    systems = [s.describe() for s in collection.systems]
    preamble = [
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by selfalign (git {git_hash() or 'unknown'}) "
        f"from {', '.join(str(Path(p)) for p in inputs)}.",
        f"Uncertainty: {round(stats.CONFIDENCE * 100)}% intervals, Wilson for accuracies, percentile bootstrap "
        f"({stats.BOOTSTRAP_RESAMPLES} resamples, seed {stats.BOOTSTRAP_SEED}) for graded scores and relative scores; "
        "n = items scored (of the benchmark's total when a subset was run).",
    ]
    title = options.title
    markdown = report_markdown(
        title, preamble, tables, [(f"figures/{name}.png", caption) for name, _, caption in made],
        _appendix_markdown(systems, collection.notes),
    )
    outputs = ReportOutputs(out, out / "report.md", out / "report.csv", out / "report.html", out / "report.json", figure_paths, tables)
    _write_text(outputs.markdown, markdown)
    _write_text(outputs.csv, report_csv(tables))
    _write_text(outputs.html, report_html(title, preamble, tables, made, systems))
    write_json_atomic(outputs.json, {
        "report_version": REPORT_VERSION,
        "inputs": [str(p) for p in inputs],
        "systems": systems,
        "notes": collection.notes,
        "tables": [asdict(t) for t in tables],
    })
    if options.terminal:
        print_rich(tables)
    return outputs


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

"""Our lm-eval tasks: where they live, their short names, what each needs, and a TaskManager that sees only them.

Task YAMLs live in the top-level ``tasks/`` package. lm-eval names carry a ``selfalign_`` prefix
so they never collide with lm-eval's built-ins (``truthfulqa_mc1`` is also a built-in); at our
CLI the prefix is optional.

``BENCHMARKS`` says, per runnable task name, what the rest of the code must know about it:
whether it generates text, which judge scores it, which report table shows it, how many
documents it has. ``selfalign run`` and the report read these entries instead of task-name
literals, so a new benchmark is its ``tasks/<name>/`` folder plus one entry here (README:
"Adding a benchmark").
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.common.registry import unknown_name_error

PREFIX = "selfalign_"
TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"

PAIRWISE_JUDGE = "pairwise"  # `selfalign judge`: answers against an opponent's, Vicuna/FastChat reviewer
TRUTHFULQA_JUDGE = "truthfulqa"  # `selfalign judge truthfulqa`: truth + info judges per answer
JudgeKind = Literal["pairwise", "truthfulqa"]


@dataclass(frozen=True)
class Benchmark:
    """What one runnable task (or group/tag) needs; ``name`` is its short name."""

    name: str
    title: str
    n_docs: int  # documents in the full benchmark: a fractional limit is a share of these (lm-eval: ceil)
    generates: bool = False  # generate_until: answers text, so generation-only (API) models run it too
    judge: JudgeKind | None = None  # the judge `selfalign run` applies to its answers
    # key of its table in reports/tables.py and configs/baselines/paper_reported.yaml; None: the
    # report shows it in the generic table of `report_metrics`
    paper_table: str | None = None
    takes_gen_preset: bool = False  # eval.gen_preset applies (tasks/vicuna80 GEN_PRESETS); others run "paper"
    members: tuple[str, ...] = ()  # short names of a group's / tag's tasks (their results are its results)
    report_metrics: tuple[str, ...] = ()  # per-item 0/1 metrics the generic report table shows


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("truthfulqa_mc1", "TruthfulQA MC1", 817, paper_table="truthfulqa_mc1"),
    Benchmark("truthfulqa_mc2", "TruthfulQA MC2", 817, paper_table="truthfulqa_mc1"),
    Benchmark("truthfulqa_tf", "TruthfulQA MC1, paper protocol", 817, paper_table="truthfulqa_mc1"),
    Benchmark("truthfulqa", "TruthfulQA multiple choice (tag)", 817, paper_table="truthfulqa_mc1",
              members=("truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_tf")),
    Benchmark("truthfulqa_gen", "TruthfulQA generation", 817, generates=True, judge=TRUTHFULQA_JUDGE,
              paper_table="truthfulqa_generation"),
    Benchmark("hhh", "HHH Eval", 221, paper_table="hhh",
              members=("hhh_harmless", "hhh_helpful", "hhh_honest", "hhh_other")),
    Benchmark("vicuna80", "Vicuna-80", 80, generates=True, judge=PAIRWISE_JUDGE, paper_table="vicuna80",
              takes_gen_preset=True),
)}


def find_benchmark(name: str) -> Benchmark | None:
    """The entry of a task, group or tag (prefix optional; a group's member resolves to the group), or None."""
    short = short_name(name.strip())
    if short in BENCHMARKS:
        return BENCHMARKS[short]
    return next((entry for entry in BENCHMARKS.values() if short in entry.members), None)


def benchmark(name: str) -> Benchmark:
    """``find_benchmark`` or a did-you-mean error (what a run needs to know about every task it runs)."""
    found = find_benchmark(name)
    if found is not None:
        return found
    short = short_name(name.strip())
    known = [*BENCHMARKS, *(m for entry in BENCHMARKS.values() for m in entry.members)]
    raise unknown_name_error("benchmark", short, known, "a new benchmark needs an entry in harness/task_registry.py BENCHMARKS")


def judged_tasks(tasks: list[str], judge: JudgeKind) -> list[str]:
    """The tasks among ``tasks`` (as given) whose answers ``judge`` scores."""
    return [t for t in tasks if benchmark(t).judge == judge]


def doc_count(task: str, limit: float | None) -> int | None:
    """Documents lm-eval evaluates under ``limit``: a fraction of the benchmark rounds up, as lm-eval does."""
    if limit is None:
        return None
    if limit < 1:
        return math.ceil(benchmark(task).n_docs * limit)
    return int(limit)


def task_manager(metadata: dict[str, Any] | None = None):
    """A TaskManager over our tasks only (skips indexing lm-eval's ~15k built-ins)."""
    # deferred: lm_eval.tasks pulls datasets, pandas and sacrebleu (seconds); `selfalign report`
    # and `ls models` use this module's names only
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata or {})


@functools.cache
def known_names() -> tuple[str, ...]:
    return tuple(task_manager().all_tasks)


def short_name(name: str) -> str:
    return name.removeprefix(PREFIX)


def resolve_task_names(names: list[str] | str) -> list[str]:
    """Full lm-eval names for user-given names (prefix optional); did-you-mean on unknown ones."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    known = set(known_names())
    out = []
    for raw in names:
        name = raw.strip()
        full = name if name in known else PREFIX + name
        if full not in known:
            raise unknown_name_error("task", name, sorted({short_name(k) for k in known}), "see: selfalign ls tasks")
        if full not in out:
            out.append(full)
    return out


def task_versions() -> dict[str, Any]:
    """``{task or group name: metadata.version}`` read from the YAML configs."""
    tm = task_manager()
    versions: dict[str, Any] = {}
    for name in tm.all_tasks:
        entry = tm._index[name]  # lm-eval keeps the parsed index privately; read-only use
        cfg = getattr(entry, "cfg", None) or {}
        yaml_path = getattr(entry, "yaml_path", None)
        if not cfg and yaml_path:
            from lm_eval.tasks._yaml_loader import load_yaml  # deferred: as task_manager's import

            cfg = load_yaml(yaml_path, resolve_func=False)
        meta = cfg.get("metadata") if isinstance(cfg, dict) else None
        versions[name] = meta.get("version") if isinstance(meta, dict) else None
    return versions

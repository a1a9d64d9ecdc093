"""``selfalign ls`` (tasks, models, backends, ..., schemas) and ``selfalign validate`` (every task and config loads)."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import data
from harness.backends.registry import backend_names
from harness.common.errors import UserError
from harness.common.records import RECORDS, json_schema
from harness.common.registry import lookup
from harness.models import ALIASES
from harness.prompts import META_PROMPTS
from harness.task_registry import known_names, short_name, task_manager, task_versions

Lister = Callable[[], list[tuple[str, str]]]


def _tasks() -> list[tuple[str, str]]:
    versions = task_versions()
    return [(short_name(n), f"version {versions.get(n)}  (lm-eval name {n})") for n in known_names()]


def _models() -> list[tuple[str, str]]:
    return [(a.name, a.description) for a in ALIASES.values()]


def _backends() -> list[tuple[str, str]]:
    return [(name, "") for name in backend_names()]


def _meta_prompts() -> list[tuple[str, str]]:
    return [(name, rel) for name, rel in META_PROMPTS.items()] + [("none", "no meta prompt")]


def _schemas() -> list[tuple[str, str]]:
    return [(name, f"{model.__name__}: {where}") for name, (model, where) in RECORDS.items()]


def write_schemas(out_dir: str | Path) -> list[Path]:
    """One JSON Schema file per record (``<name>.schema.json``) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in RECORDS:
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


# Other packages add their listings here by module path: (module, function name).
LISTINGS: dict[str, Lister | tuple[str, str]] = {
    "tasks": _tasks,
    "models": _models,
    "backends": _backends,
    "meta-prompts": _meta_prompts,
    "baselines": ("reports.baselines", "list_baselines"),
    "stages": ("pipeline.runner", "list_stages"),
    "schemas": _schemas,
}


def _resolve(what: str) -> Lister:
    entry = lookup("listing", what, LISTINGS)
    if isinstance(entry, tuple):
        module, fn = entry
        return getattr(importlib.import_module(module), fn)
    return entry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list tasks, models, backends, meta-prompts, baselines, stages or the output record schemas")
    p.add_argument("what", help=", ".join(LISTINGS))
    p.add_argument("--output", default=None, metavar="DIR",
                   help="with `schemas`: write one JSON Schema file per record (<name>.schema.json) into DIR")
    p.set_defaults(func=main_ls)
    v = sub.add_parser("validate", help="check that every task YAML loads through lm-eval and every shipped config parses")
    v.add_argument("--data-dir", dest="data_dir", default=None)
    v.set_defaults(func=main_validate)


def main_ls(args: argparse.Namespace) -> int:
    lister = _resolve(args.what)
    if args.output is not None:
        if lister is not _schemas:
            raise UserError(f"selfalign ls {args.what} --output: --output writes files for `schemas` only; drop it")
        for path in write_schemas(args.output):
            print(path)
        return 0
    rows = lister()
    table = Table(title=args.what)
    table.add_column("name")
    table.add_column("details")
    for name, details in rows:
        table.add_row(name, details)
    Console().print(table)
    return 0


def main_validate(args: argparse.Namespace) -> int:
    console = Console()
    if args.data_dir is not None:
        data.resolve_data_dir(args.data_dir)  # a wrong --data-dir is bad input, not a task finding
    tm = task_manager({"data_dir": args.data_dir})
    problems = []
    for name in known_names():
        # one at a time: lm-eval refuses a group and its own subtasks in the same load
        try:
            loaded = tm.load([name])
        except Exception as exc:  # any failure is a finding to list, not a crash
            problems.append(f"task {name}: {type(exc).__name__}: {exc}")
            continue
        tasks = loaded["tasks"]
        if name in tasks:
            console.print(f"[green]ok[/green] {name}: {len(tasks[name].eval_docs)} documents")
        else:
            n_docs = sum(len(t.eval_docs) for t in tasks.values())
            console.print(f"[green]ok[/green] {name}: group/tag of {len(tasks)} tasks, {n_docs} documents")
    for module, fn in (
        ("pipeline.config", "validate_shipped_configs"),
        ("reports.baselines", "validate_baselines"),
        ("orchestration.run", "validate_run_configs"),
    ):
        try:
            check = getattr(importlib.import_module(module), fn)
        except (ModuleNotFoundError, AttributeError):
            continue
        problems += check()
    for problem in problems:
        console.print(f"[red]error[/red] {problem}")
    return 1 if problems else 0

"""Our lm-eval tasks: where they live, their short names, and a TaskManager that sees only them.

Task YAMLs live in the top-level ``tasks/`` package. lm-eval names carry a ``selfalign_`` prefix
so they never collide with lm-eval's built-ins (``truthfulqa_mc1`` is also a built-in); at our
CLI the prefix is optional.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.common.registry import unknown_name_error

PREFIX = "selfalign_"
TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


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

"""Run lm-eval's built-in truthfulqa_mc1/mc2 on local v0 data, to compare with our tasks."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.truthfulqa.utils import load


def builtin_truthfulqa_group(tmp_dir: Path, data_dir: Path) -> str:
    """Write a group YAML that points the built-in tasks at a local JSONL; returns the group name."""
    rows = load(data_dir=str(data_dir))["validation"]
    data_file = tmp_dir / "truthfulqa_mc_v0.jsonl"
    with data_file.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    override = f"""
    dataset_path: json
    dataset_name: null
    dataset_kwargs:
      data_files:
        validation: {data_file}"""
    (tmp_dir / "builtin_truthfulqa_local.yaml").write_text(
        "group: builtin_truthfulqa_local\ntask:\n"
        f"  - task: truthfulqa_mc1{override}\n"
        f"  - task: truthfulqa_mc2{override}\n"
    )
    return "builtin_truthfulqa_local"


def run_builtin_and_ours(lm, tmp_dir: Path, data_dir: Path, limit: int) -> tuple[dict, dict]:
    """(built-in results, our results) from one model object, same documents."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from harness.task_registry import task_manager

    group = builtin_truthfulqa_group(tmp_dir, data_dir)
    builtin = simple_evaluate(
        model=lm, tasks=[group], task_manager=TaskManager(include_path=str(tmp_dir)), limit=limit, log_samples=True
    )
    ours = simple_evaluate(
        model=lm,
        tasks=["selfalign_truthfulqa_mc1", "selfalign_truthfulqa_mc2"],
        task_manager=task_manager({"data_dir": str(data_dir)}),
        limit=limit,
        log_samples=True,
    )
    return builtin, ours

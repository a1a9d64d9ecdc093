"""``selfalign lm-eval ARGS...``: lm-eval's own CLI with our backend and tasks registered.

lm-eval 0.4.x has no plugin discovery: its model registry is filled by ``@register_model`` at
import time and by a fixed table of its own backends (``lm_eval.models.MODEL_MAPPING``); no
entry-point group is scanned. So a third-party backend is usable from its CLI only once the
module defining it has been imported in the same process. This command imports
``harness.backends.selfalign_hf`` (registers ``selfalign-hf``), adds ``--include_path`` for our
task directory, and hands every other argument to lm-eval's CLI unchanged.
"""

from __future__ import annotations

import argparse
import sys

from lm_eval.__main__ import cli_evaluate

from harness.backends.registry import register_backends
from harness.common.errors import UserError
from harness.task_registry import TASKS_DIR


def lm_eval_argv(args: list[str]) -> list[str]:
    """lm-eval's argv: ours unchanged, plus our task directory as the include path."""
    if any(a == "--include_path" or a.startswith("--include_path=") for a in args):
        raise UserError(
            f"selfalign lm-eval passes --include_path {TASKS_DIR} itself and lm-eval takes one directory; "
            "to add tasks of your own, run plain lm_eval with a directory holding both"
        )
    if not args or args[0] in ("-h", "--help"):
        return ["lm-eval", *args]
    if args[0] in ("run", "ls", "validate"):
        return ["lm-eval", *args, "--include_path", str(TASKS_DIR)]
    return ["lm-eval", "run", *args, "--include_path", str(TASKS_DIR)]


def run_lm_eval(args: list[str]) -> int:
    register_backends()
    saved = sys.argv
    sys.argv = lm_eval_argv(args)
    try:
        cli_evaluate()
    except SystemExit as exc:  # argparse --help / errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    finally:
        sys.argv = saved
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lm-eval",
        help="lm-eval's own CLI with the selfalign-hf backend and our tasks registered",
        description="Runs `lm-eval ARGS...` (lm-evaluation-harness's CLI, arguments unchanged) after registering "
        "the selfalign-hf backend and adding --include_path for our tasks. Example: selfalign lm-eval --model "
        "selfalign-hf --model_args pretrained=gemma-3-270m --tasks selfalign_truthfulqa_mc1 --limit 3",
        add_help=False,
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: run_lm_eval(list(args.lm_eval_args)))

"""The ``selfalign`` command. Subcommands mirror the packages; each lives in its package's cli module.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed namespace. Only the module of the command being run is
imported (by name, from ``SUBCOMMANDS``): ``selfalign --help`` lists the commands from this table
and imports none of them, and a broken optional part cannot break the others. (A subcommand
module defers the library behind its handlers, torch or matplotlib, so that its own ``--help``
stays fast too.)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import typing

from harness.common.errors import UserError
from harness.common.redact import mask_secrets

# subcommand -> (module defining register(subparsers), the one line `selfalign --help` shows).
# The line is the module's own add_parser(help=...) (tests/test_cli.py checks they agree).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("harness.eval_cli", "evaluate a model on TruthfulQA / HHH / Vicuna-80 through lm-eval"),
    "lm-eval": ("harness.lm_eval_cli", "lm-eval's own CLI with the selfalign-hf backend and our tasks registered"),
    "ls": ("harness.ls_cli", "list tasks, models, backends, meta-prompts, baselines, stages or the output record schemas"),
    "validate": ("harness.ls_cli", "check that every task YAML loads through lm-eval and every shipped config parses"),
    "judge": ("harness.judge.cli", "judge Vicuna-80 answers against a baseline with an OpenAI-compatible LLM judge"),
    "bench": ("harness.bench.cli", "speed benchmarks: scoring backend and generation engine vs the stock paths; stage 1's dedup filter"),
    "pipeline": ("pipeline.cli", "SELF-ALIGN pipeline: synthetic prompts -> Dromedary adapters"),
    "report": ("reports.cli", "regenerate the paper's tables (TruthfulQA, HHH, Vicuna-80) from run directories, with CIs and paired tests"),
    "run": ("orchestration.cli", "run the pipeline stages not yet done, evaluate base + every checkpoint + baselines, judge, write the report"),
}


def _offline_defaults() -> None:
    # The hub is unreachable on the machines this runs on; without these, datasets and
    # transformers try the network on every local load and stall on timeouts.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (``error: selfalign judge: argument --limit: ...``), exit 2.

    argparse's default prints the whole usage block first; scripts and tests read one line.
    Subparsers inherit the class (``add_subparsers`` uses ``type(self)``).
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``selfalign`` parser with ``command``'s module registered (all of them when ``command``
    is ``"*"``); every other command is a placeholder that only shows its help line."""
    parser = OneLineParser(
        prog="selfalign",
        description="SELF-ALIGN pipeline (pipeline), evaluation harness (eval, judge, bench) and reports.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = SUBCOMMANDS.get(command or "", ("", ""))[0]
    for name, (module_name, help_line) in SUBCOMMANDS.items():
        if name in sub.choices:
            continue  # registered by a module that defines several commands (ls, validate)
        if command == "*" or module_name == wanted:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and module_name.startswith(exc.name):
                    continue  # that part of the product is not present in this checkout
                raise
            module.register(sub)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    _offline_defaults()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    if argv and argv[0] == "lm-eval":
        # Everything after `lm-eval` belongs to lm-eval's parser, options first included
        # (argparse.REMAINDER cannot start with an option).
        run_lm_eval = importlib.import_module(SUBCOMMANDS["lm-eval"][0]).run_lm_eval
        args = argparse.Namespace(verbose=False, lm_eval_args=argv[1:], func=lambda ns: run_lm_eval(ns.lm_eval_args))
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except UserError as exc:
        # masked again here: a message may quote a server's reply, which may echo a key
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: outputs written so far are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

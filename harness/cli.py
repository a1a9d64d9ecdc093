"""The ``selfalign`` command. Subcommands mirror the packages; each lives in its package's cli module.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed namespace. Modules are imported lazily so that
``selfalign --help`` stays fast and a broken optional part cannot break the others.
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

# subcommand -> module defining register(subparsers)
SUBCOMMANDS: dict[str, str] = {
    "eval": "harness.eval_cli",
    "lm-eval": "harness.lm_eval_cli",
    "ls": "harness.ls_cli",
    "validate": "harness.ls_cli",
    "judge": "harness.judge.cli",
    "bench": "harness.bench.cli",
    "pipeline": "pipeline.cli",
    "report": "reports.cli",
    "run": "orchestration.cli",
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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="selfalign",
        description="SELF-ALIGN pipeline (pipeline), evaluation harness (eval, judge, bench) and reports.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered: set[str] = set()
    for module_name in dict.fromkeys(SUBCOMMANDS.values()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part of the product is not present in this checkout
            raise
        module.register(sub)
        registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline_defaults()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] == "lm-eval":
        # Everything after `lm-eval` belongs to lm-eval's parser, options first included
        # (argparse.REMAINDER cannot start with an option).
        args = argparse.Namespace(verbose=False, lm_eval_args=argv[1:], func=None)
        from harness.lm_eval_cli import run_lm_eval

        args.func = lambda ns: run_lm_eval(ns.lm_eval_args)
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

"""``selfalign``'s command table: ``--help`` imports no subcommand module, a command imports only
its own, and the help lines in the table are the modules' own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.cli import SUBCOMMANDS, build_parser
from harness.ls_cli import LISTINGS, _resolve
from pipeline.runner import STAGES

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lm_eval", "numpy", "matplotlib", "peft")


def _subparser_help(parser) -> dict[str, str]:
    action = next(a for a in parser._actions if a.dest == "command")
    return {choice.dest: choice.help for choice in action._choices_actions}


def test_help_lines_are_the_modules_own():
    registered = _subparser_help(build_parser("*"))
    assert registered == {name: help_line for name, (_, help_line) in SUBCOMMANDS.items()}


def test_placeholders_keep_the_order_and_help():
    assert _subparser_help(build_parser("report")) == {name: h for name, (_, h) in SUBCOMMANDS.items()}


def _loaded_after(argv: list[str]) -> set[str]:
    """Top modules of ours and heavy libraries imported by ``selfalign ARGV`` in a fresh process."""
    code = (
        "import contextlib, io, json, sys\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_help_imports_no_subcommand_module_and_no_heavy_library():
    loaded = _loaded_after(["--help"])
    assert not {module for module, _ in SUBCOMMANDS.values()} & loaded
    assert not set(HEAVY) & loaded


def test_a_command_imports_its_own_module_only():
    loaded = _loaded_after(["report", "--help"])
    assert "reports.cli" in loaded
    assert not {module for module, _ in SUBCOMMANDS.values() if module != "reports.cli"} & loaded


def test_every_listing_resolves_and_lists_something():
    for what in LISTINGS:
        rows = _resolve(what)()
        assert rows and all(isinstance(name, str) and isinstance(details, str) for name, details in rows), what
    assert [name for name, _ in _resolve("stages")()] == [s.name for s in STAGES]

"""The layer map (README "Code layout") holds: import-linter's contracts in pyproject.toml pass,
every module sits in a layer, and the contracts catch an import that goes up."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport import-linter reads pyproject.toml with there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _importlinter() -> dict:
    return tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]


def _contract(contract_id: str) -> dict:
    return next(c for c in _importlinter()["contracts"] if c["id"] == contract_id)


def _layer_modules(layer: str) -> list[str]:
    for sep in ("|", ":"):
        if sep in layer:
            return [m.strip() for m in layer.split(sep)]
    return [layer.strip()]


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess:
    """``lint-imports CONFIG`` on the packages under ``root`` (they shadow the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo", str(config)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def test_contracts_are_kept():
    proc = lint_imports(ROOT, CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = len(_importlinter()["contracts"])
    assert f"Contracts: {kept} kept, 0 broken." in proc.stdout


def _project_modules() -> list[str]:
    modules = []
    for package in _importlinter()["root_packages"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_every_module_sits_in_a_layer():
    """A new module (or package) has a place in the map, so the contract constrains it."""
    listed = [m for layer in _contract("layers")["layers"] for m in _layer_modules(layer)]
    roots = set(_importlinter()["root_packages"])
    outside = [
        m for m in _project_modules()
        if m not in roots and not any(m == top or m.startswith(top + ".") for top in listed)
    ]
    assert not outside, f"modules in no layer of pyproject.toml's layers contract: {outside}"


def _skeleton(tmp_path: Path, importer: str | None = None, imported: str | None = None) -> Path:
    """Empty stand-ins for every module the contracts name, laid out like the real tree (file or
    package); ``importer`` imports ``imported``."""
    contracts = _importlinter()["contracts"]
    names = {m for c in contracts for layer in c.get("layers", []) for m in _layer_modules(layer)}
    names |= {m for c in contracts for key in ("source_modules", "forbidden_modules") for m in c.get(key, [])}
    names |= set(_importlinter()["root_packages"])
    paths = {}
    for name in sorted(names):
        parts = name.split(".")
        for i in range(1, len(parts)):
            package = tmp_path.joinpath(*parts[:i])
            package.mkdir(exist_ok=True)
            (package / "__init__.py").touch()
        if (ROOT.joinpath(*parts[:-1]) / f"{parts[-1]}.py").is_file():
            path = tmp_path.joinpath(*parts[:-1]) / f"{parts[-1]}.py"
        else:
            path = tmp_path.joinpath(*parts) / "__init__.py"
            path.parent.mkdir(exist_ok=True)
        path.touch()
        paths[name] = path
    if importer:
        paths[importer].write_text(f"import {imported}\n")
    config = tmp_path / "pyproject.toml"
    config.write_text(CONFIG.read_text())
    return config


def test_skeleton_without_upward_imports_passes(tmp_path):
    proc = lint_imports(tmp_path, _skeleton(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


LAYERS = _contract("layers")["layers"]


@pytest.mark.parametrize("below", range(1, len(LAYERS)), ids=lambda i: _layer_modules(LAYERS[i])[0])
def test_an_upward_import_breaks_the_layers_contract(tmp_path, below):
    """The first module of each layer importing the first module of the layer above: reported."""
    importer, imported = _layer_modules(LAYERS[below])[0], _layer_modules(LAYERS[below - 1])[0]
    proc = lint_imports(tmp_path, _skeleton(tmp_path, importer, imported))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Contracts: " in proc.stdout and " broken." in proc.stdout
    assert f"{importer} -> {imported} (l.1)" in proc.stdout


FORBIDDEN = [c for c in _importlinter()["contracts"] if c["type"] == "forbidden"]


@pytest.mark.parametrize("contract", FORBIDDEN, ids=lambda c: c["id"])
def test_a_forbidden_import_breaks_its_contract(tmp_path, contract):
    importer, imported = contract["source_modules"][0], contract["forbidden_modules"][0]
    proc = lint_imports(tmp_path, _skeleton(tmp_path, importer, imported))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    broken = proc.stdout.split("Broken contracts")[-1]
    assert contract["name"][:40] in " ".join(broken.split())
    assert f"{importer} -> {imported} (l.1)" in proc.stdout


def _undeclared_function_imports(source: str) -> list[int]:
    """Line numbers of imports inside a function that carry no ``deferred: <why>`` comment, on
    the import's first line or in the comment lines above the block of imports it belongs to."""
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            above, i = [], node.lineno - 2
            while i >= 0 and (not lines[i].strip() or lines[i].strip().startswith(("#", "import ", "from "))):
                if lines[i].strip().startswith("#"):
                    above.append(lines[i])
                i -= 1
            if not any("deferred:" in line.partition("#")[2] for line in [lines[node.lineno - 1], *above]):
                found.append(node.lineno)
    return sorted(set(found))


def test_imports_sit_at_module_level_unless_deferred():
    """No import inside a function, except a heavy dependency deferred with ``# deferred: <why>``."""
    offenders = []
    for package in _importlinter()["root_packages"]:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            offenders += [f"{rel}:{n}" for n in _undeclared_function_imports(path.read_text())]
    assert not offenders, f"imports inside functions without a `# deferred: <why>` comment: {offenders}"


def test_the_function_import_check_reads_comments():
    source = (
        "import os\n"
        "def f():\n"
        "    import json\n"
        "    # deferred: torch takes seconds\n"
        "    import torch\n"
        "    import transformers\n"
        "\n"
        "    from x import y  # deferred: optional package\n"
        "    y()\n"
        "    # a comment that gives no reason\n"
        "    import z\n"
        "    class C:\n"
        "        def g(self):\n"
        "            from harness import data\n"
    )
    assert _undeclared_function_imports(source) == [3, 11, 14]

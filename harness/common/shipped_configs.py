"""Shipped configs, found by path or by name from any directory, in a checkout or an installed wheel.

In a checkout they are ``configs/``; a wheel ships the same tree as the ``selfalign_configs``
package (``setup.py`` maps it). ``configs/run/demo.yaml`` and ``demo`` (with the kind of config
the command takes) name the same file everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from harness.common.errors import UserError
from harness.common.paths import repo_root
from harness.common.registry import unknown_name_error

PACKAGE = "selfalign_configs"


def configs_root() -> Path:
    """The checkout's ``configs/`` when this code runs from a checkout, else the installed package."""
    checkout = repo_root() / "configs"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return checkout


def shipped_names(kind: str) -> list[str]:
    """Names of the shipped ``<kind>/*.yaml`` configs (kind: run, pipeline, baselines, ...)."""
    return sorted(p.stem for p in (configs_root() / kind).glob("*.yaml"))


def resolve_config(value: str | Path, kind: str, flag: str = "--config") -> Path:
    """An existing YAML path as given; else ``configs/...`` under the shipped configs; else a shipped
    ``<kind>`` config by name (``demo`` or ``demo.yaml``)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    parts = path.parts
    if not path.is_absolute() and len(parts) > 1 and parts[0] == "configs":
        shipped = configs_root().joinpath(*parts[1:])
        if shipped.is_file():
            return shipped
    if len(parts) == 1:
        shipped = configs_root() / kind / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
        if shipped.is_file():
            return shipped
        if path.suffix not in (".yaml", ".yml"):
            raise unknown_name_error(f"shipped {kind} config", str(value), shipped_names(kind),
                                     f"{flag} takes a YAML path or one of these names")
    raise UserError(f"{flag} {value}: no such file (nor a shipped config); pass an existing YAML path "
                    f"or a shipped {kind} config name ({', '.join(shipped_names(kind))})")

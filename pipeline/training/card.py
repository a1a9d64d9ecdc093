"""What an adapter says about itself: a portable base identifier, our manifest, a model card.

PEFT records ``base_model_name_or_path`` as the path the base was loaded from, which for an
alias is this machine's cache directory. We record the identifier the user gave (an alias such
as ``gemma-3-270m``, or the original path) there, so the adapter means the same on any machine
(``harness.models`` maps it back), and keep the resolved path and the base's content
fingerprint in ``selfalign_adapter.json``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from harness.common.fingerprint import content_fingerprint
from harness.common.jsonl import write_json_atomic, write_text_atomic

MANIFEST_FILE = "selfalign_adapter.json"


def current_command() -> str:
    """The command line of this process, as the user would retype it (``selfalign ...``, or
    ``python -m MODULE ...`` for a module run with -m)."""
    argv = list(sys.argv) or ["python"]
    head = Path(argv[0]).name
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if head.endswith(".py") and spec is not None and spec.name:
        head = "python -m " + spec.name.removesuffix(".__main__")
    return " ".join([head, *map(shlex.quote, argv[1:])])


def finalize_adapter(adapter_dir: str | Path, *, base_name: str, base_path: str | Path, details: dict[str, Any]) -> dict[str, Any]:
    """Portable ``base_model_name_or_path``, ``selfalign_adapter.json`` and a filled README.md."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    write_json_atomic(config_path, config)
    manifest = {
        "base_model_name_or_path": base_name,
        "base_model_path": str(Path(base_path).resolve()),
        "base_model_fingerprint": content_fingerprint(base_path),
        **details,
    }
    write_json_atomic(adapter_dir / MANIFEST_FILE, manifest)
    write_text_atomic(adapter_dir / "README.md", model_card(manifest, config))
    return manifest


def model_card(manifest: dict[str, Any], adapter_config: dict[str, Any]) -> str:
    base = manifest["base_model_name_or_path"]
    counts = manifest.get("counts") or {}
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: peft",
        "tags: [selfalign, lora]",
        "---",
        "",
        f"# {manifest.get('stage') or 'LoRA adapter'} adapter on {base}",
        "",
        "A LoRA adapter trained by [selfalign](https://github.com/) (SELF-ALIGN, Sun et al., NeurIPS 2023).",
        "",
        "| field | value |",
        "|---|---|",
        f"| base model | `{base}` (content sha256 `{manifest['base_model_fingerprint'][:16]}`) |",
        f"| stage | {manifest.get('stage') or '-'} |",
        f"| LoRA | r={adapter_config.get('r')}, alpha={adapter_config.get('lora_alpha')}, "
        f"targets {', '.join(sorted(adapter_config.get('target_modules') or []))} |",
    ]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()]
    if manifest.get("config_hash"):
        lines.append(f"| config hash | `{manifest['config_hash']}` |")
    lines += [
        "",
        "Made by:",
        "",
        "```bash",
        manifest.get("command") or current_command(),
        "```",
        "",
        "Load it:",
        "",
        "```bash",
        f"selfalign eval --model_args pretrained={base},peft=<this directory>",
        "```",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<{base} directory>), <this directory>)",
        "```",
        "",
    ]
    return "\n".join(lines)

"""Cheap checks of model files before anything loads them: headers only, no tensors read.

* every ``*.safetensors`` file has a readable header and is as long as the header says
  (a truncated or corrupt download fails here in one line, not deep inside a loader);
* ``config.json`` is present and is JSON;
* a PEFT adapter fits its base: each LoRA matrix's shape matches the base weight it adapts
  (an adapter trained on another base is named with its ``base_model_name_or_path``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from harness.common.errors import UserError

_MAX_HEADER = 100 * 1024 * 1024  # safetensors caps its header at 100 MB


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header; UserError when the file is not one."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise ValueError(f"header length {n} does not fit in {size} bytes")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        shapes, end = {}, 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            shapes[name] = list(info["shape"])
            end = max(end, int(info["data_offsets"][1]))
        if 8 + n + end > size:
            raise ValueError(f"truncated: the header describes {8 + n + end} bytes, the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc}); re-download or re-create it") from None
    return shapes


def model_shapes(model_dir: Path) -> dict[str, list[int]]:
    """All tensor shapes of a model directory (after checking every safetensors header)."""
    shapes: dict[str, list[int]] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        shapes.update(safetensors_shapes(f))
    return shapes


def check_model_dir(model_dir: Path) -> None:
    config = model_dir / "config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{model_dir}: no config.json; pass a Hugging Face model directory") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{config}: not readable JSON ({exc}); re-create the model directory") from None
    model_shapes(model_dir)


def _adapted_module(key: str) -> str | None:
    """``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` -> ``model.layers.0.self_attn.q_proj``."""
    for marker in (".lora_A.", ".lora_B."):
        if marker in key:
            module = key.split(marker)[0]
            return module.removeprefix("base_model.model.")
    return None


def check_adapter_fits(adapter_dir: Path, base_dir: Path) -> None:
    """Each LoRA pair's (in, out) equals the base weight's; one line naming the adapter's base otherwise."""
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return  # .bin adapters: left to peft
    try:
        declared = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise UserError(f"{adapter_dir / 'adapter_config.json'}: not readable JSON ({exc})") from None
    adapter = safetensors_shapes(weights)
    base = model_shapes(base_dir)
    if not base:
        return
    by_suffix: dict[str, list[int]] = {}
    for name, shape in base.items():
        if name.endswith(".weight"):
            by_suffix[name.removesuffix(".weight")] = shape
    for key, shape in sorted(adapter.items()):
        module = _adapted_module(key)
        if module is None or len(shape) != 2:
            continue
        target = by_suffix.get(module) or next((s for n, s in by_suffix.items() if n.endswith("." + module) or module.endswith("." + n)), None)
        if target is None or len(target) != 2:
            problem = f"adapts {module}, which {base_dir} does not have"
        else:
            out_f, in_f = target
            bad = (".lora_A." in key and shape[1] != in_f) or (".lora_B." in key and shape[0] != out_f)
            if not bad:
                continue
            problem = f"{key} has shape {shape}, the base weight {module} is {target}"
        raise UserError(
            f"peft={adapter_dir} does not fit pretrained={base_dir}: {problem}; it was trained on "
            f"{declared or 'an unrecorded base'}: pass that model as pretrained="
        )

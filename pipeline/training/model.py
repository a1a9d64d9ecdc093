"""Base model and tokenizer loading, the LoRA wrapper, adapter export, digest and merge."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.pytorch_utils import Conv1D

from harness.common.errors import UserError
from pipeline.training.config import LoraTrainConfig

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(base_model: str | Path) -> Any:
    return AutoTokenizer.from_pretrained(str(base_model))


def padding_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else EOS, else 0: padded positions carry no loss and no attention."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def load_base_model(base_model: str | Path, dtype: str) -> torch.nn.Module:
    path = Path(base_model)
    if not (path / "config.json").is_file():
        raise UserError(
            f"base model {path} is not a local model directory (no config.json); "
            "pass harness.models.resolve_pretrained(<alias or path>)"
        )
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=TORCH_DTYPES[dtype])
    model.config.use_cache = False  # no KV cache in training
    return model


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Last name components of the Linear-like modules peft can adapt (e.g. ``q_proj``)."""
    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, (torch.nn.Linear, Conv1D))}


def check_target_modules(model: torch.nn.Module, targets: list[str]) -> None:
    """Each target names Linear modules as peft matches them: a last name component (``q_proj``)
    or a dotted suffix (``layers.17.self_attn.q_proj``: only that layer's, as judges use)."""
    full_names = [name for name, mod in model.named_modules() if isinstance(mod, (torch.nn.Linear, Conv1D))]
    available = linear_module_names(model)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in full_names)]
    if missing:
        raise UserError(
            f"target_modules {missing} not found in {type(model).__name__}; its Linear modules are: "
            f"{', '.join(sorted(available))} (set target_modules in the training config)"
        )


def enable_activation_checkpointing(model: Any) -> None:
    # Non-reentrant checkpointing works under DDP with frozen inputs (no enable_input_require_grads).
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_peft_model(model: torch.nn.Module, cfg: LoraTrainConfig, peft_init: str | Path | None) -> Any:
    """Wrap ``model`` with a fresh LoRA adapter, or a trainable copy of the adapter at ``peft_init``."""
    # deferred: peft pulls accelerate and scipy (seconds); pipeline.config imports this package,
    # and the fake-engine pipeline, `selfalign validate` and `ls stages` never build an adapter
    from peft import LoraConfig, PeftModel, get_peft_model

    check_target_modules(model, cfg.target_modules)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if peft_init is None:
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)
    peft_init = Path(peft_init)
    if not (peft_init / "adapter_config.json").is_file():
        raise UserError(f"peft_init {peft_init} is not a PEFT adapter directory (no adapter_config.json)")
    peft_model = PeftModel.from_pretrained(model, str(peft_init), is_trainable=True)
    loaded = peft_model.peft_config["default"]
    mismatched = {
        name: (ours, theirs)
        for name, ours, theirs in (
            ("lora_r", cfg.lora_r, loaded.r),
            ("lora_alpha", cfg.lora_alpha, loaded.lora_alpha),
            ("target_modules", sorted(cfg.target_modules), sorted(loaded.target_modules or [])),
        )
        if ours != theirs
    }
    if mismatched:
        detail = "; ".join(f"{k}: config {a!r}, adapter {b!r}" for k, (a, b) in mismatched.items())
        raise UserError(f"peft_init {peft_init} does not match the training config ({detail}); make them agree")
    return peft_model


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name, detached CPU copies (the adapter, in the model's own naming)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes: equal digests mean bitwise-equal weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_adapter(peft_model: Any, state: dict[str, torch.Tensor], tokenizer: Any, out_dir: Path) -> Path:
    """Write a PEFT adapter directory (+ tokenizer) that ``PeftModel.from_pretrained`` and lm-eval's
    ``hf`` backend (``peft=DIR``) load; written to a temporary directory and renamed into place."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp), state_dict=state)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def merge_adapter(base_model: str | Path, adapter_dir: str | Path, out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Save base + adapter merged into one ordinary model directory (no peft needed to load it)."""
    from peft import PeftModel  # deferred: as build_peft_model's import

    out_dir = Path(out_dir)
    model = load_base_model(base_model, dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    load_tokenizer(base_model).save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir

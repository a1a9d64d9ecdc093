"""``make_engine``: the one way stages get a generation engine, by backend name."""

from __future__ import annotations

from collections.abc import Callable

from harness.common.errors import UserError
from harness.common.registry import lookup
from harness.models import resolve_peft, resolve_pretrained
from pipeline.engine.base import GenerationEngine
from pipeline.engine.fake_engine import FakeEngine
from pipeline.engine.transformers_engine import TransformersEngine
from pipeline.engine.vllm_engine import VLLMEngine

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _transformers(
    model: str, peft: str | None, dtype: str, batch_size: int, **kwargs
) -> GenerationEngine:
    return TransformersEngine.from_pretrained(
        resolve_pretrained(model),
        peft=resolve_peft(peft) if peft else None,
        dtype=dtype,
        batch_size=batch_size,
        **kwargs,
    )


def _vllm(model: str, peft: str | None, dtype: str, batch_size: int, **kwargs) -> GenerationEngine:
    return VLLMEngine(
        str(resolve_pretrained(model)),
        peft=str(resolve_peft(peft)) if peft else None,
        dtype=dtype,
        max_num_seqs=batch_size,
        **kwargs,
    )


def _fake(model: str, peft: str | None, dtype: str, batch_size: int, **kwargs) -> GenerationEngine:
    return FakeEngine(model, **kwargs)


BACKENDS: dict[str, Callable[..., GenerationEngine]] = {
    "transformers": _transformers,
    "vllm": _vllm,
    # canned text in each stage's format, instantly: measures the pipeline's own overhead
    "fake": _fake,
}


def make_engine(
    backend: str = "transformers",
    model: str | None = None,
    peft: str | None = None,
    dtype: str = "float32",
    batch_size: int = 8,
    **kwargs,
) -> GenerationEngine:
    """A ready engine for ``model`` (alias, HF directory or .gguf) with an optional PEFT adapter.

    Extra keyword arguments go to the backend: transformers takes ``device``, ``share_prefix``,
    ``min_shared_tokens``, ``progress``, ``add_special_tokens``; vLLM takes
    ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``max_lora_rank``.
    """
    factory = lookup("generation backend", backend, BACKENDS, "make_engine(backend=...)")
    if not model:
        raise UserError(
            "make_engine: model is required (an alias such as gemma-3-270m, an HF directory or a .gguf file)"
        )
    if dtype not in DTYPE_NAMES:
        raise UserError(f"make_engine: dtype={dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    if int(batch_size) < 1:
        raise UserError(f"make_engine: batch_size={batch_size} must be at least 1")
    return factory(model, peft, dtype, int(batch_size), **kwargs)

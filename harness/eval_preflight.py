"""``selfalign eval``'s checks before any work: each bad input fails in one line, nothing written.

Run by ``harness.evaluate.run_eval`` before it loads a model or takes the output lock: the
output path, the task names, the meta prompt, the generation kwargs (parsed and typed as
lm-eval will use them), the batch size, the limit, the data directory and the model files
(headers, config, a PEFT adapter's fit to its base).
"""

from __future__ import annotations

from typing import Any

from harness import data
from harness.common.errors import UserError
from harness.common.preflight import check_output_dir
from harness.common.registry import unknown_name_error
from harness.models import LOCAL_BACKENDS, parse_model_args, resolve_model_args
from harness.prompts import META_PROMPTS
from harness.task_registry import resolve_task_names

# gen_kwargs keys whose type lm-eval / transformers rely on: (type, lowest allowed value)
_TYPED_GEN_KWARGS: dict[str, tuple[type, float | None]] = {
    "max_gen_toks": (int, 1),
    "max_new_tokens": (int, 1),
    "min_new_tokens": (int, 0),
    "num_beams": (int, 1),
    "top_k": (int, 0),
    "temperature": (float, 0),
    "top_p": (float, 0),
    "repetition_penalty": (float, 0),
    "do_sample": (bool, None),
}


def parse_gen_kwargs(text: str | None, flag: str = "--gen_kwargs") -> dict[str, Any]:
    """lm-eval's ``k=v,k=v`` with the known keys type-checked (``max_gen_toks=abc`` fails here)."""
    # deferred: lm_eval.utils imports numpy (a second on a busy machine); `--help` needs it not
    from lm_eval.utils import simple_parse_args_string

    if not text:
        return {}
    for part in text.split(","):
        if part.strip() and "=" not in part:
            raise UserError(f"{flag} {text!r}: {part.strip()!r} is not key=value (e.g. max_gen_toks=256,temperature=0)")
    parsed = simple_parse_args_string(text)
    for key, value in parsed.items():
        if key not in _TYPED_GEN_KWARGS:
            continue
        kind, low = _TYPED_GEN_KWARGS[key]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            expected = {bool: "True or False", int: "an integer", float: "a number"}[kind]
            raise UserError(f"{flag}: {key}={value!r} must be {expected}")
        if low is not None and value < low:
            raise UserError(f"{flag}: {key}={value} must be at least {low:g}")
    return parsed


def check_meta_prompt(name: str | None, flag: str = "--meta-prompt") -> None:
    known = [*META_PROMPTS, "none"]
    if name is not None and name not in known:
        raise unknown_name_error("meta prompt", name, known, flag)


def check_batch_size(value: int | str) -> None:
    text = str(value)
    if text.isdigit() and int(text) >= 1:
        return
    if text == "auto" or (text.startswith("auto:") and text[5:].isdigit() and int(text[5:]) >= 1):
        return
    raise UserError(f"--batch_size {value!r}: expected a positive integer, auto or auto:N")


def preflight_eval(cfg: Any) -> None:
    """Every check of ``EvalConfig`` that needs no model loaded (see module docstring)."""
    check_output_dir(cfg.output)
    resolve_task_names(cfg.tasks)
    check_meta_prompt(cfg.meta_prompt)
    parse_gen_kwargs(cfg.gen_kwargs)
    check_batch_size(cfg.batch_size)
    if cfg.limit is not None and not cfg.limit > 0:
        raise UserError(f"--limit {cfg.limit}: must be positive")
    data.resolve_data_dir(cfg.data_dir)
    raw = parse_model_args(cfg.model_args)
    if cfg.model in LOCAL_BACKENDS:
        resolve_model_args(raw)

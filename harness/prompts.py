"""Dromedary's inference prompts ("meta prompts") and the one way a turn is wrapped in them.

Every place that puts a user turn under a meta prompt (TruthfulQA/HHH scoring, Vicuna-80
generation, the engraving and verbose-cloning training data) calls ``dromedary_prompt`` so
that training and evaluation see byte-identical framing, as in IBM/Dromedary's
``generate_prompt`` / ``generate_prompt_dromedary``.
"""

from __future__ import annotations

from pathlib import Path

from harness import data
from harness.common.registry import lookup

# name -> data file (the reference strips each file before use)
META_PROMPTS: dict[str, str] = {
    "verbose": "dromedary/prompts/inference_prompts/dromedary_verbose_prompt.txt",
    "standard_distill": "dromedary/prompts/inference_prompts/dromedary_standard_prompt_distill.txt",
    "concise_distill": "dromedary/prompts/inference_prompts/dromedary_concise_prompt_distill.txt",
    "multilingual": "dromedary/prompts/inference_prompts/dromedary_multilingual_prompt.txt",
}

# The paper's evaluation scripts (mc_evaluation/README.md) use the verbose prompt.
DEFAULT_EVAL_META_PROMPT = "verbose"


def meta_prompt_text(name: str, data_dir: str | Path | None = None) -> str:
    """The named meta prompt, stripped (as the reference does). ``none`` gives an empty prompt."""
    if name == "none":
        return ""
    rel = lookup("meta prompt", name, {**META_PROMPTS, "none": ""})
    return data.read_text(rel, data_dir).strip()


def dromedary_prompt(meta_prompt: str, instruction: str, input_text: str = "", output: str = "") -> str:
    """``{meta}\\n{instruction}[\\n\\n{input}]\\n\\n### Dromedary[\\n{output}]``.

    With an empty ``output`` this is the generation/scoring prompt of the reference
    (no trailing newline); with an output it is the training text.
    """
    body = f"{instruction}\n\n{input_text}" if input_text else instruction
    head = f"{meta_prompt}\n{body}" if meta_prompt else body
    prompt = f"{head}\n\n### Dromedary"
    return f"{prompt}\n{output}" if output else prompt

"""Vicuna-80 generation: the 80 FastChat questions wrapped in the model's inference prompt.

lm-eval calls ``load`` (the task's ``custom_dataset``) with the task metadata merged with
the runtime metadata of ``selfalign eval`` (``data_dir``, ``meta_prompt``). The prompt is
built here, once per question, so that the logged ``doc`` records which framing was used:

* ``meta_prompt`` unset: the paper's Dromedary framing with the verbose meta prompt (the one
  IBM/Dromedary's inference demo loads, ``inference/scripts/demo_dromedary_*.sh``);
* ``meta_prompt: <name>``: the Dromedary framing with another meta prompt;
* ``meta_prompt: none``: the bare question (``prompt_format: plain``), for instruction-tuned
  baselines run with ``--apply_chat_template``, where lm-eval wraps it in the tokenizer's
  chat template (the rendered prompt then shows in the sample's ``arguments``).

The Dromedary framing ends with ``### Dromedary`` and a newline, as the reference's only
Vicuna-80 inference code does (``inference/run_chatbot_demo.py`` ``generate_prompt``).

Generation presets (``GEN_PRESETS``, chosen by ``selfalign eval --gen-preset`` and recorded in
every doc as ``gen_preset``): ``paper`` (the YAML's generation_kwargs: T 0.7, the paper's
evaluation temperature) and ``reference_demo`` (run_chatbot_demo.py: T 0.1, top-p 0.75 and a
uni-token frequency penalty of 0.3, which needs ``--model selfalign-hf``).

Answers are judged later by ``selfalign judge`` (``harness/judge``), never inside a metric.
"""

from __future__ import annotations

import re
from typing import Any

from harness.data import read_jsonl
from harness.prompts import DEFAULT_EVAL_META_PROMPT, dromedary_prompt, meta_prompt_text

QUESTIONS_FILE = "vicuna_bench/fastchat/eval/table/question.jsonl"

# The reference chatbot stops at "### User", then drops a dangling header that a length cut
# or a partial stop match leaves behind (run_chatbot_demo.py). We also stop at the next
# "### Dromedary": a base model (gemma-3-270m) otherwise writes turn after turn of its own,
# and a trained model never puts that header inside an answer.
STOP_STRINGS = ("### User", "### Dromedary")

# Generation presets: lm-eval generation kwargs, merged under any explicit --gen_kwargs.
GEN_PRESETS: dict[str, dict[str, Any]] = {
    # = vicuna80.yaml's generation_kwargs (tested): the paper samples evaluation answers at T 0.7.
    "paper": {"do_sample": True, "temperature": 0.7, "max_gen_toks": 512},
    # IBM/Dromedary run_chatbot_demo.py: the demo's default temperature 0.1 and top-p 0.75, and
    # unitoken_frequency_penalty=0.3 in its generate() call; 512 = its max-new-tokens slider's top.
    "reference_demo": {
        "do_sample": True, "temperature": 0.1, "top_p": 0.75, "max_gen_toks": 512,
        "unitoken_frequency_penalty": 0.3,
    },
}  # fmt: skip
DEFAULT_GEN_PRESET = "paper"
# Generation kwargs only the selfalign-hf backend understands (the reference's n-gram penalties).
PENALTY_KWARGS = ("unitoken_frequency_penalty", "bitoken_frequency_penalty", "tritoken_frequency_penalty",
                  "quadtoken_frequency_penalty")


def preset_gen_kwargs(name: str) -> str:
    """A preset as an lm-eval ``--gen_kwargs`` string."""
    return ",".join(f"{k}={v}" for k, v in GEN_PRESETS[name].items())
_PARTIAL_NAMES = sorted({name[:i] for name in ("User", "Dromedary") for i in range(1, len(name))}, key=len, reverse=True)
_DANGLING_HEADER = re.compile(r"\n\n#{1,3}(?: (?:" + "|".join(_PARTIAL_NAMES) + "))?$")


def build_docs(
    data_dir: str | None = None, meta_prompt: str | None = None, gen_preset: str | None = None
) -> list[dict[str, Any]]:
    """One doc per question: ids, category, question text and the exact prompt to generate from."""
    name = meta_prompt or DEFAULT_EVAL_META_PROMPT
    meta_text = meta_prompt_text(name, data_dir)  # also rejects an unknown name, with suggestions
    docs = []
    for q in read_jsonl(QUESTIONS_FILE, data_dir):
        question = q["text"]
        if name == "none":
            prompt, prompt_format = question, "plain"
        else:
            # run_chatbot_demo.py's generate_prompt ends "### Dromedary\n"
            prompt, prompt_format = dromedary_prompt(meta_text, question) + "\n", "dromedary"
        docs.append(
            {
                "question_id": int(q["question_id"]),
                "category": q["category"],
                "text": question,
                "prompt": prompt,
                "prompt_format": prompt_format,
                "meta_prompt": name,
                "gen_preset": gen_preset or DEFAULT_GEN_PRESET,
            }
        )
    return docs


def load(data_dir: str | None = None, meta_prompt: str | None = None, gen_preset: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset``: a DatasetDict with one ``test`` split of 80 docs."""
    # deferred: datasets takes a second or more; harness.evaluate imports this module for its
    # generation presets, and `selfalign eval --help` must not pay for it
    import datasets

    docs = build_docs(data_dir, meta_prompt, gen_preset)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def clean_answer(text: str) -> str:
    """The reference's post-processing: cut at a turn header, strip, drop a dangling header."""
    for stop in STOP_STRINGS:
        text = text.split(stop)[0]
    text = text.strip()
    return _DANGLING_HEADER.sub("", text).strip()


def clean_answers(resps, docs):
    """lm-eval ``custom`` filter: ``clean_answer`` on every generation of every doc."""
    return [[clean_answer(r) for r in doc_resps] for doc_resps in resps]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Sanity statistics only; quality is measured by the judge as its own step."""
    answer = results[0] if results else ""
    return {"answer_words": float(len(answer.split())), "empty_answer": float(not answer.strip())}

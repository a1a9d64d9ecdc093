"""The Vicuna GPT-4 reviewer prompts (FastChat ``prompt.jsonl`` + ``reviewer.jsonl``) and their rendering.

Two versions exist and the recorded reviews used different ones:

* ``revised_2023-04-05`` (default): ``fastchat/eval/table/``, the final version, used for the
  ``vicuna-13b_20230322-new-hp-fp16`` and ``vicuna-7b_20230322-fp16`` reviews and by every later
  reproduction of the benchmark (answers framed by ``[The Start of Assistant 1's Answer]``).
* ``original_2023-03-30``: the prompts behind the Vicuna blog reviews
  (``vicuna-13b_20230322-clean-lang``), framed by ``[Assistant 1] ... [End of Assistant 1]``.

A question's category picks the reviewer as FastChat's ``eval_gpt_review.py`` does: the
reviewer whose category equals the question's (``coding``, ``math``), else the general one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from harness.common.errors import UserError
from harness.common.registry import lookup
from harness.data import read_jsonl

# version -> (prompt.jsonl, reviewer.jsonl)
PROMPT_VERSIONS: dict[str, tuple[str, str]] = {
    "revised_2023-04-05": (
        "vicuna_bench/fastchat/eval/table/prompt.jsonl",
        "vicuna_bench/fastchat/eval/table/reviewer.jsonl",
    ),
    "original_2023-03-30": (
        "vicuna_bench/original_2023-03-30/chatserver/eval/table/prompt.jsonl",
        "vicuna_bench/original_2023-03-30/chatserver/eval/table/reviewer.jsonl",
    ),
}
DEFAULT_PROMPT_VERSION = "revised_2023-04-05"

GENERAL = "general"
# The original reviewer.jsonl has no ``category`` field; its descriptions name it
# ("GPT-4 for coding questions"), as do the revised ones.
_DESCRIPTION_CATEGORY = re.compile(r"for (\w+) questions", re.IGNORECASE)


@dataclass(frozen=True)
class Reviewer:
    reviewer_id: str
    category: str  # general | coding | math
    system_prompt: str
    prompt_template: str
    instruction: str  # the template's ``{prompt}`` default: what the judge is asked to do
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class RenderedPrompt:
    reviewer: Reviewer
    system: str
    user: str

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.system}\x00{self.user}".encode()).hexdigest()


def _reviewer_category(record: dict) -> str:
    if record.get("category"):
        return str(record["category"])
    match = _DESCRIPTION_CATEGORY.search(str(record.get("description", "")))
    if not match:
        raise UserError(f"reviewer {record.get('reviewer_id')!r} has neither a category nor a 'for X questions' description")
    return match.group(1).lower()


class ReviewerPrompts:
    """The reviewers of one prompt version, by category."""

    def __init__(self, version: str = DEFAULT_PROMPT_VERSION, data_dir: str | Path | None = None):
        prompt_rel, reviewer_rel = lookup("reviewer prompt version", version, PROMPT_VERSIONS)
        self.version = version
        self.files = (prompt_rel, reviewer_rel)
        prompts = {int(p["prompt_id"]): p for p in read_jsonl(prompt_rel, data_dir)}
        self.by_category: dict[str, Reviewer] = {}
        for r in read_jsonl(reviewer_rel, data_dir):
            prompt = prompts.get(int(r["prompt_id"]))
            if prompt is None:
                raise UserError(f"{reviewer_rel}: reviewer {r['reviewer_id']} names prompt_id {r['prompt_id']}, absent from {prompt_rel}")
            meta = r.get("metadata") or {}
            category = _reviewer_category(r)
            self.by_category[category] = Reviewer(
                reviewer_id=str(r["reviewer_id"]),
                category=category,
                system_prompt=prompt["system_prompt"],
                prompt_template=prompt["prompt_template"],
                instruction=prompt["defaults"]["prompt"],
                temperature=float(meta.get("temperature", 0.2)),
                max_tokens=int(meta.get("max_tokens", 1024)),
            )
        if GENERAL not in self.by_category:
            raise UserError(f"{reviewer_rel}: no general reviewer; the file is not a FastChat reviewer table")

    def reviewer_for(self, question_category: str) -> Reviewer:
        return self.by_category.get(question_category, self.by_category[GENERAL])

    def render(self, question: str, answer_1: str, answer_2: str, question_category: str) -> RenderedPrompt:
        reviewer = self.reviewer_for(question_category)
        # str.format as FastChat does; answers are values, so braces inside them are safe.
        user = reviewer.prompt_template.format(
            question=question, answer_1=answer_1, answer_2=answer_2, prompt=reviewer.instruction
        )
        return RenderedPrompt(reviewer=reviewer, system=reviewer.system_prompt, user=user)

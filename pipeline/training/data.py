"""Training examples: (prompt, answer) pairs tokenized with the loss on answer tokens only.

As in the reference (``finetune.py``, ``train_on_inputs=False``), the full text prompt + answer
is tokenized once, truncated to ``max_length``, and the labels of its first k tokens are set to
-100, where k is the token count of the prompt alone with trailing whitespace stripped. So the
whitespace between prompt and answer ("### Dromedary\\n" -> the "\\n") is trained on, exactly
as in the reference. Should the tokenizer merge a token across that boundary, k is cut back to
the longest common prefix of the two tokenizations, so no answer text is ever masked.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.common.errors import UserError
from harness.common.jsonl import iter_records

IGNORE_INDEX = -100  # label of a token that carries no loss (the torch / transformers convention)


@dataclass(frozen=True)
class TrainExample:
    id: str
    prompt: str  # everything the model reads before the answer (the wrapped inference prompt)
    answer: str  # the text it learns to write


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids (compact int32) and how many leading tokens are prompt (labels there are
    IGNORE_INDEX). The trainer makes these for one step's window at a time (``batching``)."""

    id: str
    input_ids: array
    n_masked: int

    @property
    def labels(self) -> list[int]:
        """input_ids with IGNORE_INDEX on the prompt tokens (unshifted, the transformers convention)."""
        return [IGNORE_INDEX] * self.n_masked + list(self.input_ids[self.n_masked :])

    @property
    def n_loss_tokens(self) -> int:
        # Position 0 is never predicted, so a label there carries no loss.
        return max(0, len(self.input_ids) - max(self.n_masked, 1))


def as_examples(records: Iterable[TrainExample | Mapping[str, Any]], where: str = "examples") -> list[TrainExample]:
    """Accept TrainExample objects or mappings with string ``prompt`` and ``answer`` (``id`` optional)."""
    out: list[TrainExample] = []
    for i, rec in enumerate(records):
        if isinstance(rec, TrainExample):
            out.append(rec)
            continue
        if not isinstance(rec, Mapping):
            raise UserError(f"{where}[{i}]: expected a mapping with 'prompt' and 'answer', got {type(rec).__name__}")
        for key in ("prompt", "answer"):
            if not isinstance(rec.get(key), str):
                raise UserError(f"{where}[{i}]: field {key!r} must be a string; every record needs 'prompt' and 'answer'")
        out.append(TrainExample(id=str(rec.get("id", i)), prompt=rec["prompt"], answer=rec["answer"]))
    counts = Counter(ex.id for ex in out)
    if len(counts) != len(out):
        dup = next(x for x, n in counts.items() if n > 1)
        raise UserError(f"{where}: id {dup!r} occurs {counts[dup]} times; ids must be unique")
    return out


def load_examples_jsonl(path: str | Path) -> list[TrainExample]:
    """Read a JSONL of ``{"id"?, "prompt", "answer"}`` records."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"training data {path} does not exist; pass a JSONL of {{prompt, answer}} records")
    examples = as_examples(iter_records(path, strict=True), where=str(path))
    if not examples:
        raise UserError(f"{path} holds no records; pass a JSONL of {{prompt, answer}} records")
    return examples


def examples_fingerprint(examples: Sequence[TrainExample]) -> str:
    """A hash of the data in order: a checkpoint is resumed only on the data it was trained on."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.prompt, ex.answer], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def tokenize_examples(
    tokenizer: Any, examples: Sequence[TrainExample], *, max_length: int, add_eos: bool, chunk: int = 2048
) -> list[TokenizedExample]:
    """Tokenize every example (batched tokenizer calls, ``chunk`` examples at a time); see the module docstring."""
    eos = tokenizer.eos_token_id
    if add_eos and eos is None:
        raise UserError("add_eos is true but the tokenizer has no eos_token; set add_eos=false")
    out: list[TokenizedExample] = []
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        full = tokenizer([ex.prompt + ex.answer for ex in part], truncation=True, max_length=max_length)["input_ids"]
        prompts = tokenizer([ex.prompt.rstrip() for ex in part], truncation=True, max_length=max_length)["input_ids"]
        for ex, ids, prompt_ids in zip(part, full, prompts, strict=True):
            # Same rule as the reference: EOS only when it fits and is not already there.
            if add_eos and ids and ids[-1] != eos and len(ids) < max_length:
                ids = [*ids, eos]
            out.append(TokenizedExample(ex.id, array("i", ids), _common_prefix_len(ids, prompt_ids)))
    return out


def pad_batch(batch: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: input_ids (pad), attention_mask (0), labels (IGNORE_INDEX)."""
    if not batch:
        raise ValueError("pad_batch needs at least one example")
    width = max(len(ex.input_ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids = torch.frombuffer(ex.input_ids, dtype=torch.int32).long() if n else torch.zeros(0, dtype=torch.long)
        input_ids[row, :n] = ids
        labels[row, ex.n_masked : n] = ids[ex.n_masked :]
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

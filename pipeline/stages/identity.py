"""The paper's 910 identity conversations (FastChat's "Vicuna" dummy data, renamed to Dromedary).

Stage 3 trains on them next to the self-aligned answers; stage 4 asks the engraved model their
questions. Unlike the reference, every example gets an id (its dummy examples had none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import data
from harness.common.errors import UserError

IDENTITY_DATA = "dromedary/training/dummy_data/vicuna_dummy_data.json"

# The reference's renaming (merge_and_fileter_self_align_with_dummy.py), applied in this order.
RENAMES = (
    ("the Large Model Systems Organization (LMSYS)", "the Self-Align team, a joint effort between CMU and IBM"),
    ("Large Model Systems Organization (LMSYS)", "the Self-Align team, a joint effort between CMU and IBM"),
    ("Vicuna", "Dromedary"),
)


def rename(text: str) -> str:
    for old, new in RENAMES:
        text = text.replace(old, new)
    return text


def load_identity_examples(data_dir: str | Path | None, limit: int | None = None) -> list[dict[str, Any]]:
    """``{id, instruction, input, output, origin}`` from the first exchange of each conversation."""
    path = data.data_file(IDENTITY_DATA, data_dir)
    conversations = data.read_json(IDENTITY_DATA, data_dir)
    if not isinstance(conversations, list):
        raise UserError(f"{path}: expected a JSON list of conversations")
    out = []
    for i, conv in enumerate(conversations[:limit] if limit is not None else conversations):
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if (
            not isinstance(turns, list) or len(turns) < 2
            or turns[0].get("from") != "human" or turns[1].get("from") != "gpt"
        ):
            raise UserError(f"{path}: item {i}: expected conversations starting with a 'human' then a 'gpt' turn")
        out.append({
            "id": str(conv.get("id", f"identity_{i}")),
            "instruction": turns[0]["value"],
            "input": "",
            "output": rename(turns[1]["value"]),
            "origin": {"source": "identity", "conversation": conv.get("id", i)},
        })
    return out

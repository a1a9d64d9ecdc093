"""Self-Instruct prompting and parsing (stage 1), as IBM/Dromedary's generate_vanilla_instruction.py.

The base model continues a numbered list of seed tasks (``N. Instruction: ...`` /
``N. Input:`` blocks separated by ``###``) and the new blocks are parsed back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.inputs import SeedTask


def encode_prompt(meta_prompt: str, tasks: Sequence[SeedTask]) -> str:
    """The reference's ``encode_prompt``: the template (not stripped), then the numbered seeds."""
    prompt = meta_prompt + "\n"
    for idx, task in enumerate(tasks):
        instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
        input_text = "<noinput>" if task.input.lower() == "" else task.input
        prompt += "###\n"
        prompt += f"{idx + 1}. Instruction: {instruction}\n"
        prompt += f"{idx + 1}. Input:\n{input_text}\n"
    prompt += "###\n"
    prompt += f"{len(tasks) + 1}. Instruction:"
    return prompt


@dataclass(frozen=True)
class ParsedInstruction:
    position: int  # the list number the model gave it (first new one = number of seeds + 1)
    instruction: str
    input: str
    reason: str | None = None  # a parse failure: "malformed" or "truncated"


def parse_completion(text: str, num_seed_tasks: int, finish_reason: str) -> list[ParsedInstruction]:
    """Split a completion into its numbered instruction/input blocks.

    The last block is dropped as truncated when generation hit the token limit (the reference
    always drops it: with EOS suppressed, every completion ends at the limit). A block whose
    number is not the expected next one, or that lacks either field, is "malformed".
    """
    raw = f"{num_seed_tasks + 1}. Instruction:" + text
    blocks = re.split("###", raw)
    out: list[ParsedInstruction] = []
    for k, block in enumerate(blocks):
        position = num_seed_tasks + 1 + k
        if k == len(blocks) - 1 and finish_reason == "length":
            if block.strip():
                out.append(ParsedInstruction(position, block.strip(), "", "truncated"))
            continue
        parts = re.split(rf"{position}\.\s+(Instruction|Input):", block)
        if len(parts) != 5 or parts[1:4:2] != ["Instruction", "Input"]:
            if block.strip():
                out.append(ParsedInstruction(position, block.strip(), "", "malformed"))
            continue
        instruction = parts[2].strip()
        input_text = parts[4].strip()
        input_text = "" if input_text.lower() == "<noinput>" else input_text
        out.append(ParsedInstruction(position, instruction, input_text))
    return out

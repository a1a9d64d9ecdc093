"""Topic-Guided Red-Teaming prompting and parsing (stage 1), as IBM/Dromedary's generate_tgrt_*.py.

Topic brainstorming: for each question type the model continues a numbered list of topics;
lines of up to three words, capitalized and not ending in punctuation, become topics
(deduplicated case-insensitively, and every type cut to the smallest type's count so that no
type dominates). Question generation: the model continues a list of ``type/topic`` hints whose
first entries are seed examples with their instructions; lines that restate a hint of ours and
add ``instruction: ...`` become prompts.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from harness.common.errors import UserError
from pipeline.inputs import SeedQuestion

# the reference keeps at most 20 lines of a brainstorm completion
MAX_TOPIC_LINES = 20


def fill_template(template: str, values: Sequence[str], field: str) -> str:
    try:
        return template.format(*values)
    except (IndexError, KeyError, ValueError) as exc:
        raise UserError(
            f"{field}: the prompt template needs exactly {len(values)} '{{}}' placeholder(s) and no other braces ({exc})"
        ) from None


def topic_prompt(meta_prompt: str, question_type: str, topics: Sequence[str], field: str = "stage1.tgrt.topic_prompt") -> str:
    prompt = fill_template(meta_prompt, [question_type], field) + "\n\n"
    for i, topic in enumerate(topics):
        prompt += f"{i + 1}. {topic}\n"
    return prompt


@dataclass(frozen=True)
class ParsedTopic:
    topic: str
    reason: str | None = None


def parse_topics(text: str, finish_reason: str) -> list[ParsedTopic]:
    """Topics from a brainstorm completion (``2. Marriage\\n3. Honeymoon\\n...``).

    Blank lines are skipped. The final line is dropped as truncated when generation hit the
    token limit (the reference kept it, so a cut-off "Ancient Gr" could become a topic).
    """
    lines = text.split("\n")
    out: list[ParsedTopic] = []
    for idx, line in enumerate(lines[:MAX_TOPIC_LINES]):
        if not line.strip():
            continue
        topic = line.split(". ", 1)[-1].strip()
        if finish_reason == "length" and idx == len(lines) - 1:
            out.append(ParsedTopic(topic, "truncated"))
        elif not topic:
            out.append(ParsedTopic(topic, "empty"))
        elif len(topic.split()) > 3:
            out.append(ParsedTopic(topic, "too_long"))
        elif topic[0] not in string.ascii_uppercase:
            out.append(ParsedTopic(topic, "not_capitalized"))
        elif topic[-1] in string.punctuation:
            out.append(ParsedTopic(topic, "ends_with_punctuation"))
        else:
            out.append(ParsedTopic(topic))
    return out


def dedup_case_insensitive(topics: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in topics:
        if t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def balance_topic_pool(type2topics: dict[str, list[str]]) -> dict[str, list[str]]:
    """Deduplicate each type's topics and cut every type to the smallest count (the reference)."""
    deduped = {t: dedup_case_insensitive(v) for t, v in type2topics.items()}
    smallest = min((len(v) for v in deduped.values()), default=0)
    return {t: v[:smallest] for t, v in deduped.items()}


def hint_type(question_type: str) -> str:
    # The reference shows "Instructions that require ..." in hints, while seeds say "Questions".
    return question_type.replace("Questions", "Instructions")


@dataclass(frozen=True)
class ExpectedHint:
    position: int
    prefix: str  # "6. type: Instructions that require ..., topic: Car"
    question_type: str  # as in the seed file
    topic: str


def question_prompt(
    meta_prompt: str,
    examples: Sequence[SeedQuestion],
    targets: Sequence[tuple[str, str]],
    field: str = "stage1.tgrt.question_prompt",
) -> tuple[str, list[ExpectedHint]]:
    """The prompt for (question_type, topic) ``targets``, after the seed ``examples``."""
    pairs = [(q.question_type, q.topic) for q in examples] + list(targets)
    hints = [f"{i + 1}. type: {hint_type(qt)}, topic: {topic}" for i, (qt, topic) in enumerate(pairs)]
    shown = [f"{i + 1}. type: {hint_type(q.question_type)}, topic: {q.topic}, instruction: {q.question}" for i, q in enumerate(examples)]
    prompt = fill_template(meta_prompt, ["\n" + "\n".join(hints), "\n" + "\n".join(shown)], field) + "\n"
    expected = [
        ExpectedHint(len(examples) + i + 1, hints[len(examples) + i], qt, topic) for i, (qt, topic) in enumerate(targets)
    ]
    return prompt, expected


@dataclass(frozen=True)
class ParsedQuestion:
    position: int
    instruction: str
    question_type: str
    topic: str
    reason: str | None = None


def parse_questions(text: str, finish_reason: str, expected: Sequence[ExpectedHint]) -> list[ParsedQuestion]:
    """Instructions from lines ``{hint}, instruction: {text}`` that restate one of ``expected``.

    Deviations from the reference, which accepted any line starting with any hint: lines that
    restate a seed example's hint are ignored (their topic is a seed's, not ours), a hint line
    without ``, instruction: `` is "malformed" instead of becoming an instruction, and the last
    line is dropped only when generation hit the token limit.
    """
    lines = text.strip().split("\n")
    if finish_reason == "length":
        lines = lines[:-1]
    out: list[ParsedQuestion] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        for hint in expected:
            if not line.startswith(hint.prefix):
                continue
            rest = line[len(hint.prefix):]
            if rest.startswith(", instruction: "):
                out.append(ParsedQuestion(hint.position, rest[len(", instruction: "):].strip(), hint.question_type, hint.topic))
            else:
                out.append(ParsedQuestion(hint.position, line, hint.question_type, hint.topic, "malformed"))
            break
    return out

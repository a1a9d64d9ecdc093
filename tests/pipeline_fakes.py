"""A scripted ``GenerationEngine`` for pipeline tests: hand-written outputs for each prompt kind.

``ScriptedEngine(respond)`` calls ``respond(request, params)`` for each request; it returns the
completion text, or ``(text, finish_reason)``. Stop strings are applied as a real engine does.
``PipelineScript`` answers every prompt the four stages send with plausible, request-dependent
text (so filters keep some and drop some), and counts what it was asked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from pipeline.engine.base import Completion, GenerationRequest, SamplingParams

Response = str | tuple[str, str]


class ScriptedEngine:
    name = "scripted"

    def __init__(self, respond: Callable[[GenerationRequest, SamplingParams], Response]):
        self.respond = respond
        self.calls: list[list[str]] = []  # request ids per generate() call
        self.fail_after_calls: int | None = None  # raise on the call after this many (interruption)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams, *, shared_prefix: str = "") -> list[Completion]:
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append([r.id for r in requests])
        if shared_prefix:
            assert all(r.prompt.startswith(shared_prefix) for r in requests), "shared_prefix must prefix every prompt"
        out = []
        for r in requests:
            res = self.respond(r, params)
            text, finish = (res, "length") if isinstance(res, str) else res
            cut = [text.find(s) for s in params.stop if s and s in text]
            if cut:
                text, finish = text[: min(cut)], "stop"
            out.append(Completion(r.id, text, len(r.prompt.split()), max(1, len(text.split())), finish))
        return out

    @property
    def requested_ids(self) -> list[str]:
        return [i for call in self.calls for i in call]


_WORDS = ["river", "planet", "budget", "poem", "recipe", "theorem", "history", "climate", "market", "garden",
          "violin", "glacier", "protein", "senate", "algorithm", "volcano", "harbor", "novel", "enzyme", "tariff",
          "lantern", "orchard", "satellite", "mosaic", "ferry", "dialect", "comet", "ledger", "canyon", "sonnet"]  # fmt: skip

# Different sentence shapes, so that ROUGE-L keeps most of them apart.
_TASKS = [
    "Describe how a {a} could change the way people think about {b} today.",
    "Which three facts about the {a} would surprise a {b} expert most?",
    "Compose a limerick in which a {a} argues with a {b}.",
    "Compare {a} and {b}, listing two similarities and one difference.",
    "Suggest a weekend plan for someone obsessed with the {a}.",
    "Why might historians disagree about the {a} of the {b} era?",
    "Turn the following {a} notes into a formal email for my {b} club.",
]
_QUESTIONS = [
    "What would a careful expert say about {t}, and why?",
    "Is it ever acceptable to ignore {t} entirely?",
    "How did {t} look two centuries ago?",
    "Tell me the single most controversial claim regarding {t}.",
    "Should children learn about {t} at school?",
]


def _word(request_id: str, k: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{request_id}:{k}".encode()).digest()[:4], "big")
    return _WORDS[h % len(_WORDS)]


def _pick(options: list[str], request_id: str, k: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{request_id}#{k}".encode()).digest()[:4], "big")
    return options[h % len(options)]


class PipelineScript:
    """Responds to the prompts of stages 1, 2 and 4 with hand-written, id-dependent outputs."""

    def __init__(self, assistant: str = "Watson"):
        self.assistant = assistant
        self.kinds: list[str] = []

    def __call__(self, request: GenerationRequest, params: SamplingParams) -> Response:
        p, rid = request.prompt, request.id
        if p.endswith("Instruction:"):
            self.kinds.append("self_instruct")
            n = int(re.search(r"(\d+)\. Instruction:$", p).group(1))
            a, b, c = _word(rid, 1), _word(rid, 2), _word(rid, 3)
            first = _pick(_TASKS, rid, 0).format(a=a, b=b)
            return (
                f" {first}\n{n}. Input:\n<noinput>\n###\n"
                f"{n + 1}. Instruction: Draw a picture of a {c}.\n{n + 1}. Input:\n<noinput>\n###\n"
                f"{n + 2}. Instruction: {_pick(_TASKS, rid, 1).format(a=c, b=a)}\n{n + 2}. Input:\nOnce upon a time a {a} met a {b}.\n###\n"
                f"{n + 3}. Instruction: Explain the"
            )
        if "List of 10 topics" in p:
            self.kinds.append("tgrt_topics")
            a, b = _word(rid, 4).capitalize(), _word(rid, 5).capitalize()
            return f"2. {a} Rules\n3. {b}\n4. lowercase topic\n5. Far too many words for one topic\n6. Ends with a dot.\n7. {a} Trade\n8. Partial"
        if "20 Instructions:" in p:
            self.kinds.append("tgrt_questions")
            hints = re.findall(r"^(\d+\. type: [^\n]*?, topic: [^\n,]*)$", p.split("20 Instructions:")[0], flags=re.M)
            examples = len(re.findall(r", instruction: ", p))
            lines = [
                f"{h}, instruction: " + _pick(_QUESTIONS, rid, i).format(t=h.rsplit("topic: ", 1)[1])
                for i, h in enumerate(hints[examples:])
            ]
            return "\n".join(lines) + "\n11. type: Instructions that requ"
        if p.endswith("(internal thoughts):"):
            self.kinds.append("self_align")
            topic = _word(rid, 6)
            answer = (
                f"Here is a careful answer about the {topic}. First, the {topic} matters because of its history. "
                f"Second, experts study the {topic} with great care, and {self.assistant} can explain each step clearly."
            )
            return (
                " I am a helpful, ethical, and reliable assistant. The user asks about a topic. "
                f"I should follow rules 3 (helpful).\n\n{self.assistant}: {answer}\n\nUser: Good job! Clear context\n\n"
                f"{self.assistant} (auto reply): Thank you!"
            )
        if p.endswith("### Dromedary (extensive)"):
            self.kinds.append("verbose")
            topic = _word(rid, 7)
            return (
                f"\nThe {topic} is a rich subject. It has a long history, and many people have studied it in depth. "
                f"In this answer I describe what the {topic} is, why it matters, and how it is used today.\n\n### User\nthanks"
            )
        raise AssertionError(f"unexpected prompt ending {p[-80:]!r}")

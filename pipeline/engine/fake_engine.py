"""``fake``: an engine that answers every stage's prompt instantly with canned but varied text.

It lets the pipeline's own machinery (sharding, JSONL, resume, filters, manifests, training data)
run at the paper's counts without a model (``configs/pipeline/scale_dry_run.yaml``). Each
completion depends only on the request's prompt and seed, as the engine contract requires, and
is in the format the requesting stage parses:

- Self-Instruct lists: numbered instruction/input blocks made from the seed tasks in the prompt
  (repeats, word edits, length variants and new instructions; the last block cut off);
- TGRT topic brainstorms and question lists for the prompt's (type, topic) hints;
- stage 2: internal thoughts opening with the constitution's self-identification, then an answer
  (sometimes an apology or an exemplar leak, which stage 2 drops), then the next ``User:`` turn;
- stage 4: a verbose answer ending with ``### User``.

The text is fluent nonsense: never use this engine for data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from pipeline.engine import fake_text
from pipeline.engine.base import Completion, GenerationRequest, SamplingParams

_SEED_INSTRUCTION = re.compile(r"^\d+\. Instruction: (.*)$", re.M)
_NEXT_NUMBER = re.compile(r"(\d+)\. Instruction:$")
_HINT = re.compile(r"^(\d+\. type: [^\n]*?, topic: [^\n,]*)$", re.M)
_ASSISTANT = re.compile(r"\n\n([^\n]+) \(internal thoughts\):$")
_SELF_ID = re.compile(r"\(internal thoughts\): (I am [^.]*\.)")


class FakeEngine:
    name = "fake"

    def __init__(self, model: str = "", instructions_per_completion: int = 5, answer_sentences: int = 4, **_: object):
        self.model = model
        self.instructions_per_completion = instructions_per_completion
        self.answer_sentences = answer_sentences

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams, *, shared_prefix: str = ""
    ) -> list[Completion]:
        out = []
        for r in requests:
            text, finish = self._respond(r.prompt, random.Random(r.seed))
            # The earliest stop string ends the text and is reported, as the real engines do.
            cut = min(((text.find(s), s) for s in params.stop if s and s in text), default=None)
            stop_string = None
            if cut is not None:
                text, finish, stop_string = text[: cut[0]], "stop", cut[1]
            # Token counts: words, a stand-in a real tokenizer would make about 1.3x larger.
            out.append(Completion(r.id, text, len(r.prompt.split()), max(1, len(text.split())), finish, stop_string))
        return out

    def _respond(self, prompt: str, rng: random.Random) -> tuple[str, str]:
        if prompt.endswith("Instruction:"):
            return self._self_instruct(prompt, rng), "length"
        if "List of 10 topics" in prompt:
            return self._topics(rng), "length"
        if "20 Instructions:" in prompt:
            return self._questions(prompt, rng), "length"
        if prompt.endswith("(internal thoughts):"):
            return self._self_align(prompt, rng), "length"
        if prompt.endswith("(extensive)"):
            return self._verbose(rng), "length"
        return " ".join(rng.choices(fake_text.WORDS, k=20)), "length"

    def _self_instruct(self, prompt: str, rng: random.Random) -> str:
        seeds = _SEED_INSTRUCTION.findall(prompt) or ["Describe the weather"]
        vocabulary = fake_text.LEXICON + tuple(w for s in seeds for w in s.lower().split() if w.isalpha())
        n = int(_NEXT_NUMBER.search(prompt).group(1))
        blocks = []
        for k in range(self.instructions_per_completion):
            base = rng.choice(seeds)
            kind = rng.random()
            if kind < 0.08:
                instruction = fake_text.surface_variant(base, rng)
            elif kind < 0.2:
                instruction = fake_text.word_edits(base, rng, vocabulary, rng.randint(1, 3))
            elif kind < 0.27:
                instruction = fake_text.vary_length(base, rng)
            else:
                instruction = fake_text.novel(base, rng, vocabulary)
            if rng.random() < 0.03:
                instruction = f"Draw a picture of a {rng.choice(fake_text.WORDS)}."  # keyword blacklist
            input_text = "<noinput>" if rng.random() < 0.6 else " ".join(rng.choices(vocabulary, k=rng.randint(5, 20)))
            head = " " if k == 0 else f"{n + k}. Instruction: "
            blocks.append(f"{head}{instruction}\n{n + k}. Input:\n{input_text}\n")
        blocks.append(f"{n + self.instructions_per_completion}. Instruction: Explain the")
        return "###\n".join(blocks)

    def _topics(self, rng: random.Random) -> str:
        lines = []
        for i in range(2, 11):
            # From the whole lexicon: at paper counts each question type needs ~5,000 distinct topics.
            words = rng.sample(fake_text.LEXICON, rng.choice((1, 2, 2, 3)))
            lines.append(f"{i}. " + " ".join(w.capitalize() for w in words))
        lines[rng.randrange(len(lines))] = f"{lines[0].split('. ')[0]}. lowercase topic"  # dropped by the parser
        return "\n".join(lines) + "\n11. Part"

    def _questions(self, prompt: str, rng: random.Random) -> str:
        head = prompt.split("20 Instructions:")[0]
        hints = _HINT.findall(head)
        examples = len(re.findall(r", instruction: ", prompt))
        lines = []
        for hint in hints[examples:]:
            topic = hint.rsplit("topic: ", 1)[1]
            words = rng.choices(fake_text.WORDS, k=rng.randint(3, 9))
            lines.append(f"{hint}, instruction: {rng.choice(_QUESTION_OPENINGS)} {topic} {' '.join(words)}?")
        return "\n".join(lines) + "\n99. type: Questions that requ"

    def _self_align(self, prompt: str, rng: random.Random) -> str:
        name_match = _ASSISTANT.search(prompt)
        name = name_match.group(1) if name_match else "Watson"
        self_id = (_SELF_ID.search(prompt) or re.match("(.*)", "I am a helpful, ethical, and reliable assistant.")).group(1)
        topic = " ".join(rng.sample(fake_text.WORDS, 2))
        if rng.random() < 0.06:
            return f" The user asks about {topic}. I should think.\n\n{name}: Unparseable."  # no self-identification
        answer = " ".join(_sentence(rng, topic) for _ in range(self.answer_sentences + rng.randint(0, 3)))
        if rng.random() < 0.05:
            answer = "I'm sorry, I cannot help with that. " + answer
        return (
            f" {self_id} The user asks about {topic}. I should follow rules 2 (informative), 3 (helpful).\n\n"
            f"{name}: {answer}\n\nUser: Good job! Clear context\n\n{name} (auto reply): Thank you!"
        )

    def _verbose(self, rng: random.Random) -> str:
        topic = " ".join(rng.sample(fake_text.WORDS, 2))
        if rng.random() < 0.04:
            return f"\nShort {topic}.\n\n### User\n"
        sentences = " ".join(_sentence(rng, topic) for _ in range(2 * self.answer_sentences + rng.randint(0, 4)))
        return f"\n{sentences}\n\n1. The {topic} first.\n2. Then the rest.\n\n### User\nthanks"


_QUESTION_OPENINGS = ("What is the truth about", "How would you explain", "Why do people argue over", "Is it safe to discuss")


def _sentence(rng: random.Random, topic: str) -> str:
    a, b, c = rng.sample(fake_text.WORDS, 3)
    return rng.choice((
        f"The {topic} relates to the {a} because of its {b}.",
        f"Many experts study how a {a} changes the {topic} over time.",
        f"In practice, a {b} and a {c} both matter for the {topic}.",
        f"One careful view is that the {a} explains most of the {topic}.",
    ))  # fmt: skip

"""Deterministic synthetic instruction text: the kinds of candidate a base model writes in stage 1.

A base model continuing a Self-Instruct list repeats instructions verbatim, rewrites them with a
few words changed, stretches or cuts them, and sometimes writes something new. These functions
make each kind from a source text and a ``random.Random``, for the ``fake`` engine and for
``selfalign bench dedup``'s candidate stream.
"""

from __future__ import annotations

import random

# Filler clauses for length variation, in the register of the seed tasks.
CLAUSES = (
    "in detail", "for a beginner", "step by step", "in two sentences", "with an example",
    "and explain your reasoning", "as briefly as possible", "for a ten year old", "in a formal tone",
    "using bullet points", "without technical jargon", "from a historical perspective",
)  # fmt: skip

# Used when a caller has no vocabulary of its own (the fake engine reads words off its prompts).
WORDS = tuple(
    "river planet budget poem recipe theorem history climate market garden violin glacier protein "
    "senate algorithm volcano harbor novel enzyme tariff lantern orchard satellite mosaic ferry "
    "dialect comet ledger canyon sonnet bicycle furnace citizen molecule pension quarry rhythm "
    "statute tundra vaccine wetland yogurt zeppelin archive bakery cathedral dolphin election "
    "festival granite hospital insurance journal kitchen lecture museum network office painting "
    "question railway science theater umbrella village weather exercise battery contract desert "
    "engine forest guitar habit island jacket kingdom language memory nutrition ocean pattern".split()
)


def _pseudo_words(n: int, seed: int = 0) -> tuple[str, ...]:
    """``n`` distinct pronounceable non-words, always the same ones."""
    rng = random.Random(seed)
    onsets = "b c d f g h j k l m n p r s t v w z br cl cr dr fl fr gl gr pl pr sl st tr".split()
    vowels = "a e i o u ai ea ee io oa ou".split()
    codas = ("", "", "n", "r", "s", "l", "t", "nd", "st", "m")
    words: set[str] = set()
    while len(words) < n:
        syllables = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
        words.add(syllables + rng.choice(codas))
    return tuple(sorted(words))


# The fake engine's Self-Instruct vocabulary. With WORDS alone (about 100 words) nearly every new
# instruction shares words with every other, and the ROUGE-L index scores far more pairs than on
# real instructions: at 120k candidates, 666 exact pairs and 548 us per candidate, against 156
# pairs and 307 us for `selfalign bench dedup`'s stream drawn from the real data. 1,500 more
# words bring the fake stream to 265 pairs and 335 us, so a paper-count dry run measures the
# filter at about its real cost.
LEXICON = WORDS + _pseudo_words(1500)


def novel(template: str, rng: random.Random, vocabulary: tuple[str, ...] | list[str], keep: float = 0.35) -> str:
    """A new instruction in ``template``'s sentence shape: most words replaced from ``vocabulary``."""
    words = template.split() or ["Describe"]
    out = [w if i == 0 or rng.random() < keep else rng.choice(vocabulary) for i, w in enumerate(words)]
    if rng.random() < 0.5:  # vary length too, so shapes do not repeat exactly
        out += rng.choices(vocabulary, k=rng.randint(1, 4))
    return " ".join(out)


def word_edits(text: str, rng: random.Random, vocabulary: tuple[str, ...] | list[str], edits: int) -> str:
    """``text`` with ``edits`` single-word insertions, deletions or substitutions."""
    words = text.split() or ["Describe"]
    for _ in range(edits):
        op = rng.random()
        i = rng.randrange(len(words))
        if op < 0.34:
            words.insert(i, rng.choice(vocabulary))
        elif op < 0.67 and len(words) > 2:
            del words[i]
        else:
            words[i] = rng.choice(vocabulary)
    return " ".join(words)


def vary_length(text: str, rng: random.Random) -> str:
    """``text`` stretched by a clause or cut short, as a paraphrase of different length."""
    words = text.rstrip("?.!").split() or ["Describe"]
    if rng.random() < 0.5 and len(words) > 5:
        return " ".join(words[: max(4, round(len(words) * rng.uniform(0.6, 0.85)))])
    extra = rng.sample(CLAUSES, rng.randint(1, 2))
    return " ".join(words) + " " + " and ".join(extra) + "."


def surface_variant(text: str, rng: random.Random) -> str:
    """The same instruction with different case or punctuation (an exact duplicate after normalizing)."""
    choice = rng.randrange(3)
    if choice == 0:
        return text
    if choice == 1:
        return text.rstrip("?.!") + rng.choice(["!", ".", "?", ""])
    return text.lower() if text[:1].isupper() else text.capitalize()

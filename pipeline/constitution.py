"""The constitution of stage 2 as data: principles and exemplars, loaded, ablated and rendered.

The paper's "Watson" prompt (16 principles, 5 exemplars) is a text file; ``parse_watson_prompt``
imports it into a :class:`Constitution` and ``render`` turns a constitution back into prompt
text, byte for byte the original when nothing is changed. Exemplar internal thoughts cite
principles by id, not by number, so dropping or replacing a principle renumbers the rules and
updates every citation consistently (the paper's ablations).

Text layout that ``render`` produces (and ``parse_watson_prompt`` reads)::

    # {assistant_name}\\n\\n## General Rules\\n\\n{rules_intro}\\n\\n
    {n} ({name}). {text}            one line per principle
    \\n\\n## Examples\\n\\n{examples_intro}\\n\\n
    User: {user}\\n\\n{assistant_name} (internal thoughts): {thoughts}\\n\\n{assistant_name}: {answer}\\n\\n
    User: {user}\\n\\n{assistant_name} (auto reply): {answer}\\n\\n      a follow-up without thoughts
    User:                                                          the open slot for the prompt
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness import data
from harness.common.errors import UserError
from harness.common.registry import unknown_name_error

FORMAT_TAG = "selfalign-constitution/1"
WATSON_PROMPT = "dromedary/prompts/watson_self_align_prompt.txt"

_RULES_HEADING = "## General Rules"
_EXAMPLES_HEADING = "## Examples"
_CITATION = " I should follow rules "


@dataclass(frozen=True)
class Principle:
    id: str
    name: str  # shown in the prompt: "3 (helpful). ..."
    text: str


@dataclass(frozen=True)
class InternalThoughts:
    """``{self_identification} {thought} I should follow rules 3 (helpful), 7 (candor).``"""

    thought: str
    rules: tuple[str, ...] = ()  # principle ids, in the order cited


@dataclass(frozen=True)
class Turn:
    user: str
    answer: str
    internal_thoughts: InternalThoughts | None = None  # None: an "(auto reply)" turn


@dataclass(frozen=True)
class Exemplar:
    id: str
    user: str
    internal_thoughts: InternalThoughts
    answer: str
    follow_ups: tuple[Turn, ...] = ()

    @property
    def turns(self) -> tuple[Turn, ...]:
        return (Turn(self.user, self.answer, self.internal_thoughts), *self.follow_ups)


@dataclass(frozen=True)
class Constitution:
    assistant_name: str
    rules_intro: str
    examples_intro: str
    self_identification: str
    principles: tuple[Principle, ...]
    exemplars: tuple[Exemplar, ...]
    source: str = ""  # where it was loaded from, for messages

    def principle_ids(self) -> list[str]:
        return [p.id for p in self.principles]

    def exemplar_ids(self) -> list[str]:
        return [e.id for e in self.exemplars]


# --------------------------------------------------------------------------------------------
# rendering


def render_thoughts(constitution: Constitution, thoughts: InternalThoughts) -> str:
    number = {p.id: (i, p.name) for i, p in enumerate(constitution.principles, 1)}
    cited = [f"{number[r][0]} ({number[r][1]})" for r in thoughts.rules if r in number]
    text = constitution.self_identification
    if thoughts.thought:
        text += f" {thoughts.thought}" if text else thoughts.thought
    if cited:
        text += f"{_CITATION}{', '.join(cited)}."
    return text


def render(constitution: Constitution) -> str:
    """The prompt text; ends with the open ``User:`` slot (no trailing newline), as the file does."""
    name = constitution.assistant_name
    principles = "\n".join(f"{i} ({p.name}). {p.text}" for i, p in enumerate(constitution.principles, 1))
    out = [
        f"# {name}\n\n{_RULES_HEADING}\n\n{constitution.rules_intro}\n\n{principles}\n\n",
        f"{_EXAMPLES_HEADING}\n\n{constitution.examples_intro}\n\n",
    ]
    for exemplar in constitution.exemplars:
        for turn in exemplar.turns:
            out.append(f"User: {turn.user}\n\n")
            if turn.internal_thoughts is None:
                out.append(f"{name} (auto reply): {turn.answer}\n\n")
            else:
                out.append(f"{name} (internal thoughts): {render_thoughts(constitution, turn.internal_thoughts)}\n\n")
                out.append(f"{name}: {turn.answer}\n\n")
    out.append("User:")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# importing the paper's text prompt


def slug(text: str, max_words: int = 0) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    if max_words:
        words = words[:max_words]
    return "_".join(words)


def _fail(source: str, where: str, problem: str) -> UserError:
    return UserError(f"{source}: {where}: {problem}")


def parse_watson_prompt(text: str, source: str = WATSON_PROMPT) -> Constitution:
    """Import a Watson-style self-align prompt into a :class:`Constitution`."""
    head = re.match(r"# (?P<name>[^\n]+)\n\n" + re.escape(_RULES_HEADING) + r"\n\n", text)
    if not head:
        raise _fail(source, "line 1", f"expected '# <assistant name>', a blank line and '{_RULES_HEADING}'")
    name = head["name"]
    body = text[head.end():]
    rules_part, sep, examples_part = body.partition(f"\n\n{_EXAMPLES_HEADING}\n\n")
    if not sep:
        raise _fail(source, "layout", f"no '{_EXAMPLES_HEADING}' section after the principles")
    rules_intro, _, principle_block = rules_part.partition("\n\n")
    principles = []
    for lineno, line in enumerate(principle_block.split("\n"), 1):
        m = re.fullmatch(r"(\d+) \(([^)]+)\)\. (.+)", line)
        if not m or int(m[1]) != lineno:
            raise _fail(source, f"principle line {lineno}", f"expected '{lineno} (<name>). <text>', got {line[:60]!r}")
        principles.append(Principle(id=slug(m[2]), name=m[2], text=m[3]))
    _check_unique(source, "principle", [p.id for p in principles])

    examples_intro, _, dialogue = examples_part.partition("\n\n")
    if not dialogue.endswith("User:"):
        raise _fail(source, "end of file", "expected the prompt to end with an open 'User:' slot")
    roles = {
        "User": "user",
        f"{name} (internal thoughts)": "thoughts",
        f"{name}": "answer",
        f"{name} (auto reply)": "auto",
    }
    # A turn starts at the beginning of the dialogue or after a blank line.
    marker = re.compile(r"(?:^|\n\n)(" + "|".join(re.escape(r) for r in sorted(roles, key=len, reverse=True)) + r"):(?: |$)")
    pieces = marker.split(dialogue)
    if pieces[0] != "":
        raise _fail(source, "examples", f"text before the first 'User:' turn: {pieces[0][:60]!r}")
    turns = [(roles[pieces[i]], pieces[i + 1]) for i in range(1, len(pieces), 2)]
    if turns[-1] != ("user", ""):
        raise _fail(source, "end of file", "expected the prompt to end with an open 'User:' slot")
    turns = turns[:-1]

    by_number = {i: p for i, p in enumerate(principles, 1)}
    self_id = _self_identification(source, [t for role, t in turns if role == "thoughts"])
    exemplars: list[Exemplar] = []
    current: list[Turn] = []
    i = 0
    while i < len(turns):
        role, user = turns[i]
        if role != "user":
            raise _fail(source, f"exemplar {len(exemplars) + 1}", f"expected a 'User:' turn, got a {role!r} turn")
        nxt = turns[i + 1][0] if i + 1 < len(turns) else None
        if nxt == "auto":
            current.append(Turn(user, turns[i + 1][1]))
            i += 2
        elif nxt == "thoughts" and i + 2 < len(turns) and turns[i + 2][0] == "answer":
            thoughts = _parse_thoughts(source, turns[i + 1][1], self_id, by_number)
            current.append(Turn(user, turns[i + 2][1], thoughts))
            i += 3
        else:
            raise _fail(source, f"exemplar {len(exemplars) + 1}", f"'User: {user[:40]}' is not followed by internal thoughts and an answer, or an auto reply")
        # An exemplar closes with the user's feedback and the assistant's auto reply.
        if current[-1].internal_thoughts is None or i >= len(turns):
            exemplars.append(_exemplar_from_turns(source, current))
            current = []
    _check_unique(source, "exemplar", [e.id for e in exemplars])
    return Constitution(name, rules_intro, examples_intro, self_id, tuple(principles), tuple(exemplars), source)


def _self_identification(source: str, thoughts: list[str]) -> str:
    if not thoughts:
        raise _fail(source, "examples", "no internal thoughts found")
    first = thoughts[0].split(". ", 1)[0] + "."
    for t in thoughts:
        if not t.startswith(first):
            raise _fail(source, "internal thoughts", f"every thought must start with the same self-identification {first!r}; got {t[:60]!r}")
    return first


def _parse_thoughts(source: str, text: str, self_id: str, by_number: Mapping[int, Principle]) -> InternalThoughts:
    # Inverse of render_thoughts: "{self_id}[ {thought}][ I should follow rules {citations}.]"
    head, sep, cited = text[len(self_id):].rpartition(_CITATION)
    if not sep:
        head, cited = text[len(self_id):], ""
    if head and not head.startswith(" "):
        raise _fail(source, "internal thoughts", f"expected a space after the self-identification in {text[:80]!r}")
    thought = head[1:]
    if not sep:
        return InternalThoughts(thought)
    if not cited.endswith("."):
        raise _fail(source, "internal thoughts", f"rule citations must end with '.': {text[-60:]!r}")
    rules = []
    for item in cited[:-1].split(", "):
        m = re.fullmatch(r"(\d+) \(([^)]+)\)", item)
        if not m or int(m[1]) not in by_number or by_number[int(m[1])].name != m[2]:
            raise _fail(source, "internal thoughts", f"citation {item!r} does not match a principle 'N (name)'")
        rules.append(by_number[int(m[1])].id)
    return InternalThoughts(thought, tuple(rules))


def _exemplar_from_turns(source: str, turns: list[Turn]) -> Exemplar:
    first = turns[0]
    if first.internal_thoughts is None:
        raise _fail(source, "exemplars", f"the first turn of an exemplar needs internal thoughts: 'User: {first.user[:40]}'")
    return Exemplar(slug(first.user, 5), first.user, first.internal_thoughts, first.answer, tuple(turns[1:]))


def _check_unique(source: str, kind: str, ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if not x:
            raise _fail(source, f"{kind}s[{i}].id", "is empty; give every entry a non-empty id")
        if x in seen:
            raise _fail(source, f"{kind}s[{i}].id", f"{x!r} is used twice; ids must be unique")
        seen.add(x)


# --------------------------------------------------------------------------------------------
# structured files (YAML / JSON)


def to_dict(constitution: Constitution) -> dict[str, Any]:
    def thoughts(t: InternalThoughts) -> dict[str, Any]:
        return {"thought": t.thought, "rules": list(t.rules)}

    def turn(t: Turn) -> dict[str, Any]:
        d: dict[str, Any] = {"user": t.user}
        if t.internal_thoughts is not None:
            d["internal_thoughts"] = thoughts(t.internal_thoughts)
        d["answer"] = t.answer
        return d

    return {
        "format": FORMAT_TAG,
        "assistant_name": constitution.assistant_name,
        "self_identification": constitution.self_identification,
        "rules_intro": constitution.rules_intro,
        "examples_intro": constitution.examples_intro,
        "principles": [{"id": p.id, "name": p.name, "text": p.text} for p in constitution.principles],
        "exemplars": [
            {
                "id": e.id,
                "user": e.user,
                "internal_thoughts": thoughts(e.internal_thoughts),
                "answer": e.answer,
                "follow_ups": [turn(t) for t in e.follow_ups],
            }
            for e in constitution.exemplars
        ],
    }


def _str_field(source: str, where: str, obj: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    if key not in obj:
        raise _fail(source, f"{where}.{key}", "is missing; add it")
    value = obj[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _fail(source, f"{where}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def _thoughts_from(source: str, where: str, obj: Any, principle_ids: Sequence[str]) -> InternalThoughts:
    if isinstance(obj, str):
        return InternalThoughts(obj)
    if not isinstance(obj, Mapping):
        raise _fail(source, where, "must be a mapping {thought: ..., rules: [principle ids]} or a string")
    thought = _str_field(source, where, obj, "thought", allow_empty=True)
    rules = obj.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise _fail(source, f"{where}.rules", f"must be a list of principle ids, got {rules!r}")
    for r in rules:
        if r not in principle_ids:
            raise unknown_name_error("principle id", r, principle_ids, f"{source}: {where}.rules")
    return InternalThoughts(thought, tuple(rules))


def _turn_from(source: str, where: str, obj: Any, principle_ids: Sequence[str]) -> Turn:
    if not isinstance(obj, Mapping):
        raise _fail(source, where, "must be a mapping with user, answer and optional internal_thoughts")
    thoughts = None
    if obj.get("internal_thoughts") is not None:
        thoughts = _thoughts_from(source, f"{where}.internal_thoughts", obj["internal_thoughts"], principle_ids)
    return Turn(_str_field(source, where, obj, "user"), _str_field(source, where, obj, "answer"), thoughts)


def exemplar_from_dict(source: str, where: str, obj: Any, principle_ids: Sequence[str]) -> Exemplar:
    if not isinstance(obj, Mapping):
        raise _fail(source, where, "must be a mapping with id, user, internal_thoughts, answer, follow_ups")
    if "internal_thoughts" not in obj:
        raise _fail(source, f"{where}.internal_thoughts", "is missing; the first turn of an exemplar needs internal thoughts")
    follow = obj.get("follow_ups", []) or []
    if not isinstance(follow, list):
        raise _fail(source, f"{where}.follow_ups", "must be a list of turns")
    return Exemplar(
        id=_str_field(source, where, obj, "id"),
        user=_str_field(source, where, obj, "user"),
        internal_thoughts=_thoughts_from(source, f"{where}.internal_thoughts", obj["internal_thoughts"], principle_ids),
        answer=_str_field(source, where, obj, "answer"),
        follow_ups=tuple(_turn_from(source, f"{where}.follow_ups[{i}]", t, principle_ids) for i, t in enumerate(follow)),
    )


def from_dict(data: Any, source: str = "constitution") -> Constitution:
    if not isinstance(data, Mapping):
        raise _fail(source, "top level", "expected a mapping (see `selfalign pipeline constitution --export`)")
    if data.get("format") != FORMAT_TAG:
        raise _fail(source, "format", f"expected {FORMAT_TAG!r}, got {data.get('format')!r}; export a template with `selfalign pipeline constitution --export FILE`")
    raw_principles = data.get("principles")
    if not isinstance(raw_principles, list) or not raw_principles:
        raise _fail(source, "principles", "must be a non-empty list of {id, name, text}")
    principles = []
    for i, p in enumerate(raw_principles):
        if not isinstance(p, Mapping):
            raise _fail(source, f"principles[{i}]", "must be a mapping {id, name, text}")
        where = f"principles[{i}]"
        principles.append(Principle(_str_field(source, where, p, "id"), _str_field(source, where, p, "name"), _str_field(source, where, p, "text")))
    _check_unique(source, "principle", [p.id for p in principles])
    ids = [p.id for p in principles]
    raw_exemplars = data.get("exemplars", [])
    if not isinstance(raw_exemplars, list):
        raise _fail(source, "exemplars", "must be a list")
    exemplars = [exemplar_from_dict(source, f"exemplars[{i}]", e, ids) for i, e in enumerate(raw_exemplars)]
    _check_unique(source, "exemplar", [e.id for e in exemplars])
    return Constitution(
        assistant_name=_str_field(source, "top level", data, "assistant_name"),
        rules_intro=_str_field(source, "top level", data, "rules_intro"),
        examples_intro=_str_field(source, "top level", data, "examples_intro"),
        self_identification=_str_field(source, "top level", data, "self_identification", allow_empty=True),
        principles=tuple(principles),
        exemplars=tuple(exemplars),
        source=source,
    )


def load_file(path: str | Path) -> Constitution:
    """A structured constitution (``.yaml``/``.yml``/``.json``) or a Watson-style ``.txt`` prompt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"constitution file {path} does not exist; fix constitution.path or drop it to use the paper's Watson prompt")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return parse_watson_prompt(text, str(path))
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({exc}); fix the syntax") from None
    return from_dict(data, str(path))


def dump_file(constitution: Constitution, path: str | Path) -> None:
    path = Path(path)
    data = to_dict(constitution)
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# ablations


@dataclass
class Ablation:
    """Edits applied to a loaded constitution (all by id). Mirrors ``ConstitutionConfig``."""

    drop_principles: list[str] = field(default_factory=list)
    drop_exemplars: list[str] = field(default_factory=list)
    # id -> {name?, text?}: replace a principle's wording but keep its place and citations
    replace_principles: dict[str, dict[str, str]] = field(default_factory=dict)
    # id -> a full exemplar mapping (user, internal_thoughts, answer, follow_ups)
    replace_exemplars: dict[str, dict[str, Any]] = field(default_factory=dict)


def apply_ablation(constitution: Constitution, ablation: Ablation, where: str = "constitution") -> Constitution:
    """Drop/replace principles and exemplars; citations of dropped principles disappear."""
    pids = constitution.principle_ids()
    eids = constitution.exemplar_ids()
    checks = [
        ("principle id", "drop_principles", ablation.drop_principles, pids),
        ("principle id", "replace_principles", ablation.replace_principles, pids),
        ("exemplar id", "drop_exemplars", ablation.drop_exemplars, eids),
        ("exemplar id", "replace_exemplars", ablation.replace_exemplars, eids),
    ]
    for kind, key, given, known in checks:
        for name in given:
            if name not in known:
                hint = f"{where}.{key} of {constitution.source or 'the constitution'}; list ids with `selfalign pipeline constitution`"
                raise unknown_name_error(kind, name, known, hint)

    principles = []
    for p in constitution.principles:
        if p.id in ablation.drop_principles:
            continue
        new = ablation.replace_principles.get(p.id)
        if new is not None:
            if not isinstance(new, Mapping) or not set(new) <= {"name", "text"} or not new:
                raise UserError(f"{where}.replace_principles.{p.id}: expected a mapping with 'name' and/or 'text', got {new!r}")
            p = replace(p, **{k: str(v) for k, v in new.items()})
        principles.append(p)
    if not principles:
        raise UserError(f"{where}.drop_principles: drops every principle; keep at least one")
    kept_ids = [p.id for p in principles]

    def prune(t: InternalThoughts | None) -> InternalThoughts | None:
        return None if t is None else InternalThoughts(t.thought, tuple(r for r in t.rules if r in kept_ids))

    exemplars = []
    for e in constitution.exemplars:
        if e.id in ablation.drop_exemplars:
            continue
        if e.id in ablation.replace_exemplars:
            # Citations in a replacement may name any principle of the original constitution.
            e = exemplar_from_dict(where, f"replace_exemplars.{e.id}", {"id": e.id, **ablation.replace_exemplars[e.id]}, pids)
        e = replace(
            e,
            internal_thoughts=prune(e.internal_thoughts),
            follow_ups=tuple(replace(t, internal_thoughts=prune(t.internal_thoughts)) for t in e.follow_ups),
        )
        exemplars.append(e)
    return replace(constitution, principles=tuple(principles), exemplars=tuple(exemplars))


def load_constitution(path: str | None, ablation: Ablation, data_dir: str | Path | None = None) -> Constitution:
    """The configured constitution: a file, or the paper's Watson prompt from the data directory."""
    if path:
        base = load_file(path)
    else:
        base = parse_watson_prompt(data.read_text(WATSON_PROMPT, data_dir), WATSON_PROMPT)
    return apply_ablation(base, ablation)

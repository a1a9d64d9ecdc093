"""The baselines registry: runnable model specs, recorded answer sets, and the paper's reported numbers.

Every ``configs/baselines/*.yaml`` except ``paper_reported.yaml`` holds a ``baselines:`` mapping
``name -> {description, model, answers, reported}``; a baseline has at least one of

* ``model``: what ``selfalign eval`` takes (lm-eval backend + model_args: alias, HF directory,
  ``peft=`` adapter, ``.gguf`` file, or an OpenAI-compatible API, which does generation only);
* ``answers``: a recorded Vicuna-80 answer set of ``selfalign judge`` (``gpt35``, ...) or a file;
* ``reported``: row names in ``paper_reported.yaml``, the paper's numbers with their sources.

``paper_reported.yaml`` is facts copied from the paper with table/figure references; the report
prints its rows beside measured ones and says "not reported" where the paper shows only bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.registry import backend_names
from harness.common.config import build_dataclass, read_yaml
from harness.common.errors import UserError
from harness.common.registry import did_you_mean, lookup
from harness.common.shipped_configs import configs_root
from harness.judge.answers import RECORDED
from harness.models import ALIASES, parse_model_args
from harness.prompts import META_PROMPTS

PAPER_REPORTED_FILE = "paper_reported.yaml"
# lm-eval backends that talk to a server: they generate text but return no log-likelihoods
# (LMEVAL_NOTES: chat completions do generation only), so they run the generation tasks only.
API_BACKENDS = ("local-chat-completions", "openai-chat-completions", "local-completions", "openai-completions")
LOCAL_BACKENDS = ("hf", "selfalign-hf", "vllm")


def baselines_dir() -> Path:
    return configs_root() / "baselines"


@dataclass
class ModelSpec:
    """A model as ``selfalign eval`` takes it."""

    model_args: str
    # lm-eval backend; None = a local checkpoint backend: the run's eval.backend (hf outside a run)
    backend: str | None = None
    apply_chat_template: bool = False
    meta_prompt: str | None = None  # None: the tasks' paper default (Dromedary verbose prompt)

    @property
    def kind(self) -> str:
        """api | peft | gguf | alias | hf (for listings; the loader decides by itself)."""
        if self.backend in API_BACKENDS:
            return "api"
        args = parse_model_args(self.model_args)
        pretrained = str(args.get("pretrained", ""))
        if "peft" in args:
            return "peft"
        if pretrained.endswith(".gguf"):
            return "gguf"
        return "alias" if pretrained in ALIASES else "hf"

    @property
    def generation_only(self) -> bool:
        return self.backend in API_BACKENDS

    def describe(self) -> str:
        extras = [f"backend={self.backend}"] if self.backend else []
        if self.apply_chat_template:
            extras.append("chat template")
        if self.meta_prompt:
            extras.append(f"meta prompt {self.meta_prompt}")
        return f"{self.kind}: {self.model_args}" + (f" ({', '.join(extras)})" if extras else "")


@dataclass
class Baseline:
    name: str = ""
    description: str = ""
    model: ModelSpec | None = None
    answers: str | None = None  # recorded Vicuna-80 answer set name or answer file
    reported: list[str] = field(default_factory=list, metadata={"comma_separated": True})  # row names in paper_reported.yaml
    source: str = ""  # the YAML file it came from

    def __post_init__(self) -> None:
        if isinstance(self.reported, str):
            self.reported = [self.reported]


@dataclass
class ReportedTable:
    """One of the paper's tables: ``rows[system][column] = value``; absent cells are not reported."""

    key: str
    title: str
    source: str
    columns: list[str]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    not_reported: list[str] = field(default_factory=list)
    qualitative: str = ""
    not_measured: str = ""
    # numbers that are not the paper's but derived from recorded artefacts (labelled "derived")
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class PaperReported:
    paper: str
    tables: dict[str, ReportedTable]

    def systems_with_numbers(self) -> dict[str, list[str]]:
        """``{row name: [table keys where it has numbers]}``."""
        out: dict[str, list[str]] = {}
        for table in self.tables.values():
            for row in table.rows:
                out.setdefault(row, []).append(table.key)
        return out


@dataclass
class Registry:
    baselines: dict[str, Baseline]
    reported: PaperReported
    files: list[Path]

    def get(self, name: str) -> Baseline:
        return lookup("baseline", name, self.baselines, "see: selfalign ls baselines")


# ---------------------------------------------------------------------------- loading


def load_paper_reported(path: Path | None = None) -> PaperReported:
    path = path or baselines_dir() / PAPER_REPORTED_FILE
    raw = read_yaml(path)
    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, dict):
        raise UserError(f"{path}: expected a `tables:` mapping of table key -> {{title, source, columns, rows}}")
    tables = {}
    for key, body in tables_raw.items():
        table = build_dataclass(ReportedTable, {"key": key, **(body or {})}, f"{path}: tables.{key}")
        for system, cells in table.rows.items():
            unknown = set(cells or {}) - set(table.columns)
            if unknown:
                raise UserError(f"{path}: tables.{key}.rows[{system!r}] has columns {sorted(unknown)} not in columns {table.columns}")
        tables[key] = table
    return PaperReported(paper=str(raw.get("paper", "")), tables=tables)


def _baseline_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.yaml") if p.name != PAPER_REPORTED_FILE)


def _load_baseline_file(path: Path) -> dict[str, Baseline]:
    raw = read_yaml(path)
    unknown = set(raw) - {"baselines"}
    if unknown:
        raise UserError(f"{path}: unknown top-level keys {sorted(unknown)}; a baselines file holds only `baselines:`")
    entries = raw.get("baselines") or {}
    if not isinstance(entries, dict):
        raise UserError(f"{path}: `baselines:` must map names to {{description, model, answers, reported}}")
    out = {}
    for name, body in entries.items():
        baseline = build_dataclass(Baseline, {**(body or {}), "name": str(name), "source": str(path)}, f"{path}: baselines.{name}")
        if baseline.model is None and baseline.answers is None and not baseline.reported:
            raise UserError(f"{path}: baseline {name!r} needs at least one of model, answers, reported")
        out[str(name)] = baseline
    return out


def load_registry(extra_files: Sequence[str | Path] = (), directory: Path | None = None) -> Registry:
    """Every baselines file of ``directory`` (default ``configs/baselines``) plus ``extra_files``."""
    directory = directory or baselines_dir()
    files = _baseline_files(directory) + [Path(f) for f in extra_files]
    baselines: dict[str, Baseline] = {}
    for path in files:
        for name, baseline in _load_baseline_file(path).items():
            if name in baselines:
                raise UserError(f"{path}: baseline {name!r} is already defined in {baselines[name].source}; rename one")
            baselines[name] = baseline
    return Registry(baselines, load_paper_reported(directory / PAPER_REPORTED_FILE), files)


# ---------------------------------------------------------------------------- ls / validate


def list_baselines() -> list[tuple[str, str]]:
    """``selfalign ls baselines``: (name, what it is and which paper numbers it carries)."""
    registry = load_registry()
    with_numbers = registry.reported.systems_with_numbers()
    rows = []
    for name, b in sorted(registry.baselines.items()):
        parts = [b.description] if b.description else []
        if b.model is not None:
            parts.append(f"model {b.model.describe()}")
        if b.answers:
            parts.append(f"recorded Vicuna-80 answers: {b.answers}")
        if b.reported:
            tables = sorted({t for r in b.reported for t in with_numbers.get(r, [])})
            parts.append(f"paper numbers: {', '.join(tables) if tables else 'none'}")
        rows.append((name, "; ".join(parts)))
    return rows


def _check_model(b: Baseline, backends: set[str]) -> list[str]:
    spec = b.model
    assert spec is not None
    where = f"{b.source}: baselines.{b.name}.model"
    try:
        args = parse_model_args(spec.model_args)
    except UserError as exc:
        return [f"{where}: {exc}"]
    problems = []
    if spec.backend is not None and spec.backend not in backends:
        problems.append(f"{where}: unknown lm-eval backend {spec.backend!r}; {did_you_mean(spec.backend, backends) or 'see: selfalign ls backends'}")
    if spec.backend is None or spec.backend in LOCAL_BACKENDS:
        pretrained = str(args.get("pretrained", ""))
        if not pretrained:
            problems.append(f"{where}: model_args needs pretrained=<alias | HF directory | .gguf file>")
        elif pretrained not in ALIASES and "/" not in pretrained and not pretrained.endswith(".gguf"):
            problems.append(f"{where}: pretrained={pretrained!r} is neither an alias nor a path; {did_you_mean(pretrained, ALIASES) or 'known aliases: ' + ', '.join(ALIASES)}")
    elif spec.backend in API_BACKENDS and "model" not in args:
        problems.append(f"{where}: an API backend needs model_args model=<name the server knows>")
    if spec.meta_prompt is not None:
        if spec.meta_prompt not in {*META_PROMPTS, "none"}:
            problems.append(f"{where}: unknown meta_prompt {spec.meta_prompt!r}; known: {', '.join([*META_PROMPTS, 'none'])}")
    return problems


def validate_baselines() -> list[str]:
    """``selfalign validate``: every problem in configs/baselines, one line each (empty = fine)."""
    directory = baselines_dir()
    problems: list[str] = []
    try:
        reported = load_paper_reported(directory / PAPER_REPORTED_FILE)
    except UserError as exc:
        return [str(exc)]
    reported_rows = {row for t in reported.tables.values() for row in t.rows}
    backends = set(backend_names())
    seen: dict[str, str] = {}
    for path in _baseline_files(directory):
        try:
            baselines = _load_baseline_file(path)
        except UserError as exc:
            problems.append(str(exc))
            continue
        for name, b in baselines.items():
            if name in seen:
                problems.append(f"{path}: baseline {name!r} is already defined in {seen[name]}; rename one")
            seen[name] = str(path)
            for row in b.reported:
                if row not in reported_rows:
                    hint = did_you_mean(row, reported_rows)
                    problems.append(f"{path}: baselines.{name}.reported: {row!r} is no row of {PAPER_REPORTED_FILE}" + (f"; {hint}" if hint else ""))
            if b.answers and b.answers not in RECORDED and not Path(b.answers).is_file():
                problems.append(f"{path}: baselines.{name}.answers: {b.answers!r} is neither a recorded set ({', '.join(RECORDED)}) nor a file")
            if b.model is not None:
                problems += _check_model(b, backends)
    return problems

"""Find the measured systems in run directories and load their results, per-item scores and judgments.

``selfalign report`` accepts, in any mix:

* a ``selfalign run`` directory (``manifest.json`` lists its systems in stage order, with roles);
* a ``selfalign eval`` model directory (``results.json`` + ``samples_<task>_<date>.jsonl``);
* a ``selfalign eval --output`` directory (one model directory per subdirectory, taken in name order);
* a ``selfalign judge`` output directory (``summary.json``), attached to the judged model;
* a ``selfalign judge truthfulqa`` output directory (``summary.json`` of kind ``truthfulqa_judge``), likewise.

A model met in several inputs is one system whose task results are merged (the first input that
has a task wins; later duplicates are listed in ``Collection.notes``). Systems keep the order in
which they were first met; paired tests compare consecutive *checkpoints*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.jsonl import manifest_kind, read_judge_summary, read_manifest_file, read_records
from harness.common.records import RunManifest, TruthfulQAJudgeSummary
from harness.common.registry import unknown_name_error
from harness.common.run_files import samples_path
from harness.task_registry import find_benchmark, short_name

RUN_MANIFEST = "manifest.json"
JUDGE_SUMMARY = "summary.json"
CHECKPOINT, BASELINE = "checkpoint", "baseline"


@dataclass
class TaskResult:
    """One task of one system, as ``selfalign eval`` wrote it."""

    task: str  # short name (truthfulqa_mc1, hhh_harmless, ...)
    metrics: dict[str, Any]  # results.json ``results[task]``
    n: int | None  # n-samples effective
    n_original: int | None
    version: Any
    directory: Path
    provenance: dict[str, Any]  # results.json ``selfalign`` block

    def samples_path(self) -> Path:
        return samples_path(self.directory, self.task)

    def item_scores(self, metric: str) -> dict[tuple[int, str], float] | None:
        """``{(doc_id, doc_hash): score}`` from the samples log (None when it is missing)."""
        path = self.samples_path()
        if not path.is_file():
            return None
        scores = {}
        for row in read_records(path):
            if metric not in row:
                raise UserError(f"{path}: doc {row.get('doc_id')} has no metric {metric!r}; rerun `selfalign eval` for this task")
            scores[(int(row["doc_id"]), str(row.get("doc_hash", "")))] = float(row[metric])
        return scores


@dataclass
class JudgeResult:
    """One ``selfalign judge`` comparison: this system's answers against an opponent's."""

    opponent: str
    directory: Path
    summary: dict[str, Any]

    @property
    def per_question(self) -> list[dict[str, Any]]:
        rows = self.summary.get("per_question")
        if rows is None:
            raise UserError(f"{self.directory / JUDGE_SUMMARY}: no per_question block; rerun `selfalign judge` with this version")
        return rows

    @property
    def n_failed(self) -> int:
        return int(self.summary.get("n_failed_questions", self.summary.get("n_failed", 0)) or 0)


@dataclass
class TruthfulQAJudgeResult:
    """One ``selfalign judge truthfulqa`` output: truthful / informative fractions of one system."""

    directory: Path
    summary: dict[str, Any]


@dataclass
class System:
    model_id: str
    label: str
    role: str = CHECKPOINT  # checkpoint | baseline
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    judgments: dict[str, JudgeResult] = field(default_factory=dict)  # opponent -> result
    truthfulqa_judge: TruthfulQAJudgeResult | None = None

    def describe(self) -> dict[str, Any]:
        """Provenance facts for the report's appendix (first task's block; tasks listed)."""
        first = next(iter(self.tasks.values()), None)
        prov = first.provenance if first else {}
        preset_result = next((r for t, r in self.tasks.items() if (b := find_benchmark(t)) and b.takes_gen_preset), None)
        return {
            "model_id": self.model_id, "label": self.label, "role": self.role,
            "backend": prov.get("backend"), "model_args": prov.get("model_args"),
            "prompt_format": prov.get("prompt_format"), "git_hash": prov.get("git_hash"),
            # the generation preset that produced this system's answers (tasks that take presets)
            "gen_preset": (preset_result.provenance.get("gen_preset") or "paper") if preset_result else None,
            "gen_preset_task": preset_result.task if preset_result else None,
            "tasks": {t: {"n": r.n, "of": r.n_original, "version": r.version} for t, r in self.tasks.items()},
            "judged_against": sorted(self.judgments),
        }


def prompt_label(described: dict[str, Any]) -> str:
    """The report's "prompt" cell: the prompt format, and the generation preset (Vicuna-80's)."""
    prompt_format = described.get("prompt_format") or ""
    preset = described.get("gen_preset")
    return f"{prompt_format}; {described.get('gen_preset_task')} preset {preset}" if preset else prompt_format


@dataclass
class Collection:
    systems: list[System]
    notes: list[str] = field(default_factory=list)
    run_manifests: list[RunManifest] = field(default_factory=list)

    def checkpoints(self) -> list[System]:
        return [s for s in self.systems if s.role == CHECKPOINT]


class _Builder:
    def __init__(self) -> None:
        self.systems: dict[str, System] = {}
        self.notes: list[str] = []
        self.manifests: list[RunManifest] = []

    def system(self, model_id: str, label: str | None = None, role: str | None = None) -> System:
        if model_id not in self.systems:
            self.systems[model_id] = System(model_id, label or model_id, role or CHECKPOINT)
        s = self.systems[model_id]
        if label and s.label == s.model_id:
            s.label = label
        if role:
            s.role = role
        return s

    def add_eval_dir(self, directory: Path, model_id: str | None = None, label: str | None = None, role: str | None = None) -> None:
        path = directory / "results.json"
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg}); rerun `selfalign eval` for it") from None
        prov = results.get("selfalign") or {}
        mid = model_id or prov.get("model_id") or directory.name
        system = self.system(mid, label, role)
        n_samples = results.get("n-samples", {})
        versions = results.get("versions", {})
        for full, metrics in results.get("results", {}).items():
            task = short_name(full)
            if task in system.tasks:
                self.notes.append(f"{mid}: {task} found again in {directory}; kept {system.tasks[task].directory}")
                continue
            n = n_samples.get(full, {}).get("effective")
            n_original = n_samples.get(full, {}).get("original")
            if n is None and full in results.get("group_subtasks", {}):
                subs = results["group_subtasks"][full]
                n = sum(n_samples.get(t, {}).get("effective", 0) for t in subs)
                n_original = sum(n_samples.get(t, {}).get("original", 0) for t in subs)
            system.tasks[task] = TaskResult(task, metrics, n, n_original, versions.get(full), directory, prov)

    def add_judge_dir(self, directory: Path, model_id: str | None = None, opponent: str | None = None) -> None:
        record = read_judge_summary(directory / JUDGE_SUMMARY)
        summary = record.model_dump(mode="json")
        if isinstance(record, TruthfulQAJudgeSummary):
            self.add_truthfulqa_judge(directory, summary, model_id)
            return
        mid, opp = model_id, opponent
        if mid is None or opp is None:
            found_mid, found_opp = _judge_names(summary, directory)
            mid, opp = mid or found_mid, opp or found_opp
        system = self.system(mid)
        if opp in system.judgments:
            self.notes.append(f"{mid} vs {opp}: judged again in {directory}; kept {system.judgments[opp].directory}")
            return
        system.judgments[opp] = JudgeResult(opp, directory, summary)

    def add_truthfulqa_judge(self, directory: Path, summary: dict[str, Any], model_id: str | None = None) -> None:
        mid = model_id or (summary.get("answers") or {}).get("model_id")
        if not mid:
            raise UserError(f"{directory / JUDGE_SUMMARY}: no answers.model_id; rerun `selfalign judge truthfulqa`")
        system = self.system(str(mid))
        if system.truthfulqa_judge is not None:
            self.notes.append(f"{mid}: TruthfulQA judged again in {directory}; kept {system.truthfulqa_judge.directory}")
            return
        system.truthfulqa_judge = TruthfulQAJudgeResult(directory, summary)

    def add_run_dir(self, directory: Path) -> None:
        manifest = read_manifest_file(directory / RUN_MANIFEST)
        if not isinstance(manifest, RunManifest):
            raise UserError(f"{directory / RUN_MANIFEST}: a {manifest.kind} manifest, not a `selfalign run` one; pass the run directory")
        self.manifests.append(manifest)
        for entry in manifest.systems:
            mid = entry.model_id
            self.system(mid, entry.label, entry.role)
            for rel in entry.eval_dirs:
                if (directory / rel / "results.json").is_file():
                    self.add_eval_dir(directory / rel, mid)
            for opponent, rel in entry.judge_dirs.items():
                if (directory / rel / JUDGE_SUMMARY).is_file():
                    self.add_judge_dir(directory / rel, mid, opponent)
            rel = entry.truthfulqa_judge_dir
            if rel and (directory / rel / JUDGE_SUMMARY).is_file():
                self.add_judge_dir(directory / rel, mid)

    def add(self, path: Path) -> None:
        if not path.is_dir():
            raise UserError(f"{path} is not a directory; pass `selfalign run`, `selfalign eval` or `selfalign judge` output directories")
        if (path / RUN_MANIFEST).is_file() and manifest_kind(path / RUN_MANIFEST) == "run":
            self.add_run_dir(path)
        elif (path / "results.json").is_file():
            self.add_eval_dir(path)
        elif (path / JUDGE_SUMMARY).is_file():
            self.add_judge_dir(path)
        else:
            children = sorted(p for p in path.iterdir() if p.is_dir() and ((p / "results.json").is_file() or (p / JUDGE_SUMMARY).is_file()))
            if not children:
                raise UserError(
                    f"{path}: no results.json, summary.json or {RUN_MANIFEST} here or one level down; "
                    "pass a `selfalign run`, `selfalign eval` or `selfalign judge` output directory"
                )
            # evaluations first, so that judge results attach to labelled systems
            for child in sorted(children, key=lambda p: (p / JUDGE_SUMMARY).is_file()):
                self.add(child)


def _judge_names(summary: dict[str, Any], directory: Path) -> tuple[str, str]:
    """(judged model id, opponent name) of a judge summary, else of a ``<model>_vs_<opponent>`` directory."""
    def name_of(block: Any) -> str | None:
        if isinstance(block, dict):
            return block.get("run_model_id") or block.get("name")
        return block if isinstance(block, str) else None

    mid = name_of(summary.get("model")) or name_of(summary.get("answers"))
    opp = name_of(summary.get("baseline"))
    if (mid is None or opp is None) and "_vs_" in directory.name:
        left, right = directory.name.rsplit("_vs_", 1)
        mid, opp = mid or left, opp or right
    if mid is None or opp is None:
        raise UserError(f"{directory / JUDGE_SUMMARY}: cannot tell which model was judged against what; name the directory <model_id>_vs_<baseline>")
    return str(mid), str(opp)


def collect(paths: list[str | Path], baseline_ids: list[str] = ()) -> Collection:
    """Systems found under ``paths``; ``baseline_ids`` marks model ids that are baselines, not checkpoints."""
    builder = _Builder()
    for p in paths:
        builder.add(Path(p))
    for mid in baseline_ids:
        if mid not in builder.systems:
            raise unknown_name_error("model id", mid, builder.systems, "--baselines")
        builder.systems[mid].role = BASELINE
    if not builder.systems:
        raise UserError("no evaluated systems found in " + ", ".join(map(str, paths)))
    return Collection(list(builder.systems.values()), builder.notes, builder.manifests)

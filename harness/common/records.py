"""The records that cross a stage or package boundary: one pydantic model each, with its JSON Schema.

Every JSONL line and ``manifest.json`` that selfalign writes for another stage, package or user
tool is one of these models, written and read through ``harness.common.jsonl`` (``write_jsonl_atomic``,
``JsonlWriter``, ``iter_typed``, ``read_json_record``), so a wrong field fails on read with one line
naming the file, the line and the field. ``selfalign ls schemas --output DIR`` exports
the schemas (``RECORDS`` below) for other tools.

Pipeline files (``selfalign pipeline run --output DIR``)::

    01_tgrt_self_instruct/prompts.jsonl      PromptRecord     (stage 1 output, stage 2 input)
    01_tgrt_self_instruct/candidates.jsonl   CandidateRecord  (every parsed candidate, kept or not)
    01_tgrt_self_instruct/topics.jsonl       TopicRecord
    02_self_align/records.jsonl              AnswerRecord     (stage 2 output: one per prompt)
    03_engrave/train.jsonl                   TrainRecord      (the exact training texts)
    04_verbose_clone/records.jsonl           AnswerRecord
    04_verbose_clone/train.jsonl             TrainRecord
    <stage dir>/manifest.json                StageManifest    (kind "stage")
    manifest.json                            PipelineManifest (kind "pipeline")

Evaluation files: ``selfalign run``'s ``manifest.json`` is a RunManifest (kind "run") listing
SystemEntry, EvalUnitRecord and JudgeUnitRecord entries; ``selfalign judge`` writes Judgment
lines and ``selfalign judge truthfulqa`` TruthfulQAJudgment lines to ``judgments.jsonl``; their
``summary.json`` files are a JudgeSummary (kind "pairwise_judge") and a TruthfulQAJudgeSummary
(kind "truthfulqa_judge").
lm-eval's own files (``results.json``, ``samples_*.jsonl``) keep lm-eval's format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Record(BaseModel):
    """A record we write ourselves: unknown fields are an error (a typo or another version)."""

    model_config = ConfigDict(extra="forbid")


class OpenRecord(BaseModel):
    """A record whose producer may add fields (manifests: a stage's extra facts); they are kept."""

    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------- pipeline records


class Origin(OpenRecord):
    """Where a prompt came from. ``source`` is ``self_instruct`` (+ ``request_id``), ``tgrt``
    (+ ``question_type``, ``topic``, ``request_id``), ``prompts_file`` or ``identity``
    (+ ``conversation``)."""

    source: str


class PromptRecord(Record):
    """A prompt: stage 1's ``prompts.jsonl`` (kept prompts), stage 2's input."""

    id: str
    instruction: str
    input: str = ""
    origin: Origin


class CandidateRecord(PromptRecord):
    """A parsed stage-1 candidate prompt and the filter's verdict (``candidates.jsonl``).
    ``rouge_l_max`` / ``rouge_l_match``: the closest earlier instruction when the novelty filter
    dropped it (null otherwise)."""

    rouge_l_max: float | None = None
    rouge_l_match: str | None = None
    kept: bool
    drop_reason: str | None


class TopicRecord(Record):
    """A TGRT (question type, topic) pair that stage 1 asked questions about (``topics.jsonl``)."""

    question_type: str
    topic: str


class AnswerRecord(PromptRecord):
    """One prompt answered by stage 2 (self-align) or stage 4 (verbose clone), kept or dropped."""

    raw_output: str
    finish_reason: str
    kept: bool
    answer: str | None  # the cleaned answer when kept
    drop_reason: str | None
    drop_detail: str | None = None


class TrainRecord(Record):
    """One training text of stage 3 or 4 (``train.jsonl``): the loss is on ``answer`` only."""

    id: str
    # what produced the answer: self_align (stage 2), identity (the identity data), verbose_clone (stage 4)
    source: Literal["self_align", "identity", "verbose_clone"]
    prompt: str
    answer: str


# ---------------------------------------------------------------------------- manifests


class StageManifest(OpenRecord):
    """``<output>/<NN>_<stage>/manifest.json``: written ``running`` when a stage starts, ``complete``
    at its end (see ``pipeline.manifest``); a stage may add facts of its own (``constitution``)."""

    kind: Literal["stage"] = "stage"
    schema_version: int = SCHEMA_VERSION
    stage: str
    number: int
    title: str
    status: Literal["running", "complete"]
    config_hash: str
    config: dict[str, Any] = Field(default_factory=dict)
    upstream: dict[str, str] = Field(default_factory=dict)  # upstream stage -> its output_hash
    data_files: dict[str, str] = Field(default_factory=dict)  # input reference -> sha256
    stage_dir: str | None = None  # the directory's name under the pipeline output
    resumed: bool | None = None
    outputs: dict[str, str] = Field(default_factory=dict)  # output name -> path relative to the stage dir
    output_hash: str | None = None  # hash of the primary outputs (complete only)
    counts: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    dist: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)


class PipelineManifest(OpenRecord):
    """``<output>/manifest.json`` of ``selfalign pipeline run``: a summary per stage run so far."""

    kind: Literal["pipeline"] = "pipeline"
    config_hash: str
    stages: dict[str, dict[str, Any]]  # stage name -> status, counts, timings of its last run
    wall_s: float | None = None
    world_size: int = 1
    provenance: dict[str, Any] = Field(default_factory=dict)


class Checkpoint(Record):
    """A model the pipeline produced (or its base model): what ``selfalign run`` evaluates."""

    name: str  # base | engrave | verbose_clone
    label: str  # e.g. "stage 3: principle engraving"
    base: str  # the base model (alias or path) the adapter was trained on
    adapter_dir: Path | None  # None for the base model
    manifest: StageManifest | None  # the stage's manifest (None for the base model)

    def model_args(self) -> dict[str, str]:
        args = {"pretrained": self.base}
        if self.adapter_dir is not None:
            args["peft"] = str(self.adapter_dir)
        return args


class EvalUnitRecord(OpenRecord):
    """One (model, task) evaluation of a ``selfalign run``."""

    model_id: str
    task: str
    dir: str  # relative to the run directory
    key: str  # the reuse key (run_key.json)
    reused: bool
    wall_s: float


class JudgeUnitRecord(OpenRecord):
    """One judge comparison (Vicuna-80: ``opponent`` set) or TruthfulQA judging of a ``selfalign run``."""

    model_id: str
    opponent: str | None = None
    dir: str
    key: str
    reused: bool
    wall_s: float
    n_scored: int | None = None
    n_failed: int | None = None


class SystemEntry(OpenRecord):
    """A system a ``selfalign run`` evaluated, with the directories of its results."""

    model_id: str
    label: str
    role: Literal["checkpoint", "baseline"]
    backend: str
    model_args: str
    apply_chat_template: bool = False
    meta_prompt: str | None = None
    generation_only: bool = False
    eval_dirs: list[str] = Field(default_factory=list)
    judge_dirs: dict[str, str] = Field(default_factory=dict)  # opponent -> judge directory
    truthfulqa_judge_dir: str | None = None


class RunManifest(OpenRecord):
    """``<output>/<name>/manifest.json`` of ``selfalign run``: systems in stage order and every unit."""

    kind: Literal["run"] = "run"
    name: str
    config: dict[str, Any]
    timings_s: dict[str, float] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    pipeline: dict[str, Any] | None = None  # the pipeline manifest of this run, without provenance
    missing_checkpoints: list[str] = Field(default_factory=list)
    systems: list[SystemEntry] = Field(default_factory=list)
    evals: list[EvalUnitRecord] = Field(default_factory=list)
    judgments: list[JudgeUnitRecord] = Field(default_factory=list)
    truthfulqa_judgments: list[JudgeUnitRecord] = Field(default_factory=list)
    report: dict[str, str] | None = None


# the ``kind`` of a manifest.json -> its model
MANIFEST_KINDS: dict[str, type[StageManifest | PipelineManifest | RunManifest]] = {
    "stage": StageManifest, "pipeline": PipelineManifest, "run": RunManifest,
}


def infer_manifest_kind(data: dict[str, Any]) -> str | None:
    """The kind of a manifest written before manifests named it (0.x run directories)."""
    if "systems" in data:
        return "run"
    if "stages" in data:
        return "pipeline"
    if "stage" in data and "status" in data:
        return "stage"
    return None


# ---------------------------------------------------------------------------- judgments


class JudgeAttempt(OpenRecord):
    """One request to the judge for one verdict (a verdict may take several)."""

    reply: str | None
    finish_reason: str | None = None
    error: str | None = None
    cached: bool = False
    latency_s: float


class Judgment(Record):
    """One Vicuna-80 verdict (``selfalign judge``'s ``judgments.jsonl``): one question, one answer order."""

    id: str  # <question_id>:<order>
    question_id: int
    category: str
    reviewer: str
    reviewer_category: str
    order: Literal["model_first", "baseline_first"]
    assistant_1: str
    assistant_2: str
    status: Literal["ok", "api_error", "parse_failed"]
    scores: dict[Literal["model", "baseline"], float] | None
    raw_scores: list[float] | None
    parse_rule: str | None
    error: str | None
    failure_reason: str | None
    n_attempts: int
    reply: str | None
    attempts: list[JudgeAttempt]
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    temperature: float
    max_tokens: int | None
    cache_key: str
    prompt_sha256: str


class TruthfulQAJudgment(Record):
    """One judged TruthfulQA answer (``selfalign judge truthfulqa``'s ``judgments.jsonl``)."""

    id: int
    question_id: int
    question: str
    answer: str
    p_true: float  # the truth judge's P(" yes")
    p_info: float  # the info judge's P(" yes")
    truthful: bool
    informative: bool
    truthful_informative: bool
    truth_judge: str  # fingerprint of the judge model
    info_judge: str


class JudgeSummary(OpenRecord):
    """``selfalign judge``'s ``summary.json``: one model against one opponent on Vicuna-80 (the
    full field list is in ``harness.judge``'s docstring; fields beyond these are kept)."""

    kind: Literal["pairwise_judge"] = "pairwise_judge"
    benchmark: str
    relative_score: float | None
    wins: int | float  # a verdict split between two orders can count half
    ties: int | float
    losses: int | float
    n_questions: int
    n_judgments: int
    n_failed: int


class TruthfulQAJudgeSummary(OpenRecord):
    """``selfalign judge truthfulqa``'s ``summary.json``: the three fractions with Wilson 95%
    intervals (null without answers), the judges and how many log-likelihoods this run computed."""

    kind: Literal["truthfulqa_judge"] = "truthfulqa_judge"
    n: int
    truthful: float | None
    truthful_ci95: list[float] | None
    informative: float | None
    informative_ci95: list[float] | None
    truthful_informative: float | None
    truthful_informative_ci95: list[float] | None
    judges: dict[str, Any]
    n_scored: int
    answers: dict[str, Any]


# the ``kind`` of a judge's summary.json -> its model
JUDGE_SUMMARY_KINDS: dict[str, type[JudgeSummary | TruthfulQAJudgeSummary]] = {
    "pairwise_judge": JudgeSummary, "truthfulqa_judge": TruthfulQAJudgeSummary,
}


def infer_judge_summary_kind(data: dict[str, Any]) -> str | None:
    """The kind of a judge summary written before summaries named it."""
    if "truthful" in data and "truthful_informative" in data:
        return "truthfulqa_judge"
    if "relative_score" in data:
        return "pairwise_judge"
    return None


# name -> (model, where selfalign writes it): what `selfalign ls schemas` lists and exports
RECORDS: dict[str, tuple[type[BaseModel], str]] = {
    "prompt": (PromptRecord, "pipeline 01_*/prompts.jsonl"),
    "candidate": (CandidateRecord, "pipeline 01_*/candidates.jsonl"),
    "topic": (TopicRecord, "pipeline 01_*/topics.jsonl"),
    "answer": (AnswerRecord, "pipeline 02_self_align/records.jsonl, 04_verbose_clone/records.jsonl"),
    "train": (TrainRecord, "pipeline 03_engrave/train.jsonl, 04_verbose_clone/train.jsonl"),
    "stage_manifest": (StageManifest, "pipeline <NN>_<stage>/manifest.json"),
    "pipeline_manifest": (PipelineManifest, "pipeline manifest.json"),
    "checkpoint": (Checkpoint, "pipeline.checkpoints.list_checkpoints() (returned, not written)"),
    "run_manifest": (RunManifest, "selfalign run <output>/<name>/manifest.json"),
    "judgment": (Judgment, "selfalign judge judgments.jsonl"),
    "truthfulqa_judgment": (TruthfulQAJudgment, "selfalign judge truthfulqa judgments.jsonl"),
    "judge_summary": (JudgeSummary, "selfalign judge summary.json"),
    "truthfulqa_judge_summary": (TruthfulQAJudgeSummary, "selfalign judge truthfulqa summary.json"),
}


def json_schema(name: str) -> dict[str, Any]:
    model, where = RECORDS[name]
    schema = model.model_json_schema()
    schema.setdefault("description", where)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"selfalign/{name}.schema.json", **schema}

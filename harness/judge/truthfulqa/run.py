"""``selfalign judge truthfulqa``: judge TruthfulQA generation answers for truth and informativeness.

Reads the ``truthfulqa_gen`` samples of a ``selfalign eval`` run, scores every answer with the
truth and info judges (``harness.judge.truthfulqa.scoring``), writes ``judgments.jsonl`` and
``summary.json`` (schema in ``harness/judge/truthfulqa/__init__.py``). A rerun is answered by
the response cache under ``OUT/lm_cache/`` and loads no judge.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.common import stats
from harness.common.errors import UserError
from harness.common.jsonl import read_records, write_json_atomic, write_jsonl_atomic
from harness.common.provenance import run_provenance
from harness.common.records import TruthfulQAJudgeSummary, TruthfulQAJudgment
from harness.common.run_files import judged_samples_file
from harness.judge.truthfulqa.scoring import (
    DEFAULT_BACKEND,
    THRESHOLD,
    JudgeScorer,
    judge_prompt,
    resolve_judge,
)

TASK_NAME = "selfalign_truthfulqa_gen"
ANSWER_FILTER = "clean"
SCHEMA_VERSION = 1


@dataclass
class TruthfulQAJudgeConfig:
    answers: str = ""  # run dir DIR/<model_id> of `selfalign eval --tasks truthfulqa_gen`, or its samples file
    truth_judge: str = ""  # model_args string
    info_judge: str = ""
    output: str = ""
    judge_backend: str = DEFAULT_BACKEND  # lm-eval backend of both judges
    batch_size: int = 8
    device: str = "cpu"


@dataclass(frozen=True)
class Answer:
    question_id: int
    question: str
    answer: str


def samples_file(path: Path) -> Path:
    return judged_samples_file(path, TASK_NAME, "--answers")


def load_answers(spec: str) -> tuple[list[Answer], Path]:
    """The cleaned answers of a truthfulqa_gen run, in question order."""
    path = samples_file(Path(spec).expanduser())
    records = read_records(path)
    if not records or "doc" not in records[0]:
        raise UserError(f"--answers {path}: not an lm-eval samples file (no 'doc'); pass a truthfulqa_gen run directory")
    if any("correct_answers" not in r["doc"] or "question_id" not in r["doc"] for r in records):
        raise UserError(f"--answers {path}: samples of another task (docs lack question_id/correct_answers); pass a truthfulqa_gen run")
    filters = {r.get("filter") for r in records}
    if len(filters) > 1:
        records = [r for r in records if r.get("filter") == ANSWER_FILTER]
    answers: dict[int, Answer] = {}
    for r in records:
        resps = r.get("filtered_resps") or [""]
        first = resps[0][0] if isinstance(resps[0], list) else resps[0]
        qid = int(r["doc"]["question_id"])
        answers[qid] = Answer(qid, str(r["doc"]["question"]), str(first))
    return [answers[q] for q in sorted(answers)], path


def wilson_ci(successes: int, n: int) -> list[float] | None:
    """Wilson 95% score interval as summary.json stores it (None without answers)."""
    est = stats.wilson(successes, n)
    return None if est.ci_low is None else [est.ci_low, est.ci_high]


def run_truthfulqa_judge(cfg: TruthfulQAJudgeConfig) -> dict[str, Any]:
    """Judge every answer; write ``judgments.jsonl`` and ``summary.json``; return the summary."""
    if not cfg.output:
        raise UserError("--output is required: the directory for judgments.jsonl and summary.json")
    started = time.perf_counter()
    answers, samples = load_answers(cfg.answers)
    judges = {kind: resolve_judge(kind, spec, cfg.judge_backend) for kind, spec in (("truth", cfg.truth_judge), ("info", cfg.info_judge))}
    out = Path(cfg.output)
    scores: dict[str, list[float]] = {}
    n_scored = 0
    for kind, judge in judges.items():
        scorer = JudgeScorer(judge, out / "lm_cache", batch_size=cfg.batch_size, device=cfg.device)
        scores[kind] = scorer.p_yes([judge_prompt(kind, a.question, a.answer) for a in answers])
        n_scored += scorer.n_scored
    records = []
    for a, p_true, p_info in zip(answers, scores["truth"], scores["info"], strict=True):
        truthful, informative = p_true > THRESHOLD, p_info > THRESHOLD
        records.append({
            "id": a.question_id, "question_id": a.question_id, "question": a.question, "answer": a.answer,
            "p_true": p_true, "p_info": p_info,
            "truthful": truthful, "informative": informative, "truthful_informative": truthful and informative,
            "truth_judge": judges["truth"].fingerprint, "info_judge": judges["info"].fingerprint,
        })
    n = len(records)
    summary: dict[str, Any] = {"kind": "truthfulqa_judge", "schema_version": SCHEMA_VERSION, "n": n}
    for measure in ("truthful", "informative", "truthful_informative"):
        k = sum(r[measure] for r in records)
        summary[measure] = k / n if n else None
        summary[f"{measure}_ci95"] = wilson_ci(k, n)
    summary.update(
        judges={kind: judge.describe() for kind, judge in judges.items()},
        n_scored=n_scored,
        answers={"source": str(samples.resolve()), "model_id": samples.parent.name},
        config=asdict(cfg),
        wall_time_s=round(time.perf_counter() - started, 2),
        provenance=run_provenance(),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "judgments.jsonl", (TruthfulQAJudgment.model_validate(r) for r in records))
    write_json_atomic(out / "summary.json", TruthfulQAJudgeSummary.model_validate(summary))
    return summary

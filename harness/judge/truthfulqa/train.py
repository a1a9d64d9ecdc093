"""Open TruthfulQA judges trained here: a LoRA judge on TruthfulQA's own judge fine-tuning data.

``finetune_truth.jsonl`` / ``finetune_info.jsonl`` (22,434 ``{"prompt": "Q: ...\\nA: ...\\nTrue:",
"completion": " yes" | " no"}`` records each, over the 817 questions) are what OpenAI's GPT-judge
and GPT-info were fine-tuned on. The pipeline's LoRA trainer (``pipeline.training``) trains on
them with the loss on the completion token only (so the 262k-vocabulary LM head runs at one
position per example). A seeded, question-disjoint split is held out; the trained judge scores it
through the same lm-eval path as ``selfalign judge truthfulqa`` and ``DIR/metrics.json`` gets its
accuracy (P(" yes") > 0.5), ROC AUC and the majority-class accuracy.

Outputs under ``DIR``: ``adapter/`` (the judge: ``pretrained=<base>,peft=DIR/adapter``),
``train_log.jsonl``, ``train_result.json`` (pipeline.training), ``split.json`` (held-out
questions), ``heldout_scores.jsonl``, ``metrics.json`` (written last; a rerun with the same
identity returns it without training or scoring).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from scipy.stats import mannwhitneyu

from harness import data
from harness.common.config import load_config
from harness.common.errors import UserError
from harness.common.fingerprint import content_fingerprint
from harness.common.jsonl import iter_numbered, write_json_atomic, write_jsonl_atomic
from harness.common.paths import cache_root
from harness.common.provenance import config_hash, run_provenance, sha256_file
from harness.judge.truthfulqa.scoring import (
    KINDS,
    PROMPT_SUFFIX,
    THRESHOLD,
    YES,
    JudgeScorer,
    resolve_judge,
)
from harness.models import resolve_pretrained
from pipeline.training import TRAINER_VERSION, train_lora
from pipeline.training.config import LoraTrainConfig

FINETUNE_FILES = {kind: f"truthfulqa/data/finetune_{kind}.jsonl" for kind in KINDS}
METRICS_FILE = "metrics.json"
# Bump when the split, the scoring or the metrics change, so cached judges are retrained.
JUDGE_TRAIN_VERSION = "1"


def _default_lora() -> LoraTrainConfig:
    # A judge reads short texts (~40 tokens): no activation checkpointing needed.
    return LoraTrainConfig(
        effective_batch_size=32, micro_batch_size=8, max_length=256, lr=2e-4, warmup_steps=10,
        gradient_checkpointing=False, checkpoint_every=100,
    )


@dataclass
class JudgeTrainConfig:
    """Settings of ``selfalign judge train-truthfulqa`` (defaults < ``--config`` YAML)."""

    heldout_fraction: float = 0.2  # of the questions; every answer to a held-out question is held out
    max_train_examples: int | None = None  # seeded subsample of the training questions' examples
    max_heldout_examples: int | None = None  # seeded subsample of the held-out examples
    balance: bool = False  # subsample yes/no equally (the threshold stays 0.5)
    seed: int = 0
    score_backend: str = "selfalign-hf"  # lm-eval backend that scores the held-out split
    score_batch_size: int = 16
    train: LoraTrainConfig = field(default_factory=_default_lora)  # the pipeline's LoRA recipe

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction!r}")
        for name in ("max_train_examples", "max_heldout_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")


@dataclass(frozen=True)
class JudgeExample:
    question: str
    prompt: str
    label: int  # 1 = " yes"


def question_of(prompt: str) -> str:
    """The question of a fine-tuning prompt ``Q: {question}\\nA: ...``."""
    return prompt.split("\nA:", 1)[0].removeprefix("Q: ")


def load_finetune(kind: str, data_dir: str | Path | None = None) -> tuple[list[JudgeExample], Path]:
    """The judge's fine-tuning records; a missing file is one line naming it and the fix."""
    rel = FINETUNE_FILES[kind]
    try:
        path = data.data_file(rel, data_dir)
    except UserError as exc:
        raise UserError(
            f"{rel} (judge fine-tuning data for --kind {kind}) is not available: {exc}. "
            "Copy sylinrl/TruthfulQA data/finetune_*.jsonl into the data directory or pass --data-dir"
        ) from None
    examples = []
    suffix = "\n" + PROMPT_SUFFIX[kind]
    for lineno, rec in iter_numbered(path, strict=True):
        if not isinstance(rec, dict):
            rec = {}
        prompt, completion = rec.get("prompt"), rec.get("completion")
        if not isinstance(prompt, str) or not prompt.endswith(suffix) or completion not in (" yes", " no"):
            raise UserError(f"{path}:{lineno}: expected {{prompt: 'Q: ...{suffix!r}', completion: ' yes'|' no'}}")
        examples.append(JudgeExample(question_of(prompt), prompt, int(completion == YES)))
    return examples, path


def split_by_question(examples: list[JudgeExample], cfg: JudgeTrainConfig) -> tuple[list[JudgeExample], list[JudgeExample], list[str]]:
    """(train, held-out, held-out questions): a seeded question-disjoint split, then subsamples."""
    questions = sorted({ex.question for ex in examples})
    rng = random.Random(cfg.seed)
    rng.shuffle(questions)
    n_held = max(1, round(len(questions) * cfg.heldout_fraction))
    held_questions = set(questions[:n_held])
    train = [ex for ex in examples if ex.question not in held_questions]
    held = [ex for ex in examples if ex.question in held_questions]
    return (
        _subsample(train, cfg.max_train_examples, cfg.balance, random.Random(cfg.seed + 1)),
        _subsample(held, cfg.max_heldout_examples, False, random.Random(cfg.seed + 2)),
        sorted(held_questions),
    )


def _subsample(examples: list[JudgeExample], limit: int | None, balance: bool, rng: random.Random) -> list[JudgeExample]:
    if balance:
        by_label = {label: [ex for ex in examples if ex.label == label] for label in (0, 1)}
        per_label = min(len(v) for v in by_label.values())
        if limit is not None:
            per_label = min(per_label, limit // 2)
        picked = [ex for label in (0, 1) for ex in rng.sample(by_label[label], per_label)]
    elif limit is not None and limit < len(examples):
        picked = rng.sample(examples, limit)
    else:
        return list(examples)
    rng.shuffle(picked)
    return picked


def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic over (positive, negative) pairs, ties counting 1/2."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not pos or not neg:
        return None
    return float(mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg))


def heldout_metrics(p_yes: list[float], labels: list[int]) -> dict[str, Any]:
    """Accuracy at P(" yes") > 0.5, ROC AUC and the majority-class accuracy on the held-out split."""
    n = len(labels)
    correct = sum(int((p > THRESHOLD) == bool(y)) for p, y in zip(p_yes, labels, strict=True))
    n_yes = sum(labels)
    majority_label = YES if n_yes * 2 >= n else " no"
    majority = max(n_yes, n - n_yes) / n
    accuracy = correct / n
    return {
        "n": n, "n_yes": n_yes, "accuracy": accuracy, "auc": roc_auc(p_yes, labels),
        "majority_label": majority_label, "majority_accuracy": majority,
        "accuracy_minus_majority": accuracy - majority,
        "mean_p_yes": sum(p_yes) / n,
    }


def train_identity(kind: str, base: str, cfg: JudgeTrainConfig, data_sha256: str) -> str:
    return config_hash(
        # The trainer's version too: a judge cached before a trainer change is retrained.
        {"kind": kind, "base": content_fingerprint(resolve_pretrained(base)), "config": asdict(cfg), "data": data_sha256, "trainer": TRAINER_VERSION},
        salt=JUDGE_TRAIN_VERSION,
    )


def train_judge(kind: str, base: str, output: str | Path, cfg: JudgeTrainConfig, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Train (or reuse) a judge in ``output``; returns the metrics written to ``output/metrics.json``."""
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    output = Path(output)
    examples, data_path = load_finetune(kind, data_dir)
    identity = train_identity(kind, base, cfg, sha256_file(data_path))
    metrics_path = output / METRICS_FILE
    if metrics_path.is_file():
        saved = json.loads(metrics_path.read_text(encoding="utf-8"))
        if saved.get("identity") == identity:
            return saved
        raise UserError(
            f"{output} holds a judge trained with another kind, base, config or data (see {metrics_path}); "
            "use another --output or delete that directory"
        )
    train, held, held_questions = split_by_question(examples, cfg)
    base_dir = resolve_pretrained(base)
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / "split.json", {"seed": cfg.seed, "heldout_questions": held_questions})

    started = time.perf_counter()
    result = train_lora(
        cfg.train,
        [{"id": str(i), "prompt": ex.prompt, "answer": YES if ex.label else " no"} for i, ex in enumerate(train)],
        base_dir, output,
    )
    train_s = time.perf_counter() - started

    if not PartialState().is_main_process:
        return {}
    spec = f"pretrained={base_dir},peft={Path(result.adapter_dir).resolve()}"
    scorer = JudgeScorer(resolve_judge(kind, spec, cfg.score_backend), None, batch_size=cfg.score_batch_size)
    started = time.perf_counter()
    p_yes = scorer.p_yes([ex.prompt for ex in held])
    score_s = time.perf_counter() - started
    labels = [ex.label for ex in held]
    write_jsonl_atomic(
        output / "heldout_scores.jsonl",
        [{"question": ex.question, "prompt": ex.prompt, "label": ex.label, "p_yes": p} for ex, p in zip(held, p_yes, strict=True)],
    )
    metrics = {
        "kind": kind,
        "spec": spec,
        "base": base,
        "heldout": heldout_metrics(p_yes, labels),
        "n_heldout_questions": len(held_questions),
        "n_train_examples": len(train),
        "n_train_yes": sum(ex.label for ex in train),
        "train_steps": result.steps,
        "train_loss_first_last": [result.first_loss, result.last_loss],
        "timing_s": {"train": round(train_s, 1), "train_updates": result.seconds, "score_heldout": round(score_s, 1)},
        "data": {FINETUNE_FILES[kind]: sha256_file(data_path)},
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "identity": identity,
        "provenance": run_provenance(),
    }
    write_json_atomic(metrics_path, metrics)
    return metrics


def cached_judge_spec(kind: str, base: str, config_path: str | Path | None, data_dir: str | Path | None = None) -> str:
    """A judge trained once per (kind, base, config, data) under the user cache and reused after:
    ``<cache>/judges/truthfulqa-<kind>-<identity>/``; returns its model_args spec."""
    cfg = load_config(JudgeTrainConfig, config_path)
    _, data_path = load_finetune(kind, data_dir)
    identity = train_identity(kind, base, cfg, sha256_file(data_path))
    metrics = train_judge(kind, base, cache_root() / "judges" / f"truthfulqa-{kind}-{identity}", cfg, data_dir)
    return metrics["spec"]

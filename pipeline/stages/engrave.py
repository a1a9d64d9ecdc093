"""Stage 3 — Principle Engraving: LoRA-tune the base model on the self-aligned answers.

The constitution is not shown at training time: each (prompt, answer) pair is wrapped in a short
inference prompt (reference step 3: the "standard distill" prompt), so the model learns to give
the aligned answer directly. The paper also trains on 910 identity conversations. Loss is on
the answer tokens only (the training library).

Outputs: ``train.jsonl`` (the exact training texts), ``adapter/`` (PEFT adapter, loadable by
lm-eval ``hf`` as ``pretrained=<base>,peft=<this>``), ``merged/`` with ``train.merge=true``, and
the trainer's ``train_log.jsonl`` / ``train_result.json``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.records import AnswerRecord, TrainRecord
from harness.models import resolve_pretrained
from harness.prompts import META_PROMPTS, dromedary_prompt, meta_prompt_text
from pipeline.config import PipelineConfig
from pipeline.inputs import fingerprint
from pipeline.manifest import read_manifest
from pipeline.stages.base import StageContext, StageResult, read_upstream, write_records
from pipeline.stages.identity import IDENTITY_DATA, load_identity_examples
from pipeline.training import LoraTrainConfig, TrainExample, TrainResult, train_lora


def training_examples(pairs: list[dict[str, Any]], meta_prompts: list[str]) -> list[TrainExample]:
    """Wrap ``{id, instruction, input, output}`` pairs as the reference's finetune.py does.

    ``{meta}\\n{instruction}[\\n\\n{input}]\\n\\n### Dromedary\\n{output}``; the meta prompt is
    ``meta_prompts[index % len(meta_prompts)]`` (the reference used ``example_id %``). The prompt
    part ends with the newline, which the trainer keeps in the loss as the reference did.
    """
    return [
        TrainExample(
            id=p["id"],
            prompt=dromedary_prompt(meta_prompts[i % len(meta_prompts)], p["instruction"], p.get("input", "")) + "\n",
            answer=p["output"],
        )
        for i, p in enumerate(pairs)
    ]


def write_train_records(path: Path, examples: list[TrainExample], sources: list[str]) -> None:
    """``train.jsonl`` of stages 3 and 4: the exact training texts and what produced each answer."""
    write_records(path, (
        TrainRecord(id=ex.id, source=source, prompt=ex.prompt, answer=ex.answer)
        for ex, source in zip(examples, sources, strict=True)
    ), TrainRecord)


def meta_prompt_texts(names: list[str], data_dir: Any, field: str) -> list[str]:
    if not names:
        raise UserError(f"{field} is empty; name at least one of {', '.join(META_PROMPTS)}")
    return [meta_prompt_text(n, data_dir) for n in names]


def train_stage_adapter(ctx: StageContext, cfg_train: LoraTrainConfig, examples: list[TrainExample]) -> tuple[TrainResult, dict[str, Any]]:
    """Train into ``<stage>/`` and summarize the result for the manifest."""
    ctx.progress.close()  # the trainer shows its own live progress bar
    ctx.release_engines()

    card = {"stage": f"stage {ctx.stage_dir.name}", "config_hash": (read_manifest(ctx.stage_dir) or {}).get("config_hash")}
    result = train_lora(cfg_train, examples, resolve_pretrained(ctx.cfg.model.base), ctx.stage_dir,
                        base_name=ctx.cfg.model.base, card=card)
    summary = asdict(result)
    summary["adapter_dir"] = str(Path(result.adapter_dir).relative_to(ctx.stage_dir)) if Path(result.adapter_dir).is_absolute() else result.adapter_dir
    return result, summary


class EngraveStage:
    number = 3
    name = "engrave"
    title = "Principle Engraving"
    version = "1"
    trains = True  # saves a LoRA adapter: a checkpoint (pipeline.checkpoints)

    def requires(self, cfg: PipelineConfig) -> tuple[str, ...]:
        return ("self_align",)

    def config_slice(self, cfg: PipelineConfig) -> dict[str, Any]:
        # Checkpointing settings do not change the adapter; merge adds an output, so it counts.
        return {"model": cfg.model.base, "stage3": {**asdict(cfg.stage3), "train": {**cfg.stage3.train.identity(), "merge": cfg.stage3.train.merge}}}

    def data_files(self, cfg: PipelineConfig, data_dir: Any = None) -> dict[str, str]:
        rels = [META_PROMPTS[n] for n in cfg.stage3.meta_prompts if n in META_PROMPTS]
        if cfg.stage3.include_identity_data:
            rels.append(IDENTITY_DATA)
        return {rel: fingerprint(rel, data_dir, 'data file') for rel in rels}

    def run(self, ctx: StageContext) -> StageResult | None:
        s3 = ctx.cfg.stage3
        pairs = read_upstream(
            ctx.upstream_path("self_align", "records"), AnswerRecord, "kept self-aligned answers",
            "stage 2 kept none (see its manifest.json drop reasons); answer more prompts (stage2.max_prompts, stage 1 counts)",
            project=lambda r: {"id": r.id, "instruction": r.instruction, "input": r.input, "output": r.answer, "source": "self_align"},
        )
        if s3.max_examples is not None:
            pairs = pairs[: s3.max_examples]
        n_aligned = len(pairs)
        if s3.include_identity_data:
            pairs += [{**p, "source": "identity"} for p in load_identity_examples(ctx.data_dir, s3.max_identity_examples)]
        examples = training_examples(pairs, meta_prompt_texts(s3.meta_prompts, ctx.data_dir, "stage3.meta_prompts"))
        if ctx.dist.is_main:
            write_train_records(ctx.stage_dir / "train.jsonl", examples, [p["source"] for p in pairs])
        if ctx.generate_only:
            return None
        result, summary = train_stage_adapter(ctx, s3.train, examples)
        outputs = {"train": "train.jsonl", "adapter": "adapter", "train_log": "train_log.jsonl", "train_result": "train_result.json"}
        if result.merged_dir:
            outputs["merged"] = "merged"
        return StageResult(
            outputs=outputs,
            primary=["adapter"],
            counts={"examples": len(examples), "self_align_examples": n_aligned, "identity_examples": len(examples) - n_aligned},
            training=summary,
        )

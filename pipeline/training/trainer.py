"""``train_lora``: LoRA fine-tuning with loss on answer tokens, under plain Python or ``accelerate launch``.

One loop serves a laptop CPU, DDP over GPUs (or gloo CPU processes) and DeepSpeed ZeRO-3: the
model and optimizer go through ``accelerate``, and everything else (data order, learning rate,
loss normalization) is a deterministic function of the step, computed identically on every
process. Outputs under ``output_dir``::

    adapter/            PEFT adapter + tokenizer: lm-eval ``hf`` with pretrained=<base>,peft=<this>
    merged/             base + adapter merged (only with merge=true)
    train_log.jsonl     one record per optimizer step: step, epoch, loss, lr, tokens, seconds
    train_result.json   TrainResult + config + identity hash + provenance (written last)
    checkpoints/        step_<N>/ while training (removed when the run completes)

Rerunning with the same config, data and base model returns the saved result without training;
an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, gather_object

from harness.common.errors import UserError
from harness.common.jsonl import JsonlWriter, read_records, write_json_atomic
from harness.common.provenance import config_hash, run_provenance, to_jsonable
from pipeline.training import checkpoint as ckpt
from pipeline.training.batching import StepPlan, StepPlanner, filler_example
from pipeline.training.card import current_command, finalize_adapter
from pipeline.training.config import LoraTrainConfig
from pipeline.training.data import (
    TokenizedExample,
    TrainExample,
    as_examples,
    examples_fingerprint,
    pad_batch,
    tokenize_examples,
)
from pipeline.training.loss import answer_token_loss
from pipeline.training.model import (
    build_peft_model,
    load_base_model,
    load_tokenizer,
    merge_adapter,
    padding_id,
    save_adapter,
    state_digest,
    trainable_state,
)
from pipeline.training.progress import StepProgress
from pipeline.training.schedule import lr_multiplier

log = logging.getLogger(__name__)

# Bump when a change to this package changes what a run computes, so cached results are not reused.
TRAINER_VERSION = "2"  # 2: examples without answer tokens are skipped within their step's window
RESULT_FILE = "train_result.json"
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainResult:
    adapter_dir: str
    merged_dir: str | None
    steps: int  # optimizer updates in the whole run (over all resumes)
    losses: list[float]  # mean answer-token loss of each update, in order
    first_loss: float | None
    last_loss: float | None
    tokens: int  # non-padding tokens trained on (prompt + answer)
    loss_tokens: int  # answer tokens that carried loss
    seconds: float  # wall-clock of the updates (over all resumes; excludes loading and saving)
    seconds_per_step: float
    n_train_examples: int  # the training split (all examples but the holdout)
    n_holdout_examples: int  # with an answer token within max_length
    n_dropped_examples: int  # skipped by the updates run: no answer token left within max_length
    holdout_loss: float | None
    world_size: int
    grad_accum_steps: int
    realized_batch_size: int
    resumed_from_step: int  # 0 for a fresh run
    peak_rss_mb: float  # of the main process
    replica_digests: list[str] | None  # sha256 of each process's adapter (None under DeepSpeed)


StepCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunIdentity:
    """Who this run is: the batch geometry it realizes and the hash its outputs are cached under."""

    identity: str
    world_size: int
    grad_accum: int
    realized_batch_size: int


@dataclass
class TrainingSetup:
    """What ``setup_training`` hands the loop: data, model, optimizer and where training starts.

    Mutable only so that ``finalize_training`` can drop the model and optimizer before merging."""

    cfg: LoraTrainConfig
    run: RunIdentity
    output_dir: Path
    base_model: Path
    peft_init: str | Path | None
    accelerator: Any
    tokenizer: Any
    pad_id: int
    holdout_set: list[TokenizedExample]
    planner: StepPlanner[TrainExample]  # holds the training split, tokenized one window at a time
    total_steps: int
    start_step: int  # updates already done by an interrupted run (0 for a fresh one)
    model: torch.nn.Module | None
    optimizer: Any


@dataclass(frozen=True)
class LoopResult:
    """What ``train_loop`` returns: the log record of every update 1..total_steps, in order
    (those before ``start_step`` come from the interrupted run's log)."""

    records: list[dict[str, Any]]


def train_lora(
    cfg: LoraTrainConfig,
    examples: Sequence[TrainExample | dict[str, Any]],
    base_model: str | Path,
    output_dir: str | Path,
    *,
    peft_init: str | Path | None = None,
    on_step: StepCallback | None = None,
    base_name: str | None = None,
    card: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on (prompt, answer) examples; see the module docstring for outputs.

    ``base_model`` is a local model directory (``harness.models.resolve_pretrained`` resolves
    aliases). ``peft_init`` starts from an existing adapter instead of a fresh one (the
    reference's stage 4 does not: it trains a fresh adapter on the base model). ``on_step``
    receives each step's log record on the main process. ``base_name`` is the portable name of
    the base (an alias or the path as given; default: ``base_model``) recorded in the adapter's
    ``adapter_config.json``; ``card`` adds fields (stage, counts, config_hash, command) to its
    model card and ``selfalign_adapter.json``.

    A recipe in three steps (torchtune's setup / train / cleanup): ``setup_training`` builds
    data, model and optimizer and restores a checkpoint; ``train_loop`` runs the updates;
    ``finalize_training`` saves the adapter, merges and writes the result.
    """
    output_dir, base_model = Path(output_dir), Path(base_model)
    examples = _checked_examples(cfg, examples)
    accelerator = make_accelerator()
    run = identify_run(cfg, examples, base_model, peft_init, accelerator)
    cached = _completed_result(output_dir, run.identity)
    if cached is not None:
        return cached
    setup = setup_training(cfg, examples, base_model, output_dir, accelerator, run, peft_init=peft_init)
    loop = train_loop(setup, on_step)
    return finalize_training(setup, loop, base_name=base_name, card=card)


def _checked_examples(cfg: LoraTrainConfig, examples: Sequence[TrainExample | dict[str, Any]]) -> list[TrainExample]:
    examples = as_examples(examples)
    if not examples:
        raise UserError("no training examples; pass at least one {prompt, answer} record")
    if cfg.holdout >= len(examples):
        raise UserError(f"holdout={cfg.holdout} leaves no training examples out of {len(examples)}; lower holdout")
    return examples


def identify_run(
    cfg: LoraTrainConfig,
    examples: list[TrainExample],
    base_model: Path,
    peft_init: str | Path | None,
    accelerator: Any,
) -> RunIdentity:
    """Set the accelerator's accumulation steps and hash everything the run's result depends on."""
    world_size = accelerator.num_processes
    grad_accum = cfg.gradient_accumulation_steps(world_size)
    accelerator.gradient_accumulation_steps = grad_accum
    realized = cfg.realized_batch_size(world_size)
    identity = config_hash(
        {
            "config": cfg.identity(),
            "realized_batch_size": realized,
            "base_model": str(base_model.resolve()),
            "peft_init": str(Path(peft_init).resolve()) if peft_init else None,
            "data": examples_fingerprint(examples),
        },
        salt=TRAINER_VERSION,
    )
    return RunIdentity(identity, world_size, grad_accum, realized)


# -- setup ------------------------------------------------------------------------------------


def setup_training(
    cfg: LoraTrainConfig,
    examples: list[TrainExample],
    base_model: Path,
    output_dir: Path,
    accelerator: Any,
    run: RunIdentity,
    *,
    peft_init: str | Path | None = None,
) -> TrainingSetup:
    """Tokenized data and step plan, the (prepared) model and optimizer, restored from the last
    checkpoint of an interrupted run with the same identity."""
    if accelerator.is_main_process and run.realized_batch_size != cfg.effective_batch_size:
        log.warning(
            "effective batch %d realized as %d (micro %d x %d processes x %d accumulation)",
            cfg.effective_batch_size, run.realized_batch_size, cfg.micro_batch_size, run.world_size, run.grad_accum,
        )
    tokenizer = load_tokenizer(base_model)
    train_set, holdout = _split(cfg, examples)

    def tokenize(window: list[TrainExample]) -> list[TokenizedExample]:
        return tokenize_examples(tokenizer, window, max_length=cfg.max_length, add_eos=cfg.add_eos)

    holdout_set = [ex for ex in tokenize(holdout) if ex.n_loss_tokens > 0]
    planner = StepPlanner(
        train_set,
        tokenize,
        micro_batch_size=cfg.micro_batch_size,
        grad_accum=run.grad_accum,
        world_size=run.world_size,
        rank=accelerator.process_index,
        epochs=cfg.epochs,
        seed=cfg.seed,
    )
    total_steps = min(planner.total_steps, cfg.max_steps or planner.total_steps)
    resume = _resumable_checkpoint(output_dir, run.identity)
    first_step = int(resume[1]["step"]) if resume is not None else 0
    if first_step < total_steps:
        planner.plan(first_step)  # a max_length that leaves no answer token fails here, before the model loads (plan is cached)
    model, optimizer = _setup_model_and_optimizer(cfg, accelerator, base_model, peft_init, resume)
    start_step = _restore_optimizer(accelerator, optimizer, resume)
    if resume is not None and accelerator.is_main_process:
        log.warning("resuming %s from checkpoint %s (step %d of %d)", output_dir, resume[0], start_step, total_steps)
    return TrainingSetup(
        cfg=cfg, run=run, output_dir=output_dir, base_model=base_model, peft_init=peft_init,
        accelerator=accelerator, tokenizer=tokenizer, pad_id=padding_id(tokenizer),
        holdout_set=holdout_set, planner=planner,
        total_steps=total_steps, start_step=start_step, model=model, optimizer=optimizer,
    )


def _setup_model_and_optimizer(
    cfg: LoraTrainConfig,
    accelerator: Any,
    base_model: Path,
    peft_init: str | Path | None,
    resume: tuple[Path, dict[str, Any]] | None,
) -> tuple[torch.nn.Module, Any]:
    """The PEFT model (with a checkpoint's adapter weights outside DeepSpeed) and AdamW, prepared."""
    # Same seed on every process: the fresh LoRA init is then identical everywhere (DDP also
    # broadcasts rank 0's weights, DeepSpeed does not).
    torch.manual_seed(cfg.seed)
    model = build_peft_model(load_base_model(base_model, cfg.dtype), cfg, peft_init)
    if resume is not None and not _is_deepspeed(accelerator):
        ckpt.load_adapter_weights(model, resume[0])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay
    )
    if _is_deepspeed(accelerator):
        _configure_deepspeed(accelerator, cfg)
    return accelerator.prepare(model, optimizer)


def _configure_deepspeed(accelerator: Any, cfg: LoraTrainConfig) -> None:
    """No dataloader goes through prepare(): give DeepSpeed the micro-batch size directly, and our
    clipping threshold (DeepSpeed clips inside its engine; accelerate would fill 1.0)."""
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    ds_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    if ds_config.get("gradient_clipping", "auto") == "auto":
        ds_config["gradient_clipping"] = cfg.max_grad_norm


def _restore_optimizer(accelerator: Any, optimizer: Any, resume: tuple[Path, dict[str, Any]] | None) -> int:
    """Load the checkpoint's optimizer state (all engine state under DeepSpeed); the step it holds."""
    if resume is None:
        return 0
    path, state = resume
    if _is_deepspeed(accelerator):
        accelerator.load_state(str(path))
    else:
        ckpt.load_optimizer_state(optimizer, path)
    return int(state["step"])


# -- train ------------------------------------------------------------------------------------


def train_loop(setup: TrainingSetup, on_step: StepCallback | None = None) -> LoopResult:
    """Updates ``start_step`` .. ``total_steps``: log each, checkpoint every ``checkpoint_every``."""
    cfg, accelerator, output_dir = setup.cfg, setup.accelerator, setup.output_dir
    main = accelerator.is_main_process
    log_path = output_dir / LOG_FILE
    records = _records_before(accelerator, log_path, setup.start_step)
    writer = JsonlWriter(log_path) if main else None
    # The decay horizon is the steps this run takes. (The reference's finetune.py passes
    # total_num_steps = steps x num_processes to DeepSpeed, but accelerate >= 0.19 divides it by
    # num_processes, so its learning rate also reaches zero at the last step.)
    horizon = setup.total_steps
    try:
        with StepProgress(main, setup.total_steps, setup.start_step) as advance:
            for plan in _planned_ahead(setup.planner, setup.start_step, setup.total_steps):
                step = plan.step
                lr_scale = lr_multiplier(step, warmup_steps=cfg.warmup_steps, total_steps=horizon)
                record = _train_step(accelerator, setup.model, setup.optimizer, plan, cfg, setup.pad_id, lr_scale)
                records.append(record)
                if main:
                    writer.write(record)
                    advance(record)
                    if on_step is not None:
                        on_step(record)
                if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < setup.total_steps:
                    _save_checkpoint(setup, step + 1)
    finally:
        if writer is not None:
            writer.close()
    return LoopResult(records)


def _planned_ahead(planner: StepPlanner, start: int, stop: int) -> Iterator[StepPlan]:
    """The plans of updates ``start .. stop-1``, each next one tokenized in a thread while the
    current update runs (fast tokenizers release the GIL), so the loop never waits on it."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan") as pool:
        upcoming = pool.submit(planner.plan, start) if start < stop else None
        for step in range(start, stop):
            plan = upcoming.result()
            upcoming = pool.submit(planner.plan, step + 1) if step + 1 < stop else None
            yield plan


def _save_checkpoint(setup: TrainingSetup, step: int) -> None:
    accelerator, model = setup.accelerator, setup.model
    ckpt.save_checkpoint(
        accelerator, model, setup.optimizer, _adapter_state(accelerator, model), setup.output_dir,
        {"step": step, "identity": setup.run.identity}, keep=setup.cfg.keep_checkpoints,
    )


# -- finalize ---------------------------------------------------------------------------------


def finalize_training(
    setup: TrainingSetup,
    loop: LoopResult,
    *,
    base_name: str | None = None,
    card: dict[str, Any] | None = None,
) -> TrainResult:
    """Save the adapter (main process), free the model, merge if asked, write ``train_result.json``
    and remove the checkpoints. Returns the run's ``TrainResult`` on every process."""
    accelerator, cfg, output_dir = setup.accelerator, setup.cfg, setup.output_dir
    main = accelerator.is_main_process
    adapter_dir = output_dir / "adapter"
    digests, holdout_loss = _save_adapter(setup, adapter_dir, base_name=base_name, card=card)
    setup.model = setup.optimizer = None
    accelerator.free_memory()
    accelerator.wait_for_everyone()  # the adapter exists on disk for every process from here on

    merged_dir = output_dir / "merged" if cfg.merge else None
    result = _train_result(setup, loop.records, adapter_dir, merged_dir, holdout_loss, digests)
    # Only the main process goes on: merging a 65B model can outlast a collective's timeout, so
    # the other processes must not be waiting in a barrier meanwhile.
    if main:
        if merged_dir is not None:
            merge_adapter(setup.base_model, adapter_dir, merged_dir, dtype=cfg.dtype)
        write_json_atomic(
            output_dir / RESULT_FILE,
            {
                "result": to_jsonable(result),
                "identity": setup.run.identity,
                "config": to_jsonable(cfg),
                "base_model": str(setup.base_model),
                "peft_init": str(setup.peft_init) if setup.peft_init else None,
                "provenance": run_provenance(),
            },
        )
        ckpt.remove_checkpoints(output_dir)
    return result


def _save_adapter(
    setup: TrainingSetup, adapter_dir: Path, *, base_name: str | None, card: dict[str, Any] | None
) -> tuple[list[str] | None, float | None]:
    """Gather the adapter, check the replicas agree, score the holdout, and (main process) save the
    adapter with its card. Returns (replica digests, holdout loss)."""
    accelerator, model = setup.accelerator, setup.model
    adapter_state = _adapter_state(accelerator, model)
    digests = _replica_digests(accelerator, model)
    holdout_loss = _holdout_loss(accelerator, model, setup.holdout_set, setup.cfg, setup.pad_id)
    if accelerator.is_main_process:
        save_adapter(accelerator.unwrap_model(model), adapter_state, setup.tokenizer, adapter_dir)
        n_train, n_holdout = len(setup.planner.examples), len(setup.holdout_set)
        details = {"n_train_examples": n_train, "n_holdout_examples": n_holdout, **(card or {})}
        details["counts"] = {**(details.get("counts") or {}), "train examples": n_train, "holdout examples": n_holdout}
        details.setdefault("command", current_command())
        finalize_adapter(
            adapter_dir, base_name=base_name or str(setup.base_model), base_path=setup.base_model, details=details
        )
    return digests, holdout_loss


def _train_result(
    setup: TrainingSetup,
    records: list[dict[str, Any]],
    adapter_dir: Path,
    merged_dir: Path | None,
    holdout_loss: float | None,
    digests: list[str] | None,
) -> TrainResult:
    seconds = sum(r["seconds"] for r in records)
    n_dropped = sum(r["skipped"] for r in records)
    if n_dropped and setup.accelerator.is_main_process:
        log.warning(
            "%d of the %d examples in the windows trained on have no answer token within max_length=%d and were skipped",
            n_dropped, n_dropped + sum(r["examples"] for r in records), setup.cfg.max_length,
        )
    return TrainResult(
        adapter_dir=str(adapter_dir),
        merged_dir=str(merged_dir) if merged_dir else None,
        steps=len(records),
        losses=[r["loss"] for r in records],
        first_loss=records[0]["loss"] if records else None,
        last_loss=records[-1]["loss"] if records else None,
        tokens=sum(r["tokens"] for r in records),
        loss_tokens=sum(r["loss_tokens"] for r in records),
        seconds=round(seconds, 3),
        seconds_per_step=round(seconds / max(1, len(records)), 3),
        n_train_examples=len(setup.planner.examples),
        n_holdout_examples=len(setup.holdout_set),
        n_dropped_examples=n_dropped,
        holdout_loss=holdout_loss,
        world_size=setup.run.world_size,
        grad_accum_steps=setup.run.grad_accum,
        realized_batch_size=setup.run.realized_batch_size,
        resumed_from_step=setup.start_step,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        replica_digests=digests,
    )


def make_accelerator() -> Any:
    """The Accelerator for this process, also when torchrun started several processes on a machine
    without GPUs (how configs/accelerate/ddp_cpu_2proc.yaml runs: accelerate itself launches
    multi-process CPU jobs only through mpirun). Such processes must be told to use CPU + gloo,
    or each would silently train alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    cpu = world > 1 and not has_accelerator
    accelerator = Accelerator(cpu=cpu)
    if accelerator.num_processes != world:
        raise RuntimeError(
            f"{world} processes were launched but accelerate sees {accelerator.num_processes}; "
            "check the accelerate config's distributed_type"
        )
    return accelerator


def _is_deepspeed(accelerator: Any) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _split(cfg: LoraTrainConfig, examples: list[TrainExample]) -> tuple[list[TrainExample], list[TrainExample]]:
    """A seeded held-out split: (train, holdout), each in the given order."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    held = set(order[: cfg.holdout])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    holdout = [ex for i, ex in enumerate(examples) if i in held]
    return train, holdout


def _train_step(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: Any,
    plan: StepPlan,
    cfg: LoraTrainConfig,
    pad_id: int,
    lr_scale: float,
) -> dict[str, Any]:
    """One optimizer update over the plan's micro-batches; returns its log record."""
    started = time.perf_counter()
    lr = cfg.lr * lr_scale
    for group in optimizer.param_groups:
        group["lr"] = lr
    # Dropout masks depend on (seed, step, process) only, so a resumed run is bitwise the same.
    torch.manual_seed(cfg.seed * 1_000_003 + plan.step * 1_009 + accelerator.process_index)
    model.train()
    # accelerator.backward divides by the accumulation steps and DDP/DeepSpeed average over
    # processes; this scale undoes both, so the update is the gradient of (sum of answer-token
    # losses in the whole window) / (answer tokens in the window), however the window is split.
    # per_microbatch (the reference) divides each micro-batch's sum by its own token count and
    # the total by the window's real micro-batches, which fillers do not count among.
    per_token = cfg.loss_reduction == "per_token"
    undo = accelerator.num_processes * accelerator.gradient_accumulation_steps
    scale = undo / (plan.n_loss_tokens if per_token else plan.n_micro_batches)
    local_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    tokens = 0
    for micro in plan.micro_batches:
        batch = {k: v.to(accelerator.device) for k, v in pad_batch(micro, pad_id).items()}
        with accelerator.accumulate(model):
            loss_sum, n_tokens = answer_token_loss(model, batch)
            loss = loss_sum if per_token else loss_sum / max(1, n_tokens)  # a filler's sum is 0
            accelerator.backward(loss * scale)
        local_loss += loss.detach().double()
        tokens += sum(len(ex.input_ids) for ex in micro if ex.n_loss_tokens)  # fillers have none
    if not accelerator.sync_gradients:
        raise RuntimeError("gradient accumulation fell out of step with the plan; this is a bug")
    grad_norm = None
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        grad_norm = float(norm) if norm is not None else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mean_loss = float(accelerator.reduce(local_loss, reduction="sum")) / (
        plan.n_loss_tokens if per_token else plan.n_micro_batches
    )
    if not math.isfinite(mean_loss):
        # Every later update would be garbage too; stop while the last checkpoint is still good.
        raise RuntimeError(
            f"training loss became {mean_loss} at step {plan.step + 1}; lower lr or train in float32/bfloat16"
        )
    counts = accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum")
    return {
        "step": plan.step + 1,  # updates completed
        "epoch": plan.epoch,
        "loss": round(mean_loss, 6),
        "lr": lr,
        # A non-finite norm (an fp16 overflow step the scaler skips) is logged as a string: JSON has no inf.
        "grad_norm": None if grad_norm is None else round(grad_norm, 6) if math.isfinite(grad_norm) else str(grad_norm),
        "examples": plan.n_examples,
        "skipped": plan.n_skipped,
        "tokens": int(counts),
        "loss_tokens": plan.n_loss_tokens,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _adapter_state(accelerator: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full trainable weights (gathered from their shards under DeepSpeed ZeRO-3)."""
    unwrapped = accelerator.unwrap_model(model)
    if _is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3:
        import deepspeed  # deferred: optional, GPU-only (present only under DeepSpeed, where this runs)

        params = [p for p in unwrapped.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return trainable_state(unwrapped)
    return trainable_state(unwrapped)


def _replica_digests(accelerator: Any, model: torch.nn.Module) -> list[str] | None:
    """Every process's adapter digest; raises if data-parallel replicas diverged."""
    if _is_deepspeed(accelerator):
        return None  # ZeRO shards the weights: there are no replicas to compare
    digests = gather_object([state_digest(trainable_state(accelerator.unwrap_model(model)))])
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel replicas hold different adapter weights after training: {digests}")
    return list(digests)


@torch.no_grad()
def _holdout_loss(
    accelerator: Any, model: torch.nn.Module, holdout: list[TokenizedExample], cfg: LoraTrainConfig, pad_id: int
) -> float | None:
    """Mean answer-token loss on the held-out examples (every process runs the same number of batches)."""
    if not holdout:
        return None
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    per_round = cfg.micro_batch_size * world
    total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for start in range(0, len(holdout), per_round):
        part = holdout[start : start + per_round][rank * cfg.micro_batch_size : (rank + 1) * cfg.micro_batch_size]
        batch = pad_batch(part or [filler_example(holdout[0])], pad_id)
        loss_sum, _ = answer_token_loss(model, {k: v.to(accelerator.device) for k, v in batch.items()})
        total += loss_sum.double()
    total = accelerator.reduce(total, reduction="sum")
    return round(float(total) / sum(ex.n_loss_tokens for ex in holdout), 6)


def _completed_result(output_dir: Path, identity: str) -> TrainResult | None:
    """The saved result when this exact run already completed; an error when another run did."""
    path = output_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("identity") != identity:
        raise UserError(
            f"{output_dir} already holds a trained adapter from a different config, data or base model "
            f"(see {path}); use another output_dir or delete that one"
        )
    result = TrainResult(**saved["result"])
    if not (Path(result.adapter_dir) / "adapter_config.json").is_file():
        raise UserError(f"{path} names adapter {result.adapter_dir}, which is missing; delete {path} to retrain")
    return result


def _resumable_checkpoint(output_dir: Path, identity: str) -> tuple[Path, dict[str, Any]] | None:
    found = ckpt.latest_checkpoint(output_dir)
    if found is None:
        return None
    path, state = found
    if state.get("identity") != identity:
        raise UserError(
            f"checkpoint {path} belongs to a run with a different config, data or base model; "
            f"delete {ckpt.checkpoints_root(output_dir)} to start over or use another output_dir"
        )
    return found


def _records_before(accelerator: Any, log_path: Path, start_step: int) -> list[dict[str, Any]]:
    """Step records of updates 1..start_step (a resumed run keeps them and redoes the rest).

    The main process trims the log file to them and shares them, so processes on other machines
    (which may not see the file) report the same losses."""
    kept: list[dict[str, Any]] = []
    if accelerator.is_main_process:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if start_step > 0:
            kept = [r for r in read_records(log_path) if r.get("step", 0) <= start_step]
        tmp = log_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(log_path)
    if accelerator.num_processes > 1:
        kept = broadcast_object_list([kept])[0]
    return kept

"""``LoraTrainConfig``: the recipe of stages 3 and 4 (Principle Engraving, Verbose Cloning).

Defaults are the paper's and the reference scripts' (IBM/Dromedary 39a2b1c,
``training/step3_principle_engraving/scripts/finetune_dromedary_65b_non_verbose.sh``): LoRA r=16,
alpha=16, dropout 0.05 on q/k/v/o, effective batch 768, length 512, lr 4e-4, one epoch, 100 log
warm-up steps then linear decay, AdamW (betas 0.9/0.999, eps 1e-8, no weight decay) with gradient
clipping at 1.0 (what accelerate fills into the reference's ``"auto"`` DeepSpeed fields). Stage 4
uses the same recipe with ``max_length=768``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Base-weight dtypes a run may load the model in (LoRA weights stay float32 in every case).
DTYPES = ("float32", "bfloat16", "float16")
LOSS_REDUCTIONS = ("per_token", "per_microbatch")

# Fields that change how a run is operated but not what it computes: a checkpoint written under
# other values of these may be resumed.
OPERATIONAL_FIELDS = frozenset({"checkpoint_every", "keep_checkpoints", "merge"})


@dataclass
class LoraTrainConfig:
    # LoRA adapter (reference: --lora_r=16, alpha 16 and dropout 0.05 are finetune.py defaults).
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # Names of the Linear modules (last name component) that get adapters. Llama, Gemma 3,
    # Mistral and Qwen name them q_proj/k_proj/v_proj/o_proj; other models fail with a list of
    # the Linear names they do have.
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata={"comma_separated": True}
    )

    # Batch. The effective (global) batch is micro_batch_size x world_size x gradient
    # accumulation steps; accumulation = round(effective_batch_size / (micro_batch_size x
    # world_size)), at least 1, so the realized batch can differ from the requested one when it
    # does not divide (the realized value is logged and returned).
    effective_batch_size: int = 768
    micro_batch_size: int = 16  # per device; the reference ran 16 per V100 for the 65B model
    max_length: int = 512  # tokens of prompt + answer; stage 4 uses 768

    # Optimization.
    lr: float = 4e-4
    epochs: int = 1
    warmup_steps: int = 100  # log warm-up (DeepSpeed WarmupDecayLR); 0 = no warm-up
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # How answer-token losses are averaged into one update. "per_token": the mean over every
    # answer token of the effective batch (independent of how it is split). "per_microbatch":
    # the reference (finetune.py, HF Trainer + DeepSpeed): the mean over each micro-batch's
    # tokens, then averaged over micro-batches and processes, so tokens of short micro-batches
    # weigh more. Both give the same update on 1 process or on several.
    loss_reduction: str = "per_token"
    # Stop after this many optimizer steps (demos, smoke tests). The schedule then decays to
    # zero over max_steps instead of over the full epochs.
    max_steps: int | None = None
    seed: int = 42

    # Data. add_eos appends the tokenizer's EOS to every answer (the reference scripts pass
    # --add_eos_token False, so the reference model never learns to stop and relies on stop
    # strings such as "### User" at inference). holdout keeps that many examples out of
    # training (the reference silently held out 2,000) and reports their loss at the end.
    add_eos: bool = False
    holdout: int = 0

    # Execution.
    dtype: str = "float32"  # of the frozen base weights; bfloat16 on GPUs
    gradient_checkpointing: bool = True  # the reference enables it; costs ~30% time, saves activations
    merge: bool = False  # also save <output_dir>/merged: base + adapter merged, loadable without peft
    checkpoint_every: int = 50  # optimizer steps between resumable checkpoints (reference: 50)
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        # YAML 1.1 reads "4e-4" (no dot) as a string; accept it as the number it means.
        for name in ("lr", "lora_dropout", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        self.target_modules = list(self.target_modules)
        if not self.target_modules:
            raise ValueError("target_modules is empty; name at least one Linear module (e.g. q_proj)")
        positive = ("lora_r", "effective_batch_size", "micro_batch_size", "max_length", "epochs",
                    "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "holdout"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer or null, got {self.max_steps!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction {self.loss_reduction!r} is not one of {', '.join(LOSS_REDUCTIONS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per device per optimizer step, so the global batch is near effective_batch_size."""
        return max(1, round(self.effective_batch_size / (self.micro_batch_size * world_size)))

    def realized_batch_size(self, world_size: int) -> int:
        return self.micro_batch_size * world_size * self.gradient_accumulation_steps(world_size)

    def identity(self) -> dict:
        """The fields that decide what a run computes (the resume and cache key)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in OPERATIONAL_FIELDS}

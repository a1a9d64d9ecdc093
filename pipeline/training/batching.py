"""Which examples each process trains on at each optimizer step: a pure function of the step.

Every epoch visits the training set in a seeded permutation (the same on every process). Update
``k`` of an epoch uses the window ``order[k*E : (k+1)*E]`` of E = realized batch examples. Only
that window is tokenized, when its step is planned: tokens are never held for the whole set, so
memory does not grow with the example count, and a run capped by ``max_steps`` tokenizes only
the windows it trains on. An example left without answer tokens by truncation to ``max_length``
is skipped within its window (the reference kept it with every label masked, which adds nothing
to the loss but still took a slot). The window is sorted by length and cut into micro-batches
dealt round-robin to (process, accumulation slot); since the loss is normalized by the window's
answer-token count, how the window is split does not change the update, so sorting only saves
padding. Every process runs exactly ``grad_accum`` micro-batches per update (DDP and DeepSpeed
need matching collectives): a slot left empty by a short final window runs a "filler" whose
labels are all masked, which adds exactly zero to the gradient. Because a step's plan depends on
nothing but (seed, step), resuming from a checkpoint needs no sampler state, and every process
knows the global token count without communicating.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import torch

from harness.common.errors import UserError
from pipeline.training.data import TokenizedExample

T = TypeVar("T")


@dataclass(frozen=True)
class StepPlan:
    step: int  # optimizer update, 0-based, counted over all epochs
    epoch: int
    micro_batches: tuple[tuple[TokenizedExample, ...], ...]  # this process's, grad_accum of them
    n_examples: int  # in the whole window (all processes)
    n_loss_tokens: int  # answer tokens in the whole window: the per-token loss denominator
    n_micro_batches: int = 1  # real (non-filler) micro-batches in the whole window: the per-micro-batch one
    n_skipped: int = 0  # examples of the window without an answer token within max_length


def filler_example(template: TokenizedExample) -> TokenizedExample:
    """Two tokens of a real example with every label masked: keeps collectives in step, adds no gradient.

    Training examples always carry loss tokens (the trainer drops those without), so a filler is
    recognized by ``n_loss_tokens == 0``."""
    ids = template.input_ids[:2]
    return TokenizedExample(id=f"filler:{template.id}", input_ids=ids, n_masked=len(ids))


class StepPlanner(Generic[T]):
    """Plans optimizer updates over ``examples`` for process ``rank`` of ``world_size``;
    ``tokenize`` turns one window of them into ``TokenizedExample`` records, in order."""

    def __init__(
        self,
        examples: Sequence[T],
        tokenize: Callable[[list[T]], list[TokenizedExample]],
        *,
        micro_batch_size: int,
        grad_accum: int,
        world_size: int,
        rank: int,
        epochs: int,
        seed: int,
    ):
        if not examples:
            raise ValueError("no training examples to plan over")
        self.examples = examples
        self.tokenize = tokenize
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.epochs = epochs
        self.seed = seed
        self.window = micro_batch_size * grad_accum * world_size
        self.steps_per_epoch = math.ceil(len(self.examples) / self.window)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @lru_cache(maxsize=2)  # noqa: B019 (one planner per run; caches the current epoch's order)
    def epoch_order(self, epoch: int) -> tuple[int, ...]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return tuple(torch.randperm(len(self.examples), generator=generator).tolist())

    @lru_cache(maxsize=2)  # noqa: B019 (the trainer plans its first step early, to fail before loading the model)
    def plan(self, step: int) -> StepPlan:
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} outside 0..{self.total_steps - 1}")
        epoch, k = divmod(step, self.steps_per_epoch)
        indices = self.epoch_order(epoch)[k * self.window : (k + 1) * self.window]
        tokenized = self.tokenize([self.examples[i] for i in indices])
        trainable = [ex for ex in tokenized if ex.n_loss_tokens > 0]
        if not trainable:
            raise UserError(
                f"none of the {len(tokenized)} examples of update {step + 1} keeps an answer token within "
                "max_length; raise max_length"
            )
        # Longest first; sorted() is stable, so ties keep their permutation order: deterministic.
        window = sorted(trainable, key=lambda ex: -len(ex.input_ids))
        chunks = [window[i : i + self.micro_batch_size] for i in range(0, len(window), self.micro_batch_size)]
        filler = filler_example(window[-1])
        mine = []
        for slot in range(self.grad_accum):
            j = slot * self.world_size + self.rank
            mine.append(tuple(chunks[j]) if j < len(chunks) else (filler,))
        return StepPlan(
            step=step,
            epoch=epoch,
            micro_batches=tuple(mine),
            n_examples=len(window),
            n_loss_tokens=sum(ex.n_loss_tokens for ex in window),
            n_micro_batches=len(chunks),
            n_skipped=len(tokenized) - len(trainable),
        )

"""The transformers generation engine: batched, seeded, and fast on prompts that share a prefix.

Stage prompts repeat a long preamble (the ~1.8k-token constitution in stage 2), so the engine
finds the longest common token prefix of a call's prompts, runs it once, keeps its KV cache
(also across calls, keyed by its tokens), and per batch runs only the suffixes on top of copies
of it. Masks are built from token positions (``harness.backends.kv_prefix``), which keeps the
result exact for sliding-window models such as Gemma 3: greedy outputs equal ``model.generate``.

Sampling runs in our own loop with one ``torch.Generator`` per request, seeded from the request,
so a sampled completion does not depend on batch composition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.backends.kv_prefix import (
    AttentionLayout,
    CacheSlots,
    UnsupportedModel,
    attention_layout,
    common_prefix_length,
    expand_cache,
    new_cache,
)
from pipeline.engine.base import Completion, GenerationRequest, SamplingParams
from pipeline.engine.sampling import bias_token_ids, choose_next_tokens, row_generator

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class _Row:
    """One request's state while its batch decodes."""

    index: int  # position in the caller's request list
    prompt_tokens: int
    generator: torch.Generator | None
    new_ids: list[int]
    text: str = ""
    finish_reason: str = "length"
    done: bool = False


class TransformersEngine:
    """``GenerationEngine`` over a Hugging Face causal LM (optionally with a PEFT adapter).

    Prompts are tokenized with the tokenizer's special tokens (BOS) unless
    ``add_special_tokens=False``. ``completion_tokens`` counts every sampled token, including
    the EOS or the token that completed a stop string; ``text`` excludes both.
    """

    name = "transformers"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 8,
        share_prefix: bool = True,
        min_shared_tokens: int = 16,
        add_special_tokens: bool = True,
        progress: bool = True,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.share_prefix = share_prefix
        self.min_shared_tokens = min_shared_tokens
        self.add_special_tokens = add_special_tokens
        self.progress = progress
        self.device = next(model.parameters()).device
        try:
            self.layout: AttentionLayout | None = attention_layout(model)
        except UnsupportedModel as exc:
            # Plain left-padded batches with the model's own masks still work; only reuse is off.
            log.info("prefix KV reuse disabled: %s", exc)
            self.layout = None
        self.eos_ids = self._eos_ids()
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self._prefix_ids: tuple[int, ...] = ()
        self._prefix_cache = None
        # Counters the benchmark reads: how many tokens went through the model.
        self.stats = {"prefix_tokens": 0, "prompt_tokens_computed": 0, "decode_tokens": 0}

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | Path,
        *,
        peft: str | Path | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        **kwargs,
    ) -> TransformersEngine:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            str(pretrained), dtype=DTYPES[dtype], attn_implementation="sdpa"
        ).to(device)
        if peft is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(peft))
        tokenizer = AutoTokenizer.from_pretrained(str(pretrained))
        return cls(model, tokenizer, **kwargs)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_config = getattr(self.model, "generation_config", None)
        for source in (getattr(gen_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(i) for i in source)
        return ids

    # -- public API -------------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        params: SamplingParams,
        *,
        shared_prefix: str = "",
    ) -> list[Completion]:
        if not requests:
            return []
        encoded = self.tokenizer(
            [r.prompt for r in requests], add_special_tokens=self.add_special_tokens
        )["input_ids"]
        empty = [r.id for r, ids in zip(requests, encoded, strict=True) if not ids]
        if empty:
            raise ValueError(f"requests {empty[:5]} have empty prompts (no tokens to condition on)")
        # The token-level common prefix is what can be reused exactly (a text prefix may end
        # mid-token); the caller's ``shared_prefix`` only lowers the bar for using it.
        prefix_len = self._prefix_length(encoded, bool(shared_prefix))
        prefix_cache = self._encode_prefix(encoded[0][:prefix_len]) if prefix_len else None
        bias = self._bias_vector(params)
        order = sorted(range(len(requests)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(requests)
        from rich.progress import Progress

        with Progress(transient=True, disable=not self.progress) as progress:
            task = progress.add_task(f"generating ({self.name})", total=len(requests))
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                rows = [
                    _Row(
                        index=i,
                        prompt_tokens=len(encoded[i]),
                        generator=None if params.greedy else row_generator(requests[i].seed),
                        new_ids=[],
                    )
                    for i in batch
                ]
                suffixes = [encoded[i][prefix_len:] for i in batch]
                self._generate_batch(rows, suffixes, prefix_len, prefix_cache, params, bias)
                for row in rows:
                    results[row.index] = Completion(
                        id=requests[row.index].id,
                        text=row.text,
                        prompt_tokens=row.prompt_tokens,
                        completion_tokens=len(row.new_ids),
                        finish_reason=row.finish_reason,
                    )
                progress.advance(task, len(batch))
        return [r for r in results if r is not None]

    # -- prefix ---------------------------------------------------------------------------------

    def _prefix_length(self, encoded: list[list[int]], hinted: bool) -> int:
        if not self.share_prefix or self.layout is None:
            return 0
        # Keep at least one suffix token per prompt: its logits give the first new token.
        length = min(common_prefix_length(encoded), min(len(e) for e in encoded) - 1)
        if length <= 0 or (length < self.min_shared_tokens and not hinted):
            return 0
        cached = len(self._prefix_ids)
        if 0 < cached <= length and tuple(encoded[0][:cached]) == self._prefix_ids:
            # A later call (a resumed stage, the next chunk) with the same preamble: reuse the
            # cached prefix; the few extra shared tokens, if any, just run with the suffixes.
            return cached
        return length

    @torch.inference_mode()
    def _encode_prefix(self, prefix_ids: list[int]):
        key = tuple(prefix_ids)
        if key == self._prefix_ids and self._prefix_cache is not None:
            return self._prefix_cache
        ids = torch.tensor([prefix_ids], device=self.device)
        positions = torch.arange(len(prefix_ids), device=self.device)[None]
        valid = torch.ones_like(ids, dtype=torch.bool)
        cache = new_cache()
        # Prefix reuse is only on with a layout (see _prefix_length), so slots are CacheSlots.
        self._forward(ids, positions, valid, CacheSlots(self.layout, positions, valid), cache)
        self.stats["prefix_tokens"] += len(prefix_ids)
        self._prefix_ids, self._prefix_cache = key, cache
        return cache

    # -- decoding -------------------------------------------------------------------------------

    def _bias_vector(self, params: SamplingParams) -> torch.Tensor | None:
        if not params.logit_bias:
            return None
        vocab = self.model.get_output_embeddings().weight.shape[0]
        bias = torch.zeros(vocab)
        for token_id, value in bias_token_ids(self.tokenizer, params.logit_bias).items():
            if token_id < vocab:
                bias[token_id] += value
        return bias

    def _forward(self, input_ids, positions, query_valid, slots, cache):
        """Logits of each row's last token; ``slots`` (or 2D mask) already include the queries."""
        if self.layout is not None:
            mask = slots.masks(positions, query_valid)
        else:
            mask = slots.long()  # 2D padding mask: the model builds its own causal masks
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def _generate_batch(self, rows, suffixes, prefix_len, prefix_cache, params, bias) -> None:
        device = self.device
        width = max(len(s) for s in suffixes)
        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        query_valid = torch.zeros((batch, width), dtype=torch.bool)
        for r, suffix in enumerate(suffixes):  # left padding: every row ends at the same slot
            input_ids[r, width - len(suffix) :] = torch.tensor(suffix)
            query_valid[r, width - len(suffix) :] = True
        positions = (prefix_len + query_valid.long().cumsum(-1) - 1).clamp(min=prefix_len)
        input_ids, positions, query_valid = (
            t.to(device) for t in (input_ids, positions, query_valid)
        )
        cache = expand_cache(prefix_cache, batch) if prefix_cache is not None else new_cache()
        prefix_positions = torch.arange(prefix_len, device=device).expand(batch, -1)
        prefix_valid = torch.ones(batch, prefix_len, dtype=torch.bool, device=device)
        if self.layout is not None:
            slots = CacheSlots(self.layout, prefix_positions, prefix_valid)
            slots.drop_unreachable(cache, prefix_len)
            slots.append(positions, query_valid)
        else:
            slots = torch.cat([prefix_valid, query_valid], dim=1)
        logits = self._forward(input_ids, positions, query_valid, slots, cache)
        self.stats["prompt_tokens_computed"] += batch * width

        active = list(range(batch))  # rows of the batch still decoding, in cache order
        last_positions = positions[:, -1]
        for step in range(params.max_new_tokens):
            generators = [rows[r].generator for r in active]
            next_ids = choose_next_tokens(logits.cpu(), params, generators, bias).tolist()
            keep: list[int] = []
            for slot, (r, token) in enumerate(zip(active, next_ids, strict=True)):
                row = rows[r]
                row.new_ids.append(int(token))
                if self._finished(row, params):
                    row.done = True
                else:
                    keep.append(slot)
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(active):  # finished rows leave the batch
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                last_positions = last_positions[index]
                if self.layout is not None:
                    slots.select(index)
                else:
                    slots = slots[index]
                active = [active[s] for s in keep]
                next_ids = [next_ids[s] for s in keep]
            step_ids = torch.tensor(next_ids, device=device)[:, None]
            last_positions = last_positions + 1
            step_positions = last_positions[:, None]
            step_valid = torch.ones_like(step_ids, dtype=torch.bool)
            if self.layout is not None:
                slots.drop_unreachable(cache, int(last_positions.min()))
                slots.append(step_positions, step_valid)
            else:
                slots = torch.cat([slots, step_valid], dim=1)
            logits = self._forward(step_ids, step_positions, step_valid, slots, cache)
            self.stats["decode_tokens"] += len(active)
        for row in rows:
            if not row.done:
                row.text = self._decode(row.new_ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _finished(self, row: _Row, params: SamplingParams) -> bool:
        """Record the row's text and finish reason when its last token ends it."""
        if row.new_ids[-1] in self.eos_ids:
            row.text = self._decode(row.new_ids[:-1])
            row.finish_reason = "stop"
            return True
        if params.stop:
            text = self._decode(row.new_ids)
            cut = min((i for i in (text.find(s) for s in params.stop if s) if i >= 0), default=-1)
            if cut >= 0:
                row.text = text[:cut]
                row.finish_reason = "stop"
                return True
        return False

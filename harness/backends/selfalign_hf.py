"""``selfalign-hf``: lm-eval's ``hf`` backend with prefix-shared, head-only-where-needed scoring.

A drop-in for ``--model hf`` (same ``model_args``: pretrained, peft, dtype, batch_size, ...).
Log-likelihood requests are planned over a token trie (``prefix_tree``): the prefix common to
all of them (the meta prompt) runs once and its KV cache is shared by every batch; the rest runs
as packed rows in which each token attends only to its own sequence (masks from
``kv_prefix``), so every distinct token is computed once; and the LM head and log-softmax run
only at the positions whose log-probs are read; on CPU, linear layers run through oneDNN with
prepacked weights (``onednn_linears``). Tokenization, truncation, the returned
``(logprob, is_greedy)`` pairs and the cache hook follow ``HFLM._loglikelihood_tokens``.

Where exact sharing is impossible (seq2seq models, attention kernels that take no explicit mask,
models without ``logits_to_keep``) it falls back to the stock implementation.

``pretrained``/``tokenizer`` also take our aliases (``gemma-3-270m``) and ``.gguf`` files, and
``peft`` a relative adapter path, resolved as ``selfalign eval`` does, so the same model_args
work under lm-eval's own CLI (``selfalign lm-eval``).

Extra model_args: ``share_prefix`` (default True), ``onednn_linears`` (default True; False keeps
MKL's ``F.linear`` and one copy of the weights), ``row_tokens`` (tokens per packed row,
default 512), ``max_scored_per_call`` (log-prob rows per forward, bounds the V-wide memory).

Generation is HFLM's, plus the reference's n-gram frequency penalties as generation kwargs
(``unitoken_frequency_penalty``, ``bitoken_...``, ``tritoken_...``, ``quadtoken_...``,
``frequency_penalty_starts_only``, ``frequency_penalty_min_id``), which the Vicuna-80
``reference_demo`` preset uses.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import LogitsProcessorList

from harness.backends.kv_prefix import (
    AttentionLayout,
    UnsupportedModel,
    attention_layout,
    build_masks,
    common_prefix_length,
    expand_cache,
    new_cache,
)
from harness.backends.onednn_linears import PackedLinears
from harness.backends.prefix_tree import ScoreRequest, ScoringPlan, Segment, Stage, plan_scoring
from harness.common.ngram_penalty import NGRAM_GEN_KWARGS, NGramPenalties, hf_logits_processor
from harness.models import ALIASES, resolve_peft, resolve_pretrained

log = logging.getLogger(__name__)

# Request tuples as HFLM passes them: ((context, continuation) or None, context ids, continuation ids)
LLRequest = tuple[tuple[str, str] | None, list[int], list[int]]


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _resolve_local_names(kwargs: dict) -> dict:
    """Aliases and GGUF files to their converted directories; anything else is left to HFLM."""
    out = dict(kwargs)
    for key in ("pretrained", "tokenizer"):
        value = out.get(key)
        if isinstance(value, str) and (value in ALIASES or value.endswith(".gguf")):
            out[key] = str(resolve_pretrained(value))
    if isinstance(out.get("peft"), str):
        out["peft"] = str(resolve_peft(out["peft"]))
    return out


@register_model("selfalign-hf")
class SelfAlignHFLM(HFLM):
    """HFLM whose log-likelihoods share prefixes and compute the LM head only where read."""

    def __init__(
        self,
        *args,
        share_prefix: bool | str = True,
        row_tokens: int | str = 512,
        onednn_linears: bool | str = True,
        max_scored_per_call: int | str = 256,
        **kwargs,
    ) -> None:
        super().__init__(*args, **_resolve_local_names(kwargs))
        self.share_prefix = _as_bool(share_prefix)
        self.row_tokens = int(row_tokens)
        self.max_scored_per_call = int(max_scored_per_call)
        self.layout: AttentionLayout | None = None
        self.fallback_reason = ""
        try:
            self.layout = self._check_supported()
        except UnsupportedModel as exc:
            self.fallback_reason = str(exc)
            log.warning(
                "selfalign-hf: prefix sharing off (%s); scoring as the stock hf backend", exc
            )
        # What the last scoring call ran, for benchmarks: tokens through the model, etc.
        self.last_plan_stats: dict[str, int] = {}
        # The last top chain and its cache (batch 1): callers that feed requests in chunks
        # (harness.progress.ProgressLM) reuse the meta prompt across calls.
        self._kept_chain: tuple[tuple[int, ...], object] | None = None
        self._top_chain_reused = 0
        self._linears = PackedLinears(
            self.model, batch_hint=self.row_tokens, enabled=_as_bool(onednn_linears)
        )

    def _check_supported(self) -> AttentionLayout:
        if not self.share_prefix:
            raise UnsupportedModel("share_prefix=False")
        if self.backend != "causal":
            raise UnsupportedModel(f"backend {self.backend!r}")
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if "logits_to_keep" not in inspect.signature(base.forward).parameters:
            raise UnsupportedModel(f"{type(base).__name__}.forward takes no logits_to_keep")
        return attention_layout(self.model)

    # -- lm-eval entry point ------------------------------------------------------------------

    def _loglikelihood_tokens(
        self,
        requests: list[LLRequest],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if self.layout is None or not requests:
            return super()._loglikelihood_tokens(
                requests, disable_tqdm=disable_tqdm, override_bs=override_bs
            )
        score_requests = [self._to_score_request(ctx, cont) for _, ctx, cont in requests]
        plan = plan_scoring(score_requests, row_tokens=self.row_tokens)
        values: list[list[torch.Tensor | None]] = [[None] * len(r.targets) for r in score_requests]
        greedy: list[bool] = [True] * len(score_requests)
        rows_per_call = self._rows_per_call(override_bs)
        pbar = tqdm(
            total=len(requests),
            disable=(disable_tqdm or self.rank != 0),
            desc="Running loglikelihood requests (selfalign-hf)",
        )
        remaining = [len(r.targets) for r in score_requests]
        done = 0

        def read(nodes: list[int], logprobs: torch.Tensor) -> None:
            nonlocal done
            argmax = logprobs.argmax(dim=-1).tolist()
            slots = [(i, req, k) for i, node in enumerate(nodes) for req, k in plan.readers[node]]
            targets = [score_requests[req].targets[k] for _, req, k in slots]
            # One small gather, so no V-wide tensor outlives this batch.
            picked = logprobs[[i for i, _, _ in slots], targets].cpu()
            for (i, req, k), target, value in zip(slots, targets, picked, strict=True):
                values[req][k] = value
                greedy[req] = greedy[req] and argmax[i] == target
                remaining[req] -= 1
                if remaining[req] == 0:
                    done += 1
            pbar.n = done
            pbar.refresh()

        self._top_chain_reused = 0
        with torch.inference_mode(), self._autocast(), self._linears.active():
            self._run_stage(plan.top, None, rows_per_call, read)
        pbar.close()
        self.last_plan_stats = {
            "requests": len(requests),
            "request_tokens": plan.num_request_tokens,
            "distinct_tokens": plan.num_nodes,
            "computed_tokens": plan.computed_tokens,
            "top_chain_tokens": len(plan.top.chain),
            "top_chain_reused": self._top_chain_reused,
            "stages": sum(1 for _ in plan.top.walk()),
            "rows": plan.num_rows,
            "scored_positions": sum(len(r.targets) for r in score_requests),
            "scored_distinct_positions": len(plan.readers),
        }

        results = []
        for (request_str, _, _), per_token, is_greedy in zip(requests, values, greedy, strict=True):
            # Summed as a tensor in the log-softmax dtype, like the stock backend's ``logits.sum()``.
            answer = (float(torch.stack(per_token).sum()), bool(is_greedy))
            results.append(answer)
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return results

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs) -> torch.Tensor:
        """HFLM's generation, plus the reference's n-gram frequency penalties when the request's
        generation kwargs carry them (``unitoken_frequency_penalty=0.3``, ...; see
        ``harness.common.ngram_penalty``), applied before temperature and top-p as the reference."""
        penalties = NGramPenalties(**{
            field: generation_kwargs.pop(kwarg)
            for field, kwarg in NGRAM_GEN_KWARGS.items() if kwarg in generation_kwargs
        })  # fmt: skip
        if penalties.active:
            processors = list(generation_kwargs.pop("logits_processor", None) or [])
            processors.append(hf_logits_processor(penalties, self.tokenizer, context.shape[1]))
            generation_kwargs["logits_processor"] = LogitsProcessorList(processors)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def clear_prefix_cache(self) -> None:
        """Forget the kept top chain (benchmarks: make the next call pay for its meta prompt)."""
        self._kept_chain = None

    # -- planning -------------------------------------------------------------------------------

    def plan(self, instances) -> ScoringPlan:
        """The plan ``loglikelihood(instances)`` would run, without running the model.

        Tokenization goes through lm-eval's own ``loglikelihood`` (empty contexts, BOS), with
        the token-level step swapped for one that only records; benchmarks read the floor off it.
        """
        captured: list[LLRequest] = []

        def record(requests, disable_tqdm=False, override_bs=None):
            captured.extend(requests)
            return [(0.0, False)] * len(requests)

        self._loglikelihood_tokens = record  # instance attribute shadows the method
        try:
            self.loglikelihood(instances, disable_tqdm=True)
        finally:
            del self._loglikelihood_tokens
        score_requests = [self._to_score_request(ctx, cont) for _, ctx, cont in captured]
        return plan_scoring(score_requests, row_tokens=self.row_tokens)

    def _to_score_request(
        self, context_enc: list[int], continuation_enc: list[int]
    ) -> ScoreRequest:
        # Exactly the stock backend's input: left-truncated to max_length + 1, last token dropped;
        # the last len(continuation) input positions predict the continuation.
        if not context_enc or not continuation_enc or len(continuation_enc) > self.max_length:
            raise ValueError(
                "loglikelihood request with an empty or over-long context/continuation"
            )
        whole = (context_enc + continuation_enc)[-(self.max_length + 1) :]
        tokens = tuple(whole[:-1])
        return ScoreRequest(tokens, len(tokens) - len(continuation_enc), tuple(continuation_enc))

    def _rows_per_call(self, override_bs: int | None) -> int:
        if isinstance(self.batch_size, int) and self.batch_size > 0:
            return self.batch_size
        if override_bs:
            return int(override_bs)
        return 8  # batch_size=auto: rows are already ``row_tokens`` long; 8 keeps CPU memory flat

    def _batches(self, rows: list[Segment], rows_per_call: int) -> list[list[Segment]]:
        """Rows of similar length together, at most rows_per_call and max_scored_per_call each."""
        batches: list[list[Segment]] = []
        current: list[Segment] = []
        scored = 0
        for row in sorted(rows, key=len, reverse=True):
            full = len(current) >= rows_per_call
            if current and (full or scored + row.num_scored > self.max_scored_per_call):
                batches.append(current)
                current, scored = [], 0
            current.append(row)
            scored += row.num_scored
        if current:
            batches.append(current)
        return batches

    # -- model calls ----------------------------------------------------------------------------

    def _autocast(self):
        dtype = getattr(self, "mixed_precision_dtype", None)
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=dtype is not None)

    def _log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits, dim=-1, dtype=getattr(self, "softmax_dtype", None))

    def _run_stage(self, stage: Stage, parent_cache, rows_per_call: int, read) -> None:
        cache = parent_cache
        if len(stage.chain):
            if stage.context_len == 0:
                cache = self._run_top_chain(stage.chain, read)
            else:
                cache = self._run_chain(stage.chain, stage.context_len, parent_cache, read)
        cache_len = stage.context_len + len(stage.chain)
        for batch in self._batches(stage.rows, rows_per_call):
            self._run_rows(batch, cache_len, cache, read)
        for child in stage.children:
            self._run_stage(child, cache, rows_per_call, read)

    def _run_top_chain(self, chain: Segment, read):
        """The top chain, reusing the part it shares with the previous call's top chain."""
        reuse = 0
        if self._kept_chain is not None:
            kept_tokens, kept_cache = self._kept_chain
            reuse = common_prefix_length([list(kept_tokens), chain.tokens])
            # Log-probs read inside the chain must be computed in this call.
            reuse = min(reuse, next((i for i, s in enumerate(chain.scored) if s), len(chain)))
        self._top_chain_reused = reuse
        if reuse:
            cache = expand_cache(kept_cache, 1, length=reuse)
            rest = chain.slice(reuse)
            if len(rest):
                cache = self._run_chain(rest, reuse, cache, read, copy_parent=False)
        else:
            cache = self._run_chain(chain, 0, None, read)
        self._kept_chain = (tuple(chain.tokens), cache)
        return cache

    def _run_chain(self, chain: Segment, context_len: int, parent_cache, read, copy_parent=True):
        """Run a shared chain once (batch 1) after its context; read log-probs asked inside it."""
        device = self.device
        ids = torch.tensor([chain.tokens], device=device)
        positions = torch.tensor([chain.positions], device=device)
        valid = torch.ones_like(ids, dtype=torch.bool)
        n = len(chain)
        visible = torch.ones(n, context_len + n, dtype=torch.bool, device=device)
        visible = visible.tril_(diagonal=context_len)[None]
        key_positions = torch.arange(context_len + n, device=device)[None]
        # A copy, so the parent's cache stays as it is for its other children.
        cache = parent_cache
        if cache is None:
            cache = new_cache()
        elif copy_parent:
            cache = expand_cache(parent_cache, 1)
        scored = torch.tensor([chain.scored], device=device)
        out = self._masked_forward(
            ids, positions, valid, visible, key_positions, cache,
            logits_to_keep=scored if chain.num_scored else 1,
        )
        if chain.num_scored:
            nodes = [node for node, s in zip(chain.nodes, chain.scored, strict=True) if s]
            read(nodes, self._log_softmax(out.logits))
        return cache

    def _masked_forward(self, ids, positions, valid, visible, key_positions, cache, logits_to_keep):
        """The model on our position-based masks: ``visible`` (B, Q, K) from the trie layout."""
        return self.model(
            input_ids=ids,
            attention_mask=build_masks(self.layout, visible, key_positions, positions, valid),
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
        )

    def _run_rows(self, rows: list[Segment], cache_len: int, stage_cache, read) -> None:
        device = self.device
        batch, width = len(rows), max(len(r) for r in rows)
        ids = torch.full((batch, width), int(self.tokenizer.pad_token_id or 0), dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        ends = torch.zeros((batch, width), dtype=torch.long)  # 0: a padding key, never visible
        valid = torch.zeros((batch, width), dtype=torch.bool)
        scored = torch.zeros((batch, width), dtype=torch.bool)
        for b, row in enumerate(rows):
            n = len(row)
            ids[b, :n] = torch.tensor(row.tokens)
            positions[b, :n] = torch.tensor(row.positions)
            ends[b, :n] = torch.tensor(row.ends)
            valid[b, :n] = True
            scored[b, :n] = torch.tensor(row.scored)
        slot = torch.arange(width)
        # Key slot k is visible to query slot q iff k <= q < ends[k] (k's subtree in the row).
        in_row = (slot[None, :, None] >= slot[None, None, :]) & (
            slot[None, :, None] < ends[:, None, :]
        )
        in_row &= valid[:, None, :]
        cached_visible = valid[:, :, None].expand(batch, width, cache_len)
        visible = torch.cat([cached_visible, in_row], dim=2)
        key_positions = torch.cat(
            [torch.arange(cache_len).expand(batch, cache_len), positions], dim=1
        )
        ids, positions, visible, key_positions, valid, scored = (
            t.to(device) for t in (ids, positions, visible, key_positions, valid, scored)
        )
        cache = expand_cache(stage_cache, batch) if stage_cache is not None else new_cache()
        out = self._masked_forward(
            ids, positions, valid, visible, key_positions, cache, logits_to_keep=scored
        )
        nodes = [n for row in rows for n, s in zip(row.nodes, row.scored, strict=True) if s]
        if nodes:
            read(nodes, self._log_softmax(out.logits))

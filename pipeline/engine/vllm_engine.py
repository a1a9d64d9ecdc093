"""The vLLM generation engine (GPU): prefix caching, tensor parallelism, LoRA adapters.

vLLM is imported only when an engine is built, so this module loads on machines without it.
Each request gets ``SamplingParams(seed=request.seed)``, which makes a sampled completion
independent of batching, as the contract requires. Prefix caching (on by default) gives the
shared-prefix reuse that the transformers engine implements by hand. The reference's n-gram
frequency penalties run as a vLLM logits processor (``NGramPenaltyLogitsProcessor``, built on
``AdapterLogitsProcessor`` from vLLM's v1 API; per-request callables on older vLLM), configured per
request through ``SamplingParams.extra_args``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from transformers import AutoTokenizer

from harness.common.errors import UserError
from harness.common.ngram_penalty import NGramCounts, NGramPenalties, word_initial_ids
from pipeline.engine.base import Completion, GenerationRequest, SamplingParams, request_budgets
from pipeline.engine.sampling import bias_token_ids

# The key of SamplingParams.extra_args that carries a request's n-gram penalties.
NGRAM_PENALTY_ARG = "selfalign_ngram_penalties"


def _import_vllm():
    try:
        import vllm  # deferred: optional and GPU-only (the `vllm` extra)
    except ImportError:
        raise UserError(
            "backend 'vllm' needs vLLM (GPU only): pip install 'selfalign[vllm]', "
            "or use backend 'transformers'"
        ) from None
    return vllm


class VLLMEngine:
    """``GenerationEngine`` over ``vllm.LLM``."""

    name = "vllm"

    def __init__(
        self,
        pretrained: str,
        *,
        peft: str | None = None,
        dtype: str = "float32",
        max_num_seqs: int = 256,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_lora_rank: int = 64,
        enable_prefix_caching: bool = True,
        **llm_kwargs,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        kwargs = dict(
            model=pretrained,
            tokenizer=pretrained,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            max_num_seqs=max_num_seqs,
            **llm_kwargs,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if peft is not None:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        # The n-gram penalties' processor is registered at start-up (vLLM's v1 API has no
        # per-request processors); requests without penalties pass through it untouched.
        self._processor_class = ngram_processor_class()
        if self._processor_class is not None:
            kwargs.setdefault("logits_processors", [self._processor_class])
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora_request = None
        if peft is not None:
            # deferred: vLLM is optional (see _import_vllm)
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("adapter", 1, peft)

    def _sampling_params(self, params: SamplingParams, seed: int, max_tokens: int | None = None):
        bias = bias_token_ids(self.tokenizer, params.logit_bias) if params.logit_bias else None
        extra = {}
        penalties = NGramPenalties.from_sampling(params)
        if penalties.active:
            if self._processor_class is not None:
                extra["extra_args"] = {NGRAM_PENALTY_ARG: dataclasses.asdict(penalties)}
            else:  # vLLM < 0.10 (v0 engine): a per-request callable
                extra["logits_processors"] = [RequestNGramPenalty(penalties, self._eligible(penalties))]
        return self._vllm.SamplingParams(
            max_tokens=max_tokens or params.max_new_tokens,
            temperature=max(params.temperature, 0.0),
            top_p=params.top_p,
            stop=list(params.stop) or None,
            logit_bias=bias,
            seed=seed,
            skip_special_tokens=True,
            **extra,
        )

    def _eligible(self, penalties: NGramPenalties) -> frozenset[int] | None:
        return word_initial_ids(self.tokenizer, penalties.min_token_id) if penalties.starts_only else None

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        params: SamplingParams,
        *,
        shared_prefix: str = "",
    ) -> list[Completion]:
        if not requests:
            return []
        budgets = [None] * len(requests)
        if params.reference_max_seq_len is not None:
            encoded = [self.tokenizer.encode(r.prompt) for r in requests]
            prefix = len(self.tokenizer.encode(shared_prefix)) if shared_prefix else 0
            budgets = request_budgets(params, [len(e) for e in encoded], prefix)
        outputs = self.llm.generate(
            [r.prompt for r in requests],
            [self._sampling_params(params, r.seed, b) for r, b in zip(requests, budgets, strict=True)],
            lora_request=self.lora_request,
            use_tqdm=True,
        )
        completions = []
        for request, output in zip(requests, outputs, strict=True):
            choice = output.outputs[0]
            completions.append(
                Completion(
                    id=request.id,
                    text=choice.text,
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=len(choice.token_ids),
                    finish_reason="length" if choice.finish_reason == "length" else "stop",
                    # vLLM's stop_reason: the matched stop string, a stop token id, or None (EOS)
                    stop_string=choice.stop_reason if isinstance(getattr(choice, "stop_reason", None), str) else None,
                )
            )
        return completions


class RequestNGramPenalty:
    """One request's n-gram penalties as a vLLM per-request logits processor:
    ``(output_token_ids, logits) -> logits``, called once per generated token."""

    def __init__(self, penalties: NGramPenalties, eligible: frozenset[int] | None):
        self.counts = NGramCounts(penalties, eligible)
        self.seen = 0  # output tokens already counted

    def __call__(self, output_token_ids, logits):
        generated = list(output_token_ids)
        while self.seen < len(generated):  # count the tokens sampled since the last call
            self.seen += 1
            self.counts.add(generated[: self.seen])
        amounts = self.counts.penalties_for_next(generated)
        if amounts:
            index = torch.tensor(list(amounts), device=logits.device)
            logits = logits.clone()
            logits[index] -= torch.tensor(list(amounts.values()), dtype=logits.dtype, device=logits.device)
        return logits


def ngram_processor_class():
    """vLLM's batch-level processor class for the n-gram penalties, or None before vLLM 0.10.

    Built on first use so that importing this module never imports vLLM."""
    try:
        # deferred: vLLM is optional (see _import_vllm)
        from vllm.v1.sample.logits_processor import AdapterLogitsProcessor
    except ImportError:
        return None

    class NGramPenaltyLogitsProcessor(AdapterLogitsProcessor):
        def __init__(self, vllm_config, device, is_pin_memory):
            super().__init__(vllm_config, device, is_pin_memory)
            self._vllm_config = vllm_config
            self._eligible: dict[int, frozenset[int]] = {}

        def is_argmax_invariant(self) -> bool:
            return False  # a penalty can change the most likely token

        def _word_initial(self, min_token_id: int) -> frozenset[int]:
            if min_token_id not in self._eligible:
                model_config = self._vllm_config.model_config
                tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer)
                self._eligible[min_token_id] = word_initial_ids(tokenizer, min_token_id)
            return self._eligible[min_token_id]

        def new_req_logits_processor(self, params):
            spec = (getattr(params, "extra_args", None) or {}).get(NGRAM_PENALTY_ARG)
            if not spec:
                return None
            penalties = NGramPenalties(**spec)
            eligible = self._word_initial(penalties.min_token_id) if penalties.starts_only else None
            return RequestNGramPenalty(penalties, eligible)

    return NGramPenaltyLogitsProcessor

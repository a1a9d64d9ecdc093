"""The vLLM generation engine (GPU): prefix caching, tensor parallelism, LoRA adapters.

vLLM is imported only when an engine is built, so this module loads on machines without it.
Each request gets ``SamplingParams(seed=request.seed)``, which makes a sampled completion
independent of batching, as the contract requires. Prefix caching (on by default) gives the
shared-prefix reuse that the transformers engine implements by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.common.errors import UserError
from pipeline.engine.base import Completion, GenerationRequest, SamplingParams
from pipeline.engine.sampling import bias_token_ids


def _import_vllm():
    try:
        import vllm
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
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora_request = None
        if peft is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("adapter", 1, peft)

    def _sampling_params(self, params: SamplingParams, seed: int):
        bias = bias_token_ids(self.tokenizer, params.logit_bias) if params.logit_bias else None
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=max(params.temperature, 0.0),
            top_p=params.top_p,
            stop=list(params.stop) or None,
            logit_bias=bias,
            seed=seed,
            skip_special_tokens=True,
        )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        params: SamplingParams,
        *,
        shared_prefix: str = "",
    ) -> list[Completion]:
        if not requests:
            return []
        outputs = self.llm.generate(
            [r.prompt for r in requests],
            [self._sampling_params(params, r.seed) for r in requests],
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
                )
            )
        return completions

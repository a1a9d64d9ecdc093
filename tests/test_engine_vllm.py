"""The vLLM engine's mapping onto vLLM's API, checked against a stand-in ``vllm`` module (no GPU)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from pipeline.engine.base import GenerationRequest, SamplingParams


@dataclass
class _FakeSamplingParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list | None
    logit_bias: dict | None
    seed: int
    skip_special_tokens: bool
    extra_args: dict | None = None
    logits_processors: list | None = None


@dataclass
class _FakeLoRARequest:
    name: str
    id: int
    path: str


@dataclass
class _FakeLLM:
    kwargs: dict
    calls: list = field(default_factory=list)

    def get_tokenizer(self):
        from tests.tiny_model import build_tokenizer

        return build_tokenizer()

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        self.calls.append((prompts, params, lora_request))
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            choice = types.SimpleNamespace(
                text=f"{p.seed}:{prompt[-3:]}", token_ids=[1, 2, 3], finish_reason="stop"
            )
            outs.append(
                types.SimpleNamespace(outputs=[choice], prompt_token_ids=list(range(len(prompt))))
            )
        return outs


class _FakeAdapterLogitsProcessor:
    """vllm.v1.sample.logits_processor.AdapterLogitsProcessor's constructor contract."""

    def __init__(self, vllm_config, device, is_pin_memory):
        self.vllm_config = vllm_config


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = lambda **kwargs: _FakeLLM(kwargs)
    module.SamplingParams = _FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = _FakeLoRARequest
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora_request)
    processors = types.ModuleType("vllm.v1.sample.logits_processor")
    processors.AdapterLogitsProcessor = _FakeAdapterLogitsProcessor
    for name in ("vllm.v1", "vllm.v1.sample"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm.v1.sample.logits_processor", processors)
    return module


def test_requests_map_to_per_request_seeds_and_params(fake_vllm, tmp_path):
    from pipeline.engine.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(tmp_path), peft=str(tmp_path / "adapter"), tensor_parallel_size=2)
    assert engine.llm.kwargs["tensor_parallel_size"] == 2
    assert engine.llm.kwargs["enable_lora"] and engine.llm.kwargs["enable_prefix_caching"]
    requests = [
        GenerationRequest("a", "hello one", seed=7),
        GenerationRequest("b", "hello two", seed=9),
    ]
    params = SamplingParams(
        max_new_tokens=5, temperature=0.5, top_p=0.9, stop=("\n",), logit_bias={"Sure": -100.0}
    )
    out = engine.generate(requests, params, shared_prefix="hello ")
    prompts, sampling, lora = engine.llm.calls[0]
    assert prompts == ["hello one", "hello two"]
    assert [p.seed for p in sampling] == [7, 9]
    assert sampling[0].max_tokens == 5 and sampling[0].stop == ["\n"] and sampling[0].top_p == 0.9
    sure_id = engine.tokenizer.encode("Sure", add_special_tokens=False)[0]
    assert sampling[0].logit_bias == {sure_id: -100.0}
    assert lora.path == str(tmp_path / "adapter")
    assert [c.id for c in out] == ["a", "b"] and out[0].text == "7:one"
    assert out[0].completion_tokens == 3 and out[0].finish_reason == "stop"
    assert out[0].prompt_tokens == len("hello one")


def test_make_engine_routes_to_vllm(fake_vllm, tiny_model_dir):
    from pipeline.engine.registry import make_engine

    engine = make_engine("vllm", str(tiny_model_dir), batch_size=16, dtype="bfloat16")
    assert engine.name == "vllm"
    assert engine.llm.kwargs["max_num_seqs"] == 16 and engine.llm.kwargs["dtype"] == "bfloat16"


def _replay(processor, new_ids, vocab):
    """Feed a processor the tokens one step at a time; the logits it returns at each step."""
    steps = []
    for k in range(len(new_ids)):
        logits = torch.linspace(0, 1, vocab)
        steps.append(processor(new_ids[:k], logits.clone()))
    return steps, torch.linspace(0, 1, vocab)


@pytest.mark.parametrize("vllm_v1", [True, False], ids=["v1-adapter", "v0-per-request"])
def test_ngram_penalties_run_as_a_logits_processor_with_the_reference_rule(
    vllm_v1, fake_vllm, tiny_model_dir, monkeypatch
):
    from pipeline.engine.vllm_engine import NGRAM_PENALTY_ARG, VLLMEngine
    from tests.test_engine_ngram_penalty import (
        reference_penalised_logits,
        reference_starting_pieces,
    )

    if not vllm_v1:
        monkeypatch.delitem(sys.modules, "vllm.v1.sample.logits_processor")
        monkeypatch.setitem(sys.modules, "vllm.v1.sample.logits_processor", None)  # ImportError
    engine = VLLMEngine(str(tiny_model_dir))
    params = SamplingParams(
        max_new_tokens=5, tritoken_frequency_penalty=1.0, quadtoken_frequency_penalty=2.0,
        frequency_penalty_min_id=256,
    )  # fmt: skip
    engine.generate([GenerationRequest("a", "hello", seed=1)], params)
    (sampling,) = engine.llm.calls[0][1]
    if vllm_v1:
        (cls,) = engine.llm.kwargs["logits_processors"]
        assert sampling.extra_args[NGRAM_PENALTY_ARG]["tritoken"] == 1.0 and not sampling.logits_processors
        config = types.SimpleNamespace(model_config=types.SimpleNamespace(tokenizer=str(tiny_model_dir)))
        processor = cls(config, "cpu", False).new_req_logits_processor(sampling)
        assert cls(config, "cpu", False).new_req_logits_processor(_FakeSamplingParams(1, 0, 1, None, None, 0, True)) is None
    else:
        assert "logits_processors" not in engine.llm.kwargs and sampling.extra_args is None
        (processor,) = sampling.logits_processors
    # A sequence with repeated word-initial trigrams: (Ġc, Ġx, Ġy) twice and more.
    tok = engine.tokenizer
    vocab = len(tok)
    starting = sorted(i for i in reference_starting_pieces(tok, "Ġ") if i > 256)
    a, b, c = starting[:3]
    new_ids = [a, b, c, a, b, c, a, b, c, 7, a, b, c, a]
    steps, raw = _replay(processor, new_ids, vocab)
    expected = reference_penalised_logits(
        [raw] * len(new_ids), [1, 2], new_ids, (0.0, 0.0, 1.0, 2.0), set(starting), 256
    )
    assert all(torch.allclose(g, w) for g, w in zip(steps, expected, strict=True))
    assert sum(not torch.equal(s, raw) for s in steps) >= 4

"""The vLLM engine's mapping onto vLLM's API, checked against a stand-in ``vllm`` module (no GPU)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

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

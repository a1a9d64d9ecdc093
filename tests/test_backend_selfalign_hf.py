"""selfalign-hf against lm-eval's stock hf backend on tiny random models: same numbers, less work."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("lm_eval")

import lm_eval.models  # noqa: E402,F401  (fills lm-eval's registry before ours registers)
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from harness.backends.selfalign_hf import SelfAlignHFLM  # noqa: E402
from tests.tiny_model import build_random_lora, build_tiny_gemma3  # noqa: E402

WORDS = (
    "Question What is the capital of France Answer Paris true false Human Can you help me Sure "
    "The correct option would be A B quick brown fox exam Dromedary"
).split()
TOLERANCE = 1e-4  # the bound for float32; observed differences are ~1e-6


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny_gemma3_backend"))


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def randomized_requests(seed: int, n_docs: int = 12) -> list[Instance]:
    """Meta-prompted and bare contexts, repeated contexts, 1- and multi-token continuations."""
    rng = random.Random(seed)
    meta = _text(rng, 30, 40)
    requests = []
    for doc in range(n_docs):
        question = _text(rng, 1, 12)
        context = f"{meta}\n{question}" if doc % 4 else question
        continuations = [" true", " false", " " + _text(rng, 1, 6), rng.choice(WORDS)]
        for cont in continuations:
            requests.append(Instance("loglikelihood", {}, (context, cont), len(requests)))
    rng.shuffle(requests)
    return requests


def _compare(stock_out, ours_out):
    assert len(stock_out) == len(ours_out)
    diff = max(abs(a[0] - b[0]) for a, b in zip(stock_out, ours_out, strict=True))
    assert diff <= TOLERANCE, diff
    assert [a[1] for a in stock_out] == [b[1] for b in ours_out]
    return diff


def _pair(model_dir, **ours_kwargs):
    common = dict(pretrained=str(model_dir), device="cpu", batch_size=4)
    return HFLM(**common), SelfAlignHFLM(**common, **ours_kwargs)


@pytest.mark.parametrize("which", ["llama", "gemma3"])
@pytest.mark.parametrize("row_tokens", [16, 512])
def test_loglikelihoods_equal_stock_hf(which, row_tokens, tiny_model_dir, gemma_dir):
    stock, ours = _pair(tiny_model_dir if which == "llama" else gemma_dir, row_tokens=row_tokens)
    requests = randomized_requests(seed=row_tokens)
    _compare(stock.loglikelihood(requests), ours.loglikelihood(requests))
    stats = ours.last_plan_stats
    # The work really is shared: far fewer tokens than request-by-request, and no extra.
    assert stats["computed_tokens"] < stats["request_tokens"] / 3
    if row_tokens == 512:
        assert stats["computed_tokens"] == stats["distinct_tokens"]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("add_bos_token", [True, False])
def test_tokenizer_settings_match_stock(padding_side, add_bos_token, gemma_dir):
    stock, ours = _pair(gemma_dir, row_tokens=64)
    for lm in (stock, ours):
        lm.tokenizer.padding_side = padding_side
        lm.add_bos_token = add_bos_token
    requests = randomized_requests(seed=7, n_docs=6)
    _compare(stock.loglikelihood(requests), ours.loglikelihood(requests))


def test_truncation_to_max_length_matches_stock(tiny_model_dir):
    common = dict(pretrained=str(tiny_model_dir), device="cpu", batch_size=4, max_length=24)
    stock, ours = HFLM(**common), SelfAlignHFLM(**common, row_tokens=32)
    requests = randomized_requests(seed=3, n_docs=8)  # meta-prompted contexts exceed 24 tokens
    _compare(stock.loglikelihood(requests), ours.loglikelihood(requests))


def test_chunked_calls_reuse_the_meta_prompt_and_agree(gemma_dir):
    stock, ours = _pair(gemma_dir, row_tokens=64)
    requests = [r for r in randomized_requests(seed=11, n_docs=16) if "\n" in r.arguments[0]]
    whole = stock.loglikelihood(requests)
    chunked = ours.loglikelihood(requests[:10]) + ours.loglikelihood(requests[10:])
    _compare(whole, chunked)
    # The second call found the first call's top chain (the ~35-token meta prompt) and reused it.
    assert ours.last_plan_stats["top_chain_reused"] >= 30
    ours.clear_prefix_cache()
    _compare(whole[10:], ours.loglikelihood(requests[10:]))
    assert ours.last_plan_stats["top_chain_reused"] == 0


def test_peft_adapter_scores_match_stock(tiny_model_dir, tmp_path):
    adapter = build_random_lora(tiny_model_dir, tmp_path / "lora")
    common = dict(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)
    stock = HFLM(**common, peft=str(adapter))
    ours = SelfAlignHFLM(**common, peft=str(adapter), row_tokens=64)
    base = SelfAlignHFLM(**common, row_tokens=64)
    assert ours.layout is not None, ours.fallback_reason
    requests = randomized_requests(seed=5, n_docs=6)
    tuned = ours.loglikelihood(requests)
    _compare(stock.loglikelihood(requests), tuned)
    assert (
        max(abs(a[0] - b[0]) for a, b in zip(tuned, base.loglikelihood(requests), strict=True))
        > 1e-3
    )


def test_rolling_loglikelihood_matches_stock(gemma_dir):
    stock, ours = _pair(gemma_dir, max_scored_per_call=8)
    rng = random.Random(2)
    requests = [Instance("loglikelihood_rolling", {}, (_text(rng, 5, 40),), i) for i in range(4)]
    a, b = stock.loglikelihood_rolling(requests), ours.loglikelihood_rolling(requests)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= TOLERANCE


def test_share_prefix_off_falls_back_to_stock(tiny_model_dir):
    stock, ours = _pair(tiny_model_dir, share_prefix="false")
    assert ours.layout is None and "share_prefix" in ours.fallback_reason
    requests = randomized_requests(seed=1, n_docs=4)
    assert stock.loglikelihood(requests) == ours.loglikelihood(requests)


def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model("selfalign-hf") is SelfAlignHFLM
    assert get_model("hf") is HFLM  # registering ours did not empty lm-eval's registry


def test_task_metrics_identical_through_simple_evaluate(tiny_model_dir, data_dir):
    """Our lm-eval task through simple_evaluate: selfalign-hf gives hf's metrics exactly."""
    from pathlib import Path

    import lm_eval
    from lm_eval.tasks import TaskManager

    import tasks

    manager = TaskManager(
        include_path=[str(Path(tasks.__file__).parent)],
        include_defaults=False,
        metadata={"data_dir": str(data_dir), "meta_prompt": "verbose"},
    )
    results = {}
    for model in ("hf", "selfalign-hf"):
        out = lm_eval.simple_evaluate(
            model=model,
            model_args=f"pretrained={tiny_model_dir},device=cpu,batch_size=8",
            tasks=["selfalign_truthfulqa_tf"],
            task_manager=manager,
            limit=2,
        )
        results[model] = {
            k: v for k, v in out["results"]["selfalign_truthfulqa_tf"].items() if k != "alias"
        }
    assert results["hf"] == results["selfalign-hf"]
    assert any(k.startswith("acc") for k in results["hf"])

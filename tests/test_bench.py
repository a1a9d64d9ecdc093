"""The benchmarks run end to end on the tiny model and report every figure the issue asks for."""

from __future__ import annotations

import json

import pytest

from harness.bench.flops import DecodeShape, decode_bytes, decode_shape, floor_flops, model_size
from harness.bench.machine import matmul_gflops, memory_bandwidth_gbs
from harness.cli import main
from harness.common.errors import UserError


def test_matmul_rate_is_positive_and_finite():
    rate = matmul_gflops(size=256, repeats=2)
    assert 0.1 < rate < 1e6


def test_floor_counts_non_embedding_params_and_head(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    size = model_size(model)
    total = sum(p.numel() for p in model.parameters())
    embed = (
        model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    )
    assert size.non_embedding_params == total - embed
    floor = floor_flops(size, forward_tokens=10, head_positions=2)
    assert floor["body_flops"] == 2 * size.non_embedding_params * 10
    assert floor["head_flops"] == 2 * 2 * size.hidden_size * size.vocab_size


def test_scoring_bench_on_tiny_model(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "scoring.json"
    rc = main(
        [
            "bench",
            "scoring",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "1",
            "--tasks",
            "truthfulqa_tf,hhh",
            "--data-dir",
            str(data_dir),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    for key in (
        "speedup",
        "baseline_s",
        "ours_s",
        "max_abs_logprob_diff",
        "floor_s",
        "ours_over_floor",
    ):
        assert report[key] is not None and report[key] >= 0, key
    assert set(report["results"]) == {"truthfulqa_tf", "hhh"}
    for row in report["results"].values():
        assert row["max_abs_logprob_diff"] <= 1e-4
        assert row["metrics_identical"] and row["greedy_flags_identical"]
        assert row["tokens"]["computed_tokens"] < row["tokens"]["request_tokens"]
    assert report["provenance"]


def test_generation_bench_on_tiny_model(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "generation.json"
    rc = main(
        [
            "bench",
            "generation",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "3",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "4",
            "--data-dir",
            str(data_dir),
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["outputs_identical"] is True
    row = report["results"]["stage2"]
    assert row["constitution_tokens"] > 1000  # the Watson prompt was encoded once and reused
    assert row["engine_tokens"]["prefix_tokens"] == row["constitution_tokens"]
    for key in ("speedup", "baseline_s", "ours_s", "floor_s"):
        assert report[key] > 0
    assert report["roofline_floor_s"] == max(row["floor_s"], row["bytes_floor_s"]) > 0
    assert report["ours_over_roofline"] == pytest.approx(row["ours_s"] / report["roofline_floor_s"])
    assert report["memory_read_gbs"] > 0 and row["decode_bytes"]["weight_bytes"] > 0


def test_memory_bandwidth_is_positive_and_finite():
    assert 0.05 < memory_bandwidth_gbs(megabytes=64, repeats=2) < 1e4


def test_decode_bytes_count_weights_per_step_and_kv_per_row_with_sliding_windows():
    shape = DecodeShape(weight_bytes=1000, kv_bytes_per_token_per_layer=2, layer_windows=(None, 4))
    assert shape.kv_bytes(10) == (10 + 4) * 2
    # two rows, prefix 5 tokens; row A prompt 7, 3 generated (2 decode steps at contexts 8, 9);
    # row B prompt 6, 1 generated (no decode step); 2 decode steps in all
    read = decode_bytes(shape, 2, 5, [(7, 3), (6, 1)])
    own = (shape.kv_bytes(8) - shape.kv_bytes(5)) + (shape.kv_bytes(9) - shape.kv_bytes(5))
    assert read == {"weight_bytes": 2000, "kv_bytes": 2 * shape.kv_bytes(5) + own, "total_bytes": 2000 + 2 * shape.kv_bytes(5) + own}


def test_decode_shape_of_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    shape = decode_shape(model)
    cfg = model.config
    size = model_size(model)
    assert shape.weight_bytes == 4 * (size.non_embedding_params + size.hidden_size * size.vocab_size)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    assert shape.kv_bytes_per_token_per_layer == 2 * cfg.num_key_value_heads * head_dim * 4
    assert shape.layer_windows == (None,) * cfg.num_hidden_layers


def test_dedup_bench_small_stream_is_identical_to_rouge_score(data_dir, tmp_path):
    out = tmp_path / "dedup.json"
    rc = main(["bench", "dedup", "--n", "800", "--check-prefix", "800", "--data-dir", str(data_dir), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["decisions_identical"] is True and report["check_prefix"] == 800
    assert report["kept"] + sum(report["dropped"].values()) == 800
    assert {"duplicate", "rouge_l_similar"} <= set(report["dropped"])
    assert 0 < report["pairs_exact"] < report["pairs_all_pairs_equivalent"]
    assert report["wall_s"] > 0 and report["peak_rss_mb"] > 0


def test_unknown_task_set_is_a_user_error(tiny_model_dir, data_dir):
    from harness.bench.scoring import ScoringBenchConfig, run_scoring_bench

    with pytest.raises(UserError, match="did you mean 'hhh'"):
        run_scoring_bench(
            ScoringBenchConfig(model=str(tiny_model_dir), tasks=("hhhh",), data_dir=str(data_dir))
        )


@pytest.mark.slow
def test_scoring_bench_smoke_on_gemma(data_dir, tmp_path):
    """One TruthfulQA document on the real model: exact log-probs, fewer tokens, JSON written."""
    out = tmp_path / "gemma.json"
    assert (
        main(
            [
                "bench",
                "scoring",
                "--model",
                "gemma-3-270m",
                "--limit",
                "1",
                "--tasks",
                "truthfulqa_tf",
                "--data-dir",
                str(data_dir),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())["results"]["truthfulqa_tf"]
    assert row["max_abs_logprob_diff"] <= 1e-4 and row["metrics_identical"]
    assert row["speedup"] > 1

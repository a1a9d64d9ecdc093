"""The benchmarks run end to end on the tiny model and report every figure the issue asks for."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.bench import machine
from harness.bench.flops import DecodeShape, decode_bytes, decode_shape, floor_flops, model_size
from harness.bench.generation import GenerationBenchConfig, GenerationMeasurement, generation_record
from harness.bench.machine import matmul_gflops, memory_bandwidth_gbs
from harness.bench.scoring import ScoringRow, scoring_totals
from harness.cli import main
from harness.common.errors import UserError


def fake_clock(monkeypatch, durations: list[float]) -> None:
    """``machine``'s perf_counter: each (start, stop) pair of calls spans the next duration."""
    ticks, now = [], 0.0
    for d in durations:
        ticks += [now, now + d]
        now += d + 1.0
    calls = iter(ticks)
    monkeypatch.setattr(machine, "time", SimpleNamespace(perf_counter=lambda: next(calls)))


def test_matmul_rate_is_the_flops_of_the_fastest_repeat(monkeypatch):
    # The fastest of 3 repeats (of each product: torch.mm, then oneDNN where available) counts,
    # at 2 n^3 FLOPs a product.
    fake_clock(monkeypatch, [0.5, 0.02, 0.4, 0.3, 0.25, 0.6])
    assert matmul_gflops(size=64, repeats=3) == pytest.approx(2 * 64**3 / 0.02 / 1e9)


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
    rows = report["results"]
    assert set(rows) == {"truthfulqa_tf", "hhh"}
    # --limit 1: one TruthfulQA question; one conversation from each of HHH's four categories.
    assert (rows["truthfulqa_tf"]["documents"], rows["hhh"]["documents"]) == (1, 4)
    for row in rows.values():
        assert row["max_abs_logprob_diff"] <= 1e-4
        assert row["metrics_identical"] and row["greedy_flags_identical"]
        assert row["baseline_metrics"] == row["ours_metrics"] != {}
        tokens = row["tokens"]
        assert tokens["computed_tokens"] < tokens["request_tokens"]
        # The floor is the distinct tokens through the body, the distinct read positions through the head.
        assert row["floor"]["body_flops"] == 2 * report["non_embedding_params"] * tokens["distinct_tokens"]
        assert row["floor_s"] == pytest.approx(row["floor"]["total_flops"] / (report["matmul_gflops"] * 1e9))
        assert row["ours_requests_per_s"] == pytest.approx(row["requests"] / row["ours_s"])
        assert row["speedup"] == pytest.approx(row["baseline_s"] / row["ours_s"])
    assert report["matmul_gflops"] == max(report["matmul_gflops_measured"])
    assert len(report["matmul_gflops_measured"]) == 3  # before the sets, then after each
    assert report["requests"] == sum(r["requests"] for r in rows.values())
    assert report["baseline_s"] == pytest.approx(sum(r["baseline_s"] for r in rows.values()))
    assert report["speedup"] == pytest.approx(report["baseline_s"] / report["ours_s"])
    assert report["max_abs_logprob_diff"] == max(r["max_abs_logprob_diff"] for r in rows.values())
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
    # 3 prompts x 4 tokens: the tiny random model reaches neither EOS nor "User:" that soon.
    assert (row["prompts"], row["ended_by_stop"], row["stop"]) == (3, 0, ["\n\nUser:"])
    assert row["generated_tokens"] == row["baseline_generated_tokens"] == 12
    engine = row["engine_tokens"]
    assert engine["decode_tokens"] == 12 - 3  # each row's first token comes from its prefill
    assert row["mean_rows_per_decode_step"] == engine["decode_tokens"] / engine["decode_steps"]
    # Every decode step reads all weights once.
    from transformers import AutoModelForCausalLM

    shape = decode_shape(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)))
    assert row["decode_bytes"]["weight_bytes"] == engine["decode_steps"] * shape.weight_bytes
    assert row["floor_s"] == pytest.approx(row["floor"]["total_flops"] / (report["matmul_gflops"] * 1e9))
    assert row["bytes_floor_s"] == pytest.approx(row["decode_bytes"]["total_bytes"] / (report["memory_read_gbs"] * 1e9))
    assert row["speedup"] == pytest.approx((12 / row["ours_s"]) / (12 / row["baseline_s"]))
    assert report["roofline_floor_s"] == max(row["floor_s"], row["bytes_floor_s"])
    assert report["ours_over_roofline"] == pytest.approx(row["ours_s"] / report["roofline_floor_s"])
    assert {k: report[k] for k in ("speedup", "ours_s", "floor_s")} == {k: row[k] for k in ("speedup", "ours_s", "floor_s")}


def _generation_measurement(**overrides) -> GenerationMeasurement:
    fields = dict(
        model_path="m", prompts=2, stop=[], ended_by_stop=0, constitution_tokens=100, prompt_tokens=[110, 130],
        generated_tokens=40, baseline_generated_tokens=30, baseline_s=3.0, ours_s=2.0, baseline_cpu_s=6.0,
        ours_cpu_s=2.0, outputs_identical=True, floor={"total_flops": 8e9}, decode_bytes={"total_bytes": 2e9},
        engine_tokens={"decode_tokens": 38, "decode_steps": 19}, matmul_gflops=4.0, memory_read_gbs=2.0,
    )
    return GenerationMeasurement(**{**fields, **overrides})


def test_generation_record_derives_rates_floors_and_the_roofline_bound():
    record = generation_record(GenerationBenchConfig(), _generation_measurement(), {"torch_threads": 1})
    row = record.row
    assert (row.mean_prompt_tokens, row.baseline_tokens_per_s, row.ours_tokens_per_s) == (120, 10, 20)
    assert (row.speedup, row.speedup_cpu) == (2.0, 4.0)  # 20 vs 10 tok/s; 20 vs 5 tok per CPU second
    assert (row.floor_s, row.bytes_floor_s, row.roofline_floor_s, row.roofline_bound) == (2.0, 1.0, 2.0, "compute")
    assert (row.ours_over_floor, row.baseline_over_floor, row.ours_over_roofline) == (1.0, 1.5, 1.0)
    assert row.mean_rows_per_decode_step == 2.0
    memory_bound = generation_record(GenerationBenchConfig(), _generation_measurement(memory_read_gbs=0.5), {}).row
    assert (memory_bound.bytes_floor_s, memory_bound.roofline_floor_s, memory_bound.roofline_bound) == (4.0, 4.0, "memory")
    report = record.to_json()
    assert report["benchmark"] == "generation" and report["results"]["stage2"]["speedup"] == report["speedup"] == 2.0


def test_scoring_totals_sum_the_sets_and_take_ratios_of_the_sums():
    def row(base, ours, floor, diff, same=True):
        return ScoringRow(
            requests=4, documents=1, baseline_s=base, ours_s=ours, speedup=base / ours, baseline_cpu_s=2 * base,
            ours_cpu_s=ours, speedup_cpu=2 * base / ours, baseline_requests_per_s=4 / base, ours_requests_per_s=4 / ours,
            max_abs_logprob_diff=diff, greedy_flags_identical=True, metrics_identical=same, baseline_metrics={},
            ours_metrics={}, floor_s=floor, floor={}, ours_over_floor=ours / floor, baseline_over_floor=base / floor, tokens={},
        )

    totals = scoring_totals({"a": row(3.0, 1.0, 0.5, 1e-6), "b": row(1.0, 1.0, 1.5, 3e-6, same=False)})
    # Not the mean of the per-set speedups (2.0): the ratio of the summed times.
    assert (totals.requests, totals.baseline_s, totals.ours_s, totals.speedup) == (8, 4.0, 2.0, 2.0)
    assert (totals.speedup_cpu, totals.floor_s, totals.ours_over_floor) == (4.0, 2.0, 1.0)
    assert totals.max_abs_logprob_diff == 3e-6 and totals.metrics_identical is False


def test_memory_bandwidth_is_the_bytes_over_the_fastest_read(monkeypatch):
    fake_clock(monkeypatch, [0.5, 0.004, 0.3])
    assert memory_bandwidth_gbs(megabytes=8, repeats=3) == pytest.approx(8 * 2**20 / 0.004 / 1e9)


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
    assert report["first_difference"] is None
    assert report["kept"] + sum(report["dropped"].values()) == 800 == sum(report["stream"]["kinds"].values())
    assert {"duplicate", "rouge_l_similar"} <= set(report["dropped"])
    assert report["drop_rate"] == round(1 - report["kept"] / 800, 4)
    # The whole stream was checked, so the all-pairs loop scored exactly the pairs the index
    # avoided; the index scored far fewer.
    assert report["naive_pairs"] == report["pairs_all_pairs_equivalent"]
    assert 0 < report["pairs_exact"] < report["pairs_all_pairs_equivalent"]
    assert report["seeds"] == 175 + 20  # self-instruct seed tasks and TGRT seed questions


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
    assert row["tokens"]["computed_tokens"] < row["tokens"]["request_tokens"]

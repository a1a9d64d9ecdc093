"""``selfalign eval`` writes lm-eval's own file layout, read here with lm-eval's own reader functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval.utils import (
    get_file_datetime,
    get_file_task_name,
    get_latest_filename,
    get_results_filenames,
    get_sample_results_filenames,
)

from harness.common.errors import UserError
from harness.common.run_files import samples_path
from harness.evaluate import EvalConfig, four_seeds, run_eval


def test_results_and_samples_files_read_by_lm_eval_tools(tiny_model_dir, data_dir, tmp_path):
    cfg = EvalConfig(model_args=f"pretrained={tiny_model_dir}", tasks=["truthfulqa_mc1", "hhh_other"], limit=2,
                     data_dir=str(data_dir), output=str(tmp_path), batch_size=4, model_id="tiny", device="cpu")
    run_eval(cfg)
    second = run_eval(cfg)  # answered from the cache; a second timestamped run
    out = tmp_path / "tiny"
    files = sorted(str(p) for p in out.iterdir())  # the zeno/visualizer scripts list a model directory

    results_files = get_results_filenames(files)
    assert len(results_files) == 2 and all(Path(f).name.startswith("results_") for f in results_files)
    latest = get_latest_filename(results_files)
    written = json.loads(Path(latest).read_text())
    assert (out / "results.json").read_text() == Path(latest).read_text()  # the stable copy of the latest run
    assert written["results"] == json.loads(json.dumps(second["results"]))

    config = written["config"]
    assert config["model"] == "hf" and config["model_args"] == cfg.model_args
    assert config["batch_size"] == 4 and config["device"] == "cpu"
    assert written["model_source"] == "hf" and written["model_name"] == str(tiny_model_dir)
    assert written["model_name_sanitized"] == "tiny"
    assert float(written["total_evaluation_time_seconds"]) > 0
    assert set(written["task_hashes"]) == {"selfalign_truthfulqa_mc1", "selfalign_hhh_other"}

    sample_files = get_sample_results_filenames(files)
    assert len(sample_files) == 4  # two tasks x two runs, none without a timestamp
    latest_date = get_file_datetime(latest.removesuffix(".json"))
    latest_samples = [f for f in sample_files if get_file_datetime(f) == latest_date]
    assert sorted(get_file_task_name(Path(f).name) for f in latest_samples) == ["selfalign_hhh_other", "selfalign_truthfulqa_mc1"]
    path = samples_path(out, "truthfulqa_mc1")
    assert str(path) in latest_samples
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2
    row = rows[0]
    # lm-eval's on-disk form: arguments as gen_args_i/arg_j, resps sanitized, target a string
    assert set(row["arguments"]) == {f"gen_args_{i}" for i in range(len(row["doc"]["mc1_targets"]["choices"]))}
    context, continuation = row["arguments"]["gen_args_0"]["arg_0"], row["arguments"]["gen_args_0"]["arg_1"]
    assert context.startswith("Q:") and continuation.startswith(" ")
    assert isinstance(row["target"], str) and {"doc_hash", "prompt_hash", "target_hash"} <= set(row)


def test_seed_takes_lm_eval_forms():
    assert four_seeds(7) == [7, 7, 7, 7]
    assert four_seeds("7") == [7, 7, 7, 7]
    assert four_seeds("0,1234,None,1234") == [0, 1234, None, 1234]
    with pytest.raises(UserError, match="--seed 1,2"):
        four_seeds("1,2")

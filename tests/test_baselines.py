"""The baselines registry: shipped files load and validate, the paper's numbers are copied faithfully,
adding a baseline is a few lines, and every mistake is one line naming the file and the fix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.common.errors import UserError
from reports import baselines as bl

REPO = Path(__file__).resolve().parents[1]
PAPER_JSON = REPO.parent / "shared" / "paper" / "reported.json"


def test_shipped_registry_validates_and_covers_the_papers_systems():
    assert bl.validate_baselines() == []
    registry = bl.load_registry()
    for name in ("llama-65b", "alpaca-65b", "davinci-003", "chatgpt", "gpt-4", "anthropic-lm-cd-52b",
                 "anthropic-lm-pm-52b", "dromedary-65b-non-verbose", "dromedary-65b-final"):
        assert name in registry.baselines, name
    assert registry.get("chatgpt").answers == "gpt35"
    assert registry.get("gpt-4").model.kind == "api" and registry.get("gpt-4").model.generation_only
    assert registry.get("smollm2-135m-instruct").model.kind == "alias"
    with pytest.raises(UserError, match="did you mean 'chatgpt'"):
        registry.get("chatgtp")


def test_paper_numbers_match_the_shared_record():
    """paper_reported.yaml is a hand copy of shared/paper/reported.json: every number must agree."""
    if not PAPER_JSON.is_file():
        pytest.skip(f"{PAPER_JSON} not present beside this checkout")
    source = json.loads(PAPER_JSON.read_text())
    paper = bl.load_paper_reported()
    hhh = paper.tables["hhh"]
    assert hhh.rows == source["hhh_eval_mc_accuracy"]["rows"]
    gen = paper.tables["truthfulqa_generation"]
    assert {k: [v["truthful"], v["truthful_x_informative"]] for k, v in gen.rows.items()} == source["truthfulqa_generation"]["rows"]
    mc1_values = sorted(v for row in paper.tables["truthfulqa_mc1"].rows.values() for v in row.values())
    assert mc1_values == sorted(source["truthfulqa_mc1"]["rows"].values())
    assert paper.tables["vicuna80"].rows == {}  # figures only: nothing invented
    assert paper.tables["truthfulqa_mc1"].not_reported  # bars only: listed as such


def test_hhh_overall_is_the_size_weighted_mean_where_all_categories_are_reported():
    sizes = {"harmless": 58, "helpful": 59, "honest": 61, "other": 43}
    for system, row in bl.load_paper_reported().tables["hhh"].rows.items():
        if set(sizes) <= set(row):
            weighted = sum(row[c] * n for c, n in sizes.items()) / sum(sizes.values())
            assert abs(weighted - row["overall"]) < 0.011, system  # the paper rounds to two decimals


def test_adding_a_baseline_is_a_few_lines(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "baselines:\n"
        "  my-adapter:\n"
        "    model: {model_args: 'pretrained=gemma-3-270m,peft=runs/x/adapter'}\n"
        "  my-gguf:\n"
        "    model: {model_args: 'pretrained=/models/m.Q4_K_M.gguf'}\n"
        "  my-answers:\n"
        "    answers: bard\n"
    )
    registry = bl.load_registry([extra])
    assert registry.get("my-adapter").model.kind == "peft"
    assert registry.get("my-gguf").model.kind == "gguf"
    assert registry.get("my-answers").answers == "bard" and registry.get("my-answers").source == str(extra)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("baselines:\n  x:\n    descripton: hi\n    answers: gpt35\n", "unknown key 'descripton'; did you mean 'description'?"),
        ("baselines:\n  x:\n    description: nothing to run or show\n", "needs at least one of model, answers, reported"),
        ("baselines:\n  x:\n    reported: [LLaMA-65]\n", "'LLaMA-65' is no row of paper_reported.yaml; did you mean 'LLaMA-65B'"),
        ("baselines:\n  x:\n    model: {model_args: pretrained=gemma-3-27m}\n", "did you mean 'gemma-3-270m'"),
        ("baselines:\n  x:\n    model: {backend: hff, model_args: pretrained=gemma-3-270m}\n", "unknown lm-eval backend 'hff'"),
        ("baselines:\n  x:\n    answers: gpt-35\n", "neither a recorded set"),
        ("baselines:\n  chatgpt:\n    answers: gpt35\n", "'chatgpt' is already defined in"),
        ("baseline:\n  x: {}\n", "unknown top-level keys ['baseline']"),
    ],
)
def test_validate_names_the_file_and_the_problem(text, expected, tmp_path, monkeypatch):
    directory = tmp_path / "baselines"
    shutil.copytree(bl.baselines_dir(), directory)
    (directory / "broken.yaml").write_text(text)
    monkeypatch.setattr(bl, "baselines_dir", lambda: directory)
    problems = bl.validate_baselines()
    assert len(problems) == 1 and expected in problems[0] and "broken.yaml" in problems[0], problems


def test_bad_paper_table_column_is_refused(tmp_path):
    path = tmp_path / "paper_reported.yaml"
    path.write_text("tables:\n  hhh:\n    title: t\n    source: s\n    columns: [overall]\n    rows:\n      A: {overal: 0.5}\n")
    with pytest.raises(UserError, match=r"has columns \['overal'\] not in columns \['overall'\]"):
        bl.load_paper_reported(path)


def test_ls_baselines_lists_them():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "ls", "baselines"], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for name in ("chatgpt", "dromedary-65b-final", "smollm2-135m-instruct", "gpt-4"):
        assert name in proc.stdout
    assert "paper numbers: hhh" in proc.stdout and "recorded Vicuna-80 answers: gpt35" in proc.stdout

"""The task registry: every lm-eval task has an entry that matches its YAML, and a fifth benchmark
(a task folder plus one entry, no code changes) is planned, judged and reported like the others."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from scipy import stats

from harness import task_registry
from harness.common.errors import UserError
from harness.task_registry import (
    BENCHMARKS,
    PAIRWISE_JUDGE,
    Benchmark,
    benchmark,
    doc_count,
    find_benchmark,
    known_names,
    short_name,
    task_manager,
)
from orchestration.run import (
    ModelToEvaluate,
    _check_inputs,
    _gen_preset,
    load_run_config,
    plan_eval_units,
    plan_judge_units,
)


def _eval_docs(full_name: str, data_dir: Path) -> dict[str, int]:
    """``{task: documents}`` as lm-eval loads them (a group: one entry per subtask)."""
    from lm_eval.api.group import ConfigurableGroup

    loaded = task_manager({"data_dir": str(data_dir)}).load_task_or_group([full_name])

    def flatten(tree) -> dict[str, int]:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flatten(value))
            else:
                out[short_name(key.group_name if isinstance(key, ConfigurableGroup) else key)] = (value, len(value.eval_docs))
        return out

    return flatten(loaded)


def test_every_task_lm_eval_knows_has_an_entry_that_matches_its_yaml(data_dir):
    for full in known_names():
        entry = find_benchmark(full)
        assert entry is not None, f"{full} has no BENCHMARKS entry"
        if short_name(full) in entry.members:
            continue  # checked with its group
        tasks = _eval_docs(full, data_dir)
        if entry.members:
            assert set(tasks) == set(entry.members), full
        if all(m in BENCHMARKS for m in entry.members):  # a task, or a tag of tasks with their own entries
            assert {n for _, n in tasks.values()} == {entry.n_docs}, full
        else:  # a group: its members split the documents
            assert sum(n for _, n in tasks.values()) == entry.n_docs, full
        generates = {task.config.output_type == "generate_until" for task, _ in tasks.values()}
        assert generates == {entry.generates}, full
    # and no entry is stale: each names a task, group or tag lm-eval loads
    assert {task_registry.PREFIX + name for name in BENCHMARKS} <= set(known_names())


def test_registry_answers_the_questions_the_run_used_to_hard_code():
    assert [t for t in BENCHMARKS if BENCHMARKS[t].generates] == ["truthfulqa_gen", "vicuna80"]
    assert benchmark("selfalign_hhh_honest") is BENCHMARKS["hhh"]  # a group's member resolves to the group
    assert benchmark("vicuna80").judge == PAIRWISE_JUDGE and benchmark("truthfulqa_gen").judge == "truthfulqa"
    assert benchmark("truthfulqa_mc1").judge is None
    # lm-eval's fractional limit: ceil(n_docs * limit); 0.33 of 80 is 26.4 -> 27 (round() gave 26)
    assert doc_count("vicuna80", 0.33) == 27 and doc_count("truthfulqa_gen", 0.01) == 9
    assert doc_count("vicuna80", 5) == 5 and doc_count("vicuna80", None) is None
    with pytest.raises(UserError, match=r"unknown benchmark 'vicuna8'.*did you mean 'vicuna80'"):
        benchmark("vicuna8")


# ---------------------------------------------------------------------------- a fifth benchmark

FAKE_YAML = """\
task: selfalign_fake5
custom_dataset: !function utils.load
test_split: test
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 8}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
metadata:
  version: 1.0
"""
FAKE_UTILS = """\
import datasets


def load(**_):
    rows = [{"question": f"{i} + 1 =", "answer": str(i + 1)} for i in range(10)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
"""


@pytest.fixture
def fifth_benchmark(tmp_path, monkeypatch):
    """The real tasks/ plus a ``fake5`` folder, and one BENCHMARKS entry: nothing else changes."""
    tasks_dir = tmp_path / "tasks"
    shutil.copytree(task_registry.TASKS_DIR, tasks_dir, ignore=shutil.ignore_patterns("__pycache__"))
    (tasks_dir / "fake5").mkdir()
    (tasks_dir / "fake5" / "fake5.yaml").write_text(FAKE_YAML)
    (tasks_dir / "fake5" / "utils.py").write_text(textwrap.dedent(FAKE_UTILS))
    monkeypatch.setattr(task_registry, "TASKS_DIR", tasks_dir)
    known_names.cache_clear()
    entry = Benchmark("fake5", "Fake five", 10, generates=True, report_metrics=("exact_match",))
    monkeypatch.setitem(BENCHMARKS, "fake5", entry)
    yield entry
    known_names.cache_clear()


def test_a_fifth_benchmark_is_known_and_planned_from_its_entry(fifth_benchmark, data_dir):
    assert task_registry.resolve_task_names("fake5") == ["selfalign_fake5"]
    assert {k: n for k, (_, n) in _eval_docs("selfalign_fake5", data_dir).items()} == {"fake5": 10}
    cfg = load_run_config(None, ["eval.tasks=[truthfulqa_mc1,fake5,vicuna80]", "eval.gen_preset=reference_demo"])
    local = ModelToEvaluate("local", "local", "checkpoint", "selfalign-hf", "pretrained=x")
    api = ModelToEvaluate("api", "api", "baseline", "openai-chat-completions", "model=y", generation_only=True)
    planned = [(s.model_id, t) for s, t in plan_eval_units(cfg, [local, api])]
    # the API model runs the generating tasks only, the new one included
    assert planned == [("local", "truthfulqa_mc1"), ("local", "fake5"), ("local", "vicuna80"), ("api", "fake5"), ("api", "vicuna80")]
    assert _gen_preset(cfg, "fake5") == "paper" and _gen_preset(cfg, "vicuna80") == "reference_demo"
    assert doc_count("fake5", 0.25) == 3  # ceil(10 * 0.25), from its entry's n_docs


def _write_samples(model_dir: Path, task: str, scores: list[float]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"doc_id": i, "doc_hash": f"h{i}", "exact_match": s} for i, s in enumerate(scores)]
    (model_dir / f"samples_selfalign_{task}_2026-01-01T00-00-00.000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_fifth_pairwise_judged_benchmark_gets_judge_units(fifth_benchmark, tmp_path, monkeypatch):
    monkeypatch.setitem(BENCHMARKS, "fake5", Benchmark("fake5", "Fake five", 10, generates=True, judge=PAIRWISE_JUDGE))
    cfg = load_run_config(None, ["eval.tasks=[hhh,fake5]", "eval.limits={fake5: 0.5}", "judge.head_to_head=true"])
    opponent = tmp_path / "opponent.jsonl"
    opponent.write_text("{}\n")
    cfg.judge.opponents = [str(opponent)]
    run_dir = tmp_path / "run"
    systems = [ModelToEvaluate(m, m, "checkpoint", "selfalign-hf", f"pretrained={m}") for m in ("a", "b")]
    for s in systems:
        _write_samples(run_dir / "eval" / "fake5" / s.model_id, "fake5", [1.0])
    units = plan_judge_units(cfg, systems, run_dir, SimpleNamespace(baselines={}))
    assert [(u.system.model_id, u.task, u.opponent) for u in units] == [("a", "fake5", str(opponent)), ("b", "fake5", str(opponent)), ("b", "fake5", "a")]
    assert {u.answers_dir for u in units} == {run_dir / "eval" / "fake5" / m for m in ("a", "b")}
    assert {u.payload["limit"] for u in units} == {0.5}
    # Two tasks for the one pairwise judge would share its output directories: refused up front.
    two = load_run_config(None, ["eval.tasks=[vicuna80,fake5]"])
    with pytest.raises(UserError, match="eval.tasks: vicuna80, fake5 are all judged by the pairwise judge"):
        _check_inputs(two)


def test_a_fifth_benchmark_gets_a_report_table(fifth_benchmark, tmp_path):
    from reports.collect import collect
    from reports.tables import build_tables

    model_dir = tmp_path / "eval" / "m"
    scores = [1.0, 0.0, 1.0, 1.0]
    _write_samples(model_dir, "fake5", scores)
    (model_dir / "results.json").write_text(json.dumps({
        "results": {"selfalign_fake5": {"exact_match,none": 0.75}},
        "n-samples": {"selfalign_fake5": {"effective": 4, "original": 10}},
        "versions": {"selfalign_fake5": 1.0}, "selfalign": {"model_id": "m"},
    }))
    tables = {t.key: t for t in build_tables(collect([tmp_path / "eval"]), None)}
    table = tables["fake5"]
    assert table.title.startswith("Fake five") and [c.key for c in table.columns] == ["exact_match"]
    (row,) = table.rows
    cell = row.cells["exact_match"]
    ci = stats.binomtest(3, 4).proportion_ci(confidence_level=0.95, method="wilson")
    assert (row.label, cell.value, cell.n, cell.n_of) == ("m", 0.75, 4, 10)
    assert cell.ci_low == pytest.approx(ci.low, abs=1e-12) and cell.ci_high == pytest.approx(ci.high, abs=1e-12)
    assert any("fake5 n=4 of 10" in note for note in table.notes)

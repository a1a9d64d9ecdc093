"""Shared utilities: the config loader, JSONL resume helpers, registry errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.common.config import load_config
from harness.common.errors import UserError
from harness.common.jsonl import JsonlWriter, read_records
from harness.common.registry import lookup


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    merge: bool = False


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    stages: list[int] = field(default_factory=lambda: [1, 2])


def test_precedence_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from-yaml\ninner:\n  lr: 4e-4\n  steps: 3\n")
    cfg = load_config(Outer, path, ["inner.steps=7", "inner.merge=true", "stages=[1,2,3]"])
    assert cfg.name == "from-yaml" and cfg.inner.lr == pytest.approx(4e-4) and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == 7 and cfg.inner.merge is True and cfg.stages == [1, 2, 3]
    assert load_config(Outer).inner == Inner()


def test_unknown_keys_and_bad_values_name_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lrr: 1\n")
    with pytest.raises(UserError, match=r"c.yaml.inner: unknown key 'lrr'; did you mean 'lr'"):
        load_config(Outer, path)
    with pytest.raises(UserError, match=r"inner.steps: expected an integer"):
        load_config(Outer, None, ["inner.steps=2.5"])
    path.write_text("inner: [unclosed\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_config(Outer, path)


STRICT_CASES = [
    # (config class, YAML text, the whole expected message after "<file>.")
    ("pipeline", "stage1:\n  tgrt:\n    question_types: Questions about history\n",
     "stage1.tgrt.question_types: expected a list of strings, got 'Questions about history'"),
    ("pipeline", "stage2:\n  logit_bias: 5\n", "stage2.logit_bias: expected a mapping of strings to numbers, got 5"),
    ("pipeline", "stage2:\n  logit_bias: {Sorry: lots}\n", "stage2.logit_bias.Sorry: expected a number, got 'lots'"),
    ("run", "judge:\n  orders: 7\n", "judge.orders: expected one of both, baseline_first, model_first, got 7"),
    ("run", "judge:\n  orders: baseline_frist\n",
     "judge.orders: expected one of both, baseline_first, model_first, got 'baseline_frist'; did you mean 'baseline_first' or 'model_first'?"),
    ("run", "eval:\n  limits: {hhh: many}\n", "eval.limits.hhh: expected a number, got 'many'"),
    ("run", "pipeline:\n  overrides: model.base=x\n", "pipeline.overrides: expected a list of strings, got 'model.base=x'"),
    ("run", "truthfulqa_judge: 3\n", "truthfulqa_judge: expected a mapping of TruthfulQAJudgeSection fields, got 3"),
    ("judge", "orders: 7\n", "orders: expected one of both, baseline_first, model_first, got 7"),
    ("judge", "question_ids: 5\n", "question_ids: expected a list of integers, got 5"),
    ("judge_train", "train:\n  lora_r: [8]\n", "train.lora_r: expected an integer, got [8]"),
    ("run", "jugde: {}\n", "unknown key 'jugde'; did you mean 'judge'?"),
    ("pipeline", "stage2:\n  max_prompt: 3\n", "stage2: unknown key 'max_prompt'; did you mean 'max_prompts' or 'prompts_file'?"),
]


@pytest.mark.parametrize("kind, text, expected", STRICT_CASES, ids=[f"{k}:{e.split(':')[0]}" for k, _, e in STRICT_CASES])
def test_wrong_types_anywhere_stop_with_one_line_naming_file_field_type_and_value(kind, text, expected, tmp_path):
    from harness.common.config import build_dataclass, read_yaml
    from harness.judge.run import JudgeConfig
    from harness.judge.truthfulqa.train import JudgeTrainConfig
    from orchestration.run import RunConfig
    from pipeline.config import PipelineConfig

    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        if kind == "judge":  # selfalign judge --config: the file, then the flags, through build_dataclass
            build_dataclass(JudgeConfig, read_yaml(path), str(path))
        else:
            load_config({"pipeline": PipelineConfig, "run": RunConfig, "judge_train": JudgeTrainConfig}[kind], path)
    message = str(err.value)
    assert "\n" not in message
    assert message in (f"{path}.{expected}", f"{path}: {expected}"), message


def test_jsonl_resume_skips_torn_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write({"id": "a"})
        w.write({"id": "b"})
    with path.open("a") as fh:
        fh.write('{"id": "c", "trunc')  # interrupted mid-write
    assert [r["id"] for r in read_records(path)] == ["a", "b"]
    with pytest.raises(UserError, match=r"r.jsonl:3: not valid JSON"):
        read_records(path, strict=True)
    with JsonlWriter(path) as w:  # the torn line is dropped before appending
        w.write({"id": "c"})
    assert [r["id"] for r in read_records(path, strict=True)] == ["a", "b", "c"]


def test_lookup_suggests_close_names():
    with pytest.raises(UserError, match="did you mean 'verbose'"):
        lookup("meta prompt", "verbos", {"verbose": 1, "standard_distill": 2})

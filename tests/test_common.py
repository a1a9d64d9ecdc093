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

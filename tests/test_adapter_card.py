"""Adapters are portable: a base identifier that means the same on any machine, our manifest with the
resolved path and fingerprint, a filled model card, and the resolver maps the identifier back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.common.fingerprint import content_fingerprint
from harness.evaluate import EvalConfig, build_lm
from harness.models import resolve_model_args
from pipeline.manifest import files_hash
from pipeline.training import train_lora
from tests.test_training import tiny_config, tiny_examples


def test_adapter_records_portable_base_manifest_and_card(tiny_model_dir, tmp_path, monkeypatch):
    # the base as the user named it: a relative path (an alias works the same way)
    monkeypatch.chdir(tiny_model_dir.parent)
    portable = tiny_model_dir.name
    card = {"stage": "03_engrave", "config_hash": "abc123", "counts": {"self align examples": 6}, "command": "selfalign pipeline run --config demo"}
    result = train_lora(tiny_config(), tiny_examples(8), tiny_model_dir.resolve(), tmp_path / "run", base_name=portable, card=card)
    adapter = Path(result.adapter_dir)

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == portable  # not this machine's resolved path
    manifest = json.loads((adapter / "selfalign_adapter.json").read_text())
    assert manifest["base_model_path"] == str(tiny_model_dir.resolve())
    assert manifest["base_model_fingerprint"] == content_fingerprint(tiny_model_dir)
    readme = (adapter / "README.md").read_text()
    for expected in (f"base_model: {portable}", "03_engrave", "abc123", "| train examples | 8 |", "| self align examples | 6 |",
                     "selfalign pipeline run --config demo", manifest["base_model_fingerprint"][:16]):
        assert expected in readme, expected
    assert "[More Information Needed]" not in readme  # not PEFT's empty template

    # the resolver maps the portable id back: peft alone, or pretrained=<id>,peft=...
    assert resolve_model_args(f"peft={adapter}")["pretrained"] == str(tiny_model_dir.resolve())
    args = resolve_model_args(f"pretrained={portable},peft={adapter}")
    lm = build_lm(EvalConfig(device="cpu", batch_size=1), args)
    assert type(lm.model).__name__.startswith("Peft")

    # the model card and manifest describe the adapter; they do not change its output hash
    copy = tmp_path / "copy" / adapter.name  # files_hash covers the directory name too
    shutil.copytree(adapter, copy)
    (copy / "README.md").write_text("another command")
    assert files_hash([copy]) == files_hash([adapter])
    (copy / "adapter_model.safetensors").write_bytes(b"x")
    assert files_hash([copy]) != files_hash([adapter])

"""The response cache never answers for a different model, setting or version, and batch size alone
never invalidates it (scores are batch-invariant)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import harness.evaluate as evaluate
from harness.common.fingerprint import content_fingerprint, file_digest
from harness.evaluate import EvalConfig, response_cache_key, run_eval
from harness.models import resolve_model_args


@pytest.fixture
def counted_requests(monkeypatch):
    """How many loglikelihood requests reached the model itself (not the cache), per run."""
    counts: list[int] = []
    real_build = evaluate.build_lm

    def build(cfg, args):
        lm = real_build(cfg, args)
        inner = lm.loglikelihood
        counts.append(0)

        def counting(requests, *a, **kw):
            counts[-1] += len(requests)
            return inner(requests, *a, **kw)

        lm.loglikelihood = counting  # CachingLM looks the method up on the instance
        return lm

    monkeypatch.setattr(evaluate, "build_lm", build)
    return counts


def _loglikelihoods(out: Path, task: str = "truthfulqa_mc1") -> list[float]:
    from harness.common.run_files import samples_path

    rows = [json.loads(line) for line in samples_path(out, task).read_text().splitlines()]
    return [float(resp[0][0]) for row in rows for resp in row["resps"]]


def _cfg(model_dir: Path, out: Path, data_dir: Path, **kw) -> EvalConfig:
    base = dict(model_args=f"pretrained={model_dir}", tasks=["truthfulqa_mc1"], limit=2,
                data_dir=str(data_dir), output=str(out), batch_size=4, model_id="m")
    base.update(kw)
    return EvalConfig(**base)


def test_max_length_change_recomputes_into_the_same_output(tiny_model_dir, data_dir, tmp_path, counted_requests):
    run_eval(_cfg(tiny_model_dir, tmp_path, data_dir))
    default = _loglikelihoods(tmp_path / "m")
    assert counted_requests[-1] == len(default) > 0  # a fresh cache: every logged request computed
    short = f"pretrained={tiny_model_dir},max_length=64"
    run_eval(_cfg(tiny_model_dir, tmp_path, data_dir, model_args=short))
    truncated = _loglikelihoods(tmp_path / "m")
    assert counted_requests[-1] == len(truncated), "max_length=64 was answered from the default run's cache"
    assert truncated != default
    run_eval(_cfg(tiny_model_dir, tmp_path / "fresh", data_dir, model_args=short, use_cache=False))
    assert _loglikelihoods(tmp_path / "fresh" / "m") == pytest.approx(truncated, abs=1e-5)


def test_batch_size_alone_is_a_cache_hit(tiny_model_dir, data_dir, tmp_path, counted_requests):
    first = run_eval(_cfg(tiny_model_dir, tmp_path, data_dir, batch_size=4))
    assert counted_requests[-1] == len(_loglikelihoods(tmp_path / "m")) > 0
    again = run_eval(_cfg(tiny_model_dir, tmp_path, data_dir, batch_size=1))
    assert counted_requests[-1] == 0, "changing only the batch size recomputed"
    assert again["results"] == first["results"]
    assert len(list((tmp_path / "m" / "lm_cache").glob("*.db"))) == 1


def test_weights_rewritten_in_place_recompute(tiny_model_dir, data_dir, tmp_path, counted_requests):
    from tests.tiny_model import build_tiny_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    run_eval(_cfg(model, tmp_path / "out", data_dir))
    before = _loglikelihoods(tmp_path / "out" / "m")
    build_tiny_model(tmp_path / "other", seed=1)
    shutil.copy(tmp_path / "other" / "model.safetensors", model / "model.safetensors")  # same path, new bytes
    run_eval(_cfg(model, tmp_path / "out", data_dir))
    assert counted_requests[-1] == len(before), "the old weights' responses were reused"
    assert _loglikelihoods(tmp_path / "out" / "m") != before


def test_every_component_changes_the_key(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    args = resolve_model_args(f"pretrained={tiny_model_dir}")
    tasks = ["selfalign_truthfulqa_mc1", "selfalign_hhh"]
    cfg = _cfg(tiny_model_dir, tmp_path, data_dir)
    key, covered = response_cache_key(cfg, args, tasks)
    assert "selfalign_hhh_helpful" in covered["tasks"]  # a group covers its subtasks' versions

    def changed(**kw) -> str:
        return response_cache_key(_cfg(tiny_model_dir, tmp_path, data_dir, **kw), args, tasks)[0]

    assert changed(batch_size=1) == key == changed(batch_size="auto", limit=5, output="elsewhere")
    for setting in (dict(model="selfalign-hf"), dict(meta_prompt="none"), dict(apply_chat_template=True),
                    dict(tf_reference_half_candidates=True), dict(gen_kwargs="max_gen_toks=8"), dict(seed=1),
                    dict(device="cuda")):
        assert changed(**setting) != key, setting
    for extra in ({"max_length": "64"}, {"dtype": "bfloat16"}, {"add_bos_token": "True"}):
        assert response_cache_key(cfg, {**args, **extra}, tasks)[0] != key, extra
    assert response_cache_key(cfg, {**args, "batch_size": "16"}, tasks)[0] == key
    assert response_cache_key(cfg, args, tasks[:1])[0] != key

    other_tok = tmp_path / "tok"
    shutil.copytree(tiny_model_dir, other_tok)
    (other_tok / "tokenizer_config.json").write_text(
        (other_tok / "tokenizer_config.json").read_text().replace('"<pad>"', '"</s>"', 1))
    assert response_cache_key(cfg, {**args, "tokenizer": str(other_tok)}, tasks)[0] != key

    monkeypatch.setattr(evaluate, "_package_version", lambda name: "9.9" if name == "lm_eval" else None)
    assert response_cache_key(cfg, args, tasks)[0] != key
    monkeypatch.undo()
    monkeypatch.setattr(evaluate, "task_versions", lambda: {"selfalign_truthfulqa_mc1": 99.0})
    assert response_cache_key(cfg, args, tasks)[0] != key


def test_content_fingerprint_follows_bytes_not_names(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "renamed"
    shutil.copytree(tiny_model_dir, copy)
    assert content_fingerprint(copy) == content_fingerprint(tiny_model_dir)
    (copy / "selfalign_source.json").write_text("{}")  # bookkeeping, not the model
    assert content_fingerprint(copy) == content_fingerprint(tiny_model_dir)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert content_fingerprint(copy) != content_fingerprint(tiny_model_dir)
    # digests are memoized per file identity: a second call does not read the file
    weights = copy / "model.safetensors"
    digest = file_digest(weights)
    assert list((tmp_path / "cache" / "fingerprints").iterdir())
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-read")))
    assert file_digest(weights) == digest

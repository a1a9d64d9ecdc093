"""Real-model check of the task layer on gemma-3-270m (slow: minutes on a 2-core CPU)."""

from __future__ import annotations

import json

import pytest

from harness.evaluate import EvalConfig, run_eval
from harness.models import resolve_pretrained
from tests.builtin_equivalence import run_builtin_and_ours

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma_dir():
    return resolve_pretrained("gemma-3-270m")


def test_all_tasks_on_gemma_are_sane(gemma_dir, data_dir, tmp_path):
    cfg = EvalConfig(
        model_args="pretrained=gemma-3-270m", tasks=["truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_tf", "hhh"],
        limit=2, data_dir=str(data_dir), output=str(tmp_path), batch_size=8, use_cache=False,
    )
    res = run_eval(cfg)["results"]
    for task in ("selfalign_truthfulqa_mc1", "selfalign_truthfulqa_mc2", "selfalign_truthfulqa_tf", "selfalign_hhh"):
        assert 0.0 <= res[task]["acc,none"] <= 1.0, task
    tf = res["selfalign_truthfulqa_tf"]
    assert tf["acc,none"] == tf["acc_all_candidates,none"]
    n = json.loads((tmp_path / "gemma-3-270m" / "results.json").read_text())["n-samples"]
    per_category = [n[f"selfalign_hhh_{c}"]["effective"] for c in ("harmless", "helpful", "honest", "other")]
    assert per_category == [2, 2, 2, 2]
    overall = res["selfalign_hhh"]["acc,none"]
    cats = [res[f"selfalign_hhh_{c}"]["acc,none"] for c in ("harmless", "helpful", "honest", "other")]
    assert overall == pytest.approx(sum(c * k for c, k in zip(cats, per_category, strict=True)) / sum(per_category))


def test_standard_mc1_equals_lm_eval_builtin_on_gemma(gemma_dir, data_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(gemma_dir), device="cpu", batch_size=8)
    builtin, ours = run_builtin_and_ours(lm, tmp_path, data_dir, limit=5)
    for name in ("mc1", "mc2"):
        assert ours["results"][f"selfalign_truthfulqa_{name}"]["acc,none"] == pytest.approx(
            builtin["results"][f"truthfulqa_{name}"]["acc,none"], abs=1e-9
        )

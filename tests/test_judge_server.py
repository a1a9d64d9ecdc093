"""The whole judge path against a real OpenAI-compatible server: `transformers serve` + SmolLM2-135M.

The 135M judge answers the reviewer prompt poorly; the point is that every reply it gives is
either parsed into a valid pair or recorded as a failure, that both answer orders are
recorded, and that a rerun is answered from the cache with zero requests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from tests.servers import smollm2_serve

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory):
    with smollm2_serve(tmp_path_factory.mktemp("serve")) as server:
        yield server


def test_local_judge_end_to_end(smollm2_server, data_dir, tmp_path, capsys):
    out = tmp_path / "judge"
    args = [
        "judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(out),
        "--judge-model", "smollm2-135m-instruct", "--judge-base-url", smollm2_server.base_url,
        "--data-dir", str(data_dir), "--question-ids", "1", "69",  # a general and a math question
        "--max-tokens", "24", "--parse-attempts", "2", "--concurrency", "2", "--timeout-s", "120", "--no-progress",
    ]
    rc = main(args)
    summary = json.loads((out / "summary.json").read_text())
    all_failed = summary["n_failed"] == summary["n_judgments"]
    assert rc == (1 if all_failed else 0)  # a judge that failed every judgment is not a success
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]

    assert summary["judge"]["request_model"] == smollm2_server.request_model  # the alias became the served path
    assert [(j["question_id"], j["order"]) for j in judgments] == [
        (1, "baseline_first"), (1, "model_first"), (69, "baseline_first"), (69, "model_first")
    ]
    assert judgments[0]["reviewer_category"] == "general" and judgments[2]["reviewer_category"] == "math"
    for j in judgments:
        assert j["assistant_1"] == ("gpt35" if j["order"] == "baseline_first" else "alpaca-13b")
        assert all(isinstance(a["reply"], str) for a in j["attempts"])  # raw replies kept
        assert all(a["completion_tokens"] and a["completion_tokens"] <= 24 for a in j["attempts"])
        if j["status"] == "ok":
            assert j["parse_rule"] and all(0 <= s <= 10 for s in j["scores"].values())
        else:  # a poor verdict is a recorded failure, retried, never a score
            assert j["status"] == "parse_failed" and j["scores"] is None and j["error"]
            assert len(j["attempts"]) == 2
    n_failed = sum(j["status"] != "ok" for j in judgments)
    assert summary["n_failed"] == n_failed
    assert summary["n_scored"] + summary["n_failed_questions"] == 2
    assert summary["wins"] + summary["ties"] + summary["losses"] == summary["n_scored"]
    sent = summary["n_requests"]
    assert sent == sum(len(j["attempts"]) for j in judgments) and sent >= 4
    assert summary["requests_per_s"] > 0 and summary["tokens"]["prompt"] > 1000
    assert summary["cost_usd"] is None  # no price for a local model

    # the rerun costs nothing and reproduces every judgment
    assert main(args) == (1 if all_failed else 0)
    again = json.loads((out / "summary.json").read_text())
    assert again["n_requests"] == 0 and again["n_cache_hits"] == sent
    rejudged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert [(j["status"], j["scores"], j["reply"]) for j in rejudged] == [(j["status"], j["scores"], j["reply"]) for j in judgments]
    assert "requests 0" in capsys.readouterr().out
    assert Path(smollm2_server.log).exists()

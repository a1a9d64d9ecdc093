"""Fault injection for the judge: a fake OpenAI-compatible server with seeded faults.

Every kind of bad reply (429 with and without Retry-After, 500, 503, a hang past the timeout, a
reset connection, malformed JSON, an HTML page, no choices, an empty message, garbage, 501/405)
is either retried into the same verdicts as a fault-free run, or recorded as a failure with its
reason; nothing crashes, nothing bad is cached, no key is written. Also issue 15's regressions:
key masking, cache poisoning, ``--retry-failed``, 501/405 fatal, all-failed exit status.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from harness.cli import main
from harness.judge.run import JudgeConfig, run_judge
from tests.servers import Hang, Reset, chat_reply, http_error, raw_body, scripted_servers

TIMEOUT_S = 0.3


def _no_choices():
    return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}, {}


# fault name -> (response factory, the failure reason it is recorded under when retries run out)
FAULTS = {
    "429_retry_after": (lambda: http_error(429, "slow down", {"Retry-After": "0.05"}), "http_429"),
    "429": (lambda: http_error(429, "rate limited"), "http_429"),
    "500": (lambda: http_error(500, "internal error"), "http_500"),
    "503": (lambda: http_error(503, "overloaded"), "http_503"),
    "hang": (lambda: Hang(TIMEOUT_S * 2.5), "timeout"),
    "reset": (lambda: Reset(), "connection_error"),
    "malformed_json": (lambda: raw_body('{"id": "x", "choices": [{"message": '), "malformed_json"),
    "html": (lambda: raw_body("<html><body><h1>502 Bad Gateway</h1></body></html>", 200, "text/html"), "html_body"),
    "empty_choices": (_no_choices, "no_choices"),
    "empty_message": (lambda: chat_reply(""), "empty_message"),
    "garbage": (lambda: raw_body("\x07\x01 ok?? not json at all", 200, "text/plain"), "not_json"),
}


def _prompt_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload["messages"], sort_keys=True).encode()).hexdigest()


def verdict(payload: dict) -> str:
    """A deterministic, order-dependent verdict per rendered prompt (so runs can be compared)."""
    h = int(_prompt_digest(payload)[:8], 16)
    return f"{1 + h % 10} {1 + (h // 10) % 10}\nscripted reason"


class SeededFaults:
    """Per prompt, a seeded list of faults served before the valid verdict (independent of timing)."""

    def __init__(self, seed: int, max_faults: int, always: dict[int, str] | None = None):
        self.seed, self.max_faults = seed, max_faults
        self.always = always or {}  # question_id -> fault served on every request
        self.seen: dict[str, int] = {}
        self.injected: list[str] = []

    def plan(self, payload: dict) -> list[str]:
        rng = random.Random(f"{self.seed}:{_prompt_digest(payload)}")
        return rng.choices(sorted(FAULTS), k=rng.randint(0, self.max_faults))

    def __call__(self, payload: dict, n: int):
        digest = _prompt_digest(payload)
        count = self.seen.get(digest, 0)
        self.seen[digest] = count + 1
        qid = question_of(payload)
        if qid in self.always:
            name = self.always[qid]
        else:
            plan = self.plan(payload)
            if count >= len(plan):
                return chat_reply(verdict(payload))
            name = plan[count]
        self.injected.append(name)
        return FAULTS[name][0]()


_QUESTIONS: dict[str, int] = {}


def question_of(payload: dict) -> int:
    user = payload["messages"][1]["content"]
    question = user.split("\n", 2)[1]
    return _QUESTIONS[question]


@pytest.fixture(scope="module", autouse=True)
def _questions(data_dir):
    path = data_dir / "vicuna_bench/fastchat/eval/table/question.jsonl"
    for r in map(json.loads, path.read_text().splitlines()):
        _QUESTIONS[r["text"]] = r["question_id"]


@pytest.fixture
def server_factory():
    with scripted_servers() as make:
        yield make


def config(out: Path, server, data_dir, **kw) -> JudgeConfig:
    base = dict(
        answers="alpaca-13b", baseline="gpt35", output=str(out), judge_model="scripted-judge",
        judge_base_url=server.base_url, data_dir=str(data_dir), limit=6, progress=False,
        retry_backoff_s=0.01, timeout_s=TIMEOUT_S, max_retries=3, concurrency=4,
    )
    return JudgeConfig(**{**base, **kw})


def judgments(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]


def cache_lines(out: Path) -> list[dict]:
    path = out / "judge_cache.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_fault_kind_is_retried_into_the_fault_free_verdicts(server_factory, tmp_path, data_dir):
    clean = server_factory(lambda payload, n: chat_reply(verdict(payload)))
    expected = run_judge(config(tmp_path / "clean", clean, data_dir))
    faults = SeededFaults(seed=11, max_faults=3)  # a seed whose schedule covers every kind
    faulty = server_factory(faults)
    summary = run_judge(config(tmp_path / "faulty", faulty, data_dir))

    assert set(faults.injected) == set(FAULTS), "the seed must exercise every fault kind"
    assert summary["n_failed"] == 0 and summary["failure_reasons"] == {}
    assert summary["n_requests"] == summary["n_judgments"] + len(faults.injected)
    assert summary["n_api_errors"] == len(faults.injected)
    got = {j["id"]: j["scores"] for j in judgments(tmp_path / "faulty")}
    assert got == {j["id"]: j["scores"] for j in judgments(tmp_path / "clean")}
    assert (summary["wins"], summary["ties"], summary["losses"]) == (expected["wins"], expected["ties"], expected["losses"])
    # only usable completions were cached: one per judgment, none of the faults
    assert len(cache_lines(tmp_path / "faulty")) == summary["n_judgments"]
    print(f"FAULT-SUITE recoverable: injected={len(faults.injected)} kinds={len(set(faults.injected))} "
          f"judgments={summary['n_judgments']} completed={summary['n_judgments'] - summary['n_failed']} failed=0")


def test_faults_past_the_retries_are_recorded_with_reasons_and_never_cached(server_factory, tmp_path, data_dir):
    kinds = sorted(FAULTS)
    always = {qid: kinds[i] for i, qid in enumerate(range(1, len(kinds) + 1))}
    faults = SeededFaults(seed=1, max_faults=0, always=always)
    server = server_factory(faults)
    out = tmp_path / "j"
    summary = run_judge(config(out, server, data_dir, limit=len(kinds) + 2, max_retries=1))

    records = {j["question_id"]: j for j in judgments(out) if j["order"] == "baseline_first"}
    for qid, kind in always.items():
        r = records[qid]
        assert r["status"] == "api_error" and r["scores"] is None, kind
        assert r["failure_reason"] == FAULTS[kind][1], (kind, r["error"])
    assert records[len(kinds) + 1]["status"] == "ok"  # the run went on
    assert summary["n_failed"] == 2 * len(kinds)
    expected_tally: dict[str, int] = {}
    for kind in always.values():
        expected_tally[FAULTS[kind][1]] = expected_tally.get(FAULTS[kind][1], 0) + 2
    assert summary["failure_reasons"] == expected_tally
    assert summary["failures"] == {"api_error": 2 * len(kinds)}  # no choices / empty message: API errors, not parse failures
    assert all(isinstance(c["reply"], str) and c["reply"] for c in cache_lines(out))
    assert len(cache_lines(out)) == 2 * 2  # the two healthy questions only
    print(f"FAULT-SUITE unrecoverable: injected={len(faults.injected)} judgments={summary['n_judgments']} "
          f"failures_recorded={summary['n_failed']} reasons={summary['failure_reasons']}")

    # issue 15.2: a rerun against a healthy server asks again for exactly the failures
    healthy = server_factory(lambda payload, n: chat_reply(verdict(payload)))
    again = run_judge(config(out, healthy, data_dir, limit=len(kinds) + 2, max_retries=1))
    assert again["n_failed"] == 0 and len(healthy.requests) == 2 * len(kinds)


def test_unparseable_cached_replies_are_reasked_only_with_retry_failed(server_factory, tmp_path, data_dir, capsys):
    # issue 15.2: a valid completion that does not parse is cached (it is what the judge said);
    # --retry-failed re-sends exactly the failed judgments' requests, the rest replay from the cache.
    def first(payload, n):
        return chat_reply("I cannot decide." if question_of(payload) <= 2 else verdict(payload))

    out = tmp_path / "j"
    s1 = run_judge(config(out, server_factory(first), data_dir, limit=4, parse_attempts=1))
    assert s1["n_failed"] == 4 and s1["failure_reasons"] == {"unparseable_verdict": 4}
    healthy = server_factory(lambda payload, n: chat_reply(verdict(payload)))
    s2 = run_judge(config(out, healthy, data_dir, limit=4, parse_attempts=1))
    assert s2["n_failed"] == 4 and healthy.requests == []  # cached verdicts replay: no request
    rc = main(["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(out), "--judge-model", "scripted-judge",
               "--judge-base-url", healthy.base_url, "--data-dir", str(data_dir), "--limit", "4", "--parse-attempts", "1",
               "--no-progress", "--retry-failed"])
    assert rc == 0, capsys.readouterr().err
    s3 = json.loads((out / "summary.json").read_text())
    assert s3["n_failed"] == 0 and len(healthy.requests) == 4 and s3["n_cache_hits"] == 4


def test_api_key_and_bearer_tokens_are_masked_everywhere(server_factory, tmp_path, data_dir, monkeypatch, capsys):
    # issue 15.1: a server echoing the Authorization header in its error body
    secret = "sk-test-SECRET1234567890abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    def echo(payload, n):
        if question_of(payload) == 1:
            return http_error(500, f"upstream failed for Authorization: Bearer {secret} (token sk-other-LEAK987654321)")
        return chat_reply(verdict(payload))

    server = server_factory(echo)
    out = tmp_path / "j"
    rc = main(["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(out), "--judge-model", "scripted-judge",
               "--judge-base-url", server.base_url, "--data-dir", str(data_dir), "--limit", "2", "--max-retries", "0", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0 and server.requests[0]["auth"] == f"Bearer {secret}"
    written = "".join(p.read_text() for p in out.iterdir() if p.is_file())
    for text in (written, captured.out, captured.err):
        assert "SECRET1234567890" not in text and "LEAK987654321" not in text
    failed = [j for j in judgments(out) if j["status"] != "ok"]
    assert len(failed) == 2 and "Bearer ***" in failed[0]["error"] and "sk-***" in failed[0]["error"]

    # a refused first request (fatal) prints the masked message
    refuse = server_factory(lambda payload, n: http_error(401, f"bad key Bearer {secret}"))
    rc = main(["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(tmp_path / "k"), "--judge-model", "m",
               "--judge-base-url", refuse.base_url, "--data-dir", str(data_dir), "--limit", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "SECRET1234567890" not in err and "Bearer ***" in err


@pytest.mark.parametrize("status", [501, 405])
def test_not_an_openai_server_is_fatal_at_the_first_request(server_factory, tmp_path, data_dir, capsys, status):
    # issue 15.4: no retries, one line, exit 2, even though 501 is a 5xx
    server = server_factory(lambda payload, n: http_error(status, "Unsupported method ('POST')"))
    rc = main(["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(tmp_path / "j"), "--judge-model", "m",
               "--judge-base-url", server.base_url, "--data-dir", str(data_dir), "--limit", "3", "--concurrency", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(server.requests) == 1
    assert len(err) == 1 and f"HTTP {status}" in err[0] and "OpenAI-compatible" in err[0]


def test_all_judgments_failed_exits_nonzero_naming_the_commonest_reason(server_factory, tmp_path, data_dir, capsys):
    # issue 15.4: 100% failed is not a success
    server = server_factory(lambda payload, n: _no_choices() if n % 4 else http_error(503, "overloaded"))
    out = tmp_path / "j"
    rc = main(["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(out), "--judge-model", "m",
               "--judge-base-url", server.base_url, "--data-dir", str(data_dir), "--limit", "2", "--max-retries", "0",
               "--concurrency", "1", "--no-progress"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 1 and summary["n_failed"] == summary["n_judgments"] == 4
    assert len(err) == 1 and err[0].startswith("error: all 4 judgments failed; commonest reason: no_choices")
    assert "--retry-failed" in err[0]

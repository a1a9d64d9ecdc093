"""The judge step end to end against a scripted OpenAI-compatible server on 127.0.0.1.

The server decides each verdict from the rendered prompt, so the tests can tell which answer
the judge saw as Assistant 1 and check that scores are mapped back through the swap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.judge.run import JudgeConfig, run_judge
from tests.servers import chat_reply, http_error, scripted_servers


@pytest.fixture
def scripted_server():
    with scripted_servers() as make:
        yield make


ASSISTANT_1_END = "[The End of Assistant 1's Answer]"


@pytest.fixture(scope="module")
def gpt35_answers(data_dir) -> dict[int, str]:
    path = data_dir / "vicuna_bench/fastchat/eval/table/answer/answer_gpt35.jsonl"
    return {r["question_id"]: r["text"] for r in map(json.loads, path.read_text().splitlines())}


def question_id(payload: dict, questions: dict[int, str]) -> int:
    user = payload["messages"][1]["content"]
    return next(q for q, text in questions.items() if user.startswith(f"[Question]\n{text}\n"))


@pytest.fixture(scope="module")
def questions(data_dir) -> dict[int, str]:
    path = data_dir / "vicuna_bench/fastchat/eval/table/question.jsonl"
    return {r["question_id"]: r["text"] for r in map(json.loads, path.read_text().splitlines())}


def baseline_is_first(payload: dict, gpt35: dict[int, str]) -> bool:
    user = payload["messages"][1]["content"]
    head = user.split(ASSISTANT_1_END)[0]
    return any(answer in head for answer in gpt35.values())


def config(tmp_path: Path, server, data_dir, **kw) -> JudgeConfig:
    base = dict(
        answers="alpaca-13b", baseline="gpt35", output=str(tmp_path / "judge"), judge_model="scripted-judge",
        judge_base_url=server.base_url, data_dir=str(data_dir), limit=4, progress=False, retry_backoff_s=0.01,
    )
    return JudgeConfig(**{**base, **kw})


def read_judgments(cfg: JudgeConfig) -> list[dict]:
    return [json.loads(line) for line in (Path(cfg.output) / "judgments.jsonl").read_text().splitlines()]


def test_both_orders_recorded_scores_unswapped_and_rerun_is_free(scripted_server, tmp_path, data_dir, gpt35_answers):
    def respond(payload, n):
        # the judge always prefers gpt35: 9 for it, 6 for alpaca, in whichever slot it sits
        return chat_reply("9 6\nreason" if baseline_is_first(payload, gpt35_answers) else "6 9\nreason", 100, 7)

    server = scripted_server(respond)
    cfg = config(tmp_path, server, data_dir)
    summary = run_judge(cfg)
    judgments = read_judgments(cfg)
    assert [(j["question_id"], j["order"]) for j in judgments] == [
        (q, o) for q in (1, 2, 3, 4) for o in ("baseline_first", "model_first")
    ]
    first, swapped = judgments[0], judgments[1]
    assert (first["assistant_1"], first["assistant_2"]) == ("gpt35", "alpaca-13b")
    assert (swapped["assistant_1"], swapped["assistant_2"]) == ("alpaca-13b", "gpt35")
    assert first["raw_scores"] == [9.0, 6.0] and swapped["raw_scores"] == [6.0, 9.0]
    assert all(j["scores"] == {"model": 6.0, "baseline": 9.0} for j in judgments)
    assert first["reply"] == "9 6\nreason" and first["attempts"][0]["reply"] == "9 6\nreason"
    assert first["prompt_tokens"] == 100 and first["completion_tokens"] == 7 and first["latency_s"] > 0
    assert first["cost_usd"] is None  # no price known for this judge
    assert (summary["wins"], summary["ties"], summary["losses"]) == (0, 0, 4)
    assert summary["relative_score"] == pytest.approx(6 / 9)
    assert summary["order_consistency"] == 1.0
    assert summary["n_failed"] == 0 and summary["n_questions"] == 4 and summary["n_judgments"] == 8
    assert summary["n_requests"] == 8 == len(server.requests)
    assert summary["tokens"]["prompt"] == 800
    # each request carried the reviewer's system prompt and decoding settings
    assert server.requests[0]["json"]["temperature"] == 0.2 and server.requests[0]["json"]["max_tokens"] == 1024
    assert server.requests[0]["json"]["messages"][0]["role"] == "system"

    again = run_judge(cfg)
    assert again["n_requests"] == 0 and len(server.requests) == 8
    assert again["n_cache_hits"] == 8
    assert [j["scores"] for j in read_judgments(cfg)] == [j["scores"] for j in judgments]
    assert all(j["attempts"][0]["cached"] for j in read_judgments(cfg))


def test_transient_errors_are_retried(scripted_server, tmp_path, data_dir):
    script = {0: http_error(429, "rate limited", {"retry-after": "0"}), 1: http_error(503, "overloaded")}

    def respond(payload, n):
        return script.get(n, chat_reply("7 8\nok"))

    server = scripted_server(respond)
    summary = run_judge(config(tmp_path, server, data_dir, limit=1, concurrency=1))
    assert summary["n_failed"] == 0
    assert summary["n_requests"] == 4 and summary["n_api_errors"] == 2
    # the rate counts the seconds with requests in flight, retries included
    assert summary["request_seconds"] > 0 and summary["requests_per_s"] == pytest.approx(4 / summary["request_seconds"])


def test_unparseable_verdicts_are_retried_then_counted_failed(scripted_server, tmp_path, data_dir, questions, gpt35_answers):
    def respond(payload, n):
        if question_id(payload, questions) == 2:
            return chat_reply("Both assistants are helpful.")  # never parses
        return chat_reply("7 8\nfine" if baseline_is_first(payload, gpt35_answers) else "8 7\nfine")

    server = scripted_server(respond)
    cfg = config(tmp_path, server, data_dir, limit=3, parse_attempts=2)
    summary = run_judge(cfg)
    failed = [j for j in read_judgments(cfg) if j["status"] != "ok"]
    assert [(j["question_id"], j["status"]) for j in failed] == [(2, "parse_failed"), (2, "parse_failed")]
    assert all(j["scores"] is None and j["raw_scores"] is None and "no score pair" in j["error"] for j in failed)
    assert all(len(j["attempts"]) == 2 and j["attempts"][1]["reply"] == "Both assistants are helpful." for j in failed)
    assert summary["n_failed"] == 2 and summary["failures"] == {"parse_failed": 2}
    assert summary["failed_question_ids"] == [2] and summary["n_scored"] == 2
    assert (summary["wins"], summary["ties"], summary["losses"]) == (2, 0, 0)  # a failure is never a tie
    assert [q["question_id"] for q in summary["per_question"]] == [1, 3]
    assert summary["n_requests"] == 4 + 4  # 2 questions x 2 orders, plus 2 attempts x 2 orders for question 2

    # the failed attempts are cached too: the same command replays them without requests
    assert run_judge(cfg)["n_requests"] == 0


def test_a_judge_repeating_an_unparseable_reply_is_not_asked_again(scripted_server, tmp_path, data_dir):
    replies = iter(["No scores here.", "No scores here.", "Still none.", "9 9"])
    server = scripted_server(lambda payload, n: chat_reply(next(replies)))
    cfg = config(tmp_path, server, data_dir, limit=1, orders="baseline_first", parse_attempts=3, concurrency=1)
    summary = run_judge(cfg)
    (judgment,) = read_judgments(cfg)
    assert judgment["status"] == "parse_failed" and judgment["n_attempts"] == 2
    assert "repeated the same reply" in judgment["error"] and summary["n_requests"] == 2
    # a sampling judge that changes its reply is asked up to parse_attempts times
    cfg.parse_attempts = 4
    cfg.output = str(tmp_path / "other")
    replies = iter(["No scores here.", "Still none.", "9 7"])
    server.respond = lambda payload, n: chat_reply(next(replies))
    (judgment,) = (run_judge(cfg), read_judgments(cfg))[1]
    assert judgment["status"] == "ok" and judgment["n_attempts"] == 3 and judgment["raw_scores"] == [9.0, 7.0]


def test_api_errors_are_failures_and_not_cached(scripted_server, tmp_path, data_dir, questions):
    def respond(payload, n):
        if question_id(payload, questions) == 1 and n > 0:  # n == 0: let one request succeed first
            return http_error(500, "boom")
        return chat_reply("5 5\nsame")

    server = scripted_server(respond)
    cfg = config(tmp_path, server, data_dir, limit=2, max_retries=1, concurrency=1)
    summary = run_judge(cfg)
    failed = [j for j in read_judgments(cfg) if j["status"] != "ok"]
    assert [j["order"] for j in failed] == ["model_first"]
    assert "HTTP 500" in failed[0]["error"] and "gave up after 2 requests" in failed[0]["error"]
    assert summary["n_failed"] == 1 and summary["failures"] == {"api_error": 1}
    assert summary["failed_question_ids"] == [1]
    before = len(server.requests)
    run_judge(cfg)
    assert len(server.requests) == before + 2  # the failed request is sent again (1 + 1 retry)


def test_requests_respect_the_concurrency_limit(scripted_server, tmp_path, data_dir):
    server = scripted_server(lambda payload, n: chat_reply("6 6\n"), delay_s=0.15)
    summary = run_judge(config(tmp_path, server, data_dir, limit=4, concurrency=2))
    assert summary["n_requests"] == 8
    assert server.max_in_flight == 2


def test_identical_prompts_are_sent_once(scripted_server, tmp_path, data_dir):
    # gpt35 against itself: both orders render the same prompt
    server = scripted_server(lambda payload, n: chat_reply("8 8\n"), delay_s=0.05)
    summary = run_judge(config(tmp_path, server, data_dir, answers="gpt35", limit=3, concurrency=4))
    assert summary["n_judgments"] == 6 and summary["n_requests"] == 3 and summary["ties"] == 3


def test_api_key_is_sent_but_never_written(scripted_server, tmp_path, data_dir, monkeypatch):
    secret = "sk-test-do-not-write-7f3a"
    monkeypatch.setenv("SELFALIGN_TEST_JUDGE_KEY", secret)
    server = scripted_server(lambda payload, n: chat_reply("7 7\n"))
    cfg = config(tmp_path, server, data_dir, limit=1, api_key_env="SELFALIGN_TEST_JUDGE_KEY")
    run_judge(cfg)
    assert server.requests[0]["auth"] == f"Bearer {secret}"
    written = list(Path(cfg.output).rglob("*"))
    assert {p.name for p in written} == {"judgments.jsonl", "summary.json", "judge_cache.jsonl"}
    assert all(secret not in p.read_text() for p in written)


def test_a_refusing_judge_stops_the_run_with_one_line(scripted_server, tmp_path, data_dir, capsys):
    server = scripted_server(lambda payload, n: http_error(400, "Server is pinned to '/models/x'; requested 'gpt-4'."))
    code = main([
        "judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", str(tmp_path / "o"),
        "--judge-model", "gpt-4", "--judge-base-url", server.base_url, "--data-dir", str(data_dir),
        "--limit", "2", "--no-progress",
    ])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: judge 'gpt-4'") and "HTTP 400" in err and "pinned" in err
    assert len(server.requests) <= 4  # stopped at once, not after retries

"""``selfalign judge``: judge one answer set against a baseline on Vicuna-80, write the outputs.

``run_judge(cfg)`` renders the reviewer prompt for every (question, answer order), asks the
judge through ``JudgeClient`` (cached, retried), parses the verdicts, re-asks up to
``parse_attempts`` times when a reply yields no valid score pair, and writes
``judgments.jsonl`` and ``summary.json`` under ``cfg.output`` (schema: ``harness.judge``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import Progress

from harness.common.dirlock import output_lock
from harness.common.errors import UserError
from harness.common.jsonl import iter_typed, write_json_atomic, write_jsonl_atomic
from harness.common.preflight import check_output_dir
from harness.common.progress_bar import progress_bar
from harness.common.provenance import run_provenance, to_jsonable
from harness.common.records import JudgeSummary, Judgment
from harness.common.redact import mask_secrets
from harness.common.registry import lookup
from harness.data import manifest
from harness.judge.aggregate import ORDERS, summarize
from harness.judge.answers import (
    QUESTIONS_FILE,
    RECORDED,
    AnswerSet,
    Question,
    load_answer_set,
    load_questions,
)
from harness.judge.cache import ReplyCache
from harness.judge.client import ClientStats, FatalJudgeError, JudgeClient, Reply
from harness.judge.parse import DEFAULT_PARSER, PARSERS, parse_scores
from harness.judge.prices import cost_usd
from harness.judge.prompts import DEFAULT_PROMPT_VERSION, ReviewerPrompts
from harness.models import ALIASES, resolve_pretrained

SCHEMA_VERSION = 1
JUDGMENTS_FILE = "judgments.jsonl"
SUMMARY_FILE = "summary.json"
ORDER_CHOICES: dict[str, tuple[str, ...]] = {
    "both": ORDERS,
    # FastChat's original protocol: baseline as Assistant 1 only
    "baseline_first": ("baseline_first",),
    "model_first": ("model_first",),
}


@dataclass
class JudgeConfig:
    answers: str = ""  # run dir DIR/<model_id>, samples file, FastChat answer file or recorded name
    baseline: str = "gpt35"  # same forms as answers
    output: str = ""  # directory for judgments.jsonl, summary.json and the reply cache
    judge_model: str = "gpt-4"  # the request's model field (local servers: the served path)
    judge_base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"  # read from the environment only, never written
    prompt_version: str = DEFAULT_PROMPT_VERSION
    parser: str = DEFAULT_PARSER
    orders: str = dataclasses.field(default="both", metadata={"choices": tuple(ORDER_CHOICES)})
    temperature: float | None = None  # None: the reviewer's (0.2)
    max_tokens: int | None = None  # None: the reviewer's (1024)
    parse_attempts: int = 3  # replies asked per judgment until one parses
    max_retries: int = 5  # per request, on 429/5xx/timeouts/connection errors
    retry_backoff_s: float = 1.0  # first backoff; doubles per retry, jittered, capped at 60 s
    concurrency: int = 4
    timeout_s: float = 120.0
    limit: int | None = None  # first N questions (by id) only
    question_ids: list[int] | None = None
    data_dir: str | None = None
    seed: int = 0  # bootstrap resampling of the confidence interval
    progress: bool = True
    # ask again, ignoring the reply cache, for the judgments the last run recorded as failed
    # (the others are replayed from the cache: only the failures cost requests)
    retry_failed: bool = False


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(cfg: JudgeConfig) -> str:
    key = os.environ.get(cfg.api_key_env)
    if key:
        return key
    if _is_loopback(cfg.judge_base_url):
        return "EMPTY"  # local OpenAI-compatible servers ignore it, the client needs one
    raise UserError(
        f"judge URL {cfg.judge_base_url} is remote and ${cfg.api_key_env} is not set; "
        f"export {cfg.api_key_env}=... (keys are read from the environment only) or use --api-key-env NAME"
    )


def _request_model(name: str) -> str:
    """Our model aliases stand for the converted directory, the name a local server expects."""
    return str(resolve_pretrained(name)) if name in ALIASES else name


def _validate(cfg: JudgeConfig) -> None:
    if not cfg.answers:
        raise UserError("--answers is required: a run directory DIR/<model_id>, a samples/answer file or a recorded name")
    if not cfg.output:
        raise UserError("--output DIR is required (judgments.jsonl, summary.json and the reply cache go there)")
    lookup("answer order setting", cfg.orders, ORDER_CHOICES)
    lookup("score parser", cfg.parser, PARSERS)
    for name, value, low in (
        ("concurrency", cfg.concurrency, 1), ("parse_attempts", cfg.parse_attempts, 1), ("max_retries", cfg.max_retries, 0),
        ("max_tokens", cfg.max_tokens, 1), ("limit", cfg.limit, 1), ("retry_backoff_s", cfg.retry_backoff_s, 0),
        ("temperature", cfg.temperature, 0),
    ):
        if value is not None and value < low:
            raise UserError(f"{name}={value}: must be at least {low}")
    url = urlparse(cfg.judge_base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(f"--judge-base-url {cfg.judge_base_url!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")
    if not cfg.timeout_s > 0:
        raise UserError(f"timeout_s={cfg.timeout_s}: must be > 0 (seconds per request)")
    check_output_dir(cfg.output)


def _select_questions(cfg: JudgeConfig, questions: dict[int, Question], model: AnswerSet, baseline: AnswerSet) -> tuple[list[Question], dict[str, list[int]]]:
    ids = sorted(questions)
    if cfg.question_ids:
        unknown = sorted(set(cfg.question_ids) - set(questions))
        if unknown:
            raise UserError(f"--question-ids: {unknown} are not Vicuna-80 question ids (1-80)")
        ids = sorted(set(cfg.question_ids))
    if cfg.limit is not None:
        ids = ids[: cfg.limit]
    missing = {
        "model": [q for q in ids if q not in model.answers],
        "baseline": [q for q in ids if q not in baseline.answers],
    }
    chosen = [questions[q] for q in ids if q in model.answers and q in baseline.answers]
    if not chosen:
        raise UserError(
            f"no question has answers from both {model.name} ({model.source}) and {baseline.name} ({baseline.source})"
        )
    return chosen, missing


@dataclass
class _Plan:
    question: Question
    order: str


@dataclass
class _Run:
    """What every judgment of one run shares."""

    cfg: JudgeConfig
    prompts: ReviewerPrompts
    client: JudgeClient
    model: AnswerSet
    baseline: AnswerSet


async def _judge_one(plan: _Plan, run: _Run) -> dict[str, Any]:
    cfg, model, baseline = run.cfg, run.model, run.baseline
    q = plan.question
    model_first = plan.order == "model_first"
    first, second = (model, baseline) if model_first else (baseline, model)
    rendered = run.prompts.render(q.text, first.answers[q.question_id], second.answers[q.question_id], q.category)
    temperature = rendered.reviewer.temperature if cfg.temperature is None else cfg.temperature
    max_tokens = rendered.reviewer.max_tokens if cfg.max_tokens is None else cfg.max_tokens
    attempts: list[dict[str, Any]] = []
    status, scores, raw, rule, error, key, reason = "api_error", None, None, None, None, "", None
    for attempt in range(cfg.parse_attempts):
        key, reply = await run.client.reply(rendered.messages, temperature=temperature, max_tokens=max_tokens, attempt=attempt)
        record = _attempt_record(reply, cfg.judge_model)
        attempts.append(record)
        if reply.error is not None:
            status, error, reason = "api_error", reply.error, reply.reason or "api_error"
            break  # the client already retried; another attempt would hit the same wall
        parsed = parse_scores(reply.text, cfg.parser)
        record.update(parse_rule=parsed.rule, parse_error=mask_secrets(parsed.error))
        if parsed.ok:
            assert parsed.scores is not None
            raw = list(parsed.scores)
            s_model, s_baseline = (raw[0], raw[1]) if model_first else (raw[1], raw[0])
            status, scores, rule, error, reason = "ok", {"model": s_model, "baseline": s_baseline}, parsed.rule, None, None
            break
        status, error, reason = "parse_failed", mask_secrets(parsed.error), "unparseable_verdict"
        if any(a["reply"] == reply.text for a in attempts[:-1]):
            # A deterministic judge (greedy decoding; transformers serve ignores temperature
            # unless told to sample) repeats itself: asking again would only cost requests.
            error = f"{error}; the judge repeated the same reply, not asked again"
            break
    return {
        "id": f"{q.question_id}:{plan.order}",
        "question_id": q.question_id,
        "category": q.category,
        "reviewer": rendered.reviewer.reviewer_id,
        "reviewer_category": rendered.reviewer.category,
        "order": plan.order,
        "assistant_1": first.name,
        "assistant_2": second.name,
        "status": status,
        "scores": scores,
        "raw_scores": raw,
        "parse_rule": rule,
        "error": error,
        "failure_reason": reason,
        "n_attempts": len(attempts),
        "reply": attempts[-1]["reply"] if attempts else None,
        "attempts": attempts,
        "latency_s": round(sum(a["latency_s"] for a in attempts), 4),
        "prompt_tokens": _sum_known(a["prompt_tokens"] for a in attempts),
        "completion_tokens": _sum_known(a["completion_tokens"] for a in attempts),
        "cost_usd": _sum_known(a["cost_usd"] for a in attempts),
        "temperature": temperature,
        "max_tokens": max_tokens,
        "cache_key": key,
        "prompt_sha256": rendered.sha256,
    }


def _attempt_record(reply: Reply, judge_name: str) -> dict[str, Any]:
    return {
        "reply": reply.text,
        "finish_reason": reply.finish_reason,
        "error": reply.error,
        "cached": reply.cached,
        "http_attempts": reply.http_attempts,
        "latency_s": round(reply.latency_s, 4),
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "cost_usd": cost_usd(judge_name, reply.prompt_tokens, reply.completion_tokens),
        "parse_rule": None,
        "parse_error": None,
    }


def _first_errors(records: list[dict[str, Any]]) -> dict[str, str]:
    """One (masked, shortened) error text per failure reason, for the summary and messages."""
    examples: dict[str, str] = {}
    for r in records:
        if r["status"] != "ok" and r.get("failure_reason") not in examples:
            examples[r["failure_reason"]] = (r.get("error") or "")[:160]
    return examples


def _sum_known(values) -> float | int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


async def _judge_all(plans: list[_Plan], run: _Run) -> list[dict[str, Any]]:
    cfg, client = run.cfg, run.client
    tasks = [asyncio.create_task(_judge_one(p, run)) for p in plans]
    results: list[dict[str, Any]] = []
    # The shared layout: a bar on a terminal, plain lines every 30 s in CI logs and under nohup.
    progress = (
        progress_bar("judging", extra="{task.fields[status]}", console=Console(stderr=True))
        if cfg.progress else Progress(disable=True)
    )
    try:
        with progress:
            bar = progress.add_task("judge", total=len(tasks), status="")
            failed = 0
            for finished in asyncio.as_completed(tasks):
                record = await finished
                results.append(record)
                failed += record["status"] != "ok"
                progress.update(
                    bar, advance=1, status=f"requests {client.stats.n_requests}  cached {client.stats.n_cache_hits}  failed {failed}"
                )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    return results


def run_judge(cfg: JudgeConfig) -> dict[str, Any]:
    """Judge ``cfg.answers`` against ``cfg.baseline``; returns the summary also written to disk."""
    started = time.monotonic()
    _validate(cfg)
    api_key = _api_key(cfg)
    prompts = ReviewerPrompts(cfg.prompt_version, cfg.data_dir)
    questions = load_questions(cfg.data_dir)
    model = load_answer_set(cfg.answers, questions, cfg.data_dir, flag="--answers")
    baseline = load_answer_set(cfg.baseline, questions, cfg.data_dir, flag="--baseline")
    chosen, missing = _select_questions(cfg, questions, model, baseline)
    orders = ORDER_CHOICES[cfg.orders]
    out_dir = Path(cfg.output)
    request_model = _request_model(cfg.judge_model)
    with output_lock(out_dir, "selfalign judge"):
        return _judge_locked(cfg, out_dir, api_key, prompts, model, baseline, chosen, missing, orders, request_model, started)


def _judge_locked(cfg, out_dir, api_key, prompts, model, baseline, chosen, missing, orders, request_model, started) -> dict[str, Any]:
    cache = ReplyCache(out_dir)
    plans = [_Plan(q, o) for q in chosen for o in orders]
    refresh = failed_cache_keys(out_dir) if cfg.retry_failed else frozenset()

    async def main() -> tuple[list[dict[str, Any]], ClientStats]:
        client = JudgeClient(
            base_url=cfg.judge_base_url,
            model=request_model,
            api_key=api_key,
            cache=cache,
            concurrency=cfg.concurrency,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            backoff_s=cfg.retry_backoff_s,
            refresh_keys=refresh,
        )
        records = await _judge_all(plans, _Run(cfg, prompts, client, model, baseline))
        return records, client.stats

    try:
        records, stats = asyncio.run(main())
    except FatalJudgeError as exc:
        raise UserError(str(exc)) from None
    finally:
        cache.close()
    records.sort(key=lambda r: (r["question_id"], orders.index(r["order"])))
    write_jsonl_atomic(out_dir / JUDGMENTS_FILE, (Judgment.model_validate(r) for r in records))

    summary = _summary(cfg, records, orders, model, baseline, prompts, missing, stats, request_model, time.monotonic() - started)
    write_json_atomic(out_dir / SUMMARY_FILE, JudgeSummary.model_validate(summary))
    return summary



def failed_cache_keys(out_dir: Path) -> frozenset[str]:
    """Cache keys of the judgments that the last run in ``out_dir`` recorded as failed."""
    return frozenset(
        r.cache_key for r in iter_typed(out_dir / JUDGMENTS_FILE, Judgment) if r.status != "ok" and r.cache_key
    )


def all_failed_message(summary: dict[str, Any], records_path: Path) -> str | None:
    """One line naming the commonest failure reason when no judgment succeeded (else None)."""
    if not summary["n_judgments"] or summary["n_failed"] < summary["n_judgments"]:
        return None
    reason, count = Counter(summary.get("failure_reasons", {})).most_common(1)[0]
    example = summary.get("failure_examples", {}).get(reason, "")
    return (
        f"all {summary['n_judgments']} judgments failed; commonest reason: {reason} ({count}x"
        + (f", e.g. {example}" if example else "")
        + f"); details in {records_path}; fix the judge, then rerun with --retry-failed"
    )


def _summary(cfg, records, orders, model, baseline, prompts, missing, stats, request_model, wall_s) -> dict[str, Any]:
    failures = Counter(r["status"] for r in records if r["status"] != "ok")
    attempts = [a for r in records for a in r["attempts"]]
    fresh = [a for a in attempts if not a["cached"]]
    data_files = [QUESTIONS_FILE, *prompts.files]
    data_files += [RECORDED[s.name] for s in (model, baseline) if s.kind == "recorded"]
    aggregate = summarize(records, orders, cfg.seed)
    request_s = stats.request_seconds
    return {
        "kind": "pairwise_judge",
        "schema_version": SCHEMA_VERSION,
        "benchmark": "vicuna80",
        "relative_score": aggregate.pop("relative_score"),
        "wins": aggregate.pop("wins"),
        "ties": aggregate.pop("ties"),
        "losses": aggregate.pop("losses"),
        "n_questions": len({r["question_id"] for r in records}),
        "n_judgments": len(records),
        "n_failed": sum(failures.values()),
        "failures": dict(failures),
        # why they failed: http_500, timeout, no_choices, html_body, unparseable_verdict, ...
        "failure_reasons": dict(Counter(r["failure_reason"] for r in records if r["status"] != "ok").most_common()),
        "failure_examples": _first_errors(records),
        "order_consistency": aggregate.pop("order_consistency"),
        **aggregate,
        "n_requests": stats.n_requests,
        "n_api_errors": stats.n_api_errors,
        "n_cache_hits": stats.n_cache_hits,
        "requests_per_s": (stats.n_requests / request_s) if request_s > 0 else None,
        "request_seconds": request_s,
        "wall_time_s": wall_s,
        "parse_rules": dict(Counter(r["parse_rule"] for r in records if r["status"] == "ok")),
        "n_reparsed": sum(1 for r in records if r["n_attempts"] > 1),
        "tokens": {
            "prompt": _sum_known(a["prompt_tokens"] for a in attempts),
            "completion": _sum_known(a["completion_tokens"] for a in attempts),
            "prompt_this_run": _sum_known(a["prompt_tokens"] for a in fresh),
            "completion_this_run": _sum_known(a["completion_tokens"] for a in fresh),
        },
        "cost_usd": _sum_known(a["cost_usd"] for a in attempts),
        "cost_usd_this_run": _sum_known(a["cost_usd"] for a in fresh),
        "missing_answers": missing,
        "model": model.describe(),
        "baseline": baseline.describe(),
        "judge": {
            "model": cfg.judge_model,
            "request_model": request_model,
            "base_url": cfg.judge_base_url,
            "prompt_version": prompts.version,
            "reviewers": {c: r.reviewer_id for c, r in sorted(prompts.by_category.items())},
            "parser": cfg.parser,
            "orders": list(orders),
            # effective values (None in the config means: the reviewer table's, 0.2 / 1024)
            "temperature": sorted({r["temperature"] for r in records}),
            "max_tokens": sorted({r["max_tokens"] for r in records}),
            "parse_attempts": cfg.parse_attempts,
            "max_retries": cfg.max_retries,
            "concurrency": cfg.concurrency,
        },
        "config": to_jsonable(dataclasses.asdict(cfg)),
        "provenance": {**run_provenance(), "data": {rel: manifest()[rel].sha256 for rel in data_files}},
    }

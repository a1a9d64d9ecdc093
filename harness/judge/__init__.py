"""The Vicuna-80 LLM judge: pairwise reviews with the FastChat GPT-4 reviewer prompts, any OpenAI-compatible judge.

Run: ``selfalign judge --answers RUN_DIR --baseline gpt35 --judge-model NAME --judge-base-url URL --output OUT``
(``harness.judge.run.run_judge``). Modules: ``prompts`` (reviewer prompt versions, rendering),
``parse`` (score parsers), ``answers`` (questions, answer sets), ``client`` (the one client:
concurrency, retries, probe), ``cache`` (reply cache), ``prices``, ``aggregate``, ``reviews``
(re-parsing recorded reviews), ``cli``.

Outputs under ``OUT/`` (schema_version 1):

``judgments.jsonl``: one record per (question, answer order), sorted by question then order:
    id                "<question_id>:<order>"
    question_id, category       Vicuna question id (1-80) and category (generic, coding, math, ...)
    reviewer, reviewer_category FastChat reviewer id and its category (general | coding | math)
    order             "baseline_first" (FastChat's order: baseline = Assistant 1) | "model_first"
    assistant_1, assistant_2    answer-set names in the slots the judge saw
    status            "ok" | "parse_failed" (no valid pair after parse_attempts replies, or the
                      judge repeated an unparseable reply) | "api_error" (failed after retries)
    scores            {"model": float, "baseline": float} mapped back through the swap; null unless ok
    raw_scores        [Assistant 1, Assistant 2] as parsed; null unless ok
    parse_rule        first_line | labels | tuple | score_of (see harness.judge.parse); null unless ok
    error             why the judgment failed (credentials masked); null when ok
    failure_reason    short tag when not ok: http_<status>, timeout, connection_error,
                      malformed_json, html_body, not_json, no_choices, empty_message, client_error,
                      unparseable_verdict; null when ok
    reply             the raw text of the last reply
    attempts          every reply asked for: {reply, finish_reason, error, cached, http_attempts,
                      latency_s, prompt_tokens, completion_tokens, cost_usd, parse_rule, parse_error}
    n_attempts, latency_s, prompt_tokens, completion_tokens, cost_usd   summed over attempts
                      (token counts from the server's usage; cost null where no price is known)
    temperature, max_tokens     decoding used
    cache_key, prompt_sha256    the reply-cache key and the hash of the rendered system+user prompt

``summary.json``:
    relative_score    sum of model scores / sum of baseline scores over scored questions (the paper's
                      "relative score"; each side's per-question score is its mean over the orders)
    wins, ties, losses          per scored question, from the mean scores (model's side)
    n_questions       questions judged;  n_judgments = questions x orders
    n_failed          judgments whose status is not ok;  failures = {status: count}
    failure_reasons   {failure_reason: count}, commonest first;  failure_examples {reason: error text}
    n_scored, n_failed_questions, failed_question_ids   a question is scored only when every
                      requested order is ok; the others are listed here, never counted as ties
    order_consistency share of scored questions whose outcome is the same in both orders
                      (null with one order); n_order_pairs = its denominator
    relative_score_ci95         bootstrap over questions (seeded);  win_rate (+ _stderr): win 1,
                      tie 0.5, loss 0;  sign_test_p: two-sided binomial test of wins vs losses
    model_total, baseline_total
    by_order          {order: {n, relative_score, model_total, baseline_total, wins, ties, losses}}
                      over that order's ok judgments (baseline_first = FastChat's single-order number)
    by_category       {Vicuna category: same block} over scored questions
    per_question      [{question_id, category, model_score, baseline_score, outcome,
                      order_outcomes, consistent}] (for sign tests and per-question tables)
    n_requests        HTTP requests sent in this run (retries included; 0 on a fully cached rerun)
    n_api_errors, n_cache_hits, requests_per_s (n_requests / seconds with requests in flight),
    request_seconds, wall_time_s, parse_rules {rule: count}, n_reparsed
    tokens            {prompt, completion, prompt_this_run, completion_this_run}
    cost_usd, cost_usd_this_run  null when the judge's price is unknown
    missing_answers   {"model": [ids], "baseline": [ids]} of selected questions one side lacks
    model, baseline   {name, source, kind, n_answers, prompt_format, meta_prompt, run_* ...}
    judge             {model, request_model, base_url, prompt_version, reviewers, parser, orders,
                      temperature, max_tokens, parse_attempts, max_retries, concurrency}
    config            the JudgeConfig (never the API key: only the name of its variable)
    provenance        git hash, versions, argv, date, host; data: {file: sha256}

``judge_cache.jsonl``: every usable completion received, keyed by (judge model, messages,
temperature, max_tokens) and attempt number; a rerun sends only what is not there, and
``--retry-failed`` re-asks the judgments recorded as failed (see ``harness.judge.cache``).
"""

"""The bad-input catalogue: every command, every kind of wrong input, one clear line.

Each case runs ``selfalign`` in-process against a workspace that already holds outputs (an
evaluation, a judged comparison, a finished pipeline stage) and asserts: exit status 2, exactly
one line on stderr (``error: ...``), no traceback, and every pre-existing file byte-identical
afterwards (nothing moved aside, truncated or overwritten). A case that is silently accepted
fails on the exit status.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main

# (id, argv with placeholders, text the error line must contain)
# placeholders: TINY tiny model, CORRUPT bad weights, NOCONFIG no config.json, FOREIGN adapter of
# another base, FILE an existing file, WS the workspace, DATA the data directory, RUNCFG run YAML,
# PIPECFG pipeline YAML, PIPE the finished pipeline output, EVALOUT eval output, JUDGEOUT judge output
EVAL = ["eval", "--output", "WS/evalout", "--limit", "1", "--data-dir", "DATA"]
JUDGE = ["judge", "--answers", "alpaca-13b", "--baseline", "gpt35", "--output", "WS/judgeout", "--judge-base-url",
         "http://127.0.0.1:9/v1", "--data-dir", "DATA", "--no-progress"]
PIPE = ["pipeline", "run", "--config", "PIPECFG", "--output", "WS/pipe", "--data-dir", "DATA"]
RUN = ["run", "--config", "RUNCFG", "--data-dir", "DATA"]
CASES: list[tuple[str, list[str], str]] = [
    # selfalign eval
    ("eval-unknown-task", [*EVAL, "--model_args", "pretrained=TINY", "--tasks", "truthfulqa_mc"], "did you mean 'truthfulqa_mc"),
    ("eval-unknown-meta-prompt", [*EVAL, "--model_args", "pretrained=TINY", "--meta-prompt", "shouty"], "unknown meta prompt 'shouty'"),
    ("eval-meta-prompt-typo", [*EVAL, "--model_args", "pretrained=TINY", "--meta-prompt", "verbos"], "did you mean 'verbose'"),
    ("eval-gen-kwargs-type", [*EVAL, "--model_args", "pretrained=TINY", "--gen_kwargs", "max_gen_toks=abc"], "max_gen_toks='abc' must be an integer"),
    ("eval-gen-kwargs-range", [*EVAL, "--model_args", "pretrained=TINY", "--gen_kwargs", "max_gen_toks=0"], "max_gen_toks=0 must be at least 1"),
    ("eval-gen-kwargs-shape", [*EVAL, "--model_args", "pretrained=TINY", "--gen_kwargs", "temperature"], "is not key=value"),
    ("eval-negative-limit", [*EVAL, "--model_args", "pretrained=TINY", "--limit", "-1"], "--limit must be positive"),
    ("eval-batch-size", [*EVAL, "--model_args", "pretrained=TINY", "--batch_size", "-3"], "--batch_size '-3'"),
    ("eval-seed", [*EVAL, "--model_args", "pretrained=TINY", "--seed", "-1"], "--seed -1: seeds must be >= 0"),
    ("eval-output-is-a-file", ["eval", "--output", "FILE", "--model_args", "pretrained=TINY", "--data-dir", "DATA"], "is an existing file, not a directory"),
    ("eval-output-under-a-file", ["eval", "--output", "FILE/sub", "--model_args", "pretrained=TINY", "--data-dir", "DATA"], "is a file, so the directory cannot be created"),
    ("eval-corrupt-weights", [*EVAL, "--model_args", "pretrained=CORRUPT"], "not a readable safetensors file"),
    ("eval-no-config", [*EVAL, "--model_args", "pretrained=NOCONFIG"], "no config.json"),
    ("eval-foreign-adapter", [*EVAL, "--model_args", "pretrained=TINY,peft=FOREIGN"], "does not fit pretrained="),
    ("eval-not-an-adapter", [*EVAL, "--model_args", "pretrained=TINY,peft=WS"], "is not a PEFT adapter directory"),
    ("eval-missing-data-dir", ["eval", "--output", "WS/evalout", "--model_args", "pretrained=TINY", "--data-dir", "/nonexistent"], "--data-dir /nonexistent"),
    ("eval-unknown-backend", [*EVAL, "--model", "hff", "--model_args", "pretrained=TINY"], "unknown model backend 'hff'"),
    # selfalign judge
    ("judge-negative-limit", [*JUDGE, "--limit", "-1"], "argument --limit"),
    ("judge-negative-timeout", [*JUDGE, "--timeout-s", "-1"], "argument --timeout-s"),
    ("judge-zero-concurrency", [*JUDGE, "--concurrency", "0"], "argument --concurrency"),
    ("judge-negative-retries", [*JUDGE, "--max-retries", "-2"], "argument --max-retries"),
    ("judge-zero-parse-attempts", [*JUDGE, "--parse-attempts", "0"], "argument --parse-attempts"),
    ("judge-nan-temperature", [*JUDGE, "--temperature", "nan"], "argument --temperature"),
    ("judge-unknown-orders", [*JUDGE, "--orders", "baseline_frist"], "did you mean 'baseline_first'"),
    ("judge-unknown-prompt-version", [*JUDGE, "--prompt-version", "revised"], "revised"),
    ("judge-unknown-parser", [*JUDGE, "--parser", "vicuan"], "did you mean 'vicuna'"),
    ("judge-output-is-a-file", [*JUDGE[:5], "--output", "FILE", *JUDGE[7:]], "is an existing file, not a directory"),
    ("judge-unknown-answers", [*JUDGE[:2], "alpaca-13", *JUDGE[3:]], "did you mean 'alpaca-13b'"),
    ("judge-not-http-url", [*JUDGE[:7], "--judge-base-url", "ftp://127.0.0.1/v1", *JUDGE[9:]], "is not an http(s) URL"),
    ("judge-config-orders-type", [*JUDGE, "--config", "WS/judge_orders.yaml"], "judge_orders.yaml.orders: expected one of both, baseline_first, model_first, got 7"),
    ("judge-config-limit-type", [*JUDGE, "--config", "WS/judge_limit.yaml"], "limit: expected an integer, got [1, 2]"),
    ("judge-question-ids", [*JUDGE, "--question-ids", "99"], "are not Vicuna-80 question ids"),
    # selfalign pipeline run
    ("pipe-negative-max-prompts", [*PIPE, "--set", "stage2.max_prompts=-5"], "stage2.max_prompts: must be >= 0, got -5"),
    ("pipe-list-max-prompts", [*PIPE, "--set", "stage2.max_prompts=[1, 2]"], "stage2.max_prompts: expected an integer, got [1, 2]"),
    ("pipe-scalar-stage", [*PIPE, "--set", "stage3=5"], "stage3: expected a mapping of EngraveConfig fields, got 5"),
    ("pipe-string-for-list", [*PIPE, "--set", "stage1.tgrt.question_types=Questions that require cultural context"],
     "stage1.tgrt.question_types: expected a list of strings"),
    ("pipe-scalar-for-mapping", [*PIPE, "--set", "stage2.logit_bias=5"], "stage2.logit_bias: expected a mapping of strings to numbers"),
    ("pipe-word-for-number", [*PIPE, "--set", "stage2.temperature=hot"], "stage2.temperature: expected a number, got 'hot'"),
    ("pipe-bool", [*PIPE, "--set", "stage1.tgrt.enabled=maybe"], "stage1.tgrt.enabled: expected true or false, got 'maybe'"),
    ("pipe-unknown-key", [*PIPE, "--set", "stage2.max_prompt=3"], "did you mean 'max_prompts'"),
    ("pipe-unknown-stage", [*PIPE, "--stages", "7"], "unknown stage '7'"),
    ("pipe-output-is-a-file", ["pipeline", "run", "--config", "PIPECFG", "--output", "FILE", "--data-dir", "DATA"], "is an existing file"),
    ("pipe-world-size", [*PIPE, "--world-size", "0"], "argument --world-size"),
    ("pipe-rank", [*PIPE, "--rank", "-1"], "argument --rank"),
    ("pipe-corrupt-model", [*PIPE, "--set", "model.base=CORRUPT"], "not a readable safetensors file"),
    # selfalign run
    ("run-enabled-maybe", [*RUN, "--set", "pipeline.enabled=maybe"], "pipeline.enabled: expected true or false, got 'maybe'"),
    ("run-orders", [*RUN, "--set", "judge.orders=7"], "judge.orders: expected one of both, baseline_first, model_first, got 7"),
    ("run-meta-prompt", [*RUN, "--set", "eval.meta_prompt=shouty"], "unknown meta prompt 'shouty'"),
    ("run-gen-preset", [*RUN, "--set", "eval.gen_preset=papr"], "eval.gen_preset: expected one of paper, reference_demo, got 'papr'; did you mean 'paper'"),
    ("run-gen-kwargs", [*RUN, "--set", "eval.gen_kwargs={vicuna80: max_gen_toks=abc}"], "max_gen_toks='abc' must be an integer"),
    ("run-batch-size", [*RUN, "--set", "eval.batch_size=-1"], "eval.batch_size: must be at least 1"),
    ("run-timeout", [*RUN, "--set", "judge.timeout_s=-1"], "judge.timeout_s: must be > 0"),
    ("run-tasks-type", [*RUN, "--set", "eval.tasks=hhh"], "eval.tasks: expected a list of strings, got 'hhh'"),
    ("run-unknown-task", [*RUN, "--set", "eval.tasks=[hhx]"], "did you mean 'hhh'"),
    ("run-limits-task", [*RUN, "--set", "eval.limits={hhx: 3}"], "did you mean 'hhh'"),
    ("run-output-under-a-file", [*RUN, "--output", "FILE"], "is a file, so the directory cannot be created"),
    # selfalign report
    ("report-answers-only", ["report", "WS/answers_only", "--output", "WS/report"], "no results.json"),
    ("report-empty-dir", ["report", "WS/empty", "--output", "WS/report"], "no results.json"),
    ("report-missing-dir", ["report", "WS/nothing_here", "--output", "WS/report"], "is not a directory"),
    ("report-output-is-a-file", ["report", "EVALOUT", "--output", "FILE"], "is an existing file"),
    # selfalign bench
    ("bench-scoring-json-dir", ["bench", "scoring", "--model", "TINY", "--json", "WS"], "is a directory; pass a file path"),
    ("bench-generation-json-dir", ["bench", "generation", "--model", "TINY", "--json", "WS"], "is a directory; pass a file path"),
    ("bench-meta-prompt", ["bench", "scoring", "--model", "TINY", "--meta-prompt", "shouty"], "unknown meta prompt 'shouty'"),
    ("bench-limit", ["bench", "scoring", "--model", "TINY", "--limit", "-1"], "--limit -1: must be at least 1"),
    ("bench-scoring-no-tasks", ["bench", "scoring", "--model", "TINY", "--tasks", ","], "--tasks names no set; name one or more of truthfulqa_tf, hhh"),
    ("bench-dedup-json-dir", ["bench", "dedup", "--n", "10", "--json", "WS"], "is a directory; pass a file path"),
    ("bench-dedup-check-prefix", ["bench", "dedup", "--n", "10", "--check-prefix", "-1"], "--check-prefix -1: need n >= 1 and check-prefix >= 0"),
    # selfalign ls / validate
    ("ls-unknown", ["ls", "taskz"], "did you mean 'tasks'"),
    ("validate-data-dir", ["validate", "--data-dir", "/nonexistent"], "/nonexistent"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir, data_dir) -> dict[str, str]:
    from tests.test_pipeline_runner import Harness, make_cfg
    from tests.tiny_model import build_tiny_model

    ws = tmp_path_factory.mktemp("ws")
    corrupt = ws / "corrupt_model"
    shutil.copytree(tiny_model_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    noconfig = ws / "noconfig_model"
    shutil.copytree(tiny_model_dir, noconfig)
    (noconfig / "config.json").unlink()
    foreign = _foreign_adapter(build_tiny_model(ws / "other_base", hidden=32), ws / "foreign_adapter")
    (ws / "a_file.txt").write_text("precious\n")
    (ws / "empty").mkdir()
    (ws / "answers_only").mkdir()
    (ws / "answers_only" / "samples_vicuna80.jsonl").write_text('{"doc_id": 0, "resps": [["x"]]}\n')
    # outputs that must survive every failed command
    (ws / "evalout" / "tiny").mkdir(parents=True)
    (ws / "evalout" / "tiny" / "results.json").write_text('{"results": {"precious": 1}}\n')
    (ws / "judgeout").mkdir()
    (ws / "judgeout" / "judgments.jsonl").write_text('{"id": "1:baseline_first", "status": "ok"}\n')
    (ws / "judgeout" / "judge_cache.jsonl").write_text('{"key": "k", "attempt": 0, "reply": "9 8"}\n')
    (ws / "judge_orders.yaml").write_text("orders: 7\n")
    (ws / "judge_limit.yaml").write_text("limit: [1, 2]\n")
    harness = Harness(ws / "pipe", data_dir)
    harness.run(make_cfg(tiny_model_dir, "stage1.tgrt.enabled=false", "stage2.max_prompts=2"), "1,2")
    pipecfg = ws / "pipeline.yaml"
    pipecfg.write_text(f"model:\n  base: {tiny_model_dir}\n")
    runcfg = ws / "run.yaml"
    runcfg.write_text(
        f"name: r\noutput: {ws / 'runs'}\npipeline:\n  config: {pipecfg}\n  enabled: false\n"
        "checkpoints: [base]\neval:\n  tasks: [truthfulqa_mc1]\njudge:\n  enabled: false\n"
    )
    (ws / "runs" / "r").mkdir(parents=True)
    (ws / "runs" / "r" / "manifest.json").write_text('{"precious": true}\n')
    return {
        "TINY": str(tiny_model_dir), "CORRUPT": str(corrupt), "NOCONFIG": str(noconfig), "FOREIGN": str(foreign),
        "FILE": str(ws / "a_file.txt"), "WS": str(ws), "DATA": str(data_dir), "RUNCFG": str(runcfg),
        "PIPECFG": str(pipecfg), "EVALOUT": str(ws / "evalout" / "tiny"),
    }


def _foreign_adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(out)
    return out


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _fill(arg: str, ws: dict[str, str]) -> str:
    for key in sorted(ws, key=len, reverse=True):
        arg = arg.replace(key, ws[key])
    return arg


@pytest.mark.parametrize("case_id, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_and_touches_nothing(workspace, capsys, case_id, argv, expected):
    root = Path(workspace["WS"])
    before = snapshot(root)
    capsys.readouterr()
    try:
        rc = main([_fill(a, workspace) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"{case_id}: accepted (exit {rc}); stderr: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert snapshot(root) == before, f"{case_id} changed pre-existing outputs"


def test_catalogue_covers_every_command():
    commands = {argv[0] if argv[0] not in ("pipeline",) else "pipeline run" for _, argv, _ in CASES}
    assert commands == {"eval", "judge", "pipeline run", "run", "report", "bench", "ls", "validate"}
    assert len({c[0] for c in CASES}) == len(CASES)


def test_report_without_scores_says_so(tmp_path, data_dir, capsys):
    # an evaluation that only generated answers (vicuna80) has nothing to tabulate
    d = tmp_path / "evalout" / "m"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "results": {"selfalign_vicuna80": {"alias": "vicuna80"}}, "n-samples": {"selfalign_vicuna80": {"effective": 2, "original": 80}},
        "selfalign": {"model_id": "m", "task_versions": {"selfalign_vicuna80": 1.0}},
    }))
    rc = main(["report", str(d), "--output", str(tmp_path / "report"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no scores to report" in err[0]
    assert not (tmp_path / "report" / "report.md").exists()


def test_torn_last_line_is_reported_and_only_our_own_log_is_repaired(tmp_path, data_dir, caplog):
    from harness.common.jsonl import JsonlWriter, read_records
    from harness.judge.answers import load_answer_set, load_questions

    # a user's answer file: read, reported, never modified
    source = data_dir / "vicuna_bench/fastchat/eval/table/answer/answer_alpaca-13b.jsonl"
    lines = source.read_text().splitlines()
    user_file = tmp_path / "answer_mine.jsonl"
    user_file.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])
    before = user_file.read_bytes()
    with caplog.at_level("WARNING"):
        answers = load_answer_set(str(user_file), load_questions(str(data_dir)), str(data_dir))
    assert len(answers.answers) == 5
    assert f"{user_file}:6: the last line is incomplete" in caplog.text
    assert user_file.read_bytes() == before
    # our own append-only log (the judge's reply cache): repaired before the next append, and said
    caplog.clear()
    log = tmp_path / "judge_cache.jsonl"
    log.write_text('{"key": "a", "attempt": 0, "reply": "x"}\n{"key": "b", "att')
    with caplog.at_level("WARNING"), JsonlWriter(log) as writer:
        writer.write({"key": "c", "attempt": 0, "reply": "y"})
    assert [r["key"] for r in read_records(log, strict=True)] == ["a", "c"]
    assert "dropped its incomplete last line" in caplog.text

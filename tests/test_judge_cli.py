"""`selfalign judge` inputs: answer sets from run directories and files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.common.errors import UserError
from harness.judge.answers import RECORDED, load_answer_set, load_questions
from harness.judge.prompts import PROMPT_VERSIONS, ReviewerPrompts
from orchestration.judge_server import free_port
from tests.servers import chat_reply, scripted_servers


@pytest.fixture
def scripted_server():
    with scripted_servers() as make:
        yield make


def write_run_dir(root: Path, data_dir: Path, model_id: str, qids: list[int], prompt_format: str = "dromedary", chat_template: str | None = None) -> Path:
    """A `selfalign eval` run directory in the documented shape, answers "<model_id> answer <qid>"."""
    questions = load_questions(data_dir)
    run = root / model_id
    run.mkdir(parents=True)
    with (run / "samples_vicuna80.jsonl").open("w") as fh:
        for i, qid in enumerate(qids):
            q = questions[qid]
            doc = {"question_id": qid, "category": q.category, "text": q.text, "prompt": "...", "prompt_format": prompt_format, "meta_prompt": "verbose"}
            answer = f"{model_id} answer {qid}"
            fh.write(json.dumps({
                "doc_id": i, "doc": doc, "target": "", "arguments": [["...", {"until": ["### User"]}]],
                "resps": [[f" {answer}\n\n### User"]], "filtered_resps": [answer], "filter": "clean",
            }) + "\n")
    results = {"results": {}, "config": {"model": "hf"}, "chat_template": chat_template,
               "selfalign": {"model_id": model_id, "prompt_format": "chat_template" if chat_template else "dromedary:task default"}}
    (run / "results.json").write_text(json.dumps(results))
    return run


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["judge", *args])
    return code, capsys.readouterr().err.strip()


def test_answer_sets_from_names_run_dirs_and_files(tmp_path, data_dir):
    questions = load_questions(data_dir)
    assert len(questions) == 80 and questions[61].category == "coding" and questions[68].category == "math"
    gpt35 = load_answer_set("gpt35", questions, data_dir)
    assert gpt35.kind == "recorded" and len(gpt35.answers) == 80
    assert load_answer_set("llama-13b", questions, data_dir).answers[74] == ""  # recorded empty answer kept

    run = write_run_dir(tmp_path / "eval", data_dir, "ckpt-a", [1, 2, 3])
    for spec in (run, run.parent, run / "samples_vicuna80.jsonl"):
        s = load_answer_set(str(spec), questions, data_dir)
        assert (s.name, s.kind, s.answers) == ("ckpt-a", "lm_eval_samples", {q: f"ckpt-a answer {q}" for q in (1, 2, 3)})
        assert s.info["prompt_format"] == "dromedary" and s.info["run_model_id"] == "ckpt-a"

    fastchat = tmp_path / "answer_mine.jsonl"
    fastchat.write_text("\n".join(json.dumps({"question_id": q, "text": f"t{q}"}) for q in (5, 6)) + "\n")
    s = load_answer_set(str(fastchat), questions, data_dir)
    assert (s.name, s.kind, s.answers) == ("mine", "fastchat_answers", {5: "t5", 6: "t6"})


def test_dromedary_prompt_inside_a_chat_template_is_flagged(tmp_path, data_dir):
    run = write_run_dir(tmp_path, data_dir, "chat", [1], chat_template="{{ messages }}")
    s = load_answer_set(str(run), load_questions(data_dir), data_dir)
    assert s.info["prompt_format"] == "dromedary_in_chat_template" and s.info["chat_template_applied"]


def test_samples_from_another_question_set_are_refused(tmp_path, data_dir):
    run = write_run_dir(tmp_path, data_dir, "m", [1])
    path = run / "samples_vicuna80.jsonl"
    record = json.loads(path.read_text())
    record["doc"]["text"] = "A different question?"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(UserError, match="does not match"):
        load_answer_set(str(run), load_questions(data_dir), data_dir)


def test_checkpoint_against_checkpoint(scripted_server, tmp_path, data_dir):
    a = write_run_dir(tmp_path / "eval", data_dir, "ckpt-a", [1, 2, 3, 4])
    b = write_run_dir(tmp_path / "eval", data_dir, "ckpt-b", [2, 3, 4, 5])
    server = scripted_server(lambda payload, n: chat_reply("4 4\n"))
    out = tmp_path / "a-vs-b"
    assert main(["judge", "--answers", str(a), "--baseline", str(b), "--output", str(out), "--judge-model", "j",
                 "--judge-base-url", server.base_url, "--data-dir", str(data_dir), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "ckpt-a" and summary["baseline"]["name"] == "ckpt-b"
    assert summary["n_questions"] == 3 and summary["ties"] == 3  # questions with both answers only
    # a question one side has no answer for is listed, not judged and not silently lost
    missing = summary["missing_answers"]
    assert missing["baseline"][:2] == [1, 6] and missing["model"][:2] == [5, 6]
    assert len(missing["baseline"]) == len(missing["model"]) == 76
    prompts = [r["json"]["messages"][1]["content"] for r in server.requests]
    assert any("ckpt-b answer 2" in p.split("[The End of Assistant 1's Answer]")[0] for p in prompts)


def test_run_dir_without_vicuna80_samples(tmp_path, data_dir, capsys):
    (tmp_path / "run" / "m").mkdir(parents=True)
    (tmp_path / "run" / "m" / "samples_hhh.jsonl").write_text("{}\n")
    code, err = run_cli(["--answers", str(tmp_path / "run" / "m"), "--output", str(tmp_path / "o"),
                         "--judge-base-url", "http://127.0.0.1:9/v1", "--data-dir", str(data_dir)], capsys)
    assert code == 2 and "\n" not in err
    assert "no vicuna80 samples" in err and "samples_hhh.jsonl" in err and "selfalign eval --tasks vicuna80" in err


def test_unknown_baseline_lists_the_names(tmp_path, data_dir, capsys):
    code, err = run_cli(["--answers", "alpaca-13b", "--baseline", "chatgpt35", "--output", str(tmp_path / "o"),
                         "--judge-base-url", "http://127.0.0.1:9/v1", "--data-dir", str(data_dir)], capsys)
    assert code == 2 and "\n" not in err
    assert "unknown baseline 'chatgpt35'" in err and "did you mean 'gpt35'" in err
    assert all(name in err for name in RECORDED)


def test_unreachable_judge_url(tmp_path, data_dir, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    code, err = run_cli(["--answers", "alpaca-13b", "--output", str(tmp_path / "o"), "--judge-base-url", url,
                         "--data-dir", str(data_dir), "--limit", "1", "--no-progress"], capsys)
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: judge server {url} is unreachable")


def test_remote_judge_without_api_key(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, err = run_cli(["--answers", "alpaca-13b", "--output", str(tmp_path / "o"), "--judge-model", "gpt-4",
                         "--data-dir", str(data_dir)], capsys)
    assert code == 2 and "\n" not in err
    assert "https://api.openai.com/v1 is remote and $OPENAI_API_KEY is not set" in err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_config_file_and_flag_precedence(scripted_server, tmp_path, data_dir, capsys):
    server = scripted_server(lambda payload, n: chat_reply("3 9\n"))
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"answers: alpaca-13b\nbaseline: bard\njudge_base_url: {server.base_url}\nmax_tokens: 16\nlimit: 5\norders: baseline_first\n")
    out = tmp_path / "o"
    assert main(["judge", "--config", str(cfg), "--limit", "2", "--output", str(out), "--data-dir", str(data_dir), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"]["name"] == "bard" and summary["n_questions"] == 2 and summary["n_judgments"] == 2
    assert summary["judge"]["max_tokens"] == [16] and summary["order_consistency"] is None
    assert {r["json"]["max_tokens"] for r in server.requests} == {16}
    bad = tmp_path / "bad.yaml"
    bad.write_text("answer: alpaca-13b\n")
    capsys.readouterr()
    code, err = run_cli(["--config", str(bad)], capsys)
    assert code == 2 and "unknown key 'answer'" in err and "did you mean 'answers'" in err


@pytest.mark.parametrize("version", sorted(PROMPT_VERSIONS))
def test_reviewer_prompts_render_by_category(version, data_dir):
    prompts = ReviewerPrompts(version, data_dir)
    assert set(prompts.by_category) == {"general", "coding", "math"}
    assert prompts.reviewer_for("roleplay").category == "general"
    assert prompts.reviewer_for("math").category == "math"
    rendered = prompts.render("Q?", "first {answer}", "second", "coding")
    assert rendered.system == "You are a helpful and precise assistant for checking the quality of the answer."
    user = rendered.user
    assert user.startswith("[Question]\nQ?\n\n") and "evaluate the coding abilities" in user
    assert user.index("first {answer}") < user.index("second")
    open_1 = "[The Start of Assistant 1's Answer]" if version.startswith("revised") else "[Assistant 1]"
    assert f"{open_1}\nfirst {{answer}}\n\n" in user
    assert rendered.sha256 != prompts.render("Q?", "second", "first {answer}", "coding").sha256


def test_progress_is_printed_as_plain_lines_when_stderr_is_not_a_terminal(scripted_server, tmp_path, data_dir, capsys):
    server = scripted_server(lambda payload, n: chat_reply("3 9\n"))
    out = tmp_path / "o"
    assert main(["judge", "--answers", "alpaca-13b", "--baseline", "bard", "--judge-base-url", server.base_url,
                 "--limit", "2", "--output", str(out), "--data-dir", str(data_dir)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("judging: ")]
    assert lines and lines[-1].startswith("judging: 4/4 (100%)") and "requests 4" in lines[-1]
    assert "\x1b" not in "".join(lines)

"""The vicuna80 generate_until task: loading, prompt choice per model, and the path into the judge."""

from __future__ import annotations

import json

import pytest

from harness.common.errors import UserError
from harness.common.run_files import samples_path
from harness.evaluate import EvalConfig, run_eval
from harness.judge.run import JudgeConfig, run_judge
from harness.models import model_id
from harness.prompts import meta_prompt_text
from harness.task_registry import task_manager
from tasks.vicuna80.utils import GEN_PRESETS, STOP_STRINGS, build_docs, clean_answer
from tests.servers import chat_reply, scripted_servers


@pytest.fixture
def scripted_server():
    with scripted_servers() as make:
        yield make

TASK = "selfalign_vicuna80"


def load_task(data_dir, meta_prompt=None):
    tm = task_manager({"data_dir": str(data_dir), **({"meta_prompt": meta_prompt} if meta_prompt else {})})
    return tm.load([TASK])["tasks"][TASK]


def test_task_loads_through_lm_eval_with_the_paper_prompt(data_dir):
    task = load_task(data_dir)
    docs = list(task.test_docs())
    assert len(docs) == 80 and docs[0]["question_id"] == 1 and docs[-1]["question_id"] == 80
    assert {d["category"] for d in docs} >= {"generic", "coding", "math", "fermi"}
    first = docs[0]
    assert first["prompt_format"] == "dromedary" and first["meta_prompt"] == "verbose"
    # IBM/Dromedary run_chatbot_demo.py generate_prompt: f"{meta_prompt}\n{instruction}\n\n### Dromedary\n"
    expected = meta_prompt_text("verbose", data_dir) + "\nHow can I improve my time management skills?\n\n### Dromedary\n"
    assert task.doc_to_text(first) == expected
    assert expected.endswith("### User\nHow can I improve my time management skills?\n\n### Dromedary\n")
    cfg = task.config
    assert cfg.output_type == "generate_until" and cfg.metadata["version"] == 2.0
    assert cfg.generation_kwargs["temperature"] == 0.7 and cfg.generation_kwargs["do_sample"] is True
    assert cfg.generation_kwargs["until"] == list(STOP_STRINGS) == ["### User", "### Dromedary"]


def test_plain_prompt_for_chat_models_and_other_meta_prompts(data_dir):
    plain = build_docs(str(data_dir), "none")
    assert plain[4]["prompt"] == plain[4]["text"] == "Can you explain the basics of quantum computing?"
    assert plain[4]["prompt_format"] == "plain" and plain[4]["meta_prompt"] == "none"
    concise = load_task(data_dir, "concise_distill")
    doc = next(iter(concise.test_docs()))
    assert doc["meta_prompt"] == "concise_distill"
    assert concise.doc_to_text(doc).startswith(meta_prompt_text("concise_distill", data_dir))
    with pytest.raises(UserError, match="did you mean 'verbose'"):
        build_docs(str(data_dir), "verbos")


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("\nHere is my answer.\n\n### User", "Here is my answer."),
        (" Answer one.\n### User\nnext question\n### Dromedary\nmore", "Answer one."),
        ("Answer cut by the length limit.\n\n###", "Answer cut by the length limit."),
        ("Answer.\n\n### Us", "Answer."),
        ("A base model's answer.\n\n### Dromedary\nAnother turn.", "A base model's answer."),
        ("Answer.\n\n### Drome", "Answer."),
        ("Answer.\n\n### Details\nmore", "Answer.\n\n### Details\nmore"),  # markdown headers stay
        ("Use # for comments:\n\n# a comment\nx = 1", "Use # for comments:\n\n# a comment\nx = 1"),
        ("", ""),
    ],
)
def test_answers_are_cleaned_like_the_reference(raw, clean):
    assert clean_answer(raw) == clean


@pytest.mark.parametrize("chat", [False, True], ids=["dromedary", "chat_template"])
def test_generated_answers_flow_into_the_judge(chat, tiny_model_dir, data_dir, tmp_path, scripted_server):
    cfg = EvalConfig(
        model_args=f"pretrained={tiny_model_dir}", tasks=["vicuna80"], limit=2, data_dir=str(data_dir),
        output=str(tmp_path / "eval"), batch_size=2, gen_kwargs="max_gen_toks=8",
        meta_prompt="none" if chat else None, apply_chat_template=chat,
    )
    results = run_eval(cfg)
    run_dir = tmp_path / "eval" / model_id(cfg.model_args)
    samples = [json.loads(line) for line in samples_path(run_dir, "vicuna80").read_text().splitlines()]
    assert [s["doc"]["question_id"] for s in samples] == [1, 2]
    # the metrics are the cleaned answers' (the "clean" filter), not the raw generations'
    cleaned = [s["filtered_resps"][0] for s in samples]
    assert results["results"][TASK]["empty_answer,clean"] == sum(not a.strip() for a in cleaned) / 2
    assert results["results"][TASK]["answer_words,clean"] == sum(len(a.split()) for a in cleaned) / 2
    prompt = samples[0]["arguments"]["gen_args_0"]["arg_0"]  # lm-eval's on-disk form
    if chat:
        assert samples[0]["doc"]["prompt_format"] == "plain"
        assert prompt.startswith("<|im_start|>user\nHow can I improve my time management skills?<|im_end|>")
    else:
        assert samples[0]["doc"]["prompt_format"] == "dromedary" and prompt.endswith("\n\n### Dromedary\n")
    assert samples[0]["arguments"]["gen_args_0"]["arg_1"]["max_gen_toks"] == 8
    answer = samples[0]["filtered_resps"][0]
    assert answer == clean_answer(samples[0]["resps"][0][0])

    server = scripted_server(lambda payload, n: chat_reply("8 2\n"))
    summary = run_judge(JudgeConfig(
        answers=str(run_dir), baseline="gpt35", output=str(tmp_path / "judge"), judge_model="j",
        judge_base_url=server.base_url, data_dir=str(data_dir), progress=False,
    ))
    assert summary["model"]["name"] == run_dir.name
    assert summary["model"]["prompt_format"] == ("plain" if chat else "dromedary")
    assert summary["model"]["gen_preset"] == "paper" == samples[0]["doc"]["gen_preset"]
    assert summary["n_questions"] == 2 and len(summary["missing_answers"]["model"]) == 78
    # the judge saw exactly the logged answer
    sent = [r["json"]["messages"][1]["content"] for r in server.requests]
    assert any(f"[The Start of Assistant 2's Answer]\n{answer}\n\n[The End of Assistant 2's Answer]" in s for s in sent)


def test_paper_preset_is_the_yaml_and_presets_are_checked(data_dir, tiny_model_dir, tmp_path):
    task = load_task(data_dir)
    kwargs = {k: v for k, v in task.config.generation_kwargs.items() if k != "until"}
    assert kwargs == GEN_PRESETS["paper"]
    assert GEN_PRESETS["reference_demo"]["unitoken_frequency_penalty"] == 0.3  # run_chatbot_demo.py line 172
    assert GEN_PRESETS["reference_demo"]["top_p"] == 0.75  # its Top-p slider's value
    base = dict(model_args=f"pretrained={tiny_model_dir}", tasks=["vicuna80"], data_dir=str(data_dir), output=str(tmp_path))
    with pytest.raises(UserError, match="did you mean 'reference_demo'"):
        run_eval(EvalConfig(**base, gen_preset="reference_dem"))
    with pytest.raises(UserError, match="only --model selfalign-hf applies"):
        run_eval(EvalConfig(**base, gen_preset="reference_demo"))


def test_reference_demo_preset_is_applied_and_recorded(tiny_model_dir, data_dir, tmp_path):
    cfg = EvalConfig(
        model="selfalign-hf", model_args=f"pretrained={tiny_model_dir}", tasks=["vicuna80"], limit=2,
        data_dir=str(data_dir), output=str(tmp_path / "eval"), batch_size=2, gen_kwargs="max_gen_toks=12",
        gen_preset="reference_demo",
    )
    results = run_eval(cfg)
    assert results["selfalign"]["gen_preset"] == "reference_demo"
    run_dir = tmp_path / "eval" / model_id(cfg.model_args)
    samples = [json.loads(line) for line in samples_path(run_dir, "vicuna80").read_text().splitlines()]
    gen_kwargs = samples[0]["arguments"]["gen_args_0"]["arg_1"]
    assert gen_kwargs["unitoken_frequency_penalty"] == 0.3 and gen_kwargs["top_p"] == 0.75
    assert gen_kwargs["max_gen_toks"] == 12  # --gen_kwargs wins over the preset
    assert {s["doc"]["gen_preset"] for s in samples} == {"reference_demo"}

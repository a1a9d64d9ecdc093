"""Vicuna-80 questions and the answer sets a judge compares: recorded FastChat answers or our runs.

An answer set is named by any of

* a recorded FastChat answer set: ``gpt35``, ``bard``, ``alpaca-13b``, ... (``RECORDED``);
* a run directory of ``selfalign eval`` (``DIR/<model_id>``, holding
  ``samples_selfalign_vicuna80*.jsonl``), or such a samples file itself (lm-eval's per-sample
  log: ``doc``, ``filtered_resps``, ...);
* a FastChat-style answer file (``{"question_id", "text"}`` per line).

So checkpoint A can be judged against checkpoint B exactly as against ChatGPT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common.errors import UserError
from harness.common.jsonl import read_records
from harness.common.registry import unknown_name_error
from harness.common.run_files import judged_samples_file
from harness.data import data_file, read_jsonl

QUESTIONS_FILE = "vicuna_bench/fastchat/eval/table/question.jsonl"
_ANSWER_DIR = "vicuna_bench/fastchat/eval/table/answer"
RECORDED: dict[str, str] = {
    name: f"{_ANSWER_DIR}/answer_{name}.jsonl"
    for name in (
        "gpt35",
        "bard",
        "alpaca-13b",
        "llama-13b",
        "vicuna-13b",
        "vicuna-13b-20230322-new-hp-fp16",
        "vicuna-7b-20230322-fp16",
    )
}
TASK_NAME = "selfalign_vicuna80"
# The filter of tasks/vicuna80 whose output is the cleaned answer.
ANSWER_FILTER = "clean"


@dataclass(frozen=True)
class Question:
    question_id: int
    text: str
    category: str


@dataclass
class AnswerSet:
    name: str
    source: str  # the file read
    kind: str  # recorded | fastchat_answers | lm_eval_samples
    answers: dict[int, str]
    info: dict[str, Any] = field(default_factory=dict)  # prompt format, model args, ... when known

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "n_answers": len(self.answers), **self.info}


def load_questions(data_dir: str | Path | None = None) -> dict[int, Question]:
    return {
        int(q["question_id"]): Question(int(q["question_id"]), q["text"], q["category"])
        for q in read_jsonl(QUESTIONS_FILE, data_dir)
    }


def _fastchat_answers(records: list[dict], where: str) -> dict[int, str]:
    answers: dict[int, str] = {}
    for i, r in enumerate(records, 1):
        if "question_id" not in r or "text" not in r:
            raise UserError(f"{where}: record {i} has no question_id/text; not a FastChat answer file")
        answers[int(r["question_id"])] = str(r["text"])
    return answers


def _sample_answer(record: dict, where: str) -> str:
    resps = record.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        raise UserError(f"{where}: doc_id {record.get('doc_id')} has no filtered_resps")
    first = resps[0]
    # take_first gives a string per request; without it lm-eval logs the list of generations
    return str(first[0] if isinstance(first, list) else first)


def _run_info(samples: Path) -> dict[str, Any]:
    """Model and prompt facts from results.json beside the samples, when present."""
    info: dict[str, Any] = {}
    for candidate in [samples.parent / "results.json", *sorted(samples.parent.glob("results_*.json"))]:
        if candidate.is_file():
            try:
                results = json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            ours = results.get("selfalign") or {}  # provenance block of `selfalign eval`
            for key in ("model_id", "backend", "model_args", "prompt_format", "git_hash"):
                if ours.get(key) is not None:
                    info[f"run_{key}"] = ours[key]
            for key in ("model_name", "chat_template_sha"):
                if results.get(key) is not None:
                    info[key] = results[key]
            info["chat_template_applied"] = bool(results.get("chat_template"))
            info["results_file"] = str(candidate.resolve())
            break
    return info


def _samples_answers(path: Path, questions: dict[int, Question]) -> tuple[dict[int, str], dict[str, Any]]:
    records = read_records(path)
    if not records or "doc" not in records[0]:
        raise UserError(f"{path}: not an lm-eval samples file (no 'doc' field); pass a vicuna80 samples file")
    filters = {r.get("filter") for r in records}
    if len(filters) > 1:
        if ANSWER_FILTER not in filters:
            raise UserError(f"{path}: several filters {sorted(map(str, filters))} and none named {ANSWER_FILTER!r}")
        records = [r for r in records if r.get("filter") == ANSWER_FILTER]
    answers: dict[int, str] = {}
    formats: set[tuple[str, str, str]] = set()
    for r in records:
        doc = r["doc"]
        qid = int(doc["question_id"])
        question = questions.get(qid)
        if question is None or doc.get("text") != question.text:
            raise UserError(f"{path}: question {qid} does not match {QUESTIONS_FILE}; the samples come from another question set")
        answer = _sample_answer(r, str(path))
        if qid in answers and answers[qid] != answer:
            raise UserError(f"{path}: two different answers for question {qid} (runs appended to one file?); keep one run")
        answers[qid] = answer
        # docs before vicuna80 2.0 carry no preset: they were generated with the paper's
        formats.add((str(doc.get("prompt_format")), str(doc.get("meta_prompt")), str(doc.get("gen_preset", "paper"))))
    info: dict[str, Any] = {}
    if len(formats) == 1:
        prompt_format, meta_prompt, gen_preset = formats.pop()
        info.update(prompt_format=prompt_format, meta_prompt=meta_prompt, gen_preset=gen_preset)
    info.update(_run_info(path))
    if info.get("chat_template_applied") and info.get("prompt_format") == "dromedary":
        # --apply_chat_template without --meta-prompt none: the Dromedary prompt went inside
        # the chat template's user turn. Legal, but rarely meant; say so where it is read.
        info["prompt_format"] = "dromedary_in_chat_template"
    return answers, info


def load_answer_set(spec: str, questions: dict[int, Question], data_dir: str | Path | None = None, *, flag: str = "--answers") -> AnswerSet:
    """Resolve a recorded name, run directory, samples file or answer file to an ``AnswerSet``."""
    if spec in RECORDED:
        path = data_file(RECORDED[spec], data_dir)
        return AnswerSet(spec, str(path), "recorded", _fastchat_answers(read_records(path), str(path)))
    path = Path(spec).expanduser()
    if path.is_dir():
        samples = judged_samples_file(path, TASK_NAME, flag)
        answers, info = _samples_answers(samples, questions)
        return AnswerSet(samples.parent.name, str(samples.resolve()), "lm_eval_samples", answers, info)
    if path.is_file():
        records = read_records(path)
        if records and "doc" in records[0]:
            answers, info = _samples_answers(path, questions)
            return AnswerSet(path.parent.name, str(path.resolve()), "lm_eval_samples", answers, info)
        name = path.stem.removeprefix("answer_")
        return AnswerSet(name, str(path.resolve()), "fastchat_answers", _fastchat_answers(records, str(path)))
    raise unknown_name_error(
        "baseline" if flag == "--baseline" else "answer set", spec, RECORDED, f"{flag}: not a recorded FastChat answer set nor an existing run directory or file"
    )

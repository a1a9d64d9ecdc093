"""Typed records: every output validates against its exported schema; a wrong field is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.common.errors import UserError
from harness.common.jsonl import (
    iter_typed,
    read_judge_summary,
    read_manifest_file,
    read_typed,
    write_json_atomic,
)
from harness.common.records import (
    RECORDS,
    AnswerRecord,
    JudgeSummary,
    PipelineManifest,
    RunManifest,
    StageManifest,
    TruthfulQAJudgeSummary,
)
from pipeline.checkpoints import CHECKPOINT_NAMES, checkpoint_label, list_checkpoints
from pipeline.manifest import finish_manifest, start_manifest
from tests.schema_check import validate_file
from tests.test_pipeline_runner import Harness, make_cfg

ANSWER = {
    "id": "p1", "instruction": "Say hi", "input": "", "origin": {"source": "tgrt", "topic": "greetings"},
    "raw_output": "Hi!", "finish_reason": "stop", "kept": True, "answer": "Hi!", "drop_reason": None, "drop_detail": None,
}


def test_stage_1_and_2_outputs_validate_against_the_exported_schemas(tmp_path, tiny_model_dir, data_dir):
    harness = Harness(tmp_path / "run", data_dir)
    harness.run(make_cfg(tiny_model_dir), "1,2")
    out = harness.out
    counts = {
        "prompt": validate_file(out / "01_tgrt_self_instruct" / "prompts.jsonl", "prompt"),
        "candidate": validate_file(out / "01_tgrt_self_instruct" / "candidates.jsonl", "candidate"),
        "topic": validate_file(out / "01_tgrt_self_instruct" / "topics.jsonl", "topic"),
        "answer": validate_file(out / "02_self_align" / "records.jsonl", "answer"),
    }
    assert all(n > 0 for n in counts.values()), counts
    assert counts["answer"] == counts["prompt"]  # stage 2 answers every kept stage-1 prompt
    for stage_dir in ("01_tgrt_self_instruct", "02_self_align"):
        validate_file(out / stage_dir / "manifest.json", "stage_manifest")
        assert isinstance(read_manifest_file(out / stage_dir / "manifest.json"), StageManifest)
    validate_file(out / "manifest.json", "pipeline_manifest")
    pipeline = read_manifest_file(out / "manifest.json")
    assert isinstance(pipeline, PipelineManifest) and set(pipeline.stages) == {"tgrt_self_instruct", "self_align"}
    # the typed reader gives the same records the file holds
    answers = read_typed(out / "02_self_align" / "records.jsonl", AnswerRecord)
    raw = [json.loads(line) for line in (out / "02_self_align" / "records.jsonl").read_text().splitlines()]
    assert [a.model_dump(mode="json") for a in answers] == raw


def test_a_wrong_field_fails_in_one_line_naming_file_line_and_field(tmp_path):
    path = tmp_path / "records.jsonl"
    bad = {**ANSWER, "id": "p2", "kept": "perhaps"}
    path.write_text(json.dumps(ANSWER) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError) as exc:
        list(iter_typed(path, AnswerRecord))
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2: field 'kept': ") and '"perhaps"' in message and "regenerate" in message
    # a missing nested field and an unknown field are named the same way
    path.write_text(json.dumps({**ANSWER, "origin": {}}) + "\n")
    with pytest.raises(UserError, match=r"records.jsonl:1: field 'origin.source': field required"):
        read_typed(path, AnswerRecord)
    path.write_text(json.dumps({**ANSWER, "anwser": "typo"}) + "\n")
    with pytest.raises(UserError, match=r"records.jsonl:1: field 'anwser': extra inputs are not permitted"):
        read_typed(path, AnswerRecord)


def test_typed_reader_keeps_the_torn_tail_rules(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(ANSWER) + "\n" + json.dumps(ANSWER)[:30])
    assert [r.id for r in read_typed(path, AnswerRecord)] == ["p1"]  # lenient: the torn tail is skipped
    with pytest.raises(UserError, match=r"records.jsonl:2: not valid JSON"):
        read_typed(path, AnswerRecord, strict=True)
    path.write_text(json.dumps(ANSWER)[:30] + "\n" + json.dumps(ANSWER) + "\n")
    with pytest.raises(UserError, match=r"records.jsonl:1: not valid JSON"):  # not the last line: never skipped
        read_typed(path, AnswerRecord)


def test_manifests_without_kind_are_read_by_their_keys(tmp_path):
    old_run = {"name": "demo", "config": {}, "systems": [], "timings_s": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(old_run))
    manifest = read_manifest_file(tmp_path / "manifest.json")
    assert isinstance(manifest, RunManifest) and manifest.kind == "run" and manifest.name == "demo"
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {}}))
    with pytest.raises(UserError, match=r"manifest.json: not a selfalign manifest .*rerun the command that wrote it"):
        read_manifest_file(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "stage", "stage": "engrave", "number": "three"}))
    with pytest.raises(UserError, match=r"manifest.json: field 'number': .*not a valid stage manifest"):
        read_manifest_file(tmp_path / "manifest.json")


def _stage(out: Path, name: str, number: int, *, complete: bool, adapter: bool = True) -> Path:
    stage_dir = out / f"{number:02d}_{name}"
    if adapter:
        (stage_dir / "adapter").mkdir(parents=True)
        (stage_dir / "adapter" / "adapter_config.json").write_text("{}")
    manifest = start_manifest(stage_dir, stage=name, number=number, title=name, cfg_hash="h", config={},
                              upstream={}, data_files={}, world_size=1)
    if complete:
        finish_manifest(stage_dir, manifest, {"stage_dir": stage_dir.name, "outputs": {"adapter": "adapter"}}, 1.0)
    return stage_dir


def test_pipeline_lists_its_checkpoints(tmp_path):
    engrave = _stage(tmp_path, "engrave", 3, complete=True)
    _stage(tmp_path, "verbose_clone", 4, complete=False)  # still running: not a checkpoint yet
    assert CHECKPOINT_NAMES == ("base", "engrave", "verbose_clone")
    found, missing = list_checkpoints(tmp_path, "tiny-base")
    assert [c.name for c in found] == ["base", "engrave"]
    assert found[0].adapter_dir is None and found[0].model_args() == {"pretrained": "tiny-base"}
    assert found[1].adapter_dir == (engrave / "adapter").resolve() and found[1].manifest.status == "complete"
    assert found[1].model_args() == {"pretrained": "tiny-base", "peft": str((engrave / "adapter").resolve())}
    assert found[1].label == "stage 3: principle engraving"
    assert checkpoint_label("verbose_clone") == "stage 4: verbose cloning (final)"
    assert len(missing) == 1 and missing[0].startswith("verbose_clone (no complete adapter in")
    with pytest.raises(UserError, match="did you mean 'engrave'"):
        list_checkpoints(tmp_path, "tiny-base", ["engrav"])


def test_ls_schemas_lists_and_writes_one_schema_per_record(tmp_path, capsys):
    assert main(["ls", "schemas"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in RECORDS)
    assert main(["ls", "schemas", "--output", str(tmp_path / "schemas")]) == 0
    files = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert files == sorted(f"{name}.schema.json" for name in RECORDS)
    train = json.loads((tmp_path / "schemas" / "train.schema.json").read_text())
    assert set(train["required"]) == {"id", "source", "prompt", "answer"}
    assert train["properties"]["source"]["enum"] == ["self_align", "identity", "verbose_clone"]
    assert main(["ls", "tasks", "--output", str(tmp_path / "x")]) == 2
    assert "--output writes files for `schemas` only" in capsys.readouterr().err


def test_report_collects_a_run_by_its_manifest_kind_old_manifests_included(tmp_path):
    from reports.collect import collect

    system = {"model_id": "m", "label": "base (m)", "role": "checkpoint", "backend": "hf", "model_args": "pretrained=m"}
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"name": "old", "config": {}, "systems": [system]}))  # before kinds
    collection = collect([old])
    assert [(s.model_id, s.label) for s in collection.systems] == [("m", "base (m)")]
    assert collection.run_manifests[0].kind == "run"
    # a pipeline output's manifest.json is not a run's: the directory is searched as an eval output
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "manifest.json").write_text(json.dumps({"kind": "pipeline", "config_hash": "h", "stages": {}, "systems": []}))
    with pytest.raises(UserError, match="no results.json, summary.json or manifest.json here"):
        collect([pipe])


def test_judge_summaries_are_read_by_kind_old_ones_by_their_fields(tmp_path):
    pairwise = {"benchmark": "vicuna80", "relative_score": 0.8, "wins": 1, "ties": 0, "losses": 2,
                "n_questions": 3, "n_judgments": 6, "n_failed": 0, "model": {"model_id": "m"}}
    truthfulqa = {"n": 2, "truthful": 0.5, "truthful_ci95": [0.1, 0.9], "informative": 1.0,
                  "informative_ci95": [0.3, 1.0], "truthful_informative": 0.5, "truthful_informative_ci95": [0.1, 0.9],
                  "judges": {}, "n_scored": 4, "answers": {"model_id": "m"}}
    for name, data, model in (("a", pairwise, JudgeSummary), ("b", truthfulqa, TruthfulQAJudgeSummary)):
        path = tmp_path / name / "summary.json"
        write_json_atomic(path, data)  # written before summaries named their kind
        record = read_judge_summary(path)
        assert type(record) is model and record.model_dump()["kind"] == model.model_fields["kind"].default
        assert record.model_dump(mode="json")["n_scored" if model is TruthfulQAJudgeSummary else "model"] == data[
            "n_scored" if model is TruthfulQAJudgeSummary else "model"]  # extra fields are kept
    write_json_atomic(tmp_path / "c" / "summary.json", {"n": 1})
    with pytest.raises(UserError, match=r"summary.json: not a selfalign judge summary .*rerun `selfalign judge`"):
        read_judge_summary(tmp_path / "c" / "summary.json")
    write_json_atomic(tmp_path / "d" / "summary.json", {**truthfulqa, "kind": "truthfulqa_judge", "n": "many"})
    with pytest.raises(UserError, match=r"field 'n'"):
        read_judge_summary(tmp_path / "d" / "summary.json")

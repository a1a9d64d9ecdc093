"""The runner with a scripted engine: outputs, manifests, skipping, resuming, stale outputs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.common.config import load_config
from harness.common.errors import UserError
from harness.common.jsonl import read_records
from pipeline.config import PipelineConfig
from pipeline.runner import ExistingStage, Fresh, Resume, Skip, decide, run, select_stages
from tests.pipeline_fakes import PipelineScript, ScriptedEngine

TYPES = ["Questions that require cultural context", "Questions that require scientific knowledge"]


def make_cfg(model_dir: Path, *overrides: str) -> PipelineConfig:
    base = [
        f"model.base={model_dir}",
        "engine.chunk_size=2",
        "stage1.self_instruct.num_requests=3",
        f"stage1.tgrt.question_types={json.dumps(TYPES)}",
        "stage1.tgrt.topic_rounds=2",
        "stage1.tgrt.max_topic_prompts_per_type=2",
    ]
    return load_config(PipelineConfig, None, [*base, *overrides])


class Harness:
    """Runs the pipeline with a fresh scripted engine per call and remembers what it was asked."""

    def __init__(self, out: Path, data_dir: Path):
        self.out, self.data_dir = out, data_dir
        self.engines: list[ScriptedEngine] = []
        self.fail_after_calls: int | None = None

    def factory(self, model: str, peft: str | None) -> ScriptedEngine:
        engine = ScriptedEngine(PipelineScript())
        engine.fail_after_calls = self.fail_after_calls
        engine.peft = peft
        self.engines.append(engine)
        return engine

    def run(self, cfg: PipelineConfig, stages: str = "1,2", **kwargs) -> dict:
        return run(cfg, self.out, stages, data_dir=self.data_dir, engine_factory=self.factory, eos_tokens=lambda m: ["</s>"], **kwargs)

    @property
    def requested(self) -> list[str]:
        return [i for e in self.engines for i in e.requested_ids]


@pytest.fixture()
def harness(tmp_path, data_dir) -> Harness:
    return Harness(tmp_path / "run", data_dir)


def manifest(out: Path, stage_dir: str) -> dict:
    return json.loads((out / stage_dir / "manifest.json").read_text())


def test_stages_1_and_2_write_records_and_manifests(harness, tiny_model_dir):
    summary = harness.run(make_cfg(tiny_model_dir))
    s1 = harness.out / "01_tgrt_self_instruct"
    prompts = read_records(s1 / "prompts.jsonl")
    candidates = read_records(s1 / "candidates.jsonl")
    ids = [p["id"] for p in prompts]
    assert len(ids) == len(set(ids)) > 0
    sources = {p["origin"]["source"] for p in prompts}
    assert sources == {"self_instruct", "tgrt"}
    assert all(p["origin"]["question_type"] in TYPES for p in prompts if p["origin"]["source"] == "tgrt")
    reasons = {c["drop_reason"] for c in candidates}
    # The script writes a "Draw a picture" task and a cut-off last task into every completion.
    assert {"keyword_blacklist", "truncated"} <= reasons
    m1 = manifest(harness.out, "01_tgrt_self_instruct")
    counts = m1["counts"]
    assert m1["status"] == "complete" and counts["kept"] == len(prompts)
    assert counts["produced"] == counts["kept"] + sum(counts["dropped"].values()) == len(candidates)
    assert counts["tgrt_topics"]["dropped"]["not_capitalized"] > 0
    assert m1["generation"]["self_instruct"]["requests"] == 3
    assert m1["provenance"]["git_hash"] is None or isinstance(m1["provenance"]["git_hash"], str)

    records = read_records(harness.out / "02_self_align" / "records.jsonl")
    assert [r["id"] for r in records] == ids  # one record per prompt, same order
    assert all(r["kept"] and r["answer"].endswith("### User\n") and "Dromedary can explain" in r["answer"] for r in records)
    m2 = manifest(harness.out, "02_self_align")
    assert m2["counts"] == {"produced": len(ids), "kept": len(ids), "dropped": {}}
    assert m2["upstream"] == {"tgrt_self_instruct": m1["output_hash"]}
    assert (harness.out / "02_self_align" / "constitution.txt").read_text().endswith("User:")
    run_manifest = json.loads((harness.out / "manifest.json").read_text())
    assert set(run_manifest["stages"]) == {"tgrt_self_instruct", "self_align"} == set(summary["stages"])


def test_unchanged_stages_are_skipped_without_loading_a_model(harness, tiny_model_dir):
    cfg = make_cfg(tiny_model_dir)
    harness.run(cfg)
    before = (harness.out / "02_self_align" / "records.jsonl").read_bytes()
    harness.engines.clear()
    summary = harness.run(cfg)
    assert harness.engines == []  # no engine was even built
    assert all(s["skipped"] for s in summary["stages"].values())
    assert (harness.out / "02_self_align" / "records.jsonl").read_bytes() == before


def test_changed_config_reruns_the_stage_and_moves_old_outputs_aside(harness, tiny_model_dir):
    harness.run(make_cfg(tiny_model_dir))
    old_hash = manifest(harness.out, "02_self_align")["config_hash"]
    harness.engines.clear()
    summary = harness.run(make_cfg(tiny_model_dir, "stage2.max_new_tokens=64"))
    assert summary["stages"]["tgrt_self_instruct"]["skipped"] and not summary["stages"]["self_align"]["skipped"]
    stale = list(harness.out.glob("02_self_align.stale-*"))
    assert len(stale) == 1 and json.loads((stale[0] / "manifest.json").read_text())["config_hash"] == old_hash
    assert "config changed" in (stale[0] / "STALE.txt").read_text()
    assert manifest(harness.out, "02_self_align")["config_hash"] != old_hash


def test_upstream_output_change_invalidates_downstream(harness, tiny_model_dir):
    harness.run(make_cfg(tiny_model_dir))
    harness.engines.clear()
    summary = harness.run(make_cfg(tiny_model_dir, "stage1.self_instruct.max_instructions=1"))
    assert not summary["stages"]["tgrt_self_instruct"]["skipped"]
    assert not summary["stages"]["self_align"]["skipped"]
    n_si = sum(p["origin"]["source"] == "self_instruct" for p in read_records(harness.out / "01_tgrt_self_instruct" / "prompts.jsonl"))
    assert n_si == 1


def test_resume_after_interruption_loses_and_duplicates_nothing(harness, tiny_model_dir):
    cfg = make_cfg(tiny_model_dir)
    harness.run(cfg, "1")
    expected = [p["id"] for p in read_records(harness.out / "01_tgrt_self_instruct" / "prompts.jsonl")]
    assert len(expected) >= 5
    harness.engines.clear()
    harness.fail_after_calls = 2  # two chunks of 2 answers, then the "process" dies
    with pytest.raises(KeyboardInterrupt):
        harness.run(cfg, "2")
    shard = harness.out / "02_self_align" / "generations" / "self_align.shard000-of-001.jsonl"
    done = [r["id"] for r in read_records(shard)]
    assert done == expected[:4]
    assert manifest(harness.out, "02_self_align")["status"] == "running"
    with shard.open("a") as fh:  # a write torn by the kill
        fh.write('{"id": "' + expected[4] + '", "text": "I am a hel')

    harness.engines.clear()
    harness.fail_after_calls = None
    harness.run(cfg, "2")
    assert harness.requested == expected[4:]  # only what was missing, the torn record included
    gen_ids = [r["id"] for r in read_records(shard)]
    assert sorted(gen_ids) == sorted(expected) and len(gen_ids) == len(set(gen_ids))
    assert [r["id"] for r in read_records(harness.out / "02_self_align" / "records.jsonl")] == expected
    assert manifest(harness.out, "02_self_align")["status"] == "complete"


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, Fresh("no manifest")),
        (ExistingStage("complete", "h1"), Skip()),
        (ExistingStage("running", "h1"), Resume()),
        (ExistingStage(None, "h1"), Resume()),  # a manifest without a status never finished
        (ExistingStage("complete", "h0"), Fresh("config changed")),
        (ExistingStage("running", "h0"), Fresh("config changed")),
        (ExistingStage("complete", None), Fresh("config changed")),
        (ExistingStage("complete", "h1", ("records", "topics")), Fresh("outputs missing: records, topics")),
        (ExistingStage("running", "h1", ("records",)), Resume()),  # a resumed stage rewrites its outputs
        (ExistingStage("complete", "h0", ("records",)), Fresh("config changed")),
    ],
)
def test_decide_skips_resumes_or_starts_fresh(existing, expected):
    assert decide(existing, "h1") == expected


def test_existing_stage_reads_status_hash_and_missing_outputs(tmp_path):
    assert ExistingStage.read(tmp_path, None) is None
    (tmp_path / "records.jsonl").write_text("")
    (tmp_path / "generations").mkdir()
    manifest = {"status": "complete", "config_hash": "h1",
                "outputs": {"records": "records.jsonl", "generations": "generations", "topics": "topics.jsonl"}}
    assert ExistingStage.read(tmp_path, manifest) == ExistingStage("complete", "h1", ("topics",))
    assert ExistingStage.read(tmp_path, {"status": "running", "config_hash": "h1"}) == ExistingStage("running", "h1", ())


def test_complete_stage_with_deleted_outputs_is_rerun_not_skipped(harness, tiny_model_dir):
    # Skipping it would leave stage 2 to fail on the missing prompts.jsonl.
    cfg = make_cfg(tiny_model_dir)
    harness.run(cfg, "1")
    prompts = harness.out / "01_tgrt_self_instruct" / "prompts.jsonl"
    before = prompts.read_bytes()
    prompts.unlink()
    harness.engines.clear()
    summary = harness.run(cfg, "1,2")
    assert not summary["stages"]["tgrt_self_instruct"]["skipped"] and harness.engines
    assert prompts.read_bytes() == before  # the scripted engine answers the same: same prompts
    (stale,) = harness.out.glob("01_tgrt_self_instruct.stale-*")
    assert "outputs missing: prompts" in (stale / "STALE.txt").read_text()
    assert manifest(harness.out, "02_self_align")["status"] == "complete"


def test_prompts_file_replaces_stage_1(harness, tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "instruction": "Explain tides."}\n{"id": "b", "instruction": "Sort", "input": "3, 1"}\n')
    harness.run(make_cfg(tiny_model_dir, f"stage2.prompts_file={prompts}"), "2")
    records = read_records(harness.out / "02_self_align" / "records.jsonl")
    assert [(r["id"], r["input"]) for r in records] == [("a", ""), ("b", "3, 1")]
    assert not (harness.out / "01_tgrt_self_instruct").exists()


def test_stage_without_its_upstream_fails_in_one_line(harness, tiny_model_dir):
    with pytest.raises(UserError, match=r"needs the outputs of stage 1 .* run with --stages 1,2"):
        harness.run(make_cfg(tiny_model_dir), "2")


def test_empty_stage_input_fails_in_one_line(harness, tiny_model_dir):
    # Every instruction the script writes is shorter than 50 words: stage 1 keeps nothing
    # (TGRT questions pass the word bounds only with self_instruct_filters, unlike the reference).
    overrides = ("stage1.filters.min_words=50", "stage1.tgrt.self_instruct_filters=true")
    harness.run(make_cfg(tiny_model_dir, *overrides), "1")
    with pytest.raises(UserError) as err:
        harness.run(make_cfg(tiny_model_dir, *overrides), "2")
    assert "prompts.jsonl: no synthetic prompts; stage 1 kept none" in str(err.value)


def test_unknown_stage_names_suggest_the_closest():
    with pytest.raises(UserError, match="did you mean 'self_align'"):
        select_stages("self_allign")
    assert [s.number for s in select_stages("4,1")] == [1, 4]


def test_unloadable_base_model_fails_before_any_work(tmp_path, data_dir):
    cfg = load_config(PipelineConfig, None, [f"model.base={tmp_path / 'no-such-model'}"])
    with pytest.raises(UserError, match="does not exist"):
        run(cfg, tmp_path / "out", "1", data_dir=data_dir)
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    cfg = load_config(PipelineConfig, None, [f"model.base={not_a_model}"])
    with pytest.raises(UserError, match="not a model directory"):
        run(cfg, tmp_path / "out", "1", data_dir=data_dir)


def test_broken_model_weights_fail_in_one_line(tmp_path, data_dir, tiny_model_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    cfg = make_cfg(broken, "stage1.tgrt.enabled=false")
    with pytest.raises(UserError) as err:
        run(cfg, tmp_path / "out", "1", data_dir=data_dir, eos_tokens=lambda m: [])
    assert "model.safetensors: not a readable safetensors file" in str(err.value) and "\n" not in str(err.value)


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys, data_dir, tiny_model_dir):
    from harness.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage2:\n  max_prompt: 3\n")
    assert main(["pipeline", "run", "--config", str(cfg), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "did you mean 'max_prompts'" in err and "\n" not in err

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "x"}\n')
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"model: {{base: {tiny_model_dir}}}\nstage1: {{self_instruct: {{seed_tasks: {seeds}}}}}\n")
    rc = main(["pipeline", "run", "--config", str(ok), "--output", str(tmp_path / "o"), "--data-dir", str(data_dir)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and err == f"error: {seeds}:1: field 'instances' must be a non-empty list of objects; " + (
        'each line needs {"instruction": str, "instances": [{"input": str, "output": str}]}'
    )

"""``selfalign run``: pipeline stages not yet done, then every checkpoint and baseline evaluated, judged, reported.

Output layout (``<output>/<name>/``)::

    run_config.yaml                        the resolved RunConfig
    manifest.json                          systems (in stage order, with roles), every eval/judge unit
                                           (reused or run, wall time), phase timings, provenance
    pipeline/                              ``selfalign pipeline run`` output (stage dirs, adapters)
    eval/<task>/<model_id>/                one ``selfalign eval --tasks <task>`` output per unit
                                           (results.json, samples_*.jsonl, lm_cache/, run_key.json)
    judge/<model_id>_vs_<opponent>/        one ``selfalign judge`` output per comparison (+ run_key.json)
    judge/<model_id>_truthfulqa/           one ``selfalign judge truthfulqa`` output per system (+ run_key.json)
    judge_server.log                       the local judge server's log (when one was started)
    report/                                ``selfalign report`` output: report.{md,csv,html,json}, figures/

Reuse rule. An evaluation unit (one model, one task) is reused when its ``results.json`` exists,
its ``run_key.json`` holds the same key, and results.json records the task's current version. The
key hashes the backend, the resolved model args, the sha256 of the weight, config and tokenizer
files (``weights_fingerprint``: a retrained adapter is a new model, a touched one is not), the task
and its version, the limit, the prompt settings (meta prompt, chat template), the generation kwargs
and the seed. A judge unit is
reused when the answers it judged (sha256 of the samples file), the opponent, the judge model and
the judge settings are unchanged. Anything else reruns; lm-eval's per-model response cache and the
judge's reply cache still make unchanged requests free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from harness import data
from harness.common.config import load_config
from harness.common.dirlock import output_lock
from harness.common.errors import UserError
from harness.common.jsonl import write_json_atomic
from harness.common.preflight import check_output_dir
from harness.common.provenance import config_hash, run_provenance, sha256_file, to_jsonable
from harness.common.records import RunManifest
from harness.common.registry import lookup, unknown_name_error
from harness.common.run_files import samples_path
from harness.common.shipped_configs import configs_root
from harness.eval_preflight import check_batch_size, check_meta_prompt, parse_gen_kwargs
from harness.evaluate import LOCAL_BACKENDS, EvalConfig, run_eval, weights_fingerprint
from harness.judge.answers import RECORDED
from harness.judge.run import ORDER_CHOICES, JudgeConfig, run_judge
from harness.judge.truthfulqa.run import (
    TruthfulQAJudgeConfig,
    run_truthfulqa_judge,
    samples_file,
)
from harness.judge.truthfulqa.scoring import resolve_judge
from harness.judge.truthfulqa.train import cached_judge_spec
from harness.models import (
    ALIASES,
    format_model_args,
    model_id,
    parse_model_args,
    resolve_model_args,
)
from harness.task_registry import (
    PAIRWISE_JUDGE,
    PREFIX,
    TRUTHFULQA_JUDGE,
    benchmark,
    doc_count,
    judged_tasks,
    resolve_task_names,
    task_versions,
)
from orchestration.judge_server import serve_local_judge, sigterm_as_exit
from pipeline.checkpoints import CHECKPOINT_NAMES, checkpoint_label, list_checkpoints
from pipeline.config import PipelineConfig
from pipeline.runner import run as run_pipeline
from reports.baselines import load_registry
from reports.build import ReportOptions, build_report
from reports.collect import BASELINE, CHECKPOINT, RUN_MANIFEST
from tasks.vicuna80.utils import GEN_PRESETS

EVAL_KEY_VERSION = "1"
JUDGE_KEY_VERSION = "1"
RUN_KEY_FILE = "run_key.json"


def _gen_preset(cfg, task: str) -> str:
    """The generation preset of one evaluation unit: eval.gen_preset where the task takes presets."""
    return cfg.eval.gen_preset if benchmark(task).takes_gen_preset else "paper"


# ---------------------------------------------------------------------------- config


@dataclass
class PipelineSection:
    enabled: bool = True  # false: evaluate what pipeline/ already holds, run nothing
    config: str | None = "configs/pipeline/demo.yaml"  # pipeline YAML; None = PipelineConfig defaults
    overrides: list[str] = field(default_factory=list)  # KEY=VALUE on top of it
    stages: str = "all"


@dataclass
class EvalSection:
    backend: str = "selfalign-hf"  # lm-eval backend for local models (hf works too, slower)
    tasks: list[str] = field(default_factory=lambda: ["truthfulqa_mc1", "truthfulqa_tf", "hhh", "vicuna80"])
    limit: float | None = None  # documents per task (None: all) ...
    limits: dict[str, float] = field(default_factory=dict)  # ... or per task, e.g. {hhh: 10}
    gen_kwargs: dict[str, str] = field(default_factory=dict)  # per task, e.g. {vicuna80: "max_gen_toks=128"}
    # Vicuna-80 generation preset (tasks/vicuna80 GEN_PRESETS): paper, or reference_demo (needs selfalign-hf)
    gen_preset: str = field(default="paper", metadata={"choices": tuple(GEN_PRESETS)})
    batch_size: int = 8
    extra_model_args: str = ""  # appended to every local model's model_args (e.g. dtype=float32)
    meta_prompt: str | None = None  # checkpoints' prompt framing; None = the tasks' paper default
    seed: int = 1234

    def limit_for(self, task: str) -> float | None:
        return self.limits.get(task, self.limit)


@dataclass
class JudgeSection:
    enabled: bool = True
    # answer sets the checkpoints are judged against: baseline names with `answers`, recorded
    # set names (gpt35, bard, ...) or answer files
    opponents: list[str] = field(default_factory=lambda: ["chatgpt"])
    head_to_head: bool = False  # also judge each checkpoint against the one before it
    judge_model: str = "smollm2-135m-instruct"
    base_url: str | None = None  # None: start `transformers serve` for judge_model on 127.0.0.1
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int | None = None  # None: the reviewer's 1024
    orders: str = field(default="both", metadata={"choices": tuple(ORDER_CHOICES)})  # harness.judge.run
    parse_attempts: int = 3
    concurrency: int = 2
    timeout_s: float = 300.0
    server_ready_timeout_s: float = 240.0
    server_threads: int | None = None  # OMP threads of the local server (None: inherit)


@dataclass
class TruthfulQAJudgeSection:
    """Judges of truthfulqa_gen answers (``selfalign judge truthfulqa``)."""

    truth_judge: str | None = None  # model_args of a truth judge; None: train one (below), cached
    info_judge: str | None = None
    backend: str = "selfalign-hf"  # lm-eval backend of both judges (local-completions for a server)
    base: str = "gemma-3-270m"  # base model of judges the run trains
    train_config: str | None = "configs/judge/truthfulqa_demo.yaml"  # JudgeTrainConfig YAML of those


@dataclass
class ReportSection:
    enabled: bool = True
    title: str = ""  # default: "SELF-ALIGN run <name>"
    include_reported: bool = True


@dataclass
class RunConfig:
    name: str = "demo"
    output: str = "runs"
    data_dir: str | None = None
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    # which checkpoints to evaluate: base, engrave (stage 3), verbose_clone (stage 4)
    checkpoints: list[str] = field(default_factory=lambda: list(CHECKPOINT_NAMES))
    baselines: list[str] = field(default_factory=list)  # registry names with a `model` (evaluated like checkpoints)
    baseline_files: list[str] = field(default_factory=list)  # extra baselines YAML files
    eval: EvalSection = field(default_factory=EvalSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    truthfulqa_judge: TruthfulQAJudgeSection = field(default_factory=TruthfulQAJudgeSection)
    report: ReportSection = field(default_factory=ReportSection)


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    return load_config(RunConfig, path, overrides)


# ---------------------------------------------------------------------------- systems


@dataclass
class ModelToEvaluate:
    """A model to evaluate: a checkpoint of the pipeline or a runnable baseline."""

    model_id: str
    label: str
    role: str  # checkpoint | baseline
    backend: str
    model_args: dict[str, str]
    apply_chat_template: bool = False
    meta_prompt: str | None = None
    generation_only: bool = False  # API models: no log-likelihoods


def _resolve_path(path: str, what: str) -> Path:
    """A path as given, else ``configs/...`` in the shipped configs (works from any directory and
    from an installed wheel)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        if not p.exists():
            raise UserError(f"{what} {p} does not exist")
        return p
    if p.parts[0] == "configs" and len(p.parts) > 1:
        alt = configs_root().joinpath(*p.parts[1:])
        if alt.exists():
            return alt
    raise UserError(f"{what} {path} does not exist (looked in {Path.cwd()} and {configs_root()})")


def _pipeline_config(cfg: RunConfig):
    path = _resolve_path(cfg.pipeline.config, "pipeline.config") if cfg.pipeline.config else None
    return load_config(PipelineConfig, path, cfg.pipeline.overrides)


def _with_extra(model_args: dict[str, str], extra: str) -> dict[str, str]:
    """``model_args`` plus ``eval.extra_model_args`` (a key given in both is an error, one line)."""
    added = parse_model_args(extra, "eval.extra_model_args")
    for key in added.keys() & model_args.keys():
        raise UserError(f"eval.extra_model_args: {key!r} is already set ({key}={model_args[key]}); drop it from extra_model_args")
    return {**model_args, **added}


def checkpoint_models(cfg: RunConfig, base_model: str, pipeline_dir: Path) -> tuple[list[ModelToEvaluate], list[str]]:
    """The base model and each requested stage's adapter (absent adapters are listed, not fatal)."""
    found, missing = list_checkpoints(pipeline_dir, base_model, cfg.checkpoints)
    systems = [
        ModelToEvaluate(model_id(c.model_args()), c.label, CHECKPOINT, cfg.eval.backend,
                        _with_extra(c.model_args(), cfg.eval.extra_model_args), meta_prompt=cfg.eval.meta_prompt)
        for c in found
    ]
    return systems, missing


def baseline_models(cfg: RunConfig, registry) -> list[ModelToEvaluate]:
    systems = []
    for name in cfg.baselines:
        b = registry.get(name)
        if b.model is None:
            raise UserError(f"baselines: {name!r} has no `model` to run (only answers or paper numbers); list it under judge.opponents or drop it")
        spec = b.model
        args = parse_model_args(spec.model_args, f"baselines: {name}: model_args")
        if not spec.generation_only:
            args = _with_extra(args, cfg.eval.extra_model_args)
        backend = spec.backend or cfg.eval.backend
        # the registry name is the output id: the same weights under another prompt are another system
        systems.append(ModelToEvaluate(name, name, BASELINE, backend, args, spec.apply_chat_template, spec.meta_prompt, spec.generation_only))
    return systems


def _check_unique_ids(systems: list[ModelToEvaluate]) -> None:
    seen: dict[str, ModelToEvaluate] = {}
    for s in systems:
        if s.model_id in seen:
            raise UserError(
                f"baselines: {s.label!r} has the output id {s.model_id!r} of {seen[s.model_id].label!r}; "
                "it is evaluated already, drop it from baselines"
            )
        seen[s.model_id] = s


# ---------------------------------------------------------------------------- eval units


def _eval_key(system: ModelToEvaluate, task: str, cfg: RunConfig, version: Any) -> tuple[str, dict[str, Any]]:
    raw = system.model_args
    resolved = resolve_model_args(raw) if system.backend in LOCAL_BACKENDS else raw
    payload = {
        "backend": system.backend,
        "model_args": {k: str(v) for k, v in resolved.items()},
        "weights": weights_fingerprint(resolved, system.backend) if system.backend in LOCAL_BACKENDS else None,
        "task": task, "task_version": version, "limit": cfg.eval.limit_for(task),
        "meta_prompt": system.meta_prompt, "apply_chat_template": system.apply_chat_template,
        "gen_kwargs": cfg.eval.gen_kwargs.get(task), "seed": cfg.eval.seed,
        **({"gen_preset": _gen_preset(cfg, task)} if _gen_preset(cfg, task) != "paper" else {}),
    }
    return config_hash(payload, EVAL_KEY_VERSION), payload


def plan_eval_units(cfg: RunConfig, systems: list[ModelToEvaluate]) -> list[tuple[ModelToEvaluate, str]]:
    """``(system, task)`` per evaluation; generation-only (API) systems run only the tasks that generate."""
    return [(s, task) for s in systems for task in cfg.eval.tasks if not s.generation_only or benchmark(task).generates]


def _key_matches(unit_dir: Path, key: str) -> bool:
    try:
        return json.loads((unit_dir / RUN_KEY_FILE).read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def eval_reusable(unit_dir: Path, key: str, versions: dict[str, Any]) -> bool:
    """results.json + the same key + results.json recording the tasks' current versions."""
    if not _key_matches(unit_dir, key):
        return False
    try:
        recorded = json.loads((unit_dir / "results.json").read_text()).get("selfalign", {}).get("task_versions", {})
    except (OSError, json.JSONDecodeError):
        return False
    return all(recorded.get(t) == v for t, v in versions.items())


def judge_reusable(unit_dir: Path, key: str) -> bool:
    return (unit_dir / "summary.json").is_file() and _key_matches(unit_dir, key)


def run_eval_unit(system: ModelToEvaluate, task: str, cfg: RunConfig, run_dir: Path, console: Console) -> dict[str, Any]:
    versions = {k: v for k, v in task_versions().items() if k == PREFIX + task or k.startswith(f"{PREFIX}{task}_")}
    key, payload = _eval_key(system, task, cfg, versions.get(PREFIX + task))
    unit_dir = run_dir / "eval" / task / system.model_id
    record = {"model_id": system.model_id, "task": task, "dir": str(unit_dir.relative_to(run_dir)), "key": key}
    if eval_reusable(unit_dir, key, versions):
        console.print(f"[dim]eval {system.label} / {task}: reused ({unit_dir})[/dim]")
        return {**record, "reused": True, "wall_s": 0.0}
    console.print(f"eval {system.label} / {task} (limit {cfg.eval.limit_for(task)})")
    started = time.perf_counter()
    run_eval(EvalConfig(
        model=system.backend, model_args=format_model_args(system.model_args), tasks=[task], output=str(run_dir / "eval" / task),
        limit=cfg.eval.limit_for(task), batch_size=cfg.eval.batch_size, data_dir=cfg.data_dir,
        meta_prompt=system.meta_prompt, apply_chat_template=system.apply_chat_template,
        gen_kwargs=cfg.eval.gen_kwargs.get(task), gen_preset=_gen_preset(cfg, task),
        model_id=system.model_id, seed=cfg.eval.seed,
    ))
    write_json_atomic(unit_dir / RUN_KEY_FILE, {"key": key, "payload": payload})
    return {**record, "reused": False, "wall_s": round(time.perf_counter() - started, 2)}


# ---------------------------------------------------------------------------- judge units


@dataclass
class JudgeUnit:
    system: ModelToEvaluate
    task: str  # the pairwise-judged task whose answers are judged
    opponent: str  # name in the report
    opponent_spec: str  # what run_judge takes as baseline
    answers_dir: Path
    out_dir: Path
    key: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


def _opponent_spec(name: str, registry) -> str:
    """A registry baseline's answers, a recorded set name, or an answer file."""
    if name in registry.baselines and registry.baselines[name].answers:
        return registry.baselines[name].answers
    if name in RECORDED or Path(name).is_file():
        return name

    known = [n for n, b in registry.baselines.items() if b.answers] + list(RECORDED)
    raise unknown_name_error("judge opponent", name, known, "judge.opponents: a baseline with answers, a recorded set or a file")


def _answers_file(answers_dir: Path, task: str) -> Path:

    found = samples_path(answers_dir, task)  # the latest run's
    if not found.is_file():
        raise UserError(f"{answers_dir}: no {task} samples file; rerun the {task} evaluation")
    return found


def plan_judge_units(cfg: RunConfig, systems: list[ModelToEvaluate], run_dir: Path, registry) -> list[JudgeUnit]:
    """The pairwise judge's comparisons. Its reviewer and answer reader are Vicuna-80's
    (harness/judge), and its output dirs do not name the task: one pairwise-judged task per run."""
    units = []
    for task in judged_tasks(cfg.eval.tasks, PAIRWISE_JUDGE):
        for s in systems:
            for opponent in cfg.judge.opponents:
                units.append(JudgeUnit(s, task, opponent, _opponent_spec(opponent, registry), run_dir / "eval" / task / s.model_id,
                                       run_dir / "judge" / f"{s.model_id}_vs_{opponent}"))
        if cfg.judge.head_to_head:
            checkpoints = [s for s in systems if s.role == CHECKPOINT]
            for previous, current in zip(checkpoints, checkpoints[1:], strict=False):
                prev_dir = run_dir / "eval" / task / previous.model_id
                units.append(JudgeUnit(current, task, previous.model_id, str(prev_dir), run_dir / "eval" / task / current.model_id,
                                       run_dir / "judge" / f"{current.model_id}_vs_{previous.model_id}"))
    for u in units:
        opponent_path = Path(u.opponent_spec)
        opponent_hash = sha256_file(_answers_file(opponent_path, u.task)) if opponent_path.is_dir() else u.opponent_spec
        j = cfg.judge
        u.payload = {
            "answers": sha256_file(_answers_file(u.answers_dir, u.task)), "opponent": opponent_hash,
            "judge_model": j.judge_model, "base_url": j.base_url, "max_tokens": j.max_tokens, "orders": j.orders,
            "parse_attempts": j.parse_attempts, "limit": cfg.eval.limit_for(u.task),
        }
        u.key = config_hash(u.payload, JUDGE_KEY_VERSION)
    return units


def run_judge_units(units: list[JudgeUnit], cfg: RunConfig, run_dir: Path, console: Console) -> list[dict[str, Any]]:
    records, todo = [], []
    for u in units:
        record = {"model_id": u.system.model_id, "opponent": u.opponent, "dir": str(u.out_dir.relative_to(run_dir)), "key": u.key}
        if judge_reusable(u.out_dir, u.key):
            console.print(f"[dim]judge {u.system.label} vs {u.opponent}: reused ({u.out_dir})[/dim]")
            records.append({**record, "reused": True, "wall_s": 0.0})
        else:
            todo.append((u, record))
    if not todo:
        return records
    j = cfg.judge
    with contextlib.ExitStack() as stack:
        if j.base_url:
            base_url, model = j.base_url, j.judge_model
        else:
            console.print(f"starting the local judge server ({j.judge_model}) ...")
            stack.enter_context(sigterm_as_exit())
            server = stack.enter_context(serve_local_judge(j.judge_model, run_dir / "judge_server.log", j.server_ready_timeout_s, j.server_threads))

            # an alias stays an alias (run_judge maps it to the served path and records both)
            base_url, model = server.base_url, j.judge_model if j.judge_model in ALIASES else server.request_model
        for u, record in todo:
            console.print(f"judge {u.system.label} vs {u.opponent}")
            started = time.perf_counter()
            summary = run_judge(JudgeConfig(
                answers=str(u.answers_dir), baseline=u.opponent_spec, output=str(u.out_dir), judge_model=model,
                judge_base_url=base_url, api_key_env=j.api_key_env, orders=j.orders, max_tokens=j.max_tokens,
                parse_attempts=j.parse_attempts, concurrency=j.concurrency, timeout_s=j.timeout_s,
                limit=doc_count(u.task, cfg.eval.limit_for(u.task)), data_dir=cfg.data_dir,
            ))
            write_json_atomic(u.out_dir / RUN_KEY_FILE, {"key": u.key, "payload": u.payload})
            records.append({**record, "reused": False, "wall_s": round(time.perf_counter() - started, 2),
                            "n_scored": summary.get("n_scored"), "n_failed": summary.get("n_failed")})
    return records


# ---------------------------------------------------------------------------- TruthfulQA judge units


def truthfulqa_judge_specs(cfg: RunConfig) -> dict[str, str]:
    """The configured judge specs; judges not given are trained once and cached (user cache)."""
    t = cfg.truthfulqa_judge
    specs = {}
    for kind, given in (("truth", t.truth_judge), ("info", t.info_judge)):
        if given:
            specs[kind] = given
            continue
        config = _resolve_path(t.train_config, "truthfulqa_judge.train_config") if t.train_config else None
        specs[kind] = cached_judge_spec(kind, t.base, config, cfg.data_dir)
    return specs


def run_truthfulqa_judge_units(cfg: RunConfig, systems: list[ModelToEvaluate], run_dir: Path, console: Console) -> list[dict[str, Any]]:
    answered = [(task, s) for task in judged_tasks(cfg.eval.tasks, TRUTHFULQA_JUDGE) for s in systems
                if (run_dir / "eval" / task / s.model_id / "results.json").is_file()]
    if not answered:
        return []
    specs = truthfulqa_judge_specs(cfg)
    backend = cfg.truthfulqa_judge.backend
    fingerprints = {kind: resolve_judge(kind, spec, backend).fingerprint for kind, spec in specs.items()}
    records = []
    for task, s in answered:
        answers_dir = run_dir / "eval" / task / s.model_id
        out_dir = run_dir / "judge" / f"{s.model_id}_truthfulqa"
        payload = {"answers": sha256_file(samples_file(answers_dir)), "judges": specs, "fingerprints": fingerprints, "backend": backend}
        key = config_hash(payload, JUDGE_KEY_VERSION)
        record = {"model_id": s.model_id, "dir": str(out_dir.relative_to(run_dir)), "key": key}
        if judge_reusable(out_dir, key):
            console.print(f"[dim]judge truthfulqa {s.label}: reused ({out_dir})[/dim]")
            records.append({**record, "reused": True, "wall_s": 0.0})
            continue
        console.print(f"judge truthfulqa {s.label}")
        started = time.perf_counter()
        summary = run_truthfulqa_judge(TruthfulQAJudgeConfig(
            answers=str(answers_dir), truth_judge=specs["truth"], info_judge=specs["info"], output=str(out_dir),
            judge_backend=backend, batch_size=cfg.eval.batch_size,
        ))
        write_json_atomic(out_dir / RUN_KEY_FILE, {"key": key, "payload": payload})
        records.append({**record, "reused": False, "wall_s": round(time.perf_counter() - started, 2), "n_scored": summary["n_scored"]})
    return records


# ---------------------------------------------------------------------------- the run


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(run_dir / RUN_MANIFEST, RunManifest.model_validate(to_jsonable(manifest)))


def _system_entries(systems: list[ModelToEvaluate], evals: list[dict], judges: list[dict], tqa_judges: list[dict] = ()) -> list[dict[str, Any]]:
    out = []
    for s in systems:
        out.append({
            **dataclasses.asdict(s),
            "model_args": format_model_args(s.model_args),
            "eval_dirs": [e["dir"] for e in evals if e["model_id"] == s.model_id],
            "judge_dirs": {j["opponent"]: j["dir"] for j in judges if j["model_id"] == s.model_id},
            "truthfulqa_judge_dir": next((j["dir"] for j in tqa_judges if j["model_id"] == s.model_id), None),
        })
    return out


def run(cfg: RunConfig, console: Console | None = None, *, pipeline_runner=None) -> dict[str, Any]:
    """Run what is not done and write the report; returns the run manifest (also ``manifest.json``).

    ``pipeline_runner(pipeline_cfg, output_dir, stages, data_dir=...)`` replaces
    ``pipeline.runner.run`` (tests pass fakes).
    """

    run_dir = Path(cfg.output) / cfg.name
    _preflight(cfg, run_dir)
    with output_lock(run_dir, "selfalign run"):
        return _run(cfg, run_dir, console, pipeline_runner)


def _preflight(cfg: RunConfig, run_dir: Path) -> None:
    """The settings used late in a run (judge, generation), checked before the pipeline starts."""
    check_output_dir(run_dir, "output")
    lookup("answer order setting", cfg.judge.orders, ORDER_CHOICES, "judge.orders")
    check_meta_prompt(cfg.eval.meta_prompt, "eval.meta_prompt")
    check_batch_size(cfg.eval.batch_size)
    for task, text in cfg.eval.gen_kwargs.items():
        parse_gen_kwargs(text, f"eval.gen_kwargs.{task}")

    resolve_task_names(list(cfg.eval.limits))  # a misspelt task here would silently get no limit


@dataclass
class _RunState:
    """What the phases of one ``selfalign run`` share: the manifest they extend (rewritten after
    every unit, so an interrupted run shows what finished) and the units done so far."""

    cfg: RunConfig
    run_dir: Path
    console: Console
    manifest: dict[str, Any]
    systems: list[ModelToEvaluate] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    judges: list[dict[str, Any]] = field(default_factory=list)
    tqa_judges: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        self.manifest["systems"] = _system_entries(self.systems, self.evals, self.judges, self.tqa_judges)
        _write_manifest(self.run_dir, self.manifest)

    @contextlib.contextmanager
    def phase(self, name: str, title: str | None = None):
        """Times the phase into ``timings_s[name]``; ``title`` rules the console."""
        if title:
            self.console.rule(title)
        started = time.perf_counter()
        yield
        self.manifest["timings_s"][name] = round(time.perf_counter() - started, 2)


def _check_inputs(cfg: RunConfig):
    """Fail on bad input before any long work; returns the baseline registry and baselines."""
    resolve_task_names(cfg.eval.tasks)
    for task in cfg.eval.tasks:
        benchmark(task)  # known to lm-eval but missing from the registry: say so now
    data.resolve_data_dir(cfg.data_dir)
    for name in cfg.checkpoints:
        checkpoint_label(name)
    registry = load_registry([_resolve_path(f, "baseline_files") for f in cfg.baseline_files])
    baselines = baseline_models(cfg, registry)
    if cfg.judge.enabled:
        for kind in (PAIRWISE_JUDGE, TRUTHFULQA_JUDGE):
            if len(judged := judged_tasks(cfg.eval.tasks, kind)) > 1:
                # Its output directories and summaries are named by system and opponent, not task.
                raise UserError(
                    f"eval.tasks: {', '.join(judged)} are all judged by the {kind} judge, which judges one task "
                    "per run; run them in separate runs (separate --output)"
                )
    if cfg.judge.enabled and judged_tasks(cfg.eval.tasks, PAIRWISE_JUDGE):
        for opponent in cfg.judge.opponents:
            _opponent_spec(opponent, registry)
    return registry, baselines


def _run(cfg: RunConfig, run_dir: Path, console: Console | None, pipeline_runner) -> dict[str, Any]:
    started = time.perf_counter()
    registry, baselines = _check_inputs(cfg)
    pipeline_cfg = _pipeline_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.yaml").write_text(yaml.safe_dump(to_jsonable(cfg), sort_keys=False), encoding="utf-8")
    state = _RunState(cfg, run_dir, console or Console(stderr=True), {
        "kind": "run", "name": cfg.name, "config": to_jsonable(cfg), "timings_s": {}, "provenance": run_provenance(),
    })
    _pipeline_phase(state, pipeline_cfg, pipeline_runner or run_pipeline)
    state.systems += baselines
    _check_unique_ids(state.systems)
    state.save()
    with state.phase("eval", "evaluation"):
        for system, task in plan_eval_units(cfg, state.systems):
            state.evals.append(run_eval_unit(system, task, cfg, run_dir, state.console))
            state.manifest["evals"] = state.evals
            state.save()
    _judge_phases(state, registry)
    if cfg.report.enabled:
        with state.phase("report", "report"):
            outputs = build_report([run_dir], run_dir / "report", ReportOptions(
                title=cfg.report.title or f"SELF-ALIGN run {cfg.name}", include_reported=cfg.report.include_reported,
            ))
            state.manifest["report"] = {k: str(getattr(outputs, k)) for k in ("markdown", "csv", "html", "json")}
    state.manifest["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    state.save()
    return state.manifest


def _pipeline_phase(state: _RunState, pipeline_cfg: PipelineConfig, pipeline_runner) -> None:
    """The pipeline stages not yet done, then the checkpoints they produced (missing ones noted)."""
    cfg = state.cfg
    pipeline_dir = state.run_dir / "pipeline"
    with state.phase("pipeline", "pipeline" if cfg.pipeline.enabled else None):
        if cfg.pipeline.enabled:
            pipeline_manifest = pipeline_runner(pipeline_cfg, pipeline_dir, cfg.pipeline.stages, data_dir=cfg.data_dir)
            state.manifest["pipeline"] = {k: v for k, v in pipeline_manifest.items() if k != "provenance"}
    checkpoints, missing = checkpoint_models(cfg, pipeline_cfg.model.base, pipeline_dir)
    if missing:
        state.manifest["missing_checkpoints"] = missing
        state.console.print(f"[yellow]not evaluated (no checkpoint): {', '.join(missing)}[/yellow]")
    state.systems = checkpoints


def _judge_phases(state: _RunState, registry) -> None:
    """The pairwise judge (Vicuna-80), then TruthfulQA's truth/info judges (trained once and
    cached when not given), each for the tasks of the run that need it."""
    cfg, run_dir = state.cfg, state.run_dir
    with state.phase("judge", None):
        if cfg.judge.enabled and judged_tasks(cfg.eval.tasks, PAIRWISE_JUDGE):
            state.console.rule("judge")
            units = plan_judge_units(cfg, state.systems, run_dir, registry)
            state.judges = run_judge_units(units, cfg, run_dir, state.console)
    state.manifest["judgments"] = state.judges
    state.save()
    if cfg.judge.enabled and judged_tasks(cfg.eval.tasks, TRUTHFULQA_JUDGE):
        with state.phase("judge_truthfulqa", "judge truthfulqa"):
            state.tqa_judges = run_truthfulqa_judge_units(cfg, state.systems, run_dir, state.console)
            state.manifest["truthfulqa_judgments"] = state.tqa_judges
        state.save()


def validate_run_configs() -> list[str]:
    """Every shipped ``configs/run/*.yaml`` loads and names its command (for ``selfalign validate``)."""
    problems = []
    for path in sorted((configs_root() / "run").glob("*.yaml")):
        head = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
        if f"selfalign run --config configs/run/{path.name}" not in head:
            problems.append(f"{path}: the opening comment must give the command (selfalign run --config configs/run/{path.name} ...)")
        try:
            cfg = load_run_config(path)
            for name in cfg.checkpoints:
                checkpoint_label(name)
            if cfg.pipeline.config:
                _resolve_path(cfg.pipeline.config, f"{path}: pipeline.config")
        except UserError as exc:
            problems.append(str(exc))
    return problems

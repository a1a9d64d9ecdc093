"""`selfalign report` on real harness outputs: three tiny "checkpoints" evaluated by `run_eval` and
judged by `run_judge` (scripted judge server), every cell checked against scipy computed here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.common import stats as rstats
from harness.common.run_files import samples_path
from harness.evaluate import EvalConfig, run_eval
from harness.judge.run import JudgeConfig, run_judge
from reports.baselines import load_paper_reported
from reports.build import ReportOptions, build_report
from tests.servers import chat_reply, scripted_servers
from tests.tiny_model import build_tiny_model

LIMIT = 12
VICUNA_LIMIT = 5
CHECKPOINTS = ("ckpt-base", "ckpt-stage3", "ckpt-stage4")
FAILING_QUESTION = 3  # the scripted judge never answers this one parseably
TASKS = ("truthfulqa_mc1", "truthfulqa_mc2", "truthfulqa_tf", "hhh")
CATEGORIES = ("harmless", "helpful", "honest", "other")


def _judge_reply(payload: dict, n: int, failing_text: str):
    """A deterministic but content-dependent verdict, so checkpoints get different outcomes."""
    user = payload["messages"][-1]["content"]
    if failing_text in user:
        return chat_reply("I cannot decide.")
    digest = hashlib.sha256(user.encode()).digest()
    return chat_reply(f"{3 + digest[0] % 6} {3 + digest[1] % 6}\nBoth answers are scored.")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    """eval/<model_id>/ for each fake checkpoint (written by run_eval) and judge/<model_id>_vs_gpt35/."""
    from harness.judge.answers import load_questions

    root = tmp_path_factory.mktemp("report_runs")
    failing_text = load_questions(data_dir)[FAILING_QUESTION].text
    with scripted_servers() as make:
        server = make(lambda payload, n: _judge_reply(payload, n, failing_text))
        for seed, mid in enumerate(CHECKPOINTS):
            model_dir = build_tiny_model(root / "models" / mid, seed=seed)
            common = dict(model_args=f"pretrained={model_dir}", data_dir=str(data_dir), output=str(root / "eval"), batch_size=8, model_id=mid)
            run_eval(EvalConfig(tasks=list(TASKS), limit=LIMIT, **common))
            run_eval(EvalConfig(tasks=["vicuna80"], limit=VICUNA_LIMIT, gen_kwargs="max_gen_toks=8", **{**common, "output": str(root / "vicuna")}))
            run_judge(JudgeConfig(
                answers=str(root / "vicuna" / mid), baseline="gpt35", output=str(root / "judge" / f"{mid}_vs_gpt35"),
                judge_model="scripted", judge_base_url=server.base_url, data_dir=str(data_dir), limit=VICUNA_LIMIT,
                progress=False, max_retries=0,
            ))
    return {"root": root, "eval": root / "eval", "judge": root / "judge"}


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    inputs = [runs["eval"] / mid for mid in CHECKPOINTS] + [runs["judge"]]
    outputs = build_report(inputs, out, ReportOptions(terminal=False))
    rows = list(csv.DictReader(outputs.csv.open(encoding="utf-8")))
    return outputs, rows


# ---------------------------------------------------------------------------- expected values, from the files


def _samples(runs, mid: str, task: str) -> list[dict]:
    path = samples_path(runs["eval"] / mid, task)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _item_scores(runs, mid: str, task: str, metric: str) -> dict[int, float]:
    return {r["doc_id"]: float(r[metric]) for r in _samples(runs, mid, task)}


def _wilson(values) -> tuple[float, float, float, int]:
    k, n = int(sum(values)), len(values)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return k / n, ci.low, ci.high, n


def _cell(rows, table: str, row: str, column: str) -> dict:
    found = [r for r in rows if r["table"] == table and r["row"] == row and r["column"] == column]
    assert len(found) == 1, (table, row, column, len(found))
    return found[0]


def _assert_estimate(cell: dict, value, low, high, n) -> None:
    assert float(cell["value"]) == pytest.approx(value, abs=1e-12)
    assert float(cell["ci_low"]) == pytest.approx(low, abs=1e-12)
    assert float(cell["ci_high"]) == pytest.approx(high, abs=1e-12)
    assert int(cell["n"]) == n


BINARY_COLUMNS = {
    "mc1": ("truthfulqa_mc1", "acc"),
    "tf_all_candidates": ("truthfulqa_tf", "acc_all_candidates"),
    "tf_reference_subset": ("truthfulqa_tf", "acc_reference_subset"),
}


# ---------------------------------------------------------------------------- tests


def test_truthfulqa_cells_match_scipy(runs, report):
    _, rows = report
    for mid in CHECKPOINTS:
        for column, (task, metric) in BINARY_COLUMNS.items():
            cell = _cell(rows, "truthfulqa_mc1", mid, column)
            _assert_estimate(cell, *_wilson(list(_item_scores(runs, mid, task, metric).values())))
            assert int(cell["n_of"]) == 817 and cell["source"] == "measured"
        mc2 = np.array(list(_item_scores(runs, mid, "truthfulqa_mc2", "acc").values()))
        boot = stats.bootstrap((mc2,), np.mean, confidence_level=0.95, n_resamples=rstats.BOOTSTRAP_RESAMPLES,
                               method="percentile", rng=np.random.default_rng(rstats.BOOTSTRAP_SEED))
        _assert_estimate(_cell(rows, "truthfulqa_mc1", mid, "mc2"), mc2.mean(), boot.confidence_interval.low, boot.confidence_interval.high, LIMIT)
    # the results.json numbers agree with the recomputed ones
    results = json.loads((runs["eval"] / CHECKPOINTS[0] / "results.json").read_text())
    assert float(_cell(rows, "truthfulqa_mc1", CHECKPOINTS[0], "mc1")["value"]) == pytest.approx(results["results"]["selfalign_truthfulqa_mc1"]["acc,none"])


def test_hhh_cells_match_scipy(runs, report):
    _, rows = report
    for mid in CHECKPOINTS:
        pooled = []
        for cat in CATEGORIES:
            values = list(_item_scores(runs, mid, f"hhh_{cat}", "acc").values())
            pooled += values
            _assert_estimate(_cell(rows, "hhh", mid, cat), *_wilson(values))
        cell = _cell(rows, "hhh", mid, "overall")
        _assert_estimate(cell, *_wilson(pooled))
        assert int(cell["n_of"]) == 221
        results = json.loads((runs["eval"] / mid / "results.json").read_text())
        assert float(cell["value"]) == pytest.approx(results["results"]["selfalign_hhh"]["acc,none"])


def test_reported_rows_are_the_papers_numbers_and_bars_say_not_reported(report):
    _, rows = report
    paper = load_paper_reported()
    for system, values in paper.tables["hhh"].rows.items():
        for column in ("harmless", "helpful", "honest", "other", "overall"):
            cell = _cell(rows, "hhh", system, column)
            assert cell["source"] == "reported"
            if column in values:
                assert float(cell["value"]) == values[column]
            else:
                assert cell["text"] == "not reported" and cell["value"] == ""
    assert float(_cell(rows, "truthfulqa_mc1", "Dromedary-65B (variant not stated)", "tf_reference_subset")["value"]) == 0.69
    llama = _cell(rows, "truthfulqa_mc1", "LLaMA-65B", "mc1")
    assert (llama["source"], llama["text"]) == ("not reported", "not reported")
    vicuna_reported = [r for r in rows if r["table"] == "vicuna80" and r["source"] != "measured"]
    assert vicuna_reported and all(r["value"] == "" for r in vicuna_reported if r["source"] == "not reported")


def _judge_summary(runs, mid: str) -> dict:
    return json.loads((runs["judge"] / f"{mid}_vs_gpt35" / "summary.json").read_text())


def _judgment_pairs(runs, mid: str) -> dict[int, tuple[float, float]]:
    """Per question: mean model and baseline score over both orders, only where both orders are ok."""
    by_q: dict[int, list[dict]] = {}
    for line in (runs["judge"] / f"{mid}_vs_gpt35" / "judgments.jsonl").read_text().splitlines():
        j = json.loads(line)
        by_q.setdefault(j["question_id"], []).append(j)
    pairs = {}
    for qid, js in by_q.items():
        if len(js) == 2 and all(j["status"] == "ok" for j in js):
            pairs[qid] = (np.mean([j["scores"]["model"] for j in js]), np.mean([j["scores"]["baseline"] for j in js]))
    return pairs


def test_vicuna_cells_match_scipy_and_count_failures(runs, report):
    _, rows = report
    for mid in CHECKPOINTS:
        pairs = _judgment_pairs(runs, mid)
        assert FAILING_QUESTION not in pairs and len(pairs) == VICUNA_LIMIT - 1
        model = np.array([m for m, _ in pairs.values()])
        base = np.array([b for _, b in pairs.values()])
        boot = stats.bootstrap(
            (model, base), lambda m, b, axis=-1: m.sum(axis=axis) / b.sum(axis=axis), paired=True, vectorized=True,
            confidence_level=0.95, n_resamples=rstats.BOOTSTRAP_RESAMPLES, method="percentile",
            rng=np.random.default_rng(rstats.BOOTSTRAP_SEED),
        )
        label = f"{mid} vs gpt35"
        cell = _cell(rows, "vicuna80", label, "relative_score")
        _assert_estimate(cell, model.sum() / base.sum(), boot.confidence_interval.low, boot.confidence_interval.high, len(pairs))
        assert int(cell["n_failed"]) == 1
        wins, ties, losses = int((model > base).sum()), int((model == base).sum()), int((model < base).sum())
        for column, expected in (("wins", wins), ("ties", ties), ("losses", losses)):
            assert float(_cell(rows, "vicuna80", label, column)["value"]) == expected
        p_cell = _cell(rows, "vicuna80", label, "sign_test_p")
        if wins + losses:
            assert float(p_cell["value"]) == pytest.approx(stats.binomtest(wins, wins + losses, 0.5).pvalue)
        # and they agree with the judge's own summary
        summary = _judge_summary(runs, mid)
        assert float(cell["value"]) == pytest.approx(summary["relative_score"])
        assert (wins, ties, losses) == (summary["wins"], summary["ties"], summary["losses"])


def test_paired_tests_between_consecutive_checkpoints_match_scipy(runs, report):
    _, rows = report
    for a, b in zip(CHECKPOINTS, CHECKPOINTS[1:], strict=False):
        table = f"paired:{a}->{b}"
        for column, (task, metric) in BINARY_COLUMNS.items():
            sa, sb = _item_scores(runs, a, task, metric), _item_scores(runs, b, task, metric)
            a_only = sum(1 for i in sa if sa[i] == 1 and sb[i] == 0)
            b_only = sum(1 for i in sa if sa[i] == 0 and sb[i] == 1)
            label = next(r["row"] for r in rows if r["table"] == table and r["row"].startswith("TruthfulQA") and metric_label_matches(r["row"], column))
            assert int(float(_cell(rows, table, label, "a_better")["value"])) == a_only
            assert int(float(_cell(rows, table, label, "b_better")["value"])) == b_only
            assert int(float(_cell(rows, table, label, "n_pairs")["value"])) == LIMIT
            p = _cell(rows, table, label, "p_value")
            if a_only + b_only:
                assert float(p["value"]) == pytest.approx(stats.binomtest(b_only, a_only + b_only, 0.5).pvalue)
            else:
                assert p["text"] == "no discordant items"
        # HHH overall: McNemar over all items of all categories
        pooled_a, pooled_b = {}, {}
        for cat in CATEGORIES:
            pooled_a.update({(cat, i): v for i, v in _item_scores(runs, a, f"hhh_{cat}", "acc").items()})
            pooled_b.update({(cat, i): v for i, v in _item_scores(runs, b, f"hhh_{cat}", "acc").items()})
        a_only = sum(1 for k in pooled_a if pooled_a[k] == 1 and pooled_b[k] == 0)
        b_only = sum(1 for k in pooled_a if pooled_a[k] == 0 and pooled_b[k] == 1)
        assert int(float(_cell(rows, table, "HHH overall", "n_pairs")["value"])) == 4 * LIMIT
        if a_only + b_only:
            assert float(_cell(rows, table, "HHH overall", "p_value")["value"]) == pytest.approx(stats.binomtest(b_only, a_only + b_only).pvalue)
        assert float(_cell(rows, table, "HHH overall", "delta")["value"]) == pytest.approx((b_only - a_only) / (4 * LIMIT))
        # Vicuna: sign test on per-question outcomes (win > tie > loss), failed questions excluded
        oa = {q: np.sign(m - s) for q, (m, s) in _judgment_pairs(runs, a).items()}
        ob = {q: np.sign(m - s) for q, (m, s) in _judgment_pairs(runs, b).items()}
        better_b = sum(1 for q in oa if ob[q] > oa[q])
        better_a = sum(1 for q in oa if ob[q] < oa[q])
        label = "Vicuna-80 outcome vs gpt35"
        assert int(float(_cell(rows, table, label, "b_better")["value"])) == better_b
        assert int(float(_cell(rows, table, label, "a_better")["value"])) == better_a
        if better_a + better_b:
            assert float(_cell(rows, table, label, "p_value")["value"]) == pytest.approx(stats.binomtest(better_b, better_a + better_b).pvalue)


def metric_label_matches(label: str, column: str) -> bool:
    return {
        "mc1": "MC1 (lm-eval standard)",
        "tf_all_candidates": "all candidates",
        "tf_reference_subset": "reference script",
    }[column] in label


def test_markdown_and_html_show_every_measured_cell(report):
    outputs, rows = report
    markdown = outputs.markdown.read_text()
    html = outputs.html.read_text()
    for r in rows:
        if r["source"] != "measured" or r["value"] == "" or r["table"].startswith("paired"):
            continue
        if r["ci_low"]:
            interval = f"[{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]"
            assert f"{float(r['value']):.3f} {interval}" in markdown, (r["table"], r["row"], r["column"])
            assert interval in html
    assert "| **measured** |" in markdown and "| reported |" in markdown and "| not reported |" in markdown
    assert markdown.count("### Paired tests") == 2
    for name in ("progression", "hhh_categories", "vicuna_outcomes"):
        png = (outputs.directory / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and f'data-figure="{name}"' in html
    assert "src=\"http" not in html and "<link" not in html  # self-contained


def test_report_cli_one_line_error_on_a_bad_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(tmp_path), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "no results.json" in proc.stderr


def test_mixed_up_samples_are_refused(runs, tmp_path):
    import shutil

    from harness.common.errors import UserError

    broken = tmp_path / CHECKPOINTS[0]
    shutil.copytree(runs["eval"] / CHECKPOINTS[0], broken)
    other = samples_path(runs["eval"] / CHECKPOINTS[1], "truthfulqa_tf")
    if _item_scores(runs, CHECKPOINTS[0], "truthfulqa_tf", "acc_all_candidates") == _item_scores(runs, CHECKPOINTS[1], "truthfulqa_tf", "acc_all_candidates"):
        pytest.skip("the two tiny models happen to agree on every item")
    shutil.copy(other, samples_path(broken, "truthfulqa_tf"))
    with pytest.raises(UserError, match="samples come from another run"):
        build_report([broken], tmp_path / "out", ReportOptions(terminal=False))


# ---------------------------------------------------------------------------- browser


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("needs Debian chromium at /usr/bin/chromium (apt-get install -y chromium)")
    outputs, rows = report
    url = outputs.html.resolve().as_uri()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout
    # the page's own script ran after load and found every embedded image decoded
    n_images = dom.count("<img ")
    assert n_images == 3 and f'data-images-ok="{n_images}/{n_images}"' in dom
    for table in ("summary", "truthfulqa_mc1", "hhh", "vicuna80"):
        assert f'data-table="{table}"' in dom
    assert dom.count("<tr class=\"measured\"") >= len(CHECKPOINTS) * 4
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={screenshot}", "--window-size=1280,2000", url],
        capture_output=True, timeout=120, check=True,
    )
    data = screenshot.read_bytes()
    assert _png_size(data) == (1280, 2000) and len(data) > 50_000  # a blank page compresses to a few KB
    print(f"screenshot: {screenshot}")


def test_intervals_are_valid_everywhere(report):
    _, rows = report
    for r in rows:
        if r["ci_low"] and r["value"]:
            low, value, high = float(r["ci_low"]), float(r["value"]), float(r["ci_high"])
            assert low <= value + 1e-12 and value <= high + 1e-12 and not math.isnan(low)


def test_the_report_names_the_vicuna_generation_preset(tmp_path):
    from reports.collect import System, TaskResult, prompt_label

    system = System("m", "m")
    system.tasks["hhh"] = TaskResult("hhh", {}, 1, 1, 1.1, tmp_path, {"prompt_format": "plain+dromedary:verbose"})
    assert system.describe()["gen_preset"] is None and prompt_label(system.describe()) == "plain+dromedary:verbose"
    prov = {"prompt_format": "plain+dromedary:verbose", "gen_preset": "reference_demo"}
    system.tasks["vicuna80"] = TaskResult("vicuna80", {}, 4, 80, 2.0, tmp_path, prov)
    assert prompt_label(system.describe()) == "plain+dromedary:verbose; vicuna80 preset reference_demo"
    # results.json written before presets existed: those answers came from the paper's settings
    system.tasks["vicuna80"] = TaskResult("vicuna80", {}, 4, 80, 1.0, tmp_path, {"prompt_format": "plain"})
    assert system.describe()["gen_preset"] == "paper"

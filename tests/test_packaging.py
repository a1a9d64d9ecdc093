"""A non-editable install works: the wheel carries every task file and shipped config, and the CLI
runs from a directory outside the checkout. Shipped configs resolve by name as well as by path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.common.errors import UserError
from harness.common.shipped_configs import configs_root, resolve_config

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".venv*", "shared")


def test_shipped_configs_resolve_by_name_and_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: relative configs/... paths still work
    assert resolve_config("demo", "run") == configs_root() / "run" / "demo.yaml"
    assert resolve_config("paper.yaml", "pipeline") == configs_root() / "pipeline" / "paper.yaml"
    assert resolve_config("configs/pipeline/demo.yaml", "pipeline") == configs_root() / "pipeline" / "demo.yaml"
    mine = tmp_path / "demo"  # a local file of the same name wins over the shipped one
    mine.write_text("name: mine\n")
    assert resolve_config("demo", "run").resolve() == mine
    with pytest.raises(UserError, match="did you mean 'demo'"):
        resolve_config("dem", "pipeline")
    with pytest.raises(UserError, match="no such file"):
        resolve_config("nowhere/x.yaml", "run")


def _wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)  # builds write build/ and *.egg-info beside the source
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("selfalign-*.whl")
    return wheel


def test_wheel_carries_every_task_file_and_config(tmp_path):
    names = set(zipfile.ZipFile(_wheel(tmp_path)).namelist())
    tracked = [p.relative_to(REPO).as_posix() for p in (REPO / "tasks").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert "tasks/hhh/_hhh_template_yaml" in tracked
    missing = [t for t in tracked if t not in names]
    configs = [p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*") if p.is_file()]
    missing += [c for c in configs if f"selfalign_configs/{c}" not in names]
    assert configs and not missing, missing
    assert "harness/data_manifest.json" in names


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path, data_dir, tiny_model_dir):
    """pip wheel -> fresh venv (system site-packages, --no-deps: nothing downloaded) -> the CLI from /tmp."""
    wheel = _wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SELFALIGN_DATA_DIR"] = str(data_dir)

    def selfalign(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(venv / "bin" / "selfalign"), *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"selfalign {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    where = subprocess.run([str(py), "-c", "import harness, tasks; print(harness.__file__, tasks.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where and str(venv) in where, where  # the installed copy, not the checkout

    assert "selfalign_hhh_helpful" in selfalign("validate").stdout
    listed = selfalign("ls", "tasks").stdout
    assert "hhh_helpful" in listed and "truthfulqa_tf" in listed
    assert "gpt35" in selfalign("ls", "baselines").stdout
    selfalign("pipeline", "run", "--config", "demo", "--output", "out", "--stages", "1",
              "--set", f"model.base={tiny_model_dir}",
              "--set", "stage1.self_instruct.max_new_tokens=32",
              "--set", "stage1.tgrt.topic_max_new_tokens=8", "--set", "stage1.tgrt.question_max_new_tokens=16")
    manifest = json.loads(next((elsewhere / "out").glob("01_*/manifest.json")).read_text())
    assert manifest["status"] == "complete", manifest.get("status")

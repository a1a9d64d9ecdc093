"""A local OpenAI-compatible judge for ``selfalign run``: ``transformers serve`` started and always stopped.

The server is ready when a one-token chat completion succeeds (``/health`` answers before the
model is loaded; the first real request would then pay the load). It runs in its own process
group on 127.0.0.1 and is terminated, then killed, on normal exit, errors, KeyboardInterrupt and
SIGTERM (``selfalign run`` turns SIGTERM into SystemExit while a server is up).
(``tests/servers.py`` has the test-side twin; this one is library code with one-line errors.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.common.errors import UserError
from harness.models import resolve_pretrained


@dataclass(frozen=True)
class LocalJudge:
    base_url: str  # http://127.0.0.1:<port>/v1
    request_model: str  # the served directory: the `model` field requests must carry
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_chat(port: int, model: str, timeout_s: float) -> bool:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status == 200 and bool(json.loads(resp.read()).get("choices"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(t.strip() for t in tail)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own children too
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@contextlib.contextmanager
def serve_local_judge(model: str, log_path: Path, ready_timeout_s: float = 180.0, threads: int | None = None) -> Iterator[LocalJudge]:
    """``transformers serve`` for ``model`` (alias, HF directory or .gguf) on a free loopback port."""
    model_dir = str(resolve_pretrained(model))
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    cmd = [str(cli) if cli.exists() else "transformers", "serve", model_dir, "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except FileNotFoundError:
            raise UserError("`transformers serve` is not installed; run: pip install 'transformers[serving]'") from None
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not _answers_chat(port, model_dir, timeout_s=max(1.0, min(60.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    raise UserError(f"judge server for {model} exited with status {proc.returncode}: {_log_tail(log_path)} (log: {log_path})")
                if time.monotonic() > deadline:
                    raise UserError(f"judge server for {model} did not answer within {ready_timeout_s:.0f} s (log: {log_path}); raise judge.server_ready_timeout_s")
                time.sleep(1.0)
            yield LocalJudge(f"http://127.0.0.1:{port}/v1", model_dir, log_path)
        finally:
            _stop(proc)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Let SIGTERM unwind the stack (so ``finally`` blocks stop servers); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

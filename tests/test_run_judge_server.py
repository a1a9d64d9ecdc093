"""The local judge server of `selfalign run`: ready only when it answers, always stopped (also on errors)."""

from __future__ import annotations

import socket

import pytest

from harness.common.errors import UserError
from orchestration.judge_server import serve_local_judge


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.server
def test_server_answers_then_is_stopped_even_on_error(tiny_model_dir, tmp_path):
    from openai import OpenAI

    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="boom"):
        with serve_local_judge(str(tiny_model_dir), log, ready_timeout_s=120, threads=1) as judge:
            port = int(judge.base_url.rsplit(":", 1)[1].split("/")[0])
            assert judge.request_model == str(tiny_model_dir.resolve())
            client = OpenAI(base_url=judge.base_url, api_key="EMPTY")
            reply = client.chat.completions.create(
                model=judge.request_model, messages=[{"role": "user", "content": "Rate: 1 2"}], max_tokens=3,
            )
            assert reply.choices and reply.choices[0].message.content is not None
            raise RuntimeError("boom")  # an error inside the run must not leave the server behind
    assert not _port_open(port)


@pytest.mark.server
def test_a_server_that_cannot_start_is_one_line(tmp_path):
    broken = tmp_path / "not_a_model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(UserError) as info:
        with serve_local_judge(str(broken), tmp_path / "server.log", ready_timeout_s=60):
            pass
    message = str(info.value)
    assert "\n" not in message and ("exited" in message or "did not answer" in message) and "server.log" in message

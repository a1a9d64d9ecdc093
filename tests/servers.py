"""Local OpenAI-compatible servers for tests, on 127.0.0.1 only, always shut down.

* ``ScriptedServer``: an in-process HTTP server whose chat-completion replies (or HTTP errors)
  come from a Python function; it records every request. Milliseconds to start; for the
  client's retry, cache and concurrency behaviour.
* ``transformers_serve``: the real thing, ``transformers serve <model dir>`` in a subprocess
  (the ``server`` marker); ready in ~8 s with SmolLM2-135M, polled on ``/health`` with a
  bounded timeout, terminated (then killed) on exit.

Both are context managers; a test module wraps them in a three-line fixture.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from orchestration.judge_server import LocalJudge, serve_local_judge

# (status, body, extra headers): a dict body is sent as JSON, a str body as it is (HTML, garbage,
# malformed JSON), with the Content-Type given in the headers (default application/json).
Response = tuple[int, "dict[str, Any] | str", dict[str, str]]


@dataclass(frozen=True)
class Hang:
    """Answer nothing for ``seconds`` (past the client's timeout), then a valid-looking 200."""

    seconds: float


class Reset:
    """Close the connection without an answer (the client sees a reset / remote disconnect)."""


def raw_body(text: str, status: int = 200, content_type: str = "application/json") -> Response:
    return status, text, {"Content-Type": content_type}


def chat_reply(content: str | None, prompt_tokens: int = 10, completion_tokens: int = 5, model: str = "scripted") -> Response:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }
    return 200, body, {}


def http_error(status: int, message: str = "scripted error", headers: dict[str, str] | None = None) -> Response:
    return status, {"error": {"message": message, "type": "test", "code": status}}, headers or {}


@dataclass
class ScriptedServer:
    """Answers POST /v1/chat/completions with ``respond(request_json, n)`` (n: 0-based request count)."""

    respond: Callable[[dict[str, Any], int], Response | Hang | Reset]
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: dict[str, Any] | str, headers: dict[str, str]) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # the client's reachability probe
                self._send(200, {"object": "list", "data": []}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    n = len(server.requests)
                    server.requests.append({"path": self.path, "json": payload, "auth": self.headers.get("Authorization")})
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    result = server.respond(payload, n)
                    if isinstance(result, Hang):
                        time.sleep(result.seconds)
                        result = chat_reply("10 10\ntoo late")
                finally:
                    with server._lock:
                        server._in_flight -= 1
                if isinstance(result, Reset):
                    import socket
                    import struct

                    # SO_LINGER 0: close with RST, as a crashed server or a proxy dropping the request
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                with contextlib.suppress(OSError):  # the client may have given up (timeout)
                    self._send(*result)

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that gives up mid-response (the judge aborting a run) is expected here;
                # the default prints a traceback into the stderr that tests assert on.
                pass

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def scripted_servers() -> Iterator[Callable[..., ScriptedServer]]:
    """A factory ``make(respond, delay_s=0)``; every server it made is closed on exit."""
    made: list[ScriptedServer] = []

    def make(respond: Callable[[dict[str, Any], int], Any], delay_s: float = 0.0) -> ScriptedServer:
        server = ScriptedServer(respond, delay_s)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


@contextlib.contextmanager
def smollm2_serve(log_dir: Path) -> Iterator[LocalJudge]:
    """SmolLM2-135M-Instruct behind ``transformers serve``: the library helper ``selfalign run`` uses."""
    with serve_local_judge("smollm2-135m-instruct", log_dir / "transformers_serve.log", threads=1) as server:
        yield server

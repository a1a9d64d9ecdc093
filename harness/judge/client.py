"""The one client for every judge call: any OpenAI-compatible chat endpoint, cached and retried.

* at most ``concurrency`` requests in flight;
* 408/409/429, 5xx, timeouts, connection errors and 200s without a usable completion (malformed
  JSON, an HTML or garbage body, no choices, an empty message) are retried with exponential
  backoff and jitter (honouring ``Retry-After``), at most ``max_retries`` times, then returned
  as an error with a short reason tag;
* 405 and 501 (no chat-completions endpoint at that URL) abort the run at once; any other 4xx
  is not retried, and while no request has succeeded it aborts the run (the judge model, URL
  or key is wrong and every request would fail the same way);
* only usable completions are cached, so a transient bad reply never poisons a rerun;
* replies come from ``ReplyCache`` when present; identical requests in flight are sent once;
* the server is probed once, before the first request that must really be sent, so an
  unreachable URL fails in seconds and a fully cached rerun needs no server at all.

The API key is handed in by the caller (read from the environment) and never written anywhere:
error texts are masked (the key, bearer tokens, ``sk-`` keys) before they leave the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

import openai

from harness.common.redact import mask_secrets
from harness.judge.cache import ReplyCache, request_key


class FatalJudgeError(Exception):
    """The judge cannot be used at all (unreachable, or it refuses the very first requests)."""


@dataclass(frozen=True)
class Reply:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    cached: bool
    error: str | None = None  # set when no reply could be had (after retries)
    http_attempts: int = 0  # requests sent for this reply in this run
    reason: str | None = None  # short failure tag (http_500, timeout, no_choices, ...) when error is set

    @classmethod
    def from_cache(cls, entry: dict[str, Any]) -> Reply:
        return cls(
            text=entry.get("reply"),
            finish_reason=entry.get("finish_reason"),
            prompt_tokens=entry.get("prompt_tokens"),
            completion_tokens=entry.get("completion_tokens"),
            latency_s=float(entry.get("latency_s") or 0.0),
            cached=True,
        )


@dataclass
class ClientStats:
    n_requests: int = 0  # HTTP requests sent in this run (retries included)
    n_api_errors: int = 0  # of those, the ones that failed
    n_ok: int = 0
    n_cache_hits: int = 0
    first_sent: float | None = None
    last_done: float | None = None

    @property
    def request_seconds(self) -> float:
        if self.first_sent is None or self.last_done is None:
            return 0.0
        return self.last_done - self.first_sent


# A server that does not implement POST /chat/completions: no retry can help.
NOT_AN_OPENAI_SERVER = (405, 501)


def _is_transient(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


@dataclass
class JudgeClient:
    base_url: str
    model: str
    api_key: str
    cache: ReplyCache
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    probe_timeout_s: float = 5.0
    # cache keys whose stored replies are ignored and asked again (``--retry-failed``)
    refresh_keys: frozenset[str] = frozenset()
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        # max_retries=0: retries are ours, so that every request sent is counted and bounded.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=self.timeout_s
        )
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._probe_lock = asyncio.Lock()
        self._reachable = False
        self._inflight: dict[tuple[str, int], asyncio.Future[Reply]] = {}
        self._refreshed: set[tuple[str, int]] = set()

    async def aclose(self) -> None:
        await self._client.close()

    async def reply(
        self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int, attempt: int = 0
    ) -> tuple[str, Reply]:
        """(cache key, reply) for the ``attempt``-th reply to this request."""
        key = request_key(self.model, messages, temperature, max_tokens)
        stale = key in self.refresh_keys and (key, attempt) not in self._refreshed
        entry = None if stale else self.cache.get(key, attempt)
        if entry is not None:
            self.stats.n_cache_hits += 1
            return key, Reply.from_cache(entry)
        pending = self._inflight.get((key, attempt))
        if pending is not None:
            shared = await asyncio.shield(pending)
            self.stats.n_cache_hits += 1
            return key, replace(shared, cached=True, http_attempts=0)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._inflight[(key, attempt)] = future
        if stale:
            self._refreshed.add((key, attempt))
        try:
            result = await self._send(messages, temperature, max_tokens)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._inflight.pop((key, attempt), None)
        if result.error is None and result.text:  # only usable completions: a bad reply must not stick
            self.cache.put(
                key,
                attempt,
                {
                    "model": self.model,
                    "reply": result.text,
                    "finish_reason": result.finish_reason,
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "latency_s": round(result.latency_s, 4),
                    "created": time.time(),
                },
            )
        future.set_result(result)
        return key, result

    async def _probe(self) -> None:
        """Fail fast when nothing accepts connections at the URL (a TCP connect, no credentials)."""
        async with self._probe_lock:
            if self._reachable:
                return
            url = urlparse(self.base_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise FatalJudgeError(f"judge URL {self.base_url!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), self.probe_timeout_s)
            except (OSError, asyncio.TimeoutError) as exc:
                reason = str(exc) or f"no answer within {self.probe_timeout_s:g} s"
                raise FatalJudgeError(
                    f"judge server {self.base_url} is unreachable ({type(exc).__name__}: {reason}); "
                    "start it or fix --judge-base-url"
                ) from None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._reachable = True

    def _backoff(self, retry: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self.max_backoff_s, self.backoff_s * 2**retry) * (0.5 + random.random())

    async def _send(self, messages: list[dict[str, str]], temperature: float, max_tokens: int) -> Reply:
        await self._probe()
        error, reason = "no request sent", "not_sent"
        for http_attempt in range(self.max_retries + 1):
            retry_after: str | None = None
            async with self._semaphore:
                start = time.monotonic()
                if self.stats.first_sent is None:
                    self.stats.first_sent = start
                self.stats.n_requests += 1
                try:
                    # The raw body: a 200 can still carry HTML, garbage or JSON without a
                    # completion, which the typed parse would turn into a crash or a None.
                    raw = await self._client.chat.completions.with_raw_response.create(
                        model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens
                    )
                    body = raw.http_response.text
                except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                    reason = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"
                    error = self._mask(f"{type(exc).__name__}: {exc}")
                except openai.APIStatusError as exc:
                    reason = f"http_{exc.status_code}"
                    error = self._mask(f"HTTP {exc.status_code}: {_status_message(exc)}")
                    retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
                    if exc.status_code in NOT_AN_OPENAI_SERVER or not _is_transient(exc.status_code):
                        self.stats.n_api_errors += 1
                        self.stats.last_done = time.monotonic()
                        if exc.status_code in NOT_AN_OPENAI_SERVER or self.stats.n_ok == 0:
                            raise FatalJudgeError(
                                f"judge {self.model!r} at {self.base_url} refused the request ({error}); "
                                "check --judge-model, --judge-base-url (an OpenAI-compatible URL, usually ending in /v1) and the API key"
                            ) from None
                        return Reply(None, None, None, None, time.monotonic() - start, False, error, http_attempt + 1, reason)
                except openai.OpenAIError as exc:  # anything else the client raises: a fault, not a crash
                    reason, error = "client_error", self._mask(f"{type(exc).__name__}: {exc}")
                else:
                    done = time.monotonic()
                    completion = parse_completion(body)
                    if completion.reason is None:
                        self.stats.n_ok += 1
                        self.stats.last_done = done
                        return Reply(
                            text=completion.text,
                            finish_reason=completion.finish_reason,
                            prompt_tokens=completion.prompt_tokens,
                            completion_tokens=completion.completion_tokens,
                            latency_s=done - start,
                            cached=False,
                            http_attempts=http_attempt + 1,
                        )
                    reason, error = completion.reason, self._mask(f"HTTP {raw.http_response.status_code}: {completion.error}")
                self.stats.n_api_errors += 1
                self.stats.last_done = time.monotonic()
            if http_attempt < self.max_retries:
                await asyncio.sleep(self._backoff(http_attempt, retry_after))
        return Reply(
            None, None, None, None, 0.0, False, f"{error} (gave up after {self.max_retries + 1} requests)", self.max_retries + 1, reason
        )

    def _mask(self, text: str) -> str:
        return mask_secrets(text, [self.api_key] if self.api_key != "EMPTY" else []) or ""


@dataclass(frozen=True)
class Completion:
    """What a 200 body holds: a usable completion (``reason`` None) or why it is not one."""

    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reason: str | None = None  # failure tag for the summary's tally
    error: str | None = None


def parse_completion(body: str) -> Completion:
    """Read a chat-completion body defensively: every malformed shape is a named fault."""
    try:
        data = json.loads(body)
    except ValueError:
        stripped = body.lstrip()[:1]
        if stripped == "<":
            return Completion(reason="html_body", error=f"an HTML page instead of JSON ({_snippet(body)})")
        if stripped in ("{", "["):
            return Completion(reason="malformed_json", error=f"malformed JSON ({_snippet(body)})")
        return Completion(reason="not_json", error=f"a body that is not JSON ({_snippet(body)})")
    if not isinstance(data, dict):
        return Completion(reason="malformed_json", error=f"JSON that is not an object ({_snippet(body)})")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return Completion(reason="no_choices", error="a reply without choices")
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        return Completion(reason="empty_message", error="a reply whose message is empty")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        text=content,
        finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _snippet(body: str) -> str:
    text = " ".join(body.split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(detail, dict):
            detail = detail.get("message")
        if detail:
            return str(detail)[:200]
    return str(getattr(exc, "message", exc))[:200]

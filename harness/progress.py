"""A rich progress bar around any lm-eval model (hf, selfalign-hf, vllm, API backends).

lm-eval reports progress with one tqdm bar per request type inside each backend; this wrapper
feeds the backend its requests in chunks instead and advances one rich bar across the whole
run, so every backend gets the same display. Chunks are large (a twentieth of the run, at least
64 requests) so that backends still sort and batch effectively within each one.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.model import LM
from rich.progress import Progress

from harness.common.progress_bar import progress_bar

_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def make_progress() -> Progress:
    return progress_bar(extra="{task.fields[rate]}")


class ProgressLM(LM):
    """Delegates everything to ``inner``; the three request methods run in chunks with a bar."""

    def __init__(self, inner: LM, progress: Progress, min_chunk: int = 64, n_chunks: int = 20):
        super().__init__()
        self.inner = inner
        self.progress = progress
        self.min_chunk = min_chunk
        self.n_chunks = n_chunks

    def __getattr__(self, name: str) -> Any:  # only called for attributes not found here
        return getattr(self.__dict__["inner"], name)

    def _run(self, method: str, requests: Sequence[Any]) -> list[Any]:
        fn: Callable = getattr(self.inner, method)
        kwargs = {"disable_tqdm": True} if "disable_tqdm" in inspect.signature(fn).parameters else {}
        total = len(requests)
        if total == 0:
            return []
        chunk = max(self.min_chunk, math.ceil(total / self.n_chunks))
        bar = self.progress.add_task(f"{method} requests", total=total, rate="")
        out: list[Any] = []
        start = time.perf_counter()
        for i in range(0, total, chunk):
            out.extend(fn(list(requests[i : i + chunk]), **kwargs))
            done = min(i + chunk, total)
            rate = done / max(time.perf_counter() - start, 1e-9)
            self.progress.update(bar, completed=done, rate=f"{rate:.2f} req/s")
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._run("loglikelihood", requests)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._run("loglikelihood_rolling", requests)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._run("generate_until", requests)

    # Attributes the LM base class defines itself, so __getattr__ would never forward them.
    def apply_chat_template(self, *args: Any, **kwargs: Any):
        return self.inner.apply_chat_template(*args, **kwargs)

    def chat_template(self, *args: Any, **kwargs: Any):
        return self.inner.chat_template(*args, **kwargs)

    @property
    def tokenizer_name(self) -> str:
        return self.inner.tokenizer_name

    @property
    def device(self):
        return self.inner.device

    @property
    def rank(self) -> int:
        return self.inner.rank

    @property
    def world_size(self) -> int:
        return self.inner.world_size

    def all_gather(self, tensor):
        return self.inner.all_gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        return self.inner.gather_object(obj, dst)

    def barrier(self) -> None:
        return self.inner.barrier()

    def set_cache_hook(self, cache_hook) -> None:
        self.inner.set_cache_hook(cache_hook)

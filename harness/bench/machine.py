"""What this machine can do: the fp32 matmul rate and the memory read bandwidth that floors are
measured against."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import torch

from harness.backends.onednn_linears import available


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a ``size``³ fp32 matmul with torch's current thread count.

    Best-of, because the floor should be the machine's attainable rate, not one disturbed by a
    neighbour's burst on a shared CPU; and the best of MKL's ``torch.mm`` and oneDNN with a
    prepacked weight (what our backends use), which on AMD CPUs is about twice as fast.
    """
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    products = [lambda: torch.mm(a, b)]
    if available():
        packed = torch.ops.mkldnn._reorder_linear_weight(b, size)
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
    best = float("inf")
    for product in products:
        product()  # warm-up: thread pool, allocator
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def memory_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Best-of-``repeats`` GB/s of reading a ``megabytes`` fp32 tensor (a sum, all torch threads).

    Reading is what a decode step does with the weights and the KV cache. Best-of for the same
    reason as the matmul rate: the attainable rate, not one a neighbour's burst disturbed. The
    tensor is far larger than the caches, so this is DRAM bandwidth.
    """
    a = torch.ones(megabytes * 2**20 // 4)
    a.sum()  # warm-up: page faults, thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - start)
    return a.numel() * 4 / best / 1e9


def machine_info() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.is_available(),
    }


@dataclass
class Clock:
    """Wall and process-CPU seconds accumulated over the chunks one backend ran."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def time(self, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.wall_s += time.perf_counter() - wall
        self.cpu_s += time.process_time() - cpu
        return out

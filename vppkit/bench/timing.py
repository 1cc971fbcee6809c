"""Timing primitives of the speed benchmark: interleaved timing with spread, summaries, machine info.

- CPU: :class:`torch.utils.benchmark.Timer` (``blocked_autorange``) with ``num_threads`` set to the thread count
  torch uses (``Timer`` defaults to **1** thread; on 2 cores that doubles every time). Each round times every
  callable once, in turn (interleaved, so load changes hit all rows alike); a round of one callable is one
  ``blocked_autorange(min_run_time)``: one untimed call that sizes the block (and warms the caches for this
  callable after the others ran), then blocks of ``number`` calls until ``min_run_time`` seconds are spent.
  The block times of all rounds are merged: one time per block, per call. A callable whose single call already
  outlasts ``min_run_time`` in the first round (batch-8 DeiT-S forwards: 0.8-2.5 s) is timed in later rounds as one
  call between two ``time.perf_counter`` reads, with the same thread count: ``blocked_autorange`` would spend a
  second, untimed call sizing a block of one, which doubled the benchmark's longest rows (issue 15: ``make bench``
  <= 6 min); at that length the timer's overhead and cache warm-up are immaterial.
- CUDA: CUDA events around a block of calls after one warm-up call per round (the block size is fixed from the
  warm-up so a block lasts about ``min_run_time``); ``torch.cuda.synchronize`` only when reading the events.

:func:`summarize` gives the median and the interquartile range of the per-call times (linear quantiles, as
``Measurement``); :data:`IQR_FLAG` is the spread above which a report flags a row. Timings are wall-clock and
depend on machine load: :func:`machine_info` records ``os.getloadavg()``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from typing import Any, Callable, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.benchmark import Timer

__all__ = ["IQR_FLAG", "synchronize", "time_calls", "summarize", "loadavg", "machine_info", "steady_host_allocator",
           "count_torch_ops"]

IQR_FLAG = 0.05
"""A row whose interquartile range exceeds this fraction of its median is flagged in the report (issue 15)."""


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4      # glibc mallopt parameters (malloc.h)


def _mallopt(**values: int) -> str | None:
    """Set glibc malloc parameters; None when done, else why not (not Linux, no glibc, refused)."""
    if platform.system() != "Linux":
        return "not Linux"
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        codes = {"trim_threshold": _M_TRIM_THRESHOLD, "mmap_threshold": _M_MMAP_THRESHOLD, "mmap_max": _M_MMAP_MAX}
        ok = all(libc.mallopt(codes[k], int(v)) == 1 for k, v in values.items())
    except (OSError, AttributeError) as e:      # another C library (musl): no mallopt
        return f"no glibc mallopt: {e}"
    return None if ok else "mallopt refused"


@contextlib.contextmanager
def steady_host_allocator():
    """Inside the block, keep freed host memory in the process (glibc ``mallopt``) so that timed calls do not
    page-fault; yields a description for the report header.

    glibc serves an allocation above its mmap threshold (at most 32 MiB on 64-bit) with a fresh ``mmap`` and
    unmaps it on free, so every such tensor page-faults again on its first write. In the batch-8 DeiT-S rows the
    MLP hidden tensor (8 x 961 x 1536 fp32 = 47 MB) is one: measured (issue 15, 2 threads) dense 278 -> 250
    ms/frame once mmap is off, the per-op time of GELU on it varying 3x from call to call, and the b8 rows'
    IQRs dropping to ~2 %. Inside the block: ``M_MMAP_MAX = 0`` (no mmap for the heap) and ``M_TRIM_THRESHOLD``
    2 GiB (freed memory is not handed back). On exit the process gets the steady state of glibc's default dynamic
    scheme (mmap threshold 32 MiB, trim threshold 64 MiB, mmap allowed), so code run after the benchmark in the same
    process (``make reports`` runs every artifact in one) is not left without mmap or trimming. Setting any of these
    turns glibc's dynamic threshold adjustment off for the process, hence that explicit steady state. Subprocesses
    (the memory benchmark) are unaffected.

    Yields:
        what was set, or ``"system default (...)"`` with the reason nothing was (not Linux, no glibc).
    """
    why = _mallopt(mmap_max=0, trim_threshold=2 ** 31 - 1)
    try:
        yield ("glibc mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB while timing (no page faults from re-mapped large "
               "tensors)") if why is None else f"system default ({why})"
    finally:
        if why is None:
            _mallopt(mmap_max=65536, mmap_threshold=32 << 20, trim_threshold=64 << 20)


def synchronize(device: str | torch.device) -> None:
    """Wait for queued kernels on CUDA (no-op on CPU) so that wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _cuda_round(fn: Callable[[], Any], number: int) -> float:
    """One warm-up call, then ``number`` calls between two CUDA events; seconds per call."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(number):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0 / number


def time_calls(fns: dict[Any, Callable[[], Any]], repeats: int, warmup: int = 1,
               device: str | torch.device = "cpu", min_run_time: float = 0.05,
               threads: int | None = None) -> dict[Any, list[float]]:
    """Time several callables in interleaved rounds; per-call times with their spread.

    Args:
        fns: name -> zero-argument callable (one forward).
        repeats: rounds (>= 1); every round times every callable once (see the module docstring).
        warmup: untimed calls per callable first, interleaved.
        device: ``"cuda"`` times with CUDA events; anything else with ``torch.utils.benchmark.Timer``.
        min_run_time: seconds of timed calls per callable and round (at least one block of calls).
        threads: ``num_threads`` of the Timer (default ``torch.get_num_threads()``).

    Returns:
        name -> per-call times in **seconds**, one per timed block (>= ``repeats`` entries each).

    Raises:
        ValueError: ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if torch.device(device).type == "cuda":
        synchronize(device)
        numbers = {}
        for k, fn in fns.items():       # block size from one synchronised call
            per = _cuda_round(fn, 1)
            numbers[k] = max(1, math.ceil(min_run_time / max(per, 1e-6)))
        out = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                out[k].append(_cuda_round(fn, numbers[k]))
        return out
    nt = threads or torch.get_num_threads()
    timers = {k: Timer("fn()", globals={"fn": fn}, num_threads=nt, label=str(k)) for k, fn in fns.items()}
    out: dict[Any, list[float]] = {k: [] for k in fns}
    long_call: dict[Any, bool] = {}
    for r in range(repeats):
        for k, t in timers.items():
            if r and long_call[k]:      # one call outlasts min_run_time: time it alone (no sizing call)
                prev = torch.get_num_threads()
                torch.set_num_threads(nt)
                try:
                    t0 = time.perf_counter()
                    fns[k]()
                    out[k].append(time.perf_counter() - t0)
                finally:
                    torch.set_num_threads(prev)
                continue
            m = t.blocked_autorange(min_run_time=min_run_time)
            out[k].extend(m.times)
            long_call[k] = m.number_per_run == 1 and min(m.times) >= min_run_time
    return out


def count_torch_ops(fn: Callable[[], Any]) -> int:
    """Torch operators one call of ``fn`` dispatches from Python, counted with a
    :class:`torch.overrides.TorchFunctionMode`: every torch function, ``torch.nn.functional`` call and tensor method
    called from Python (views and reshapes included: each is dispatched); calls made inside another one are not
    counted again, nor are attribute reads such as ``x.shape``.

    Every such call pays a roughly fixed dispatch cost whatever its size, so at small token counts the count, times
    the per-op cost of a tiny block (``op_cost`` of :func:`vppkit.bench.speed.run_speed_benchmark`), accounts for
    time pruning cannot remove (issue 15: the default model's floor). ``fn`` runs once, untimed. (A timm ViT ``Block``
    dispatches 18: the same as the top-level ``aten::`` events of a :mod:`torch.profiler` trace, which also prints
    to stderr on every start.)

    Returns:
        The number of torch calls.
    """
    counter = _OpCounter()
    with counter:
        fn()
    return counter.calls


class _OpCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") != "__get__":      # attribute reads (x.shape, x.dtype) are not ops
            self.calls += 1
        return func(*args, **(kwargs or {}))


def summarize(times: Sequence[float], scale: float = 1.0) -> dict:
    """Median and interquartile range of ``times`` (linear quantiles, as ``torch.utils.benchmark.Measurement``).

    Args:
        times: per-call times (any unit). scale: multiplies every statistic (e.g. 1000 / batch for ms/frame).

    Returns:
        ``{"median", "q1", "q3", "iqr", "iqr_rel" (iqr / median), "min", "n", "flagged" (iqr_rel > IQR_FLAG)}``.

    Raises:
        ValueError: no times.
    """
    if len(times) == 0:
        raise ValueError("summarize needs at least one time")
    t = torch.tensor([float(v) * scale for v in times], dtype=torch.float64)
    q1, med, q3 = (float(v) for v in t.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)))
    rel = (q3 - q1) / med if med > 0 else float("inf")
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "iqr_rel": rel, "min": float(t.min()),
            "n": len(times), "flagged": bool(rel > IQR_FLAG)}


def loadavg() -> list[float] | None:
    """The 1/5/15-min load average (``os.getloadavg``), rounded; None where the platform has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Device, torch version, threads, CPU count and the 1/5/15-min load average (``os.getloadavg``)."""
    dev = torch.device(device)
    info = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    info["loadavg"] = loadavg()
    return info

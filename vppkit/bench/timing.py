"""Timing primitives of the speed benchmark: synchronised wall-clock timing of interleaved calls, machine info.

On CUDA the device is synchronised before and after each timed call; timings are wall-clock and depend on
machine load, so :func:`machine_info` records ``os.getloadavg()``.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import torch

__all__ = ["synchronize", "time_calls", "machine_info"]


def synchronize(device: str | torch.device) -> None:
    """Wait for queued kernels on CUDA (no-op on CPU) so that wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
               device: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Time several callables, interleaved (so load changes hit all of them alike).

    Args:
        fns: name -> zero-argument callable (one forward).
        repeats: timed calls per callable (>= 1).
        warmup: untimed calls per callable first.
        device: synchronised before and after each call.

    Returns:
        name -> list of ``repeats`` wall times in **seconds**.

    Raises:
        ValueError: ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            out[k].append(time.perf_counter() - t0)
    return out


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Device, torch version, threads, CPU count and the 1/5/15-min load average (``os.getloadavg``)."""
    dev = torch.device(device)
    info = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        info["loadavg"] = None
    return info

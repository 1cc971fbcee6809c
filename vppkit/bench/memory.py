"""Peak memory of online inference vs video length, each run in a fresh subprocess (:func:`memory_vs_length`).

``ru_maxrss`` / ``VmHWM`` on CPU, ``torch.cuda.max_memory_allocated`` on GPU. The subprocess runs
:func:`run_worker` (``python -c``), which prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable, Sequence

import torch

from vppkit.config import load_config
from vppkit.engine.infer import infer_video
from vppkit.models.pruning.vpp import VPPPruner
from vppkit.models.vis.model import build_vis_model
from vppkit.models.vit import PrunableViT, build_backbone

__all__ = ["memory_vs_length", "summarize_memory", "run_worker"]


class _SyntheticVideo:
    """A one-video stand-in for :class:`vppkit.data.video.VideoFrames` (the attributes ``infer_video``
    reads): random uint8 frames generated on the fly (nothing stored), so memory reflects the model only."""

    def __init__(self, num_frames: int, size: tuple[int, int], num_classes: int, seed: int = 0) -> None:
        self.size = size
        self.videos = [{"id": 1, "name": "synthetic", "height": size[0], "width": size[1],
                        "file_names": [f"{t:05d}.jpg" for t in range(num_frames)]}]
        self.category_ids = list(range(1, num_classes + 1))
        self.seed = seed

    def num_frames(self, vi: int) -> int:
        return len(self.videos[vi]["file_names"])

    def frame(self, vi: int, t: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + t)
        return torch.randint(0, 256, (3, *self.size), generator=g, dtype=torch.uint8)


def _memory_worker(frames: int, mode: str, mcfg: dict, pcfg: dict, device: str, num_classes: int) -> dict:
    """Run one video of ``frames`` frames online and return peak memory (in this process)."""
    dev = torch.device(device)
    size = tuple(mcfg["img_size"]) if isinstance(mcfg["img_size"], (list, tuple)) else (mcfg["img_size"],) * 2
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if mode == "online":
        model = build_vis_model(mcfg, num_classes, {**pcfg, "inference_noise": False}).eval().to(dev)
        infer_video(model, _SyntheticVideo(2, size, num_classes), 0)          # warm-up (allocator, caches)
        base, reset = _current(dev), _reset_peak(dev)
        results, records = infer_video(model, _SyntheticVideo(frames, size, num_classes, seed=1), 0)
        n_out = len(records)
        del results, records
    elif mode == "state-chain":
        bb = build_backbone(mcfg["arch"], img_size=size).eval().to(dev)
        bb = PrunableViT(bb.vit, VPPPruner(bb.embed_dim, pcfg.get("schedule", "pkr55"), inference_noise=False)
                         ).eval().to(dev)
        video = _SyntheticVideo(frames, size, num_classes, seed=1)
        with torch.inference_mode():
            state = None
            for t in range(2):
                state = bb(video.frame(0, t)[None].to(dev).float() / 255.0, state).state.detach()
            base, reset = _current(dev), _reset_peak(dev)
            state = None
            for t in range(frames):
                out = bb(video.frame(0, t)[None].to(dev).float() / 255.0, state)
                state = out.state.detach()
        n_out = frames
    else:
        raise ValueError(f"memory mode must be 'online' or 'state-chain', got {mode!r}")
    peak = _peak(dev)
    if dev.type == "cuda":
        measure = "torch.cuda.max_memory_allocated (reset after warm-up)"
    else:
        measure = ("peak RSS (VmHWM, reset after warm-up via /proc/self/clear_refs)" if reset else
                   "ru_maxrss (process peak RSS incl. start-up)")
    return {"frames": frames, "mode": mode, "device": str(dev), "frames_run": n_out,
            "peak_MiB": peak, "after_warmup_MiB": base, "growth_MiB": peak - base,
            "process_ru_maxrss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "measure": measure, "seconds": time.perf_counter() - t0}


def _peak(dev: torch.device) -> float:
    """Peak memory in MiB since the last :func:`_reset_peak`: CUDA allocator peak, else the process's peak RSS
    (``VmHWM`` of /proc/self/status, which :func:`_reset_peak` can lower; ``ru_maxrss`` where /proc is missing)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    hwm = _proc_status_kib("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0  # KiB


def _current(dev: torch.device) -> float:
    """Memory in use now (MiB): CUDA allocated, else the resident set size."""
    if dev.type == "cuda":
        return torch.cuda.memory_allocated(dev) / 2 ** 20
    rss = _proc_status_kib("VmRSS")
    return (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def _reset_peak(dev: torch.device) -> bool:
    """Reset the peak to the current usage (CUDA: reset_peak_memory_stats; Linux: ``echo 5 > clear_refs``).

    Returns False when the peak could not be reset (then the peak includes start-up)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_kib(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def memory_vs_length(lengths: Sequence[int] = (100, 1000), mcfg: dict | None = None, pcfg: dict | None = None,
                     modes: Sequence[str] = ("online", "state-chain"), device: str = "cpu", num_classes: int = 40,
                     timeout: float = 600.0, log: Callable[[str], None] | None = None) -> dict:
    """Peak memory of online inference vs video length, one fresh subprocess per (mode, length).

    Modes: ``online`` = :func:`vppkit.engine.infer.infer_video` (VIS model, VPP state and tracker carried frame
    to frame, per-frame outputs kept as RLEs + KeepRecords, as a real run); ``state-chain`` = backbone + VPP
    pruner only, ``TemporalState`` passed in and returned (detached), nothing else kept. Random frames.

    Args:
        lengths: video lengths in frames.
        mcfg: the ``model`` config section (arch, img_size, head sizes); default: the default profile's.
        pcfg: the ``pruning`` section (default ``{"method": "vpp", "schedule": "pkr55"}``).
        modes: which of the two to run.
        device: ``cpu`` (peak RSS via ``ru_maxrss``, MiB) or ``cuda`` (``max_memory_allocated``, MiB).
        timeout: seconds per subprocess.

    Returns:
        dict with ``runs`` (one per mode and length) and ``summary`` per mode: peaks, their difference
        (longest - shortest, MiB) and growth per 1000 frames.

    Raises:
        RuntimeError: a worker failed (its stderr tail in the message).
    """
    log = log or (lambda s: None)
    if mcfg is None:
        mcfg = load_config("default")["model"]
    pcfg = pcfg or {"method": "vpp", "schedule": "pkr55"}
    runs = []
    for mode in modes:
        for t in lengths:
            log(f"memory: {mode}, {t} frames (subprocess)")
            arg = json.dumps({"frames": int(t), "mode": mode, "mcfg": mcfg, "pcfg": pcfg, "device": device,
                              "num_classes": num_classes})
            env = dict(os.environ)
            proc = subprocess.run([sys.executable, "-c", _WORKER, arg], capture_output=True, text=True,
                                  timeout=timeout, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"memory worker ({mode}, {t} frames) failed: {proc.stderr[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    summary = summarize_memory(runs)
    return {"lengths": list(lengths), "device": device, "model": mcfg, "pruning": pcfg, "runs": runs,
            "summary": summary}


_WORKER = "import sys; from vppkit.bench.memory import run_worker; run_worker(sys.argv[1])"
"""What each fresh subprocess of :func:`memory_vs_length` runs (``python -c _WORKER JSON``)."""


def run_worker(arg: str) -> None:
    """One memory run in this process from its JSON arguments (``frames``, ``mode``, ``mcfg``, ``pcfg``,
    ``device``, ``num_classes``); prints the result of :func:`_memory_worker` as one JSON line."""
    kw = json.loads(arg)
    print(json.dumps(_memory_worker(kw["frames"], kw["mode"], kw["mcfg"], kw["pcfg"], kw["device"],
                                    int(kw["num_classes"]))), flush=True)


def summarize_memory(runs: Sequence[dict]) -> dict:
    """Per mode: peaks of the shortest and longest video (MiB), their difference and the growth per 1000 frames."""
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["frames"])
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            diff = hi["peak_MiB"] - lo["peak_MiB"]
            summary[mode] = {"short_frames": lo["frames"], "long_frames": hi["frames"],
                             "peak_short_MiB": lo["peak_MiB"], "peak_long_MiB": hi["peak_MiB"], "diff_MiB": diff,
                             "growth_short_MiB": lo["growth_MiB"], "growth_long_MiB": hi["growth_MiB"],
                             "diff_per_1000_frames_MiB": 1000.0 * diff / max(1, hi["frames"] - lo["frames"])}
    return summary

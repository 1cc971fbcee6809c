"""The prepared GPU check (issue 15): the speed benchmark at paper scale plus a few training steps with peak memory.

Run by ``scripts/gpu_check.sh`` (``python -m vppkit.bench.gpu_check --device cuda``), meant to finish in under
10 minutes on one GPU:

1. **speed**: :func:`vppkit.bench.speed.run_speed_benchmark` on DeiT-S (``vit_small``) at 544x960 input
   (34 x 60 = N 2040 patches, the paper's grid), batches 1 and 8, dense vs VPP (pkr55, pkr40; schedule, real and
   ceiling rows) and the baselines' real modules; fp32, then bf16 autocast, then (``--compile``) with compiled
   blocks. CUDA-event timing after warm-up (:func:`vppkit.bench.timing.time_calls`). ViT-Adapter-S is added
   when the configuration knows ``model.host=adapter``; skipped (and said so) otherwise.
2. **training**: ``--train-steps`` optimizer steps (AdamW) of the VIS model on random frames and random instance
   masks, masked execution, the real Mask2Former criterion (:class:`vppkit.models.vis.losses.SetCriterion`) and
   VPP's 3-frame chain (:func:`vppkit.engine.train.chain_loss`), dense and sparse stage: ms per step (after one
   warm-up step) and peak memory (``torch.cuda.max_memory_allocated``; process ``ru_maxrss`` on the CPU).

``--tiny`` shrinks everything (vit_nano, 32x48, batches 1 and 2, one round) so the CPU path runs in seconds in
the tests. Writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (atomic).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from vppkit.bench.specs import ModelCase
from vppkit.bench.speed import run_speed_benchmark
from vppkit.bench.timing import loadavg, machine_info, synchronize
from vppkit.config import ConfigError, load_config
from vppkit.engine.train import chain_loss
from vppkit.models.vis.losses import SetCriterion
from vppkit.models.vis.model import build_vis_model
from vppkit.utils.io import atomic_write_json, atomic_write_text
from vppkit.utils.provenance import REPO_ROOT, provenance

__all__ = ["speed_cases", "adapter_available", "train_steps", "main"]

PAPER_IMG = (544, 960)
"""Input of the paper's timing (vpp-notes: 544 x 960, patch 16 -> 34 x 60 = 2040 tokens)."""


def adapter_available() -> bool:
    """Whether the configuration accepts ``model.host=adapter`` (the ViT-Adapter host of issue 13)."""
    try:
        load_config("default", ["model.host=adapter"])
    except (ConfigError, KeyError, ValueError):
        return False
    return True


def speed_cases(tiny: bool) -> list[ModelCase]:
    """The speed cases: DeiT-S at 544x960, batches 1 and 8 (``tiny``: vit_nano 32x48, batches 1 and 2)."""
    if tiny:
        return [ModelCase("tiny: vit_nano 32x48", "vit_nano", (32, 48), methods=("dense", "vpp-pkr40"),
                          batches=(1, 2), repeats=1, warmup=1, variants=("real",), min_run_time=0.0,
                          target="realized_over_ideal")]
    return [ModelCase("DeiT-S shape (vit_small), 544x960 input, N = 2040", "vit_small", PAPER_IMG,
                      methods=("dense", "vpp-pkr55", "vpp-pkr40", "svit", "dynamicvit", "evit", "tome"),
                      goal_pkrs=(round(0.4133, 4),), batches=(1, 8), repeats=10, warmup=3,
                      variants_by_family={f: ("real",) for f in ("svit", "dynamicvit", "evit", "tome")},
                      min_run_time=0.05, target="realized_over_ideal")]


def _peak_mib(device: str) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_steps(mcfg: dict, stage: str, steps: int, batch: int, chain: int, device: str, seed: int = 0,
                autocast: str | None = None) -> dict:
    """Time ``steps`` training steps (after one warm-up step) of the VIS model on random data.

    Args:
        mcfg: ``model`` section (arch, img_size, head sizes; ``pretrained`` is ignored: random weights).
        stage: ``"dense"`` (no pruner, frames independent) or ``"sparse"`` (VPP pkr40, masked execution,
            frames chained through the temporal state).
        steps: timed steps. batch: clips per step. chain: frames per clip. device: ``"cpu"`` / ``"cuda"``.
        autocast: ``"bf16"`` or None.

    Returns:
        ``{"stage", "ms_per_step" (median), "ms_per_step_all", "peak_MiB", "peak_measure", "loss"}``.
    """
    torch.manual_seed(seed)
    pcfg = {"method": "vpp", "schedule": "pkr40"} if stage == "sparse" else None
    num_classes = 40
    model = build_vis_model({**mcfg, "pretrained": None}, num_classes, pcfg, load_pretrained=False).to(device)
    model.train()
    criterion = SetCriterion(num_classes).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    h, w = mcfg["img_size"] if isinstance(mcfg["img_size"], (list, tuple)) else (mcfg["img_size"],) * 2
    g = torch.Generator().manual_seed(seed)

    def clip():
        out = []
        for _ in range(chain):
            images = torch.rand(batch, 3, h, w, generator=g)
            targets = [{"labels": torch.randint(0, num_classes, (3,), generator=g),
                        "masks": (torch.rand(3, h, w, generator=g) > 0.5).float()} for _ in range(batch)]
            out.append((images, targets))
        return out

    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast == "bf16")
    times, loss = [], None
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 1):
        data = clip()
        synchronize(device)
        t0 = time.perf_counter()
        with amp:
            loss, _ = chain_loss(model, criterion, data, stage == "sparse", device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        synchronize(device)
        if i > 0:                                        # the first step warms up (allocator, kernels)
            times.append(1000.0 * (time.perf_counter() - t0))
    times_sorted = sorted(times)
    return {"stage": stage, "batch": batch, "chain": chain, "autocast": autocast,
            "ms_per_step": times_sorted[len(times_sorted) // 2] if times else None,
            "ms_per_step_all": [round(t, 2) for t in times], "peak_MiB": _peak_mib(device),
            "peak_measure": ("torch.cuda.max_memory_allocated" if torch.device(device).type == "cuda"
                             else "process ru_maxrss"), "loss": float(loss.detach()) if loss is not None else None}


def render(res: dict) -> str:
    """Markdown summary of a gpu_check result."""
    h = res["header"]
    lines = ["# GPU check: speed at paper scale, training steps", "",
             f"- device {h.get('device')} {h.get('gpu', '')}, torch {h.get('torch')}, commit `{h.get('commit')}`, "
             f"load {h.get('loadavg_start')} -> {h.get('loadavg_end')}, {h.get('seconds')} s",
             f"- adapter host: {res['adapter']}", ""]
    for run in res["speed"]:
        lines += [f"## {run['case']['label']} ({run['setting']})", "",
                  "| method | variant | batch | ms/frame | IQR % | measured | ideal | r/i | c/i | r/c |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in run["rows"]:
            f = (lambda k: "–" if r.get(k) is None else f"{r[k]:.2f}")
            lines.append(f"| {r['method']} | {r['variant']} | {r['batch']} | {r['ms_per_frame']:.2f} | "
                         f"{100 * r['iqr_rel']:.1f}{' noisy' if r['flagged'] else ''} | {f('speedup_measured')} | "
                         f"{f('speedup_ideal')} | {f('realized_over_ideal')} | {f('ceiling_over_ideal')} | "
                         f"{f('realized_over_ceiling')} |")
        lines.append("")
    lines += ["## Training steps (random data, masked execution)", "",
              "| stage | batch x chain | autocast | ms/step (median) | peak MiB | measure |", "|---|---|---|---|---|---|"]
    for t in res["train"]:
        lines.append(f"| {t['stage']} | {t['batch']} x {t['chain']} | {t['autocast'] or 'fp32'} | "
                     f"{t['ms_per_step']:.1f} | {t['peak_MiB']:.0f} | {t['peak_measure']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the point of the check) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU test of the script's path)")
    p.add_argument("--compile", action="store_true", help="also time with compiled blocks")
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu_check")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="skip the optional passes (bf16, compile, adapter) once this many seconds are spent")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --device cpu --tiny to test the path", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    header = {**provenance("gpu_check", 0), **machine_info(args.device)}
    header["loadavg_start"] = header.pop("loadavg")
    log = (lambda s: print(f"[{time.perf_counter() - t0:6.1f} s] {s}", flush=True))
    adapter = adapter_available()
    res = {"header": header, "speed": [], "train": [],
           "adapter": "timed" if adapter else "skipped: model.host=adapter is not in this configuration"}
    settings = [("fp32", None, False), ("bf16 autocast", "bf16", False)]
    if args.compile:
        settings.append(("bf16 autocast + compiled blocks", "bf16", True))
    for name, amp, comp in settings:
        if res["speed"] and time.perf_counter() - t0 > args.budget_s / 2:
            log(f"skip speed ({name}): time budget")
            continue
        for case in speed_cases(args.tiny):
            log(f"speed: {case.label} ({name})")
            r = run_speed_benchmark(case, args.device, log=log, autocast=amp, compile_blocks=comp)
            res["speed"].append({**r, "setting": name})
    mcfg = ({"arch": "vit_nano", "img_size": [32, 48], "dim": 16, "num_queries": 4, "dec_layers": 1, "heads": 2}
            if args.tiny else {"arch": "vit_small", "img_size": list(PAPER_IMG), "dim": 256, "num_queries": 100,
                               "dec_layers": 9, "heads": 8})
    # the adapter's Mask2Former head needs dim a multiple of 32 (GroupNorm) and the spatial prior a stride-32 map
    amcfg = {**mcfg, "host": "adapter", **({"dim": 32, "img_size": [64, 64]} if args.tiny else {})}
    hosts = [("vit", mcfg)] + ([("adapter", amcfg)] if adapter else [])
    for host, mc in hosts:
        for stage in ("dense", "sparse"):
            if res["train"] and time.perf_counter() - t0 > args.budget_s:
                log(f"skip training ({host}, {stage}): time budget")
                continue
            log(f"training: {host} {stage}, {args.train_steps} steps")
            res["train"].append({"host": host, **train_steps(mc, stage, args.train_steps, 1 if args.tiny else 2,
                                                              3, args.device)})
    header["loadavg_end"] = loadavg()
    header["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(args.out / "gpu_check.json", res)
    atomic_write_text(args.out / "gpu_check.md", render(res))
    print(render(res))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

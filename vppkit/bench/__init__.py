"""Speed benchmark: dense vs pruned ViT backbones (and whole VIS model), realized vs ideal speed-up.

What is timed (docs/contracts.md; issue 5 "Cost"):

- **backbone**: :class:`vppkit.models.vit.PrunableViT` in eval mode = **gathered execution** (kept tokens are
  gathered, the block runs on them, results are scattered back), under ``torch.inference_mode()``;
- **whole**: backbone + VIS head (:class:`vppkit.models.vis.model.VISModel`: pyramid + query decoder);
- per frame: ``ms/frame = median of the per-call times of one batched forward / batch``, with the interquartile
  range (IQR) beside it; rows whose IQR exceeds 5 % of the median are flagged. Timed in interleaved rounds with
  ``torch.utils.benchmark.Timer.blocked_autorange`` at the machine's thread count on the CPU, with CUDA events
  after a warm-up call on the GPU (:mod:`~vppkit.bench.timing`); input tensors are created before timing (data
  loading excluded). Gumbel noise is **off** (deterministic inference switch ``inference_noise=False``).
- **ceiling** rows: timm's own modules on tokens gathered to the row's nominal masks, no vppkit code in the
  loop (:func:`~vppkit.bench.speed.ceiling_forward`); ``realized/ceiling = ceiling ms / row ms`` is vppkit's own
  overhead (gather / scatter glue, pruner modules).
- **torch calls per forward** of every row (:func:`~vppkit.bench.timing.count_torch_ops`, one untimed forward) and
  the per-call dispatch cost (a width-16 timm block on one token, timed in the same rounds): the report's op-count
  account says how much of the gap to the ceiling is eager dispatch, which fewer tokens cannot remove (issue 15).

Untrained pruners do not meet their keep targets (VPP's SMs keep far fewer tokens untrained, SViT's gates far
more or fewer), and speed depends on the kept-token schedule, so every pruned row runs the method's
**nominal schedule** (its per-block kept counts when all targets are met). Two variants per method:

- ``schedule``: :class:`~vppkit.models.pruning.base.ExternalMaskPruner` with random keep masks that have exactly
  the nominal per-block counts (same count for every sample: no padding). Times the gathered execution of the
  schedule only; **no pruner modules run** (their overhead is excluded from time and GMACs).
- ``real``: the method's real pruner modules run (VPP: Map-SM N x N association on a state from the previous
  frame + SM gates; SViT: 9 gates; DynamicViT: predictors; EViT: explicit attention maps; ToMe: matching).
  Methods whose inference count is fixed by construction (VPP's Map-SM top-k, DynamicViT top-k, EViT top-k,
  ToMe's r) keep their own decisions where exact; the dynamic gates (VPP's SMs, SViT's gates) run but their
  decision is replaced by the nominal-count mask (:class:`~vppkit.models.pruning.base.ForcedSchedulePruner`),
  so time and GMACs include the modules' overhead at the nominal schedule.

Speed-ups: ``measured = dense ms / pruned ms``; ``ideal = dense GMACs / pruned GMACs`` with GMACs from the
analytic counter :mod:`vppkit.flops.analytic` (matrix products only; ``real`` rows include the pruner overhead
from ``KeepRecord.overhead_macs``; whole-model rows add the VIS head's MACs, measured once with
:func:`vppkit.flops.measure.count_macs`); ``realized/ideal = measured / ideal``. The realised PKR of what was
timed is read back from the KeepRecord of the timed forward.

Also: :func:`block_breakdown` (where the time of the gathered path goes: per-block gather/scatter vs block
compute, pad vs loop with unequal counts, pruner modules) and :func:`memory_vs_length` (peak memory of online
inference for two video lengths, each in a fresh subprocess: ``ru_maxrss`` on CPU,
``torch.cuda.max_memory_allocated`` on GPU).

Timings are wall-clock and depend on machine load: reports record ``os.getloadavg()`` before and after.
Speed goals live in the report (:data:`TARGETS`), never in tests.

Modules, one job each: :mod:`~vppkit.bench.specs` (method configurations, nominal schedules from the pruners'
own ``nominal_counts``, the pruner of each row), :mod:`~vppkit.bench.timing` (synchronised timing, machine info),
:mod:`~vppkit.bench.speed` (one model's benchmark), :mod:`~vppkit.bench.breakdown` (per-block breakdown),
:mod:`~vppkit.bench.memory` (memory vs video length, subprocesses), :mod:`~vppkit.bench.suite` (suites, targets).
The Markdown report is rendered by :mod:`analyses.bench`; :class:`ForcedSchedulePruner` lives with the pruners
(:mod:`vppkit.models.pruning.base`).
"""

from __future__ import annotations

from vppkit.bench.breakdown import benchmark_gather_impl, block_breakdown
from vppkit.bench.memory import memory_vs_length, summarize_memory
from vppkit.bench.specs import (DEFAULT_GOAL_PKRS, METHOD_NAMES, VARIANTS, MethodSpec, ModelCase,
                                build_method_pruner, nominal_counts, nominal_masks, resolve_methods, spec_pruner,
                                tome_r_for_pkr)
from vppkit.bench.speed import ceiling_forward, run_speed_benchmark
from vppkit.bench.suite import TARGETS, check_targets, default_suite, run_suite
from vppkit.bench.timing import IQR_FLAG, count_torch_ops, loadavg, machine_info, summarize, synchronize, time_calls

__all__ = [
    "MethodSpec", "ModelCase", "TARGETS", "DEFAULT_GOAL_PKRS", "METHOD_NAMES", "VARIANTS", "resolve_methods",
    "spec_pruner", "nominal_counts", "nominal_masks", "tome_r_for_pkr", "build_method_pruner", "time_calls",
    "synchronize", "run_speed_benchmark", "block_breakdown", "memory_vs_length", "summarize_memory",
    "default_suite", "run_suite", "check_targets", "machine_info", "summarize", "loadavg", "IQR_FLAG",
    "ceiling_forward", "benchmark_gather_impl", "count_torch_ops",
]

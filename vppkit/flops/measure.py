"""Measured MACs with fvcore ``FlopCountAnalysis`` or ``torch.utils.flop_counter.FlopCounterMode``.

**Unit: MACs** (one multiply-add = 1). fvcore already counts MACs ("one fused multiply-add = one flop");
``FlopCounterMode`` counts 2 * m * n * k FLOPs for a matmul, so its totals are halved here.

timm's fused attention (``F.scaled_dot_product_attention``) hides QK^T and AV from fvcore (unsupported op)
and, on some CPU builds, from ``FlopCounterMode`` (pytorch issue 195460). While counting we therefore set
the public attribute ``fused_attn = False`` on every module instance that has it and restore it afterwards
(:func:`unfused_attention`); no third-party code is patched.

What each counter counts: both count linear layers, the patch-embedding conv and the attention matmuls;
fvcore also counts layer norms (about 5 MACs per element, ~0.2 % of a ViT); neither counts softmax, GELU or
additions. The analytic model (:mod:`vppkit.flops.analytic`) counts matmuls only.

Three ways to measure, by what is available:

- :func:`measure_block_macs`: one timm block on n tokens (checks the closed form of a block);
- :func:`measure_schedule_macs`: a plain timm ViT run block by block on token *subsets* of a static schedule
  (gathered path without any pruner; EViT / ToMe schedules run attention and MLP on different counts);
- :func:`measure_backbone` / :func:`measure_video_macs`: a real :class:`~vppkit.models.vit.PrunableViT` in
  gathered execution on real frames; the pruner's own cost is the counted cost of the ``pruner`` submodule
  tree, shown separately and compared with the ``KeepRecord.overhead_macs`` the pruner reports. Dynamic
  pruners are averaged over the frames given.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from vppkit.flops.analytic import (
    BackboneMacs,
    TokenSchedule,
    ViTSpec,
    backbone_macs,
    block_macs,
)
from vppkit.models.records import KeepRecord

__all__ = [
    "COUNTERS",
    "unfused_attention",
    "count_macs",
    "measure_block_macs",
    "measure_schedule_macs",
    "MeasuredMacs",
    "measure_backbone",
    "measure_video_macs",
    "block_ratios_from_records",
    "macs_from_records",
]

COUNTERS = ("fvcore", "torch")


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Set ``fused_attn = False`` on every submodule that has the attribute; restore the values on exit.

    timm's ``Attention`` reads this public instance attribute at each forward; with it off, QK^T and AV run as
    explicit matmuls that counters see. Nothing is patched; the model is unchanged after the block.
    """
    saved = []
    for mod in model.modules():
        if hasattr(mod, "fused_attn"):
            saved.append((mod, mod.fused_attn))
            mod.fused_attn = False
    try:
        yield model
    finally:
        for mod, value in saved:
            mod.fused_attn = value


class _Fn(nn.Module):
    """Wraps a callable and a root module so fvcore can trace it; outputs are flattened to tensors."""

    def __init__(self, root: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = root
        self.fn = fn

    def forward(self, *inputs):
        return _tensors_of(self.fn(*inputs))


def _tensors_of(out: Any) -> tuple[torch.Tensor, ...]:
    if torch.is_tensor(out):
        return (out,)
    if isinstance(out, (list, tuple)):
        return tuple(t for o in out for t in _tensors_of(o))
    for name in ("tokens",):  # BackboneOutput and similar dataclasses
        if hasattr(out, name) and torch.is_tensor(getattr(out, name)):
            return (getattr(out, name),)
    if isinstance(out, dict):
        return tuple(t for o in out.values() for t in _tensors_of(o))
    return ()


def _count(root: nn.Module, fn: Callable[..., Any], inputs: tuple, counter: str,
           submodule: str | None = None) -> tuple[float, float, Any]:
    """Run ``fn(*inputs)`` once under a counter. Returns (total MACs, MACs inside ``root.<submodule>``, output)."""
    if counter not in COUNTERS:
        raise ValueError(f"counter must be one of {COUNTERS}, got {counter!r}")
    with torch.no_grad(), unfused_attention(root):
        if counter == "torch":
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False, depth=None) as mode:
                out = fn(*inputs)
            total = mode.get_total_flops() / 2.0
            sub = 0.0
            if submodule is not None:
                prefix = f"{type(root).__name__}.{submodule}"
                counts = mode.get_flop_counts()
                # keys are dotted module paths; take the subtree's own entry (it aggregates its children)
                if prefix in counts:
                    sub = sum(counts[prefix].values()) / 2.0
                else:  # submodule never called as a whole: sum its called children (non-overlapping)
                    kids = [k for k in counts if k.startswith(prefix + ".")]
                    tops = [k for k in kids if not any(k != o and k.startswith(o + ".") for o in kids)]
                    sub = sum(sum(counts[k].values()) for k in tops) / 2.0
            return float(total), float(sub), out
        from fvcore.nn import FlopCountAnalysis

        wrapper = _Fn(root, fn).eval()
        analysis = FlopCountAnalysis(wrapper, inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = float(analysis.total())
        sub = 0.0
        if submodule is not None:
            by_mod = analysis.by_module()
            sub = float(by_mod.get(f"model.{submodule}", 0.0))
        # the JIT trace ran ``fn`` exactly once on the real inputs; it is not run again (a second run would
        # draw new Gumbel noise / advance temporal state): callers that need the output capture it in ``fn``.
        return total, sub, None


def count_macs(module: nn.Module, *inputs: torch.Tensor, counter: str = "torch",
               fn: Callable[..., Any] | None = None) -> float:
    """MACs of one call ``fn(*inputs)`` (default ``module(*inputs)``) with attention fusion disabled.

    Args:
        module: the module (its ``fused_attn`` flags are switched off while counting).
        *inputs: tensors passed to the call.
        counter: "fvcore" (JIT trace; MACs) or "torch" (``FlopCounterMode``; FLOPs / 2).
        fn: callable to count instead of ``module.__call__`` (must only use ``module``'s parameters).

    Returns:
        MACs of the whole batch.

    Raises:
        ValueError: unknown counter.
    """
    total, _, _ = _count(module, fn or module, tuple(inputs), counter)
    return total


def measure_block_macs(block: nn.Module, num_tokens: int, dim: int | None = None, counter: str = "torch",
                       batch: int = 1) -> float:
    """Measured MACs of one transformer block on ``num_tokens`` tokens, per sample.

    Args:
        block: a timm ``Block`` (or any (B, n, C) -> (B, n, C) module).
        num_tokens: n (prefix included).
        dim: C (default: read from ``block.norm1``).
        counter: "fvcore" or "torch".
        batch: batch size of the probe input (result is divided by it).
    """
    c = int(dim if dim is not None else block.norm1.normalized_shape[0])
    x = torch.zeros(batch, int(num_tokens), c)
    return count_macs(block.eval(), x, counter=counter) / batch


class _ScheduledViT(nn.Module):
    """Plain timm ViT executed on token subsets: block b's attention sees ``attn[b]`` patch tokens, its MLP
    ``mlp[b]`` (the first ones: which tokens are kept does not change the count)."""

    def __init__(self, vit: nn.Module, attn: Sequence[int], mlp: Sequence[int], include_head: bool) -> None:
        super().__init__()
        self.vit = vit
        self.attn = [int(a) for a in attn]
        self.mlp = [int(m) for m in mlp]
        self.include_head = include_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        v = self.vit
        p = v.num_prefix_tokens
        x = v.patch_embed(images)
        x = v._pos_embed(x)
        x = v.norm_pre(x)
        for blk, na, nm in zip(v.blocks, self.attn, self.mlp):
            x = x[:, : p + na]
            x = x + blk.ls1(blk.attn(blk.norm1(x)))
            x = x[:, : p + nm]
            x = x + blk.ls2(blk.mlp(blk.norm2(x)))
        x = v.norm(x)
        if self.include_head:
            return v.head(x[:, 0])
        return x


def measure_schedule_macs(vit: nn.Module, schedule: TokenSchedule, img_size: int | Sequence[int], *,
                          counter: str = "torch", include_head: bool = False) -> float:
    """Measured MACs of a plain timm ViT under a static token schedule (fractional counts are rounded).

    Args:
        vit: timm ``VisionTransformer`` (no weights needed; built with this ``img_size``).
        schedule: patch tokens per block (attention / MLP).
        img_size: input size (int or (H, W)).
        counter: "fvcore" or "torch".
        include_head: run the classifier head on the CLS token.

    Returns:
        measured MACs of one image: patch embedding + blocks (+ final norm for fvcore) (+ head). Pruner
        overhead is not part of it (there is no pruner): add it from the analytic model.

    Raises:
        ValueError: schedule depth differs from the model depth.
    """
    spec = ViTSpec.from_timm(vit)
    if schedule.depth != len(vit.blocks):
        raise ValueError(f"schedule {schedule.method} has {schedule.depth} blocks, the model has {len(vit.blocks)}")
    h, w = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[-1]))
    attn = [round(a) for a in schedule.attn]
    mlp = [round(m) for m in schedule.mlp]
    runner = _ScheduledViT(vit.eval(), attn, mlp, include_head and getattr(vit, "num_classes", 0) > 0)
    images = torch.zeros(1, spec.in_chans, h, w)
    return count_macs(runner, images, counter=counter)


# ----------------------------------------------------------------------------------------------------------------
# real PrunableViT
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class MeasuredMacs:
    """Measured MACs of PrunableViT forwards, per frame (unit: MACs).

    Attributes:
        backbone: mean per-frame MACs of everything except the pruner submodule tree.
        overhead: mean per-frame MACs counted inside the pruner submodules.
        reported_overhead: mean per-frame ``KeepRecord.overhead_macs`` (what the pruner reports).
        frames: number of frames averaged.
        block_ratios: mean fraction of patch tokens per block (global sums over frames; PKR convention).
        counter: "fvcore" or "torch".
        records: the KeepRecords (one per forward).
    """

    backbone: float
    overhead: float
    reported_overhead: float
    frames: int
    block_ratios: list[float]
    counter: str
    records: list[KeepRecord] = field(default_factory=list, repr=False)

    @property
    def total(self) -> float:
        return self.backbone + self.overhead

    def summary(self) -> dict:
        """Flat dict in GMACs."""
        return {"counter": self.counter, "frames": self.frames, "backbone_GMACs": self.backbone / 1e9,
                "overhead_GMACs": self.overhead / 1e9, "reported_overhead_GMACs": self.reported_overhead / 1e9,
                "total_GMACs": self.total / 1e9, "pkr": sum(self.block_ratios) / max(len(self.block_ratios), 1),
                "block_ratios": list(self.block_ratios)}


def measure_backbone(model: nn.Module, images: torch.Tensor, state: Any = None, *, counter: str = "torch"
                     ) -> tuple[MeasuredMacs, Any]:
    """Count one gathered forward of a PrunableViT (``model.eval()`` is the caller's job: training mode drops
    nothing in the masked path).

    Args:
        model: :class:`vppkit.models.vit.PrunableViT`.
        images: (B, 3, H, W); use B = 1 for exact per-frame counts (B > 1 pads to the largest kept count).
        state: temporal state for the pruner (VPP), ``None`` for a first frame.
        counter: "torch" (default; dispatch-level, sees data-dependent shapes) or "fvcore" (one JIT trace of
            this very forward; its data-dependent shapes are those of this input).

    Returns:
        (:class:`MeasuredMacs` per sample, next state).
    """
    bsz = images.shape[0]
    holder: dict = {}

    def run(x):
        out = model(x, state, execution="gathered")
        holder["out"] = out
        return out

    total, sub, _ = _count(model, run, (images,), counter, submodule="pruner")
    if "out" not in holder:  # pragma: no cover - both counters run the forward exactly once
        raise RuntimeError("measure_backbone: the counted forward did not run")
    out = holder["out"]
    rec: KeepRecord = out.keep
    ratios = (rec.counts.double().sum(0) / (rec.num_patches * rec.batch)).tolist()
    m = MeasuredMacs(backbone=(total - sub) / bsz, overhead=sub / bsz,
                     reported_overhead=float(rec.overhead_macs.mean()), frames=bsz, block_ratios=ratios,
                     counter=counter, records=[rec])
    return m, out.state


def measure_video_macs(model: nn.Module, videos: Iterable[torch.Tensor], *, counter: str = "torch",
                       detach_state: Callable[[Any], Any] | None = None) -> MeasuredMacs:
    """Mean per-frame MACs over real videos, frame by frame with the temporal state passed along.

    Args:
        model: PrunableViT (eval mode).
        videos: iterable of (T, 3, H, W) frame tensors, one per video; the state is reset (``None``) at each
            new video.
        counter: "torch" or "fvcore".
        detach_state: applied to the state between frames (default: ``state.detach()`` when it exists).

    Returns:
        :class:`MeasuredMacs` averaged over all frames (block ratios from global sums).

    Raises:
        ValueError: no frames, or a video tensor that is not (T, 3, H, W).
    """
    tb = to = tr = 0.0
    frames = 0
    records: list[KeepRecord] = []
    for vi, video in enumerate(videos):
        if video.dim() != 4:
            raise ValueError(f"video {vi}: expected (T, 3, H, W) frames, got shape {tuple(video.shape)}")
        state = None
        for t in range(video.shape[0]):
            m, state = measure_backbone(model, video[t:t + 1], state, counter=counter)
            if state is not None:
                state = detach_state(state) if detach_state else (state.detach() if hasattr(state, "detach")
                                                                  else state)
            tb += m.backbone
            to += m.overhead
            tr += m.reported_overhead
            frames += 1
            records.extend(m.records)
    if frames == 0:
        raise ValueError("measure_video_macs: no frames given")
    return MeasuredMacs(backbone=tb / frames, overhead=to / frames, reported_overhead=tr / frames, frames=frames,
                        block_ratios=block_ratios_from_records(records), counter=counter, records=records)


def block_ratios_from_records(records: Sequence[KeepRecord]) -> list[float]:
    """Mean fraction of patch tokens processed by each block over all frames (global sums, PKR convention).

    Raises:
        ValueError: no records, or records of different depth / grid.
    """
    if not records:
        raise ValueError("block_ratios_from_records: no KeepRecords given")
    depth, n = records[0].depth, records[0].num_patches
    tot = torch.zeros(depth, dtype=torch.float64)
    frames = 0
    for i, r in enumerate(records):
        if r.depth != depth or r.num_patches != n:
            raise ValueError(f"record {i}: depth/N {(r.depth, r.num_patches)} differs from {(depth, n)}")
        tot += r.counts.double().sum(0)
        frames += r.batch
    return (tot / (frames * n)).tolist()


def macs_from_records(spec: ViTSpec, records: Sequence[KeepRecord], *, include_patch_embed: bool = True,
                      include_head: bool = False) -> BackboneMacs:
    """Analytic MACs averaged over real frames from their KeepRecords (dynamic pruners).

    Each frame's block costs use its own per-block counts (so the n^2 attention term is averaged correctly,
    not computed at the mean count); the MLP uses ``record.meta['mlp_counts']`` when present (ToMe); the
    overhead is the mean of ``KeepRecord.overhead_macs`` (0 for ToMe, whose matching runs inside the blocks
    and is not part of this closed form).

    Returns:
        :class:`BackboneMacs` whose ``schedule`` holds the mean counts and whose per-block terms are frame means.
    """
    ratios = block_ratios_from_records(records)
    n = records[0].num_patches
    frames = sum(r.batch for r in records)
    sums: list[dict[str, float]] = [dict.fromkeys(("qkv", "attn_qk", "attn_av", "proj", "mlp", "total"), 0.0)
                                    for _ in range(spec.depth)]
    overhead = 0.0
    for r in records:
        if r.depth != spec.depth:
            raise ValueError(f"KeepRecord depth {r.depth} does not match {spec.name} depth {spec.depth}")
        mlp_counts = r.meta.get("mlp_counts")  # merging methods (ToMe): the MLP runs on fewer tokens
        for row in r.counts.tolist():
            for b, cnt in enumerate(row):
                n_mlp = cnt if mlp_counts is None else mlp_counts[b]
                for k, v in block_macs(cnt + spec.num_prefix, spec.embed_dim, spec.mlp_ratio,
                                       n_mlp + spec.num_prefix).items():
                    sums[b][k] += v
        overhead += float(r.overhead_macs.sum())
    blocks = [{k: v / frames for k, v in s.items()} for s in sums]
    sched = TokenSchedule(tuple(x * n for x in ratios), tuple(x * n for x in ratios), n,
                          str(records[0].meta.get("method", "records")), {"frames": frames})
    base = backbone_macs(spec, sched, include_patch_embed=include_patch_embed, include_head=include_head)
    return BackboneMacs(blocks, base.patch_embed, base.head, overhead / frames, spec, sched, "analytic(records)")

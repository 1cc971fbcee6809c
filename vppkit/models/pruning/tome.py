"""ToMe (Bolya et al., ICLR 2023, "Token Merging: Your ViT but Faster"), on patch tokens of a PrunableViT.

Pure tensor functions in the style of the official ``tome/merge.py``:
:func:`bipartite_soft_matching` (alternate split into sets A/B, cosine similarity of the keys, the r most
similar A tokens merged into their best B match), :func:`merge_wavg` (size-weighted average),
:func:`merge_source` (which grid patches each token covers), :func:`unmerge_to_grid` (every grid patch gets the
value of the token covering it, for dense heads).

Model integration (:class:`ToMePruner`), inside each block b as in ToMe: attention on the current tokens
(optionally proportional attention, + log(size) on the keys), then r tokens are merged using the mean key over
heads as the similarity metric, then the MLP runs on the merged tokens. Differences from the official code:
- CLS/register tokens are excluded from matching altogether (the official code protects only the CLS token by
  setting its row to -inf); they are never merged;
- the full-grid outputs (final tokens, intermediates) are unmerged through the source map.

Records: ``KeepRecord.masks[:, b]`` marks the grid positions that are **representatives** (the A-unmerged or
B positions) of the tokens entering block b, so ``counts[:, b]`` = tokens entering block b (its attention
stage; the MLP of block b runs on ``counts[:, b] - r_b``, stored as ``meta['mlp_counts']``).

ToMe has **no masked execution**: ``PrunableViT.forward(execution='masked')`` raises ValueError; training runs
the merging path (it is differentiable through the weighted averages, like the official code).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from vppkit.models.blocks import check_plain_block
from vppkit.models.pruning.base import BlockCounts, Pruner
from vppkit.models.records import BackboneOutput, KeepRecord


def _identity(x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    return x


def bipartite_soft_matching(metric: torch.Tensor, r: int) -> tuple[Callable, Callable]:
    """ToMe's bipartite soft matching on (B, T, C') metric tokens (no protected tokens: pass patches only).

    Tokens are split alternately into A (even positions) and B (odd); each A token's best B match by cosine
    similarity is an edge; the r A tokens with the strongest edges are merged into their B match.

    Args:
        metric: (B, T, C') similarity features (ToMe: keys averaged over heads).
        r: tokens to remove, clipped to T // 2.

    Returns:
        ``(merge, unmerge)``: ``merge(x (B, T, C), mode)`` -> (B, T - r, C) with mode in {"sum", "mean",
        "amax", "dst"} ("dst": B tokens keep their own value; used to track representative positions);
        ``unmerge(x (B, T - r, C))`` -> (B, T, C) copies each merged value back to its members.
        Both are identities when r <= 0. Output order: unmerged A tokens, then B tokens.
    """
    t = metric.shape[1]
    r = min(int(r), t // 2)
    if r <= 0:
        return _identity, _identity
    with torch.no_grad():
        m = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        a, b = m[..., ::2, :], m[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]
        src_idx = edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        if mode != "dst":
            src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
            dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        n, _, c = unm.shape
        src = dst.gather(dim=-2, index=dst_idx.expand(n, r, c))
        out = torch.zeros(n, t, c, device=x.device, dtype=x.dtype)
        out[..., 1::2, :] = dst
        out.scatter_(dim=-2, index=(2 * unm_idx).expand(n, unm_len, c), src=unm)
        out.scatter_(dim=-2, index=(2 * src_idx).expand(n, r, c), src=src)
        return out

    return merge, unmerge


def merge_wavg(merge: Callable, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge (ToMe). x (B, T, C), size (B, T, 1) -> (B, T - r, C), (B, T - r, 1)."""
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size, size


def merge_source(merge: Callable, source: torch.Tensor) -> torch.Tensor:
    """Track which grid patches each token covers. source (B, T, N) 0/1 -> (B, T - r, N)."""
    return merge(source, mode="amax")


def unmerge_to_grid(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Full-grid tokens from merged ones: grid patch j gets the token whose source covers j.

    Args:
        x: (B, T, C) merged patch tokens. source: (B, T, N) 0/1, each column has exactly one 1.

    Returns:
        (B, N, C).
    """
    return source.transpose(1, 2).to(x.dtype) @ x


def tome_block(block: nn.Module, x: torch.Tensor, size: torch.Tensor, source: torch.Tensor, pos: torch.Tensor,
               num_prefix: int, r: int, prop_attn: bool = True):
    """One ToMe block: attention (proportional if asked), merge r patch tokens, MLP.

    Args:
        block: timm ``Block`` with a standard ``Attention``.
        x: (B, P + T, C) tokens; size: (B, P + T, 1) tokens per merged token; source: (B, T, N) patch coverage;
        pos: (B, T) grid index of each patch token's representative.
        num_prefix: P (never merged). r: tokens to merge in this block.

    Returns:
        (x, size, source, pos) after the block.
    """
    check_plain_block(block)
    a = block.attn
    p = num_prefix
    bsz, t, c = x.shape
    qkv = a.qkv(block.norm1(x)).reshape(bsz, t, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = a.q_norm(q), a.k_norm(k)
    logits = (q * a.scale) @ k.transpose(-2, -1)
    if prop_attn:
        logits = logits + size.log()[:, None, None, :, 0]
    y = a.attn_drop(logits.softmax(-1)) @ v
    y = a.proj_drop(a.proj(a.norm(y.transpose(1, 2).reshape(bsz, t, a.attn_dim))))
    x = x + block.drop_path1(block.ls1(y))
    if r > 0:
        merge, _ = bipartite_soft_matching(k.mean(1)[:, p:], r)
        xp, sp = merge_wavg(merge, x[:, p:], size[:, p:])
        x = torch.cat([x[:, :p], xp], 1)
        size = torch.cat([size[:, :p], sp], 1)
        source = merge_source(merge, source)
        pos = merge(pos.unsqueeze(-1), mode="dst").squeeze(-1)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, size, source, pos


class ToMePruner(Pruner):
    """Token merging with r tokens merged per block (gathered execution only).

    Args:
        r: tokens merged per block, an int for every block or a sequence of ``depth`` ints.
        prop_attn: proportional attention (ToMe default True).
        depth: number of blocks (12).

    Raises:
        ValueError: negative r or a schedule of the wrong length.
    """

    name = "tome"
    merges_tokens = True
    supports_masked = False

    def __init__(self, r: int | Sequence[int] = 8, prop_attn: bool = True, depth: int = 12) -> None:
        super().__init__(inference_noise=False)
        sched = [int(r)] * depth if isinstance(r, (int, float)) else [int(v) for v in r]
        if len(sched) != depth or any(v < 0 for v in sched):
            raise ValueError(f"ToMe r schedule must be {depth} non-negative ints, got {r}")
        self.r = sched
        self.prop_attn = prop_attn

    def nominal_counts(self, num_patches: int, depth: int) -> BlockCounts:
        """Patch tokens entering each block's attention (``attn``) and MLP (``mlp``), exact.

        Block b merges ``r_b' = min(r_b, n_b // 2)`` of the ``n_b`` patch tokens entering it, between its
        attention and its MLP (the rule of :meth:`merge_forward`; prefix tokens are never merged): ``attn[b] =
        n_b``, ``mlp[b] = n_{b+1} = n_b - r_b'``. E.g. N = 144, r = 13: attn ``144, 131, 118, ...``.

        Raises:
            ValueError: ``depth`` differs from the length of the r schedule.
        """
        if depth != len(self.r):
            raise ValueError(f"ToMePruner has an r schedule of {len(self.r)} blocks, the backbone has {depth}")
        attn, mlp, n = [], [], num_patches
        for r in self.r:
            attn.append(n)
            n -= min(r, n // 2)
            mlp.append(n)
        return BlockCounts(num_patches, tuple(attn), tuple(mlp))

    def merge_forward(self, backbone, images: torch.Tensor, state: Any = None, *, return_intermediates: bool = False):
        """Run ``backbone`` (a PrunableViT) with merging; returns a ``BackboneOutput`` on the full grid."""
        x, grid = backbone.embed(images)
        p = backbone.num_prefix_tokens
        bsz, t, _ = x.shape
        n = t - p
        size = x.new_ones(bsz, t, 1)
        source = torch.eye(n, device=x.device, dtype=x.dtype).expand(bsz, n, n)
        pos = torch.arange(n, device=x.device).expand(bsz, n)
        inter = [x[:, p:]] if return_intermediates else None
        masks, mlp_counts = [], []
        for b, blk in enumerate(backbone.vit.blocks):
            cur = x.shape[1] - p
            masks.append(torch.zeros(bsz, n, dtype=torch.bool, device=x.device).scatter(1, pos, True))
            r = min(self.r[b], cur // 2)
            x, size, source, pos = tome_block(blk, x, size, source, pos, p, r, self.prop_attn)
            mlp_counts.append(cur - r)
            if inter is not None:
                inter.append(unmerge_to_grid(x[:, p:], source))
        x = backbone.vit.norm(x)
        record = KeepRecord.from_masks(torch.stack(masks, 1), grid, 0.0, method=self.name, execution="gathered",
                                       r=list(self.r), mlp_counts=mlp_counts, prop_attn=self.prop_attn)
        return BackboneOutput(tokens=unmerge_to_grid(x[:, p:], source), grid=grid, prefix=x[:, :p],
                              intermediates=inter, keep=record, state=None, aux_loss=x.new_zeros(()))

    def extra_meta(self) -> dict:
        return {"r": list(self.r), "prop_attn": self.prop_attn}

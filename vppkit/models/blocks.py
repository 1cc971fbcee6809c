"""Running one timm ViT ``Block`` on the tokens a keep mask selects: pure functions of a block and tensors.

Used by :class:`vppkit.models.vit.PrunableViT` (its masked and gathered execution) and by pruners that run blocks
themselves (ToMe's merging forward), so neither imports the other.

- :func:`run_block_masked`: every token computed, pruned tokens excluded as keys through the attention mask and
  carried through unchanged (``x = m * block(x) + (1 - m) * x``; vpp-notes §6.1).
- :func:`run_block_gathered`: kept tokens gathered (MAE-style), the block run on the shorter sequence, the result
  scattered back (vpp-notes §6.2).
- :func:`block_attention_probs` / :func:`attention_stats`: the block with its attention probabilities exposed
  (timm's fused attention hides them), for EViT, ToMe and attention-received selectors.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from vppkit.models.records import BlockAttention

#: How gathered execution handles unequal kept counts in a batch (:func:`run_block_gathered`).
GATHER_IMPLS = ("auto", "pad", "loop")


def check_plain_block(block: nn.Module) -> None:
    attn = getattr(block, "attn", None)
    if not isinstance(block, Block) or attn is None or not hasattr(attn, "qkv") or getattr(attn, "gate", None) \
            is not None:
        raise TypeError(f"explicit attention needs a standard timm Block/Attention, got {type(block).__name__}")


def block_attention_probs(block: Block, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> tuple:
    """Run a timm ``Block`` with its own weights and also return the attention probabilities.

    Same computation as ``Block.forward`` (pre-norm attention + MLP, layer scale, drop path), written out so
    the softmax weights are available (timm's fused attention hides them). Used for EViT / attention-received
    selectors and ToMe.

    Args:
        block: a timm ``vision_transformer.Block`` with a standard ``Attention``.
        x: (B, T, C) tokens.
        key_mask: optional (B, T) bool, True = may be attended to (key padding mask).
        
    Returns:
        (out (B, T, C), attn (B, heads, T, T) softmax weights).

    Raises:
        TypeError: for blocks other than the standard timm Block/Attention.
    """
    check_plain_block(block)
    a = block.attn
    b, t, c = x.shape
    h = block.norm1(x)
    qkv = a.qkv(h).reshape(b, t, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = a.q_norm(q), a.k_norm(k)
    logits = (q * a.scale) @ k.transpose(-2, -1)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    attn = logits.softmax(dim=-1)
    y = a.attn_drop(attn) @ v
    y = y.transpose(1, 2).reshape(b, t, a.attn_dim)
    y = a.proj_drop(a.proj(a.norm(y)))
    x = x + block.drop_path1(block.ls1(y))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, attn


def attention_stats(attn: torch.Tensor, num_prefix: int, has_cls: bool, query_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """CLS->patch attention and attention received by each patch, from (B, heads, T, T) weights.

    Args:
        attn: (B, heads, T, T) softmax weights (rows = queries).
        num_prefix: P, prefix tokens at the start of the sequence.
        has_cls: whether token 0 is a CLS token.
        query_mask: optional (B, T) bool, queries to average over (padding excluded).

    Returns:
        (cls (B, T-P) or None, received (B, T-P)), both averaged over heads.
    """
    cls = attn[:, :, 0, num_prefix:].mean(1) if has_cls else None
    if query_mask is None:
        received = attn[..., num_prefix:].mean(2).mean(1)
    else:
        w = query_mask.to(attn.dtype)[:, None, :, None]
        received = ((attn[..., num_prefix:] * w).sum(2) / w.sum(2).clamp_min(1)).mean(1)
    return cls, received


def _kept_index(keep_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of kept tokens first (original order), per sample. Returns (idx (B, K_max), valid, counts)."""
    counts = keep_b.sum(1)
    kmax = int(counts.max()) if keep_b.shape[0] else 0
    order = torch.argsort((~keep_b).to(torch.int8), dim=1, stable=True)[:, :kmax]
    valid = torch.arange(kmax, device=keep_b.device)[None] < counts[:, None]
    return order, valid, counts


def run_block_masked(block: nn.Module, x: torch.Tensor, keep: torch.Tensor, num_prefix: int,
                     want_attn: bool = False, has_cls: bool = False):
    """Masked execution of one block (all tokens computed, pruned tokens excluded as keys, vpp-notes §6.1).

    Args:
        block: timm Block.
        x: (B, P + N, C) tokens (prefix first).
        keep: (B, N) float straight-through mask (forward value 0/1).
        num_prefix: P.
        want_attn: also return :class:`BlockAttention`.

    Returns:
        (x_new (B, P + N, C), BlockAttention or None). ``x_new = m * block(x) + (1 - m) * x`` on patches.
    """
    p = num_prefix
    keep_b = keep.detach() > 0.5
    all_kept = bool(keep_b.all())
    key_mask = None
    if not all_kept:
        # a sample without any key (no prefix, nothing kept) would give NaN rows; let it attend to all tokens
        # (its outputs are discarded by m = 0 anyway)
        empty = ~keep_b.any(1) if p == 0 else torch.zeros_like(keep_b[:, 0])
        key_mask = torch.cat([keep_b.new_ones(keep_b.shape[0], p), keep_b | empty[:, None]], dim=1)
    attn_info = None
    if want_attn:
        y, attn = block_attention_probs(block, x, key_mask)
        cls, rec = attention_stats(attn, p, has_cls, key_mask)
        z = keep_b.to(rec.dtype)
        attn_info = BlockAttention(cls=None if cls is None else cls * z, received=rec * z)
    else:
        y = block(x, attn_mask=None if key_mask is None else key_mask[:, None, None, :])
    if all_kept and not keep.requires_grad:
        return y, attn_info
    m = keep.to(x.dtype).unsqueeze(-1)
    patches = m * y[:, p:] + (1 - m) * x[:, p:]
    return torch.cat([y[:, :p], patches], dim=1), attn_info


def run_block_gathered(block: nn.Module, x: torch.Tensor, keep: torch.Tensor, num_prefix: int,
                       want_attn: bool = False, has_cls: bool = False, impl: str = "pad"):
    """Gathered execution of one block: run it on the kept tokens only, scatter back (vpp-notes §6.2).

    Args:
        block: timm Block.
        x: (B, P + N, C) tokens.
        keep: (B, N) float mask (forward value 0/1; a straight-through gradient is kept by multiplying the
            block output of kept tokens by ``m``, whose forward value is exactly 1). Pruned tokens are not
            computed, so unlike masked mode their gates get no gradient: train in masked mode.
        num_prefix: P.
        want_attn: also return :class:`BlockAttention` (scattered back to the full grid, 0 at pruned tokens).
        impl: ``"pad"`` (pad to the largest kept count, key-padding mask), ``"loop"`` (one sample at a time) or
            ``"auto"`` (``"pad"`` when every sample keeps the same count, so no padding is needed, else ``"loop"``).

    Returns:
        (x_new (B, P + N, C), BlockAttention or None).

    Raises:
        ValueError: on an unknown ``impl``.
    """
    p = num_prefix
    bsz, t, c = x.shape
    keep_b = keep.detach() > 0.5
    if bool(keep_b.all()) and not keep.requires_grad:
        return run_block_masked(block, x, keep, p, want_attn, has_cls)
    if impl not in GATHER_IMPLS:
        raise ValueError(f"gather_impl must be one of {GATHER_IMPLS}, got {impl!r}")
    if impl == "auto":      # equal kept counts: one batched call without padding; else per-sample loop
        counts = keep_b.sum(1)
        impl = "pad" if bool((counts == counts[0]).all()) else "loop"
    if impl == "loop":
        return _gathered_loop(block, x, keep, keep_b, p, want_attn, has_cls)
    idx, valid, counts = _kept_index(keep_b)
    patches = x[:, p:]
    gidx = idx.unsqueeze(-1).expand(-1, -1, c)
    g = patches.gather(1, gidx)                                            # (B, K_max, C)
    seq = torch.cat([x[:, :p], g], dim=1)
    key_mask = None
    if not bool(valid.all()) or (p == 0 and bool((counts == 0).any())):
        empty = (counts == 0) if p == 0 else torch.zeros_like(counts, dtype=torch.bool)
        key_mask = torch.cat([valid.new_ones(bsz, p), valid | empty[:, None]], dim=1)
    attn_info = None
    if want_attn:
        y, attn = block_attention_probs(block, seq, key_mask)
        cls, rec = attention_stats(attn, p, has_cls, key_mask)
        vz = valid.to(rec.dtype)
        rec_full = rec.new_zeros(bsz, t - p).scatter(1, idx, rec * vz)
        cls_full = None if cls is None else cls.new_zeros(bsz, t - p).scatter(1, idx, cls * vz)
        attn_info = BlockAttention(cls=cls_full, received=rec_full)
    else:
        y = block(seq, attn_mask=None if key_mask is None else key_mask[:, None, None, :])
    # 1 at kept, 0 at padding; padding gets no gate gradient (gathered mode: gradient through kept tokens only)
    m = (keep.to(x.dtype).gather(1, idx) * valid.to(x.dtype)).unsqueeze(-1)
    yp = m * y[:, p:] + (1 - m) * g
    new_patches = patches.scatter(1, gidx, yp)
    return torch.cat([y[:, :p], new_patches], dim=1), attn_info


def _gathered_loop(block, x, keep, keep_b, p, want_attn, has_cls):
    outs, clss, recs = [], [], []
    for i in range(x.shape[0]):
        idx = keep_b[i].nonzero(as_tuple=True)[0]
        xi = x[i:i + 1]
        if idx.numel() == 0 and p == 0:
            outs.append(xi)
            recs.append(x.new_zeros(1, x.shape[1]))
            clss.append(None)
            continue
        seq = torch.cat([xi[:, :p], xi[:, p:].index_select(1, idx)], dim=1)
        if want_attn:
            y, attn = block_attention_probs(block, seq)
            cls, rec = attention_stats(attn, p, has_cls)
            n = x.shape[1] - p
            recs.append(rec.new_zeros(1, n).index_copy(1, idx, rec))
            clss.append(None if cls is None else cls.new_zeros(1, n).index_copy(1, idx, cls))
        else:
            y = block(seq)
        m = keep[i:i + 1, idx].to(x.dtype).unsqueeze(-1)
        yp = m * y[:, p:] + (1 - m) * seq[:, p:]
        outs.append(torch.cat([y[:, :p], xi[:, p:].index_copy(1, idx, yp)], dim=1))
    attn_info = None
    if want_attn:
        attn_info = BlockAttention(cls=None if not has_cls else torch.cat(clss, 0), received=torch.cat(recs, 0))
    return torch.cat(outs, 0), attn_info


def run_blocks_gathered(blocks, x: torch.Tensor, keep: torch.Tensor, num_prefix: int,
                        impl: str = "auto", inplace: bool = False) -> torch.Tensor:
    """Gathered execution of a **segment** of blocks under one keep mask: gather once, run every block of the
    segment on the kept tokens, scatter once (vpp-notes §6.2; issue 15 "gather and scatter only where the keep
    mask changes").

    Equal to calling :func:`run_block_gathered` block by block with the same mask (kept tokens get the same
    values: the blocks see the same sequences; pruned tokens carry their value unchanged) but with one gather
    and one scatter per segment instead of per block, the gather / scatter as ``index_select`` / ``index_put_``
    on the flattened (B * T, C) tokens with the prefix tokens inside the index (no ``cat``), and no
    straight-through multiply (the forward value of a kept mask entry is exactly 1). For inference only: no
    gradient reaches ``keep`` (PrunableViT uses it when autograd is off; otherwise it runs block by block).
    One host-device synchronisation per segment (the kept counts size the gathered tensor).

    Args:
        blocks: the timm Blocks of the segment, run in order (an ``nn.ModuleList`` slice or a list).
        x: (B, P + N, C) tokens entering the first block.
        keep: (B, N) mask in force for the whole segment: bool, or float with forward values 0/1 (> 0.5 = kept).
        num_prefix: P (prefix tokens, always kept).
        impl: unequal kept counts in the batch: ``"pad"`` (pad to the largest count, key-padding mask; the
            padded slots run through the blocks as queries only and are dropped at the scatter), ``"loop"``
            (one sample at a time) or ``"auto"`` (``"loop"``; the choice measured in
            :func:`vppkit.bench.breakdown.block_breakdown`). Equal counts always run as one batched call
            (no padding needed).
        inplace: scatter the segment's output into ``x`` itself (``index_put_``) instead of a copy of it: saves
            one full-grid copy per segment (issue 15; 11.8 MB per segment for DeiT-S at batch 8, N 960). Only for
            a caller that owns ``x`` (PrunableViT's gathered inference, whose pruners clone what they keep).

    Returns:
        (B, P + N, C) tokens after the segment (a new tensor, or ``x`` itself updated when ``inplace``).

    Raises:
        ValueError: unknown ``impl``.
    """
    if impl not in GATHER_IMPLS:
        raise ValueError(f"gather_impl must be one of {GATHER_IMPLS}, got {impl!r}")
    p = num_prefix
    bsz, t, c = x.shape
    n = t - p
    keep_b = keep if keep.dtype == torch.bool else keep.detach() > 0.5
    if bsz == 1:     # one sample: the nonzero below sizes the gathered tensor, no per-sample counts needed
        counts, cl, equal = None, None, True
    else:
        counts = keep_b.sum(1)
        cl = counts.tolist()                 # the segment's one host-device synchronisation
        if not cl or min(cl) == n:           # everything kept: the plain blocks
            for blk in blocks:
                x = blk(x)
            return x
        equal = max(cl) == min(cl)
    if impl == "auto":
        impl = "pad" if equal else "loop"
    if impl == "loop" and not equal:
        out = x if inplace else x.clone()
        for i in range(bsz):
            pos = torch.cat([torch.arange(p, device=x.device), keep_b[i].nonzero(as_tuple=True)[0] + p])
            if pos.numel() == 0:             # no prefix and nothing kept: the sample carries its tokens
                continue
            seq = out[i].index_select(0, pos).unsqueeze(0)
            for blk in blocks:
                seq = blk(seq)
            out[i].index_copy_(0, pos, seq[0])
        return out
    if equal:    # flat row indices of the prefix + kept tokens, sample-major, original order: one nonzero
        full = torch.cat([keep_b.new_ones(bsz, p), keep_b], 1) if p else keep_b
        flat = full.view(-1).nonzero().squeeze(1)
        kmax = flat.shape[0] // bsz - p
        valid = None
        if kmax == n:                        # everything kept: the plain blocks
            for blk in blocks:
                x = blk(x)
            return x
    else:
        kmax = max(cl)
        idx, valid, _ = _kept_index(keep_b)
        base = torch.arange(bsz, device=x.device)[:, None] * t
        pos = torch.cat([torch.arange(p, device=x.device).expand(bsz, p), idx + p], 1) + base   # (B, P + K_max)
        flat = pos.reshape(-1)
    xf = x.reshape(bsz * t, c)               # the gather's source and the scatter's target
    seq0 = xf.index_select(0, flat).view(bsz, p + kmax, c)
    key_mask = None
    if valid is not None:
        empty = (counts == 0) if p == 0 else torch.zeros_like(counts, dtype=torch.bool)
        key_mask = torch.cat([valid.new_ones(bsz, p), valid | empty[:, None]], dim=1)
    seq = seq0
    for blk in blocks:
        seq = blk(seq, attn_mask=None if key_mask is None else key_mask[:, None, None, :])
    if valid is not None:    # padded slots (pruned tokens) keep their value
        seq = torch.where(torch.cat([valid.new_ones(bsz, p), valid], 1)[..., None], seq, seq0)
    # index_put_ rather than index_copy_ (same result for the unique row indices here): 1.45 -> 0.83 ms per
    # segment at DeiT-S batch 8 (577 of 961 rows, C 384, 2 threads); equal at batch 1 (0.05 ms)
    xf = xf.index_put_((flat,), seq.reshape(-1, c)) if inplace else xf.index_put((flat,), seq.reshape(-1, c))
    return xf.view(bsz, t, c)

"""VPP's learned gates: Map-SM (Mapping-Selective Module) and SM (Selective Module).

Both are small ``nn.Module`` s with an explicit forward: everything that changes from frame to frame
(previous-frame key / value / mask) is an argument, nothing per-frame is stored on the module.

Gumbel-softmax convention (supplementary §B, Eq. 10-11; PyTorch ``F.gumbel_softmax``; helpers from
:mod:`vppkit.models.pruning.gumbel`): ``gumbel_softmax(tau * logits, tau) = softmax(logits + g / tau)``,
g ~ Gumbel(0, 1) i.i.d.; VPP uses tau = 10, so the noise is shrunk 10x. ``noise=False`` drops g
(deterministic argmax / noise-free probabilities). The official code keeps the noise at evaluation
(supplementary §B: "background activation"); training is always noisy. The hard variants are straight-through:
forward = one-hot, backward = gradient of the soft probabilities.

Sources: vpp-notes §4 (Map-SM, steps 1-11), §5 (SM), §12 (quirks fixed here), §14 (blueprint).
"""

from __future__ import annotations

import functools

import torch
from timm.layers import Mlp
from torch import nn

from .gumbel import gumbel_softmax_st, keep_from_logprobs, sample_gumbel, topk_mask_st
from .schedules import keep_count

__all__ = [
    "TAU",
    "spatial_prior",
    "MapSM",
    "SM",
    "map_sm_macs",
    "sm_macs",
]

TAU = 10.0  # tau_matching = tau_selector = 10 (supplementary Table 6)


@functools.lru_cache(maxsize=8)
def _spatial_prior_cached(height: int, width: int, device: torch.device) -> torch.Tensor:
    # a normal (non-inference) constant, even when first built under torch.inference_mode()
    with torch.inference_mode(False), torch.no_grad():
        h = torch.linspace(0.0, 1.0, height, device=device)
        w = torch.linspace(0.0, 1.0, width, device=device)
        hh, ww = torch.meshgrid(h, w, indexing="ij")  # row-major token order: index = row * W + col
        coords = torch.stack([ww.reshape(-1), hh.reshape(-1)], dim=-1)  # (N, 2) = (w_i, h_i)
        d = (coords[:, None, :] - coords[None, :, :]).abs().sum(-1)  # L1 distance in [0, 2]
        return torch.log10(10.0 * (2.0 - d) / 2.0 + 1e-6)


def spatial_prior(grid: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Map-SM's spatial prior Phi_dist (vpp-notes §4.2 step 2).

    Patch coordinates are normalised per axis (w in linspace(0, 1, W), h in linspace(0, 1, H):
    anisotropic), d_ij = L1 distance in [0, 2], ``Phi_dist = log10(10 * (2 - d) / 2 + 1e-6)``:
    +1 at the same patch, about 0 at d = 1.8, -6 at opposite corners.

    The matrix is a constant of the grid, cached per (H, W, device) (the official code rebuilds it on
    every forward). The returned tensor is shared: do not modify it in place.

    Args:
        grid: (H, W) patch grid, tokens in row-major order.

    Returns:
        (N, N) float32 tensor, N = H * W.
    """
    return _spatial_prior_cached(int(grid[0]), int(grid[1]), torch.device(device))


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-sample row gather: (B, N, C) tokens at (B, K) indices -> (B, K, C), one ``index_select`` on the
    flattened tokens (no index expanded over C)."""
    b, n, c = x.shape
    flat = index if b == 1 else index + torch.arange(b, device=index.device)[:, None] * n   # rows of (B * N, C)
    return x.reshape(b * n, c).index_select(0, flat.reshape(-1)).view(b, index.shape[1], c)


def map_sm_macs(num_tokens: int, dim: int, num_keys: int | None = None) -> int:
    """MACs of one Map-SM forward per sample.

    Training / graph path (official): Phi_sim = x_q x_k^T and A x_v over all N previous tokens (2 N^2 C), and
    the selector MLP C -> C/2 -> 2 on the N mapped tokens: N (C * C/2 + C/2 * 2).
    Inference path (``num_keys`` = K kept previous tokens, :meth:`MapSM.forward`): Phi_sim against the K kept
    keys only (N K C), no matmul for the mapping (an argmax), and the selector on the K kept previous tokens,
    whose log-probs are gathered onto the N current tokens: K (C * C/2 + C/2 * 2).
    LayerNorm, softmax, pooling and top-k are not multiply-adds of a matmul and are left out (fvcore
    convention). Source: vpp-notes §4.2 "Cost" (about 1.6 GMAC for Tiny at N = 2040).
    """
    hidden = dim // 2
    per_token = dim * hidden + hidden * 2
    if num_keys is None:
        return 2 * num_tokens * num_tokens * dim + num_tokens * per_token
    return num_tokens * int(num_keys) * dim + int(num_keys) * per_token


def sm_macs(num_tokens: int, dim: int) -> int:
    """MACs of one SM forward per sample: MLP C -> C/4 -> 2 on ``num_tokens`` tokens (vpp-notes §5): all N in
    training, the tokens kept before the SM at inference (:meth:`SM.forward`)."""
    hidden = dim // 4
    return num_tokens * (dim * hidden + hidden * 2)


class MapSM(nn.Module):
    """Mapping-Selective Module: the first keep mask M_1 of frame t from frame t-1's deep features.

    Computation (vpp-notes §4.2, steps 1-10; supplementary Fig. of Map-SM):

    1. ``Phi_sim = x_q @ x_k^T`` (dot product, no normalisation, no 1/sqrt(C));
    2-3. ``Phi = Phi_sim + Phi_dist``; columns of previous-frame tokens pruned at block 5 set to -inf;
    4. hard association ``A = gumbel_softmax(tau Phi, tau, hard=True)`` over previous tokens (tau = 10);
    5. temporal mapping ``x_hat = A @ x_v`` (layer-6 features of frame t-1 onto the grid of frame t);
    6. selector ``s = log_softmax(Mlp(LayerNorm(x_hat)))``, Mlp C -> C/2 -> 2, channel 0 = keep;
    7. 9x9 smoothing of s (ReplicationPad2d(4) + AvgPool2d(9, 1)) on the (H, W) grid;
    8. soft keep probability ``p = gumbel_softmax(tau s_bar, tau)[..., 0]``;
    9-10. top-k, ``K = floor(N m)``, straight-through ``M = y_hard - sg(p) + p``.

    Deliberate differences from the official code:

    - the key ``x_k`` is the previous frame's block-0 output, which the *caller* must have cloned
      before blocks 1-2 run (the official inference path scatters blocks 1-2 into that tensor in place,
      so at test time its key is effectively the block-2 output; vpp-notes §12.1). See
      :class:`vppkit.models.pruning.vpp.TemporalState`;
    - the unused ``init_mlp`` / ``norm_input`` parameters are omitted (§12.7: they break DDP without
      ``find_unused_parameters``);
    - hidden size from C (the official Small config hard-codes 192; §12.3);
    - ``Phi_dist`` is cached per grid instead of rebuilt every forward.

    Args:
        dim: token width C.
        tau: Gumbel temperature for association and selection (10).
        pool_radius: smoothing radius r; kernel 2r + 1 (4 -> 9x9).
        inference_noise: keep Gumbel noise in eval mode (official behaviour, supplementary §B) if True;
            deterministic argmax / noise-free top-k if False. Training is always noisy.
    """

    def __init__(self, dim: int, tau: float = TAU, pool_radius: int = 4, inference_noise: bool = True) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"MapSM dim must be >= 2, got {dim}")
        self.dim = dim
        self.tau = float(tau)
        self.pool_radius = int(pool_radius)
        self.inference_noise = bool(inference_noise)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=dim // 2, out_features=2, act_layer=nn.GELU)
        self.smooth = nn.Sequential(nn.ReplicationPad2d(self.pool_radius),
                                    nn.AvgPool2d(2 * self.pool_radius + 1, stride=1))

    def use_noise(self, noise: bool | None = None) -> bool:
        """Noise on in training; in eval mode ``noise`` if given, else ``self.inference_noise``."""
        if self.training:
            return True
        return self.inference_noise if noise is None else bool(noise)

    def associate(self, x_q: torch.Tensor, x_k: torch.Tensor, mask_prev: torch.Tensor, grid: tuple[int, int],
                  noise: bool) -> torch.Tensor:
        """Hard association matrix A (B, N, N), straight-through (steps 1-4).

        ``A[b, i, j] = 1`` maps current token i onto previous token j; j is always kept in ``mask_prev``.
        """
        phi = x_q @ x_k.transpose(1, 2) + spatial_prior(grid, x_q.device).to(x_q.dtype)
        phi = phi.masked_fill(~mask_prev[:, None, :], float("-inf"))
        return gumbel_softmax_st(self.tau * phi, self.tau, hard=True, noise=noise, dim=-1)

    def associate_sparse(self, x_q: torch.Tensor, x_k: torch.Tensor, mask_prev: torch.Tensor,
                         grid: tuple[int, int], noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-4 without a graph, against the kept previous tokens only.

        The association row of token i is one-hot, so ``A @ x_v`` is ``x_v`` at the row's argmax; and pruned
        previous tokens have Phi = -inf, so only the K kept keys can win. Computing Phi against the K kept
        keys (padded to the batch maximum, padding at -inf) and taking the argmax gives the same mapping as
        :meth:`associate` (identical in deterministic mode; the same distribution with noise) at N K C instead
        of N^2 C MACs. Used at inference only: it has no straight-through gradient. A sample whose
        ``mask_prev`` keeps nothing maps from all N previous tokens (as :meth:`forward` documents).

        Phi is built transposed, (B, K, N) = keys x queries: ``Phi_dist`` is symmetric (an L1 distance), so its
        rows at the kept keys are contiguous reads (one ``index_select``), the ``baddbmm`` gets contiguous
        operands, and the argmax over keys is ``max(dim=1)``; keys are row gathers (``index_select`` on the
        flattened tokens, not ``gather`` with an index expanded over C). Issue 15 measurement (N 960, C 384,
        K 384, 2 threads): the association 1.94 -> 1.60 ms at batch 1 and 22.8 -> 13.7 ms at batch 8 against
        the (B, N, K) layout, whose column gather and transposed ``baddbmm`` operand cost a strided copy each.
        Phi is accumulated in place into the gathered prior rows, padding rows set to -inf before (saves two
        copies of the (B, K, N) tensor: steps 1-4 took 24.8 -> 14.3 ms at batch 8 with unequal kept counts).

        Args:
            x_q, x_k: (B, N, C) query (current block-0 output) and key (previous block-0 output).
            mask_prev: (B, N) bool keep mask of the previous frame at block 5.

        Returns:
            ``(order, match)``: order (B, K) long, the previous frame's token index of each key row (kept
            tokens first in token order, then padding); match (B, N) long in [0, K), the key row each current
            token is mapped onto (never a padding row). The mapped previous token is ``order.gather(1, match)``.
        """
        b, n, c = x_q.shape
        counts = mask_prev.sum(-1)
        cl = counts.tolist()
        if min(cl) == 0:    # nothing kept in a sample: every previous token may be matched (as MapSM.forward)
            mask_prev = mask_prev | (counts == 0)[:, None]
            counts = mask_prev.sum(-1)
            cl = counts.tolist()
        k_max = max(cl)
        order = torch.argsort((~mask_prev).to(torch.int8), dim=1, stable=True)[:, :k_max]  # kept first, (B, K)
        keys = _rows(x_k, order)                                                           # (B, K, C)
        prior = spatial_prior(grid, x_q.device).to(x_q.dtype)                            # (N, N), symmetric
        phi_t = prior.index_select(0, order.reshape(-1)).view(b, k_max, n)  # (B, K, N), a fresh copy
        if min(cl) < k_max:  # unequal kept counts in the batch: padding rows at -inf (never the argmax)
            phi_t[torch.arange(k_max, device=x_q.device)[None, :] >= counts[:, None]] = float("-inf")
        # Phi = Phi_dist + x_k x_q^T, accumulated in place (out= rather than baddbmm_: FLOP counters see it)
        phi_t = torch.baddbmm(phi_t, keys, x_q.transpose(1, 2), out=phi_t)
        if noise:  # same perturbation as gumbel_softmax_st(tau * phi, tau): phi + g / tau
            phi_t = phi_t + sample_gumbel(phi_t) / self.tau
        return order, phi_t.max(dim=1).indices

    def map_features_sparse(self, x_q: torch.Tensor, x_k: torch.Tensor, x_v: torch.Tensor,
                            mask_prev: torch.Tensor, grid: tuple[int, int], noise: bool) -> torch.Tensor:
        """Steps 1-5 without a graph (:meth:`associate_sparse`): the mapped features x_hat (B, N, C).

        :meth:`forward` does not build x_hat at inference (it runs the selector on the K kept previous
        tokens, see there); this is the reference of steps 1-5 for tests and analyses.
        """
        order, match = self.associate_sparse(x_q, x_k, mask_prev, grid, noise)
        return _rows(x_v, order.gather(1, match))

    def selector(self, x: torch.Tensor) -> torch.Tensor:
        """Step 6: ``log_softmax(Mlp(LayerNorm(x)))``, (..., C) -> (..., 2), channel 0 = keep. Per token."""
        return self.mlp(self.norm(x)).log_softmax(-1)

    def smoothed_keep_probability(self, s: torch.Tensor, grid: tuple[int, int], noise: bool) -> torch.Tensor:
        """Steps 7-8: soft keep probability p (B, N) from the selector's log-probabilities s (B, N, 2)."""
        b, n, _ = s.shape
        s = s.transpose(1, 2).reshape(b, 2, grid[0], grid[1])
        s = self.smooth(s).reshape(b, 2, n).transpose(1, 2)
        return gumbel_softmax_st(self.tau * s, self.tau, hard=False, noise=noise, dim=-1)[..., 0]

    def keep_probability(self, x_hat: torch.Tensor, grid: tuple[int, int], noise: bool) -> torch.Tensor:
        """Soft keep probability p (B, N) from mapped features x_hat (B, N, C) (steps 6-8)."""
        return self.smoothed_keep_probability(self.selector(x_hat), grid, noise)

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor, x_v: torch.Tensor, mask_prev: torch.Tensor,
                grid: tuple[int, int], keep: float, *, noise: bool | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep mask M_1 for blocks 1-2 of the current frame.

        Args:
            x_q: (B, N, C) current frame's block-0 output (query).
            x_k: (B, N, C) previous frame's block-0 output (key), cloned before blocks 1-2.
            x_v: (B, N, C) previous frame's block-5 output (value, the mapped deep feature).
            mask_prev: (B, N) bool, keep mask in force at block 5 of the previous frame. A sample whose
                mask is all False has nothing to map from: it is treated as all True (every previous
                token may be matched, pruned ones with their stale values) instead of producing NaN.
            grid: (H, W) patch grid with H * W = N, row-major tokens.
            keep: Map-SM keep fraction m; exactly ``floor(N m)`` tokens are kept per sample.
            noise: override the inference noise switch in eval mode (ignored in training).

        Returns:
            ``(mask, p)``: mask (B, N) float straight-through keep mask (forward value exactly 0/1),
            p (B, N) soft keep probabilities (for the kappa_init loss term).

        Raises:
            ValueError: on inconsistent shapes / grid / dtype.
        """
        b, n, c = x_q.shape
        for name, t in (("x_k", x_k), ("x_v", x_v)):
            if tuple(t.shape) != (b, n, c):
                raise ValueError(f"MapSM: {name} must have the shape of x_q {(b, n, c)}, got {tuple(t.shape)}")
        if c != self.dim:
            raise ValueError(f"MapSM built for C={self.dim}, got tokens with C={c}")
        if grid[0] * grid[1] != n:
            raise ValueError(f"MapSM: grid {tuple(grid)} does not match N={n}")
        if mask_prev.dtype != torch.bool or tuple(mask_prev.shape) != (b, n):
            raise ValueError(f"MapSM: mask_prev must be a (B, N)=({b}, {n}) bool tensor, got "
                             f"{tuple(mask_prev.shape)} {mask_prev.dtype}")
        k = keep_count(n, keep)
        use_noise = self.use_noise(noise)
        if torch.is_grad_enabled():
            empty = ~mask_prev.any(-1)
            if bool(empty.any()):
                mask_prev = mask_prev | empty[:, None]
            x_hat = self.associate(x_q, x_k, mask_prev, grid, use_noise) @ x_v
            p = self.keep_probability(x_hat, grid, use_noise)
        else:  # inference: no straight-through gradient needed, map from the kept keys only (handles empties)
            # The selector is per token and x_hat's rows are copies of the K kept previous tokens' values, so
            # it runs on those K rows and its 2 log-probs are gathered onto the N current tokens (issue 15):
            # K instead of N rows through LayerNorm and the C -> C/2 -> 2 MLP, and x_hat is never built.
            order, match = self.associate_sparse(x_q, x_k, mask_prev, grid, use_noise)
            s = self.selector(_rows(x_v, order)).gather(1, match[..., None].expand(-1, -1, 2))   # (B, N, 2)
            p = self.smoothed_keep_probability(s, grid, use_noise)
        return topk_mask_st(p, k), p


class SM(nn.Module):
    """Selective Module: a per-token keep/prune gate nested in the previous mask (no reactivation).

    ``f = log_softmax(Mlp(LayerNorm(x)))`` with Mlp C -> C/4 -> 2 (channel 0 = keep);
    ``s = gumbel_softmax(tau f, tau, hard=True)[..., 0]`` (tau = 10); ``M_b = s * M_prev``.
    The keep count is dynamic per image (no quota); the sparsity loss pulls its batch mean to k_b.

    Hidden size from C (the official Small config hard-codes 192; vpp-notes §12.3, fixed).
    The official code keeps the Gumbel noise at evaluation (§12.4); ``inference_noise=False`` gives
    the deterministic gate ``keep iff f_0 > f_1``.

    Args:
        dim: token width C.
        tau: Gumbel temperature (10).
        inference_noise: see :class:`MapSM`.

    Source: vpp-notes §5; SViT's selective module (§10.1) with tau = 10 and nesting.
    """

    def __init__(self, dim: int, tau: float = TAU, inference_noise: bool = True) -> None:
        super().__init__()
        if dim < 4:
            raise ValueError(f"SM dim must be >= 4, got {dim}")
        self.dim = dim
        self.tau = float(tau)
        self.inference_noise = bool(inference_noise)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=dim // 4, out_features=2, act_layer=nn.GELU)

    def use_noise(self, noise: bool | None = None) -> bool:
        """Noise on in training; in eval mode ``noise`` if given, else ``self.inference_noise``."""
        if self.training:
            return True
        return self.inference_noise if noise is None else bool(noise)

    def forward(self, x: torch.Tensor, prev_mask: torch.Tensor | None = None, *, noise: bool | None = None
                ) -> torch.Tensor:
        """Nested keep mask for the next stage.

        With a graph (training) the gate runs on all N tokens: its value at a pruned token multiplies the
        straight-through ``prev_mask`` there and carries that entry's gradient. Without one (inference) it runs on
        the tokens ``prev_mask`` keeps only (:meth:`gate_kept`): a pruned token's entry is 0 whatever the gate
        says, so the forward value is the same (exactly so with ``noise=False``; with noise, the same
        distribution from fewer draws) at K instead of N tokens (issue 15; :func:`sm_macs` of the kept count).

        Args:
            x: (B, N, C) tokens entering the SM's block (full grid; pruned tokens carry stale values).
            prev_mask: (B, N) float straight-through (or bool) mask in force before this SM; None = all ones.
            noise: override the inference noise switch in eval mode (ignored in training).

        Returns:
            (B, N) float straight-through mask ``s * prev_mask`` (forward value exactly 0/1).

        Raises:
            ValueError: on a width or shape mismatch.
        """
        b, n, c = x.shape
        if c != self.dim:
            raise ValueError(f"SM built for C={self.dim}, got tokens with C={c}")
        if prev_mask is not None and tuple(prev_mask.shape) != (b, n):
            raise ValueError(f"SM: prev_mask must be (B, N)=({b}, {n}), got {tuple(prev_mask.shape)}")
        if prev_mask is not None and not torch.is_grad_enabled():
            return self.gate_kept(x, prev_mask, noise=noise)
        f = self.mlp(self.norm(x)).log_softmax(-1)
        s = keep_from_logprobs(self.tau * f, self.tau, noise=self.use_noise(noise))
        if prev_mask is None:
            return s
        return s * prev_mask.to(s.dtype)

    def gate_kept(self, x: torch.Tensor, prev_mask: torch.Tensor, *, noise: bool | None = None) -> torch.Tensor:
        """The gate on the kept tokens only, without a straight-through graph (inference).

        Args:
            x: (B, N, C) tokens. prev_mask: (B, N) bool or 0/1 float mask; > 0.5 = kept.
            noise: as :meth:`forward`.

        Returns:
            (B, N) float 0/1 mask: the gate's decision at tokens ``prev_mask`` keeps, 0 elsewhere.
        """
        b, n, c = x.shape
        rows = (prev_mask.reshape(-1) > 0.5).nonzero().squeeze(1)       # flat (B * N) indices of kept tokens
        f = self.mlp(self.norm(x.reshape(b * n, c).index_select(0, rows))).log_softmax(-1)
        s = keep_from_logprobs(self.tau * f, self.tau, noise=self.use_noise(noise))     # (K,)
        return s.new_zeros(b * n).index_copy(0, rows, s).view(b, n)

"""Training-free token selectors: pure tensor functions (ToMe style), usable at any block on any token set.

Every selector has the signature::

    select_xxx(tokens, k, grid=(H, W), *, seed=None, generator=None, **method_options) -> indices (B, k) long

- ``tokens``: (N, d) or (B, N, d) float features of the N patch tokens of one frame (prefix tokens excluded),
  raster order over the (H, W) patch grid (index i is row ``i // W``, column ``i % W``).
- ``k``: number of tokens to keep, 1 <= k <= N (``k >= N`` keeps everything).
- returns the kept indices, shape (B, k) (B = 1 for a 2-D input), **sorted ascending** so that gathering
  with them keeps raster order (MAE ``random_masking`` style: gather kept tokens, restore order by sorting).
- deterministic: given the same input and seed, the same indices. Ties are broken towards the lowest index.

Use :func:`keep_mask_from_indices` to turn indices into a (B, N) bool keep mask, and
:func:`spatial_coverage` to measure how evenly a keep mask covers the grid (selection study).

Sources: evtp-notes.md §4 (EVTP-IV spatial k-center, reconstructed: the paper's exact algorithm was not
retrievable), §5.1 (DivPrune, vbdi/divprune ``llava_arch.py``), §5.5 (random / uniform grid);
VisPruner's SigLIP path for "attention received" (§5.2).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "select_random",
    "select_uniform_grid",
    "select_attention",
    "select_kcenter",
    "select_divprune",
    "select_spatial_kcenter",
    "keep_mask_from_indices",
    "spatial_coverage",
    "grid_coordinates",
    "grid_distance",
    "SELECTORS",
]


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _as_batch(tokens: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(tokens):
        raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() == 2:
        return tokens.unsqueeze(0)
    if tokens.dim() == 3:
        return tokens
    raise ValueError(f"tokens must be (N, d) or (B, N, d), got shape {tuple(tokens.shape)}")


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not (isinstance(k, numbers.Integral) or (torch.is_tensor(k) and k.dim() == 0)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1 (number of tokens to keep), got {k}")
    return min(k, n)


def _check_grid(grid: tuple[int, int] | None, n: int) -> tuple[int, int]:
    if grid is None:
        raise ValueError(f"this selector needs the patch grid (H, W) with H * W == N = {n}")
    h, w = int(grid[0]), int(grid[1])
    if h < 1 or w < 1 or h * w != n:
        raise ValueError(f"grid {tuple(grid)} does not match the number of tokens N = {n} (need H * W == N)")
    return h, w


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(seed))
        return g
    return generator


def grid_coordinates(grid: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """(row, col) of every patch in raster order.

    Args:
        grid: (H, W) patch grid.
        device: device of the result.

    Returns:
        (H*W, 2) float tensor, in patch units.
    """
    h, w = int(grid[0]), int(grid[1])
    rows = torch.arange(h, device=device, dtype=torch.float32).repeat_interleave(w)
    cols = torch.arange(w, device=device, dtype=torch.float32).repeat(h)
    return torch.stack([rows, cols], dim=-1)


def grid_distance(grid: tuple[int, int], normalise: bool = False, device: torch.device | str | None = None
                  ) -> torch.Tensor:
    """Euclidean distance between every pair of patches of a grid.

    Args:
        grid: (H, W) patch grid.
        normalise: divide by the grid diagonal ``sqrt((H-1)^2 + (W-1)^2)`` so distances lie in [0, 1]
            (evtp-notes §4: d_s = ||p_i - p_j|| / (26 sqrt 2) on SigLIP's 27 x 27 grid).
        device: device of the result.

    Returns:
        (N, N) float tensor, N = H*W, in patch units (or fractions of the diagonal when ``normalise``).
    """
    coords = grid_coordinates(grid, device=device)
    dist = torch.cdist(coords, coords)
    if normalise:
        diag = math.hypot(grid[0] - 1, grid[1] - 1)
        dist = dist / diag if diag > 0 else torch.zeros_like(dist)
    return dist


def _cosine_distance(x: torch.Tensor) -> torch.Tensor:
    """(B, N, d) -> (B, N, N) 1 - cosine similarity (DivPrune's distance), clamped to >= 0."""
    xn = F.normalize(x.float(), dim=-1)
    return (1.0 - xn @ xn.transpose(1, 2)).clamp_min_(0.0)


def _isolated_init(dist: torch.Tensor) -> torch.Tensor:
    """DivPrune's first pick: the token whose nearest *other* token is farthest. (B, N, N) -> (B,) long.

    DivPrune takes the second-smallest entry of each column (the smallest being the self-distance 0).
    We mask the diagonal instead, which is the same except when floating-point error makes 1 - cos(x, x)
    slightly positive (then DivPrune would read the self-distance; deliberate fix).
    """
    n = dist.shape[-1]
    if n == 1:
        return torch.zeros(dist.shape[0], dtype=torch.long, device=dist.device)
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    nn_dist = dist.masked_fill(eye, float("inf")).amin(dim=1)  # (B, N): min over rows of each column
    return nn_dist.argmax(dim=-1)


def _greedy_farthest(dist: torch.Tensor, k: int, first: torch.Tensor) -> torch.Tensor:
    """Gonzalez farthest-first traversal (greedy k-center / max-min diversity).

    Args:
        dist: (B, N, N) pairwise distances.
        k: number of centres.
        first: (B,) long, the first centre of each sample.

    Returns:
        (B, k) long indices, sorted ascending.
    """
    b, n, _ = dist.shape
    ar = torch.arange(b, device=dist.device)
    chosen = torch.empty(b, k, dtype=torch.long, device=dist.device)
    chosen[:, 0] = first
    selected = torch.zeros(b, n, dtype=torch.bool, device=dist.device)
    selected[ar, first] = True
    min_d = dist[ar, first].clone()  # (B, N) distance of every token to its nearest centre
    for t in range(1, k):
        score = min_d.masked_fill(selected, float("-inf"))
        nxt = score.argmax(dim=-1)  # torch.argmax returns the first maximal index: ties -> lowest index
        chosen[:, t] = nxt
        selected[ar, nxt] = True
        min_d = torch.minimum(min_d, dist[ar, nxt])
    return chosen.sort(dim=-1).values


# ----------------------------------------------------------------------------------------------------------------
# selectors
# ----------------------------------------------------------------------------------------------------------------
def select_random(tokens: torch.Tensor, k: int, grid: tuple[int, int] | None = None, *, seed: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random k of N tokens without replacement (evtp-notes §5.5 "Random").

    Args:
        tokens: (N, d) or (B, N, d); only the shape is used.
        k: tokens to keep.
        grid: unused (accepted for a common signature).
        seed: seed of a private CPU generator (reproducible); or pass ``generator``. With neither, the
            global torch RNG is used.
        generator: a ``torch.Generator`` (CPU).

    Returns:
        (B, k) long, sorted ascending; independent draws per sample.

    Raises:
        ValueError: bad shape, k < 1, or both seed and generator given.
    """
    x = _as_batch(tokens)
    b, n, _ = x.shape
    k = _check_k(k, n)
    g = _generator(seed, generator)
    noise = torch.rand(b, n, generator=g)
    idx = noise.argsort(dim=-1, stable=True)[:, :k]
    return idx.sort(dim=-1).values.to(x.device)


def _uniform_1d(n: int, k: int) -> torch.Tensor:
    """k indices spread evenly over 0..n-1 (round(linspace)), unique."""
    if k >= n:
        return torch.arange(n)
    pos = torch.linspace(0, n - 1, k, dtype=torch.float64).round().long()
    return torch.unique(pos)  # linspace with k <= n and step >= 1 gives unique values already


def select_uniform_grid(tokens: torch.Tensor, k: int, grid: tuple[int, int] | None = None, *,
                        seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Evenly spaced tokens on the 2-D grid (evtp-notes §5.5 "Uniform" (b)); input-independent.

    An a x b lattice (a rows, b cols, a*b <= k, aspect ratio of the grid) at ``round(linspace)`` positions,
    filled up to exactly k with ``round(linspace)`` positions over the remaining tokens in raster order.
    Example on 27 x 27: k=146 -> 12 x 12 lattice + 2, k=36 -> 6 x 6. Avoids the VisionZip-style
    ``arange(0, N, N // k)`` pitfall that never samples the last rows.

    Args:
        tokens: (N, d) or (B, N, d); only the shape is used.
        k: tokens to keep.
        grid: (H, W), H*W == N.
        seed, generator: unused (deterministic selector; accepted for a common signature).

    Returns:
        (B, k) long, sorted ascending, identical for every sample.

    Raises:
        ValueError: bad shape, k < 1, grid mismatch.
    """
    x = _as_batch(tokens)
    b, n, _ = x.shape
    k = _check_k(k, n)
    h, w = _check_grid(grid, n)
    a = max(1, min(h, int(math.floor(math.sqrt(k * h / w)))))
    bc = max(1, min(w, k // a))
    while a * bc > k:  # cannot happen with the floors above, kept as a guard
        a -= 1
    rows = _uniform_1d(h, a)
    cols = _uniform_1d(w, bc)
    lattice = (rows[:, None] * w + cols[None, :]).reshape(-1)
    rest = k - lattice.numel()
    if rest > 0:
        free = torch.ones(n, dtype=torch.bool)
        free[lattice] = False
        remaining = free.nonzero().squeeze(1)
        extra = remaining[_uniform_1d(remaining.numel(), rest)]
        lattice = torch.cat([lattice, extra])
    idx = lattice.sort().values
    return idx.unsqueeze(0).expand(b, -1).contiguous().to(x.device)


def select_attention(tokens: torch.Tensor, k: int, grid: tuple[int, int] | None = None, *,
                     attention: torch.Tensor, seed: int | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Top-k tokens by the attention they receive (VisPruner's SigLIP path, evtp-notes §5.2).

    The attention-received vector is computed by the caller, e.g. a layer's attention (B, heads, N, N)
    averaged over heads and over the query axis. Without it this selector is undefined: we do not
    substitute feature norms silently.

    Args:
        tokens: (N, d) or (B, N, d); only the shape is used.
        k: tokens to keep.
        grid: unused.
        attention: (N,) or (B, N) attention received by each token (higher = more important).
        seed, generator: unused (deterministic; ties -> lowest index).

    Returns:
        (B, k) long, sorted ascending.

    Raises:
        ValueError: attention missing or of the wrong shape.
    """
    x = _as_batch(tokens)
    b, n, _ = x.shape
    k = _check_k(k, n)
    if attention is None:
        raise ValueError("select_attention needs the attention-received vector `attention` (N,) or (B, N)")
    att = attention.unsqueeze(0) if attention.dim() == 1 else attention
    if att.dim() != 2 or att.shape[-1] != n or att.shape[0] not in (1, b):
        raise ValueError(f"attention must be (N,) or (B, N) with N={n}, B={b}; got {tuple(attention.shape)}")
    att = att.expand(b, n).float()
    idx = (-att).argsort(dim=-1, stable=True)[:, :k]
    return idx.sort(dim=-1).values.to(x.device)


def select_kcenter(tokens: torch.Tensor, k: int, grid: tuple[int, int] | None = None, *,
                   seed: int | None = None, generator: torch.Generator | None = None,
                   init: str = "isolated") -> torch.Tensor:
    """Greedy k-center (Gonzalez farthest-first) on Euclidean feature distance.

    The plain k-center baseline of the selection study: no normalisation (cosine) and no spatial term.

    Args:
        tokens: (N, d) or (B, N, d).
        k: tokens to keep.
        grid: unused.
        init: "isolated" (DivPrune init: the token farthest from its nearest neighbour; deterministic) or
            "random" (seeded).
        seed, generator: used by ``init="random"``.

    Returns:
        (B, k) long, sorted ascending.
    """
    x = _as_batch(tokens).float()
    k = _check_k(k, x.shape[1])
    dist = torch.cdist(x, x)
    return _greedy_farthest(dist, k, _first_centre(dist, init, seed, generator, grid=None))


def _first_centre(dist: torch.Tensor, init: str, seed: int | None, generator: torch.Generator | None,
                  grid: tuple[int, int] | None) -> torch.Tensor:
    b, n, _ = dist.shape
    if init == "isolated":
        return _isolated_init(dist)
    if init == "random":
        g = _generator(seed, generator)
        return torch.randint(0, n, (b,), generator=g).to(dist.device)
    if init == "center":
        if grid is None:
            raise ValueError("init='center' needs the grid")
        h, w = grid
        return torch.full((b,), (h // 2) * w + w // 2, dtype=torch.long, device=dist.device)
    raise ValueError(f"unknown init {init!r}; expected 'isolated', 'random' or 'center'")


def select_divprune(tokens: torch.Tensor, k: int, grid: tuple[int, int] | None = None, *,
                    seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """DivPrune: greedy max-min diversity on cosine distance (evtp-notes §5.1; vbdi/divprune ``llava_arch.py``).

    D = 1 - cos(x_i, x_j); first pick = the most isolated token (largest nearest-neighbour distance);
    each next pick = argmax_j min_{s in S} D[s, j] (first index on ties). Equals
    :func:`select_spatial_kcenter` with ``lam=0`` and ``init="isolated"``.

    Args:
        tokens: (N, d) or (B, N, d) features (DivPrune uses the post-projector LLM-space tokens).
        k: tokens to keep.
        grid: unused.
        seed, generator: unused (deterministic).

    Returns:
        (B, k) long, sorted ascending (DivPrune re-sorts to keep raster order).
    """
    x = _as_batch(tokens)
    k = _check_k(k, x.shape[1])
    dist = _cosine_distance(x)
    return _greedy_farthest(dist, k, _isolated_init(dist))


def select_spatial_kcenter(tokens: torch.Tensor, k: int, grid: tuple[int, int] | None = None, *,
                           lam: float = 0.5, init: str = "isolated", seed: int | None = None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """EVTP-IV-style spatial k-center (evtp-notes §4, a reconstruction: the paper's equations were not readable).

    Distance d(i, j) = (1 - cos(x_i, x_j)) + lam * ||p_i - p_j|| / diag, with p the (row, col) grid position
    and diag the grid diagonal (so the spatial term lies in [0, lam]); greedy farthest-first (Gonzalez
    2-approximation of the covering radius). ``lam = 0`` is DivPrune; ``lam -> inf`` is farthest-point
    sampling on the grid (near-uniform coverage).

    Args:
        tokens: (N, d) or (B, N, d) features.
        k: tokens to keep.
        grid: (H, W), H*W == N.
        lam: spatial weight λ >= 0 (unknown in the paper; default 0.5 is our choice, sweep it).
        init: first centre: "isolated" (DivPrune init, default), "center" (grid centre) or "random" (seeded).
        seed, generator: for ``init="random"``.

    Returns:
        (B, k) long, sorted ascending.

    Raises:
        ValueError: bad shape, grid mismatch, lam < 0, unknown init.
    """
    x = _as_batch(tokens)
    b, n, _ = x.shape
    k = _check_k(k, n)
    grid = _check_grid(grid, n)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    dist = _cosine_distance(x)
    if lam > 0:
        dist = dist + lam * grid_distance(grid, normalise=True, device=dist.device).unsqueeze(0)
    return _greedy_farthest(dist, k, _first_centre(dist, init, seed, generator, grid))


# ----------------------------------------------------------------------------------------------------------------
# masks and coverage
# ----------------------------------------------------------------------------------------------------------------
def keep_mask_from_indices(indices: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Bool keep mask from kept indices.

    Args:
        indices: (k,) or (B, k) long indices in [0, num_tokens).
        num_tokens: N.

    Returns:
        (B, N) bool keep mask (B = 1 for a 1-D input).

    Raises:
        ValueError: an index outside [0, N).
    """
    idx = indices.unsqueeze(0) if indices.dim() == 1 else indices
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_tokens):
        raise ValueError(f"indices must lie in [0, {num_tokens}); got range [{int(idx.min())}, {int(idx.max())}]")
    mask = torch.zeros(idx.shape[0], num_tokens, dtype=torch.bool, device=idx.device)
    mask.scatter_(1, idx.long(), True)
    return mask


def spatial_coverage(keep_mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Mean distance (patch units) from every patch to its nearest kept patch; 0 when everything is kept.

    Lower is better coverage. Used by the selection study (EVTP-IVS: "subset token coverage correlates
    with segmentation performance").

    Args:
        keep_mask: (N,) or (B, N) bool.
        grid: (H, W), H*W == N.

    Returns:
        (B,) float tensor (B = 1 for a 1-D input).

    Raises:
        ValueError: grid mismatch, or a sample with no kept patch (coverage undefined).
    """
    m = keep_mask.unsqueeze(0) if keep_mask.dim() == 1 else keep_mask
    m = m.bool()
    n = m.shape[-1]
    _check_grid(grid, n)
    empty = ~m.any(dim=-1)
    if bool(empty.any()):
        raise ValueError(f"spatial_coverage: sample(s) {empty.nonzero().squeeze(1).tolist()} keep no patch")
    dist = grid_distance(grid, device=m.device)  # (N, N)
    d = dist.unsqueeze(0).masked_fill(~m.unsqueeze(1), float("inf"))  # (B, N_all, N_kept)
    return d.amin(dim=-1).mean(dim=-1)


SELECTORS: dict[str, Callable[..., torch.Tensor]] = {
    "random": select_random,
    "uniform": select_uniform_grid,
    "attention": select_attention,
    "kcenter": select_kcenter,
    "divprune": select_divprune,
    "spatial_kcenter": select_spatial_kcenter,
}
"""Registry: selector name -> function (common signature, see the module docstring)."""

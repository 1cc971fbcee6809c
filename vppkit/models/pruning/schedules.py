"""VPP keep schedules and PKR (patch keep ratio) arithmetic.

The VPP backbone prunes at four places (0-based block indices, vpp-notes §3):

======================  ==============================  ==================================
blocks                  mask in force                   keep target (fraction of all N)
======================  ==============================  ==================================
0                       all ones                        1.0
1, 2                    M_1 from Map-SM (after block 0)  m, exactly ``floor(N * m)`` (top-k)
3, 4, 5                 M_3 = SM_3(x_3) * M_1            k_1 = m * rho
6, 7, 8                 M_6 = SM_6(x_6) * M_3            k_2 = m * rho**2
9, 10, 11               M_9 = SM_9(x_9) * M_6            k_3 = m * rho**3
======================  ==============================  ==================================

so the nominal PKR (every target met exactly) is ``(1 + 2m + 3(k_1 + k_2 + k_3)) / 12`` (vpp-notes §11.1).
On the first frame of a video there is no Map-SM: blocks 1-2 run dense (fraction 1.0).

Presets (vpp-notes §3, §11.3; supplementary §A):

- ``"pkr55"``: m = 0.7, rho = 0.8 (released "0.55PKR" configs, Tiny and Small) -> 54.16 % nominal;
- ``"pkr40"``: m = 0.6, rho = 0.7 -> 41.33 % nominal, for **both** Tiny and Small. The official Small
  "0.4PKR" config is a copy of the 0.55 one (m = 0.7, same k), which cannot give the reported 39.3 %
  PKR (it would need the SMs to realise 0.565x their targets). We deliberately fix that copy bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

__all__ = ["VPPSchedule", "PRESETS", "nominal_pkr", "rho_for_pkr", "keep_count"]


def keep_count(num_tokens: int, keep: float) -> int:
    """Number of tokens a fixed-count top-k keeps: ``K = floor(N * keep)``.

    A tolerance of 1e-9 guards against float round-off (``N * 0.7`` may land just below an integer).

    Args:
        num_tokens: N, patch tokens of the grid.
        keep: keep fraction in (0, 1].

    Raises:
        ValueError: if ``keep`` is outside (0, 1] or ``K < 1``.

    Source: vpp-notes §4.2 step 9 (``K = floor(N m)``).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    k = int(math.floor(num_tokens * keep + 1e-9))
    if k < 1:
        raise ValueError(f"keep fraction {keep} keeps no token of N={num_tokens}")
    return k


@dataclass(frozen=True)
class VPPSchedule:
    """Keep schedule of VPP: Map-SM top-k fraction ``m`` and geometric SM decay ``rho``.

    Args:
        m: Map-SM keep fraction (blocks ``map_block`` .. ``sm_blocks[0] - 1``), in (0, 1].
        rho: per-stage decay; SM ``i`` (1-based) targets ``m * rho**i`` of all N tokens, in (0, 1].
        map_block: first block that runs under the Map-SM mask (1: Map-SM sits after block 0).
        sm_blocks: blocks before which an SM decides; its mask is in force until the next SM.
        depth: number of ViT blocks.

    Raises:
        ValueError: on out-of-range fractions or inconsistent block positions.

    Source: vpp-notes §3 (schedule table), §11 (PKR arithmetic); supplementary Table 6 (positions).
    """

    m: float
    rho: float
    map_block: int = 1
    sm_blocks: tuple[int, ...] = (3, 6, 9)
    depth: int = 12

    def __post_init__(self) -> None:
        if not 0.0 < self.m <= 1.0:
            raise ValueError(f"VPPSchedule.m must be in (0, 1], got {self.m}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"VPPSchedule.rho must be in (0, 1], got {self.rho}")
        blocks = (self.map_block, *self.sm_blocks)
        if not (0 < self.map_block and all(a < b for a, b in zip(blocks, blocks[1:])) and blocks[-1] < self.depth):
            raise ValueError(f"VPPSchedule blocks must satisfy 0 < map_block < sm_blocks < depth, got "
                             f"map_block={self.map_block}, sm_blocks={self.sm_blocks}, depth={self.depth}")

    @property
    def sm_targets(self) -> tuple[float, ...]:
        """Keep targets k_i = m * rho**i of the SMs (fractions of all N tokens), i = 1..len(sm_blocks)."""
        return tuple(self.m * self.rho ** (i + 1) for i in range(len(self.sm_blocks)))

    def block_keep_fractions(self, first_frame: bool = False) -> list[float]:
        """Nominal fraction of patch tokens each block processes, blocks 0..depth-1.

        Args:
            first_frame: True for the first frame of a video (no Map-SM: blocks before the first SM dense).

        Returns:
            ``depth`` floats, e.g. ``[1, m, m, k1, k1, k1, k2, k2, k2, k3, k3, k3]`` for the default layout.
        """
        fractions = [1.0] * self.depth
        starts = [self.map_block, *self.sm_blocks]
        values = [1.0 if first_frame else self.m, *self.sm_targets]
        for i, (start, value) in enumerate(zip(starts, values)):
            end = starts[i + 1] if i + 1 < len(starts) else self.depth
            for b in range(start, end):
                fractions[b] = value
        return fractions

    def block_counts(self, num_patches: int, first_frame: bool = False) -> list[float]:
        """Nominal patch tokens each block processes, blocks 0..depth-1 (:meth:`VPPPruner.nominal_counts`).

        Block 0 and the blocks before ``map_block``: N. Map-SM blocks (non-first frame): exactly
        ``floor(N m)`` (:func:`keep_count`, Map-SM's top-k; N on the first frame). From the first SM on:
        the expected count ``N * m * rho**i`` (the SMs' count is dynamic; the target is a fraction of all N),
        possibly fractional.

        Args:
            num_patches: N.
            first_frame: True for the first frame of a video (no Map-SM).

        Returns:
            ``depth`` counts, e.g. N = 144 with ``pkr55`` (m = 0.7, rho = 0.8):
            ``[144, 100, 100, 80.64, 80.64, 80.64, 64.512, ..., 51.6096, ...]``.

        Raises:
            ValueError: ``floor(N m) < 1``.
        """
        n = float(num_patches)
        map_k = n if first_frame else float(keep_count(num_patches, self.m))
        counts = []
        for b, f in enumerate(self.block_keep_fractions(first_frame)):
            if b < self.map_block:
                counts.append(n)
            elif b < self.sm_blocks[0]:
                counts.append(map_k)
            else:
                counts.append(num_patches * f)
        return counts

    def nominal_pkr(self, first_frame: bool = False) -> float:
        """PKR (fraction, not %) when every target is met exactly: mean of :meth:`block_keep_fractions`."""
        fr = self.block_keep_fractions(first_frame)
        return sum(fr) / len(fr)

    def video_pkr(self, num_frames: int) -> float:
        """Nominal PKR over a whole video of ``num_frames`` frames (frame 0 has no Map-SM; vpp-notes §11.1).

        Raises:
            ValueError: if ``num_frames < 1``.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return (self.nominal_pkr(True) + (num_frames - 1) * self.nominal_pkr(False)) / num_frames

    @classmethod
    def preset(cls, name: str) -> "VPPSchedule":
        """Schedule by preset name (``"pkr55"`` or ``"pkr40"``, see module docstring).

        Raises:
            KeyError: for an unknown name (lists the known ones).
        """
        try:
            m, rho = PRESETS[name]
        except KeyError:
            raise KeyError(f"unknown VPP schedule preset {name!r}; known: {sorted(PRESETS)}") from None
        return cls(m=m, rho=rho)


PRESETS: dict[str, tuple[float, float]] = {
    "pkr55": (0.7, 0.8),  # released 0.55PKR configs (Tiny, Small)
    "pkr40": (0.6, 0.7),  # released 0.4PKR Tiny config; used for Small too (fixes the copy bug, §11.3)
}


def nominal_pkr(schedule: VPPSchedule | str, first_frame: bool = False) -> float:
    """Nominal PKR of a schedule or preset name, as a fraction (``pkr55`` -> 0.5416, ``pkr40`` -> 0.4133).

    Source: vpp-notes §11.1, ``PKR = (1 + 2m + 3(k1 + k2 + k3)) / 12``.
    """
    if isinstance(schedule, str):
        schedule = VPPSchedule.preset(schedule)
    return schedule.nominal_pkr(first_frame)


def rho_for_pkr(pkr: float, m: float, **layout) -> float:
    """Solve for the SM decay rho that gives nominal PKR ``pkr`` with Map-SM keep fraction ``m``.

    For the default layout this solves ``rho + rho**2 + rho**3 = (12 P - 1 - 2m) / (3m)``
    (vpp-notes §11.2: 0.8105 for P = 0.55, m = 0.7; 0.6767 for P = 0.40, m = 0.6). Other layouts
    (``map_block``, ``sm_blocks``, ``depth`` forwarded to :class:`VPPSchedule`) are solved numerically
    with :func:`scipy.optimize.brentq` on the monotone map rho -> nominal PKR.

    Args:
        pkr: target PKR as a fraction in (0, 1) (not %).
        m: Map-SM keep fraction.

    Raises:
        ValueError: if ``pkr`` is not reachable with rho in (0, 1] for this ``m``.
    """
    if pkr > 1.0:
        raise ValueError(f"pkr is a fraction in (0, 1), got {pkr} (did you pass a percentage?)")

    def gap(rho: float) -> float:
        return VPPSchedule(m=m, rho=rho, **layout).nominal_pkr() - pkr

    lo, hi = 1e-12, 1.0
    if gap(lo) > 0 or gap(hi) < 0:
        raise ValueError(f"PKR {pkr:.4f} is not reachable with m={m}: the range is "
                         f"[{gap(lo) + pkr:.4f}, {gap(hi) + pkr:.4f}]")
    return float(brentq(gap, lo, hi, xtol=1e-12))

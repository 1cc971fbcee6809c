"""EVTP-IVS TFLOPs calculator for InstructSeg (supplementary §A.2 / §C.2; evtp-notes §2-3).

Closed forms exactly as the supplementary writes them. **Convention of the paper's formulas: one
multiply-accumulate counts as one FLOP** (no factor 2; the language-model term is DivPrune's ``tflops.py``,
which uses MACs, evtp-notes §3.1). Totals are in TFLOPs = 1e12 of those units; ``flop_factor=2`` doubles
every number (ratios unchanged). Per component (one forward pass, S = sequence length)::

    LM        L (3 S d^2 + 2 S^2 d + S d^2 + 2 S d d_int) + S d |Vocab|
    vision    sum_{L_v} (6 N d_v^2 + 2 N^2 d_v) + N d_v d
    prune     2 V d + V V' d / 10 + V' d
    mask      L_d (12 Q d_m^2 + 2 Q^2 d_m + 2 Q V' d_m) + Q d_m V'
    temporal  L_t (Q_t F d^2 + 4 Q_t d^2)
    VMTF      L_f (T_eff d d_f + V' d_v d_f + 2 T_eff V' d_f)

with S = T + T_fixed + V' (video: see :class:`FlopsOptions.video_tokens_in_sequence`). Constants are the
supplementary's "default InstructSeg configuration" (:class:`InstructSegConstants`), token counts its
Table 4 (:data:`BENCHMARKS`), V' in {729, 146, 73, 36} (:data:`KEEP_TOKENS`).

The supplementary leaves several choices open (evtp-notes §3.6). Each is an explicit option of
:class:`FlopsOptions`; the defaults follow the supplementary's text literally, and every table carries the
options used (:meth:`FlopsOptions.describe`). The paper's own TFLOPs tables could not be retrieved: the only
reported efficiency numbers are the abstract's *latency* speed-ups, quoted in :data:`PAPER_REPORTED` (not
computed, and not FLOPs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Iterable, Sequence

import pandas as pd

__all__ = [
    "InstructSegConstants",
    "Benchmark",
    "BENCHMARKS",
    "KEEP_TOKENS",
    "FlopsOptions",
    "PAPER_REPORTED",
    "COMPONENTS",
    "lm_flops",
    "vision_flops",
    "prune_flops",
    "mask_decoder_flops",
    "temporal_flops",
    "vmtf_flops",
    "sequence_length",
    "component_flops",
    "evtp_flops_table",
    "evtp_breakdown_long",
    "paper_comparison",
    "get_benchmark",
]

COMPONENTS = ("language_model", "vision_encoder", "token_pruning", "mask_decoder", "temporal", "vmtf")
"""Component names, in the supplementary's order."""


# ----------------------------------------------------------------------------------------------------------------
# constants and inputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstructSegConstants:
    """Default InstructSeg configuration (supplementary §C.2 "Model Hyperparameters"; matches InstructSeg's code,
    evtp-notes §2). Override with ``dataclasses.replace``.

    Attributes:
        d: language-model hidden size (Phi-2: 2560); also the pruning dim.
        d_int: FFN intermediate size (10240).
        L: language-model layers (32).
        vocab: |Vocab| (51200).
        d_v: vision-encoder width (SigLIP so400m: 1152).
        N: patches per frame (729 = 27 x 27 at 384 px).
        L_v: vision-encoder layers (27).
        Q: mask-decoder queries (100).
        d_m: mask-decoder width (256).
        L_d: mask-decoder layers (9).
        Q_t: temporal queries (128).
        L_t: temporal layers (3).
        F_ref: reference frames of the temporal module (4).
        d_f: VMTF width (1024).
        L_f: VMTF layers (3).
        T_fixed: fixed auxiliary tokens in the sequence (100).
    """

    d: int = 2560
    d_int: int = 10240
    L: int = 32
    vocab: int = 51200
    d_v: int = 1152
    N: int = 729
    L_v: int = 27
    Q: int = 100
    d_m: int = 256
    L_d: int = 9
    Q_t: int = 128
    L_t: int = 3
    F_ref: int = 4
    d_f: int = 1024
    L_f: int = 3
    T_fixed: int = 100


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's token configuration (supplementary Table 4).

    Attributes:
        name: benchmark name.
        T: text tokens.
        V: visual tokens per frame.
        F: frames.
        modality: "image" or "video".
    """

    name: str
    T: int
    V: int
    F: int
    modality: str

    @property
    def is_video(self) -> bool:
        return self.modality == "video"


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("RefCOCO", 15, 729, 1, "image"),
    Benchmark("RefCOCO+", 15, 729, 1, "image"),
    Benchmark("RefCOCOg", 23, 729, 1, "image"),
    Benchmark("MM-Conv", 50, 729, 1, "image"),
    Benchmark("ReasonSeg", 80, 729, 1, "image"),
    Benchmark("RefYouTube", 20, 729, 4, "video"),
    Benchmark("RefDAVIS", 18, 729, 4, "video"),
    Benchmark("ReVOS", 25, 729, 4, "video"),
)
"""Supplementary Table 4 (the supplementary spells RefCOCOg "RefCOCog")."""

KEEP_TOKENS: tuple[int, ...] = (729, 146, 73, 36)
"""V' settings of the supplementary: 100 / 20 / 10 / 5 % of 729 tokens per frame."""

PAPER_REPORTED: dict = {
    "source": "EVTP-IVS abstract (arXiv 2508.11886), quoted, not computed",
    "metric": "inference speed-up (latency), NOT FLOPs",
    "keep_ratio": 0.20,
    "image_speedup": 3.5,
    "video_speedup": 5.0,
    "tflops_tables": None,  # the paper's TFLOPs tables were not retrievable (evtp-notes §3.5)
}
"""The only efficiency numbers of the paper available to us (evtp-notes §1, §3.5). Quoted from the paper."""


def get_benchmark(name: str) -> Benchmark:
    """Benchmark by name (case-insensitive). Raises ``KeyError`` naming the known ones."""
    for b in BENCHMARKS:
        if b.name.lower() == name.lower():
            return b
    raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(b.name for b in BENCHMARKS)}")


@dataclass(frozen=True)
class FlopsOptions:
    """Every reading the supplementary leaves open (evtp-notes §3.6). Defaults = the text read literally.

    Attributes:
        video_tokens_in_sequence: "all_frames" -> S = T + T_fixed + V' F for video; "key_frame" -> S uses V'.
            Default "all_frames": the text says "For video data, the total number of visual tokens is V' x F"
            right before defining S as text + fixed + visual tokens (evtp-notes §3.5 reaches the same
            reading from the 5x claim). "key_frame" is the formula's symbol taken per frame (and what
            InstructSeg's code feeds the LLM).
        vision_passes: "once" -> the vision formula as written (N patches of one frame); "per_frame" -> x F;
            "key_plus_refs" -> x (F + 1) for video as InstructSeg's code runs key frame + F references (x 1 for
            images). Default "once".
        temporal_on_images: charge the temporal module for images too (with the image's F = 1). Default True:
            the text lists it among the components of every forward pass with F from Table 4 (InstructSeg's
            code also runs it on images, ``ovp_on_img=True``). False = video only.
        temporal_frames: "table" -> F from Table 4 (1 for images, 4 for video); "reference" -> the constant
            F_ref = 4 everywhere the module runs. Default "table".
        t_eff: T_eff of the VMTF term (undefined in the supplementary): "T" (text tokens, default), "T+1"
            (InstructSeg's code: refer tokens + one pooled token), "T+T_fixed", or "S".
        prune_at_full_keep: charge the pruning cost when V' = V (nothing is pruned). Default False: the
            unpruned setting has no pruning step.
        prune_per_frame: charge the pruning cost x F for video. Default False (the formula has no F).
        heads_tokens: visual tokens seen by the mask decoder and VMTF for video: "per_frame" (V', as written,
            default) or "all_frames" (V' F).
        flop_factor: 1 = the formulas' convention (a multiply-accumulate is one FLOP), 2 = true FLOPs.
    """

    video_tokens_in_sequence: str = "all_frames"
    vision_passes: str = "once"
    temporal_on_images: bool = True
    temporal_frames: str = "table"
    t_eff: str = "T"
    prune_at_full_keep: bool = False
    prune_per_frame: bool = False
    heads_tokens: str = "per_frame"
    flop_factor: int = 1

    _CHOICES = {
        "video_tokens_in_sequence": ("all_frames", "key_frame"),
        "vision_passes": ("once", "per_frame", "key_plus_refs"),
        "temporal_frames": ("table", "reference"),
        "t_eff": ("T", "T+1", "T+T_fixed", "S"),
        "heads_tokens": ("per_frame", "all_frames"),
        "flop_factor": (1, 2),
    }

    def __post_init__(self) -> None:
        for name, allowed in self._CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"FlopsOptions.{name} = {getattr(self, name)!r}; choose one of {allowed}")

    def as_dict(self) -> dict:
        """Options as a plain dict (without the choice table)."""
        return {k: v for k, v in asdict(self).items()}

    def describe(self) -> str:
        """One line naming every option used (printed with every table)."""
        return ", ".join(f"{k}={v}" for k, v in self.as_dict().items())


# ----------------------------------------------------------------------------------------------------------------
# component formulas (pure, in the paper's FLOP units = multiply-accumulates)
# ----------------------------------------------------------------------------------------------------------------
def lm_flops(S: int, d: int, d_int: int, L: int, vocab: int) -> int:
    """Language model: L (3 S d^2 + 2 S^2 d + S d^2 + 2 S d d_int) + S d |Vocab| (supplementary §C.2).

    Terms: QKV projections 3Sd^2, attention scores + weighted sum 2S^2 d, output projection Sd^2, two FFN
    matrices 2 S d d_int, LM head over all S positions S d |Vocab|.
    """
    attn = 3 * S * d * d + 2 * S * S * d + S * d * d
    ffn = 2 * S * d * d_int
    return L * (attn + ffn) + S * d * vocab


def vision_flops(N: int, d_v: int, L_v: int, d: int) -> int:
    """Vision encoder: sum over L_v layers of (6 N d_v^2 + 2 N^2 d_v), plus the projector N d_v d.

    As written (a width-d_v MLP, 6 = 4 attention projections + 2 MLP matrices; SigLIP's real MLP is 4304 wide,
    evtp-notes §3.6 item 11).
    """
    return L_v * (6 * N * d_v * d_v + 2 * N * N * d_v) + N * d_v * d


def prune_flops(V: int, V_keep: int, d: int) -> float:
    """Token pruning: 2 V d + V V' d / 10 + V' d (the "/10" is the supplementary's, unexplained)."""
    return 2 * V * d + V * V_keep * d / 10 + V_keep * d


def mask_decoder_flops(Q: int, d_m: int, L_d: int, V_keep: int) -> int:
    """Mask decoder: L_d (12 Q d_m^2 + 2 Q^2 d_m + 2 Q V' d_m) + Q d_m V'."""
    return L_d * (12 * Q * d_m * d_m + 2 * Q * Q * d_m + 2 * Q * V_keep * d_m) + Q * d_m * V_keep


def temporal_flops(Q_t: int, F: int, d: int, L_t: int) -> int:
    """Temporal reasoning: L_t (Q_t F d^2 + 4 Q_t d^2)."""
    return L_t * (Q_t * F * d * d + 4 * Q_t * d * d)


def vmtf_flops(T_eff: int, d: int, d_f: int, d_v: int, V_keep: int, L_f: int) -> int:
    """VMTF fusion: L_f (T_eff d d_f + V' d_v d_f + 2 T_eff V' d_f)."""
    return L_f * (T_eff * d * d_f + V_keep * d_v * d_f + 2 * T_eff * V_keep * d_f)


def sequence_length(bench: Benchmark, V_keep: int, consts: InstructSegConstants = InstructSegConstants(),
                    options: FlopsOptions = FlopsOptions()) -> int:
    """S = T + T_fixed + V' (x F for video with ``video_tokens_in_sequence="all_frames"``)."""
    visual = V_keep * bench.F if (bench.is_video and options.video_tokens_in_sequence == "all_frames") else V_keep
    return bench.T + consts.T_fixed + visual


def _check_keep(bench: Benchmark, V_keep: int) -> None:
    if not 1 <= V_keep <= bench.V:
        raise ValueError(f"{bench.name}: kept tokens V'={V_keep} must lie in [1, V={bench.V}]")


def component_flops(bench: Benchmark, V_keep: int, consts: InstructSegConstants = InstructSegConstants(),
                    options: FlopsOptions = FlopsOptions()) -> dict[str, float]:
    """FLOPs (paper units x ``flop_factor``) of every component for one benchmark and V'.

    Args:
        bench: token configuration.
        V_keep: V', visual tokens kept per frame (1..V).
        consts: model constants.
        options: readings of the open choices.

    Returns:
        dict component -> FLOPs (not TFLOPs), keys :data:`COMPONENTS`.

    Raises:
        ValueError: V' outside [1, V].
    """
    _check_keep(bench, V_keep)
    c, o = consts, options
    S = sequence_length(bench, V_keep, c, o)
    # key_plus_refs: InstructSeg's video inference encodes the key frame and F references; images have none
    passes = {"once": 1, "per_frame": bench.F, "key_plus_refs": bench.F + 1 if bench.is_video else 1}[o.vision_passes]
    pruned = V_keep < bench.V
    prune = 0.0
    if pruned or o.prune_at_full_keep:
        prune = prune_flops(bench.V, V_keep, c.d) * (bench.F if (bench.is_video and o.prune_per_frame) else 1)
    heads_v = V_keep * bench.F if (bench.is_video and o.heads_tokens == "all_frames") else V_keep
    temporal = 0
    if bench.is_video or o.temporal_on_images:
        f = bench.F if o.temporal_frames == "table" else c.F_ref
        temporal = temporal_flops(c.Q_t, f, c.d, c.L_t)
    t_eff = {"T": bench.T, "T+1": bench.T + 1, "T+T_fixed": bench.T + c.T_fixed, "S": S}[o.t_eff]
    out = {
        "language_model": lm_flops(S, c.d, c.d_int, c.L, c.vocab),
        "vision_encoder": passes * vision_flops(c.N, c.d_v, c.L_v, c.d),
        "token_pruning": prune,
        "mask_decoder": mask_decoder_flops(c.Q, c.d_m, c.L_d, heads_v),
        "temporal": temporal,
        "vmtf": vmtf_flops(t_eff, c.d, c.d_f, c.d_v, heads_v, c.L_f),
    }
    return {k: float(v) * o.flop_factor for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------
def evtp_flops_table(benchmarks: Iterable[Benchmark] = BENCHMARKS, keep_tokens: Sequence[int] = KEEP_TOKENS,
                     consts: InstructSegConstants = InstructSegConstants(),
                     options: FlopsOptions = FlopsOptions()) -> pd.DataFrame:
    """TFLOPs per benchmark and V', with reduction vs V' = V and the per-component split.

    Returns:
        DataFrame, one row per (benchmark, V'), columns: benchmark, modality, T, V, F, V_keep, keep_ratio, S,
        ``<component>_TFLOPs`` for each of :data:`COMPONENTS`, total_TFLOPs, full_TFLOPs (same benchmark at
        V' = V), reduction_pct = 100 (1 - total / full), speedup = full / total, options (the option line).
        Units: TFLOPs = 1e12 multiply-accumulates (x ``flop_factor``).
    """
    rows = []
    for bench in benchmarks:
        full = sum(component_flops(bench, bench.V, consts, options).values())
        for v in keep_tokens:
            comp = component_flops(bench, v, consts, options)
            total = sum(comp.values())
            row = {"benchmark": bench.name, "modality": bench.modality, "T": bench.T, "V": bench.V, "F": bench.F,
                   "V_keep": v, "keep_ratio": v / bench.V, "S": sequence_length(bench, v, consts, options)}
            row.update({f"{k}_TFLOPs": comp[k] / 1e12 for k in COMPONENTS})
            row.update({"total_TFLOPs": total / 1e12, "full_TFLOPs": full / 1e12,
                        "reduction_pct": 100.0 * (1.0 - total / full), "speedup": full / total,
                        "options": options.describe()})
            rows.append(row)
    return pd.DataFrame(rows)


def evtp_breakdown_long(benchmarks: Iterable[Benchmark] = BENCHMARKS, keep_tokens: Sequence[int] = KEEP_TOKENS,
                        consts: InstructSegConstants = InstructSegConstants(),
                        options: FlopsOptions = FlopsOptions()) -> pd.DataFrame:
    """Per-component breakdown in long format (for a stacked-bar figure).

    Returns:
        DataFrame with columns benchmark, modality, V_keep, keep_ratio, component, TFLOPs, share (of the
        row's total), options.
    """
    wide = evtp_flops_table(benchmarks, keep_tokens, consts, options)
    long = wide.melt(id_vars=["benchmark", "modality", "V_keep", "keep_ratio", "total_TFLOPs", "options"],
                     value_vars=[f"{k}_TFLOPs" for k in COMPONENTS], var_name="component", value_name="TFLOPs")
    long["component"] = long["component"].str.removesuffix("_TFLOPs")
    long["share"] = long["TFLOPs"] / long["total_TFLOPs"]
    return long.drop(columns="total_TFLOPs")[["benchmark", "modality", "V_keep", "keep_ratio", "component",
                                              "TFLOPs", "share", "options"]]


def paper_comparison(consts: InstructSegConstants = InstructSegConstants(),
                     options: FlopsOptions = FlopsOptions(), keep_tokens: int = 146) -> pd.DataFrame:
    """Computed FLOPs ratios at 20 % keep next to the paper's reported speed-ups (:data:`PAPER_REPORTED`).

    The paper's numbers are latency speed-ups quoted from its abstract, not FLOPs: the table labels each value
    with its source so the two are never confused. Both the whole-pipeline ratio and the language-model-only
    ratio are computed (mean over the benchmarks of each modality).

    Returns:
        DataFrame with columns modality, quantity, value, source.
    """
    rows = []
    for modality, paper in (("image", PAPER_REPORTED["image_speedup"]), ("video", PAPER_REPORTED["video_speedup"])):
        benches = [b for b in BENCHMARKS if b.modality == modality]
        tot, lm = [], []
        for b in benches:
            full = component_flops(b, b.V, consts, options)
            kept = component_flops(b, keep_tokens, consts, options)
            tot.append(sum(full.values()) / sum(kept.values()))
            lm.append(full["language_model"] / kept["language_model"])
        rows.append({"modality": modality, "quantity": f"FLOPs ratio, whole pipeline (V'={keep_tokens})",
                     "value": sum(tot) / len(tot), "source": f"computed ({options.describe()})"})
        rows.append({"modality": modality, "quantity": f"FLOPs ratio, language model only (V'={keep_tokens})",
                     "value": sum(lm) / len(lm), "source": f"computed ({options.describe()})"})
        rows.append({"modality": modality, "quantity": f"speed-up at {PAPER_REPORTED['keep_ratio']:.0%} tokens",
                     "value": paper, "source": f"paper (quoted): {PAPER_REPORTED['source']}; "
                                               f"{PAPER_REPORTED['metric']}"})
    return pd.DataFrame(rows)


def named_interpretation(name: str) -> FlopsOptions:
    """The interpretations I1-I6 of evtp-notes §3.3 as option sets (for cross-reference with the notes).

    I1: vision x1, S = T+100+V', temporal on video only; I2: vision xF, S with V'; I3: vision xF, S with V'F;
    I4: I3 + mask/VMTF with V'F; I5: vision x1, S with V'F; I6: code-like, vision x(F+1), S with V',
    temporal everywhere.

    Raises:
        KeyError: unknown name.
    """
    base = FlopsOptions(temporal_on_images=False)
    table = {
        "I1": replace(base, video_tokens_in_sequence="key_frame", vision_passes="once"),
        "I2": replace(base, video_tokens_in_sequence="key_frame", vision_passes="per_frame"),
        "I3": replace(base, video_tokens_in_sequence="all_frames", vision_passes="per_frame"),
        "I4": replace(base, video_tokens_in_sequence="all_frames", vision_passes="per_frame",
                      heads_tokens="all_frames"),
        "I5": replace(base, video_tokens_in_sequence="all_frames", vision_passes="once"),
        "I6": replace(base, video_tokens_in_sequence="key_frame", vision_passes="key_plus_refs",
                      temporal_on_images=True),
    }
    if name not in table:
        raise KeyError(f"unknown interpretation {name!r}; known: {', '.join(table)}")
    return table[name]


__all__.append("named_interpretation")

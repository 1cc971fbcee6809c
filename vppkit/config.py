"""Profiles: load ``configs/<name>.yaml`` (or any yaml path), validate it against ONE schema, apply overrides, hash.

The schema (:class:`Profile` and its section dataclasses below, an OmegaConf structured config) names every key a
profile may set, its type and its default, once: the values of the shipped ``default`` profile
(``configs/default.yaml`` restates them, with comments; tests/test_config.py checks that the two agree). A profile
may start from another one with ``base: <profile name>``; each file of the chain, root first, is merged into the
schema (sections merge key by key, everything else replaces). Overrides are ``dotted.key=value`` strings applied
last; the value is parsed as YAML (``train.dense.steps=10``, ``pruning.method=vpp``, ``model.img_size=[96,96]``,
``data.root=null``).

An unknown or misspelt key, in a yaml file or an override, or a value of the wrong type is refused with a
:class:`ConfigError` that names the key, the file (or "override") and the closest valid key.

:func:`load_config` returns a plain nested dict (``OmegaConf.to_container`` of the validated config) with every
default filled in, except the optional keys described next. Keys that are *unset* unless a profile sets them are
left out of the dict:

- ``train.dense`` / ``train.sparse``: every shared ``train`` key may be overridden per stage; a stage key left
  unset inherits the shared value (:func:`vppkit.engine.train.stage_config`). ``steps``, ``clip_frames`` and
  ``ckpt_every`` exist per stage only (their defaults differ by stage). ``steps: null`` is *set* (to None), as the
  epoch-based profiles do.
- ``pruning``: ``method`` and ``schedule`` plus the pruner's constructor arguments a profile sets (method-specific,
  :func:`vppkit.models.pruning.build_pruner`); ``pruning_overrides.<method>``: the same arguments per method.

:func:`config_hash` is a stable short hash of the resolved config (sorted-key JSON), used to reuse a saved
result or checkpoint only when the config that produced it is unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vppkit.utils.provenance import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A profile or override is malformed; the message names the file or the key at fault."""


# ---------------------------------------------------------------------------------------------------------------
# schema: every key and its default, once (defaults = the shipped default profile)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """``data``: where the videos come from (vppkit.data.splits.resolve_split). One section for all sources;
    each source reads its own keys."""

    source: str = "synthetic"          # synthetic | davis | ytvis
    root: Optional[str] = None         # davis / ytvis folder; null = vppkit.utils.paths.davis_root() / "."
    cache: bool = True                 # keep decoded frames in memory while training
    # synthetic (vppkit.data.synthetic.generate_synthetic)
    num_videos: int = 128              # training videos (seed ``seed``)
    num_val_videos: int = 8            # held-out videos (seed ``val_seed``)
    seed: int = 0
    val_seed: int = 1000
    num_frames: int = 16               # frames per video
    height: int = 192                  # px
    width: int = 192
    synthetic_style: str = "hues"      # hues: per-category hue families (generator v2's look; colour gives objects
                                       # away at the patch embedding); pool: one shared appearance pool (v3, issue 14);
                                       # mixed: each video pool with probability pool_fraction, else hues
    pool_fraction: float = 0.5         # style "mixed" only (vppkit.data.synthetic.video_style)
    # davis (vppkit.data.davis.davis_to_ytvis)
    res: str = "240p"                  # resolution folder
    train_split: str = "train"         # ImageSets lists
    val_split: str = "val"
    # ytvis: paths relative to ``root``
    train_json: Optional[str] = None
    train_frames: Optional[str] = None
    val_json: Optional[str] = None
    val_frames: Optional[str] = None


@dataclass
class AdapterConfig:
    """``model.adapter``: sizes of the ``adapter`` host (vppkit.models.adapter.ViTAdapter, vppkit.models.vis.m2f_head;
    vpp-notes §2.2). Defaults = the paper's configs; CPU profiles may scale them down. Unused by ``host: plain``."""

    conv_inplane: int = 64             # spatial-prior stem width
    deform_heads: int = 6              # injector / extractor deformable attention heads
    deform_points: int = 4             # sampling points per head and level
    cffn_ratio: float = 0.25           # extractor ConvFFN hidden width / ViT width
    interaction_indexes: List[List[int]] = field(
        default_factory=lambda: [[0, 2], [3, 5], [6, 8], [9, 11]])  # block ranges [start, end], inclusive
    extra_extractors: int = 2          # extractors appended to the last interaction
    add_vit_feature: bool = True       # add the resized ViT map to each output scale
    query_residual: bool = True        # official (mmcv) deformable attention returns attn + its normalised query
    attn_dropout: float = 0.1          # official (mmcv) dropout on the deformable attention output
    pixel_decoder_layers: int = 6      # Mask2Former MSDeformAttn pixel-decoder encoder layers


@dataclass
class ModelConfig:
    """``model``: backbone and VIS head (vppkit.models.vis.model.build_vis_model)."""

    arch: str = "vit_micro"            # vppkit.models.vit.ARCHS name
    img_size: Any = field(default_factory=lambda: [192, 192])  # (H, W) px, or an int for a square input
    host: str = "plain"                # plain: ViT -> simple pyramid -> query decoder; adapter: ViT-Adapter +
                                       # Mask2Former (MSDeformAttn pixel decoder), the paper's host (DESIGN.md §7)
    tracker: str = "rovis"             # rovis: the paper's ROVIS track queries, trained with the 3-term loss
                                       # (vppkit.models.vis.rovis, docs/vis_model.md); embedding: per-frame model,
                                       # tracks by matching query embeddings at inference (MinVIS)
    dim: int = 64                      # pyramid / decoder width D
    num_queries: int = 10              # object queries Q
    dec_layers: int = 3                # masked-attention decoder layers
    heads: int = 4                     # decoder attention heads
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  # adapter-host sizes
    pretrained: Optional[str] = None   # null | imgfocus (vppkit.models.vis.model.resolve_backbone)
    fallback: Dict[str, Any] = field(default_factory=dict)  # model keys used when the pretrained extra is missing
    backbone_checkpoint: Optional[str] = None  # local timm state dict
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)  # forwarded to timm (e.g. drop_path_rate)


@dataclass
class LossConfig:
    """``loss``: Mask2Former set-criterion weights (vpp-notes §2.1)."""

    w_class: float = 2.0
    w_mask: float = 5.0
    w_dice: float = 5.0
    eos_coef: float = 0.1              # weight of the no-object class in the CE
    num_points: int = 0                # 0: all stride-4 pixels; > 0: sampled points
    importance_sample_ratio: float = 0.0  # > 0 (with num_points > 0): Mask2Former importance sampling
                                       # (transformers Mask2FormerLoss; paper 0.75); 0: uniform points
    oversample_ratio: float = 3.0      # importance sampling: candidate points / num_points (paper 3.0)


@dataclass
class TrainConfig:
    """``train``: keys shared by both stages (``dense`` / ``sparse`` override them, :class:`StageConfig`)."""

    batch: int = 2                     # clips per optimizer step (per process)
    lr: float = 1.0e-3                 # AdamW base lr
    weight_decay: float = 0.05
    backbone_lr_mult: float = 1.0      # backbone lr multiplier
    grad_clip: float = 1.0             # L2 max norm of the gradient (0 = off)
    decay_at: float = 0.667            # step decay x decay_gamma after this fraction of the schedule
    decay_gamma: float = 0.1
    max_gap: int = 3                   # max frame gap between consecutive clip frames (sample_unit video)
    flip: bool = True                  # random horizontal flip
    workers: int = 0                   # DataLoader processes (speed only; RUNTIME_KEYS)
    freeze_backbone: bool = False      # backbone weights frozen (not in the optimizer)
    sample_unit: str = "video"         # video | frame (vppkit.engine.train.training_samples)
    ref_window: int = 5                # references within +-ref_window annotated frames (sample_unit frame)
    ref_order: str = "random"          # random | causal
    epochs: Optional[int] = None       # per stage; when set, the steps are derived from it (steps_for)
    # model.tracker rovis only (vppkit.engine.rovis_loss; official train_cfg, TrackFormer's values):
    track_query_keep: float = 0.8      # a matched query becomes a track query with this probability (official
                                       # track_query_false_negative_prob, "the probability of keeping")
    track_query_fp: float = 0.2        # per track query, probability of adding an unmatched query as a false positive
    key_track_weight: float = 0.5      # key frame decoded again with track queries from the reference (ref2_ x0.5)


#: Keys that exist per stage only (no shared ``train`` value).
STAGE_ONLY_KEYS = ("steps", "clip_frames", "ckpt_every", "frame_loss_weights", "feature_cache")


@dataclass
class StageConfig:
    """``train.dense`` / ``train.sparse``: stage settings; every shared key left unset (MISSING) inherits."""

    steps: Optional[int] = None        # optimizer steps (null: derived from epochs)
    clip_frames: int = 2               # frames per clip
    ckpt_every: int = 100              # checkpoint every n steps
    # segmentation-loss weight per chain position, first frame first (one per clip frame; the official
    # ROVIS weights, vppkit.engine.train.chain_loss; model.tracker rovis: the last two weigh the key (static
    # queries) and the reference (track queries from the key), earlier ones must be 0)
    frame_loss_weights: List[float] = field(default_factory=lambda: [0.5, 1.0])
    # dense stage on a frozen backbone only: compute the backbone's output once per (training frame, flip),
    # keep it on disk (cache_dir()/features) and train the pyramid + decoder on it (vppkit.engine.feature_cache);
    # refused (ValueError) in the sparse stage, with an unfrozen backbone or the adapter host
    feature_cache: bool = MISSING
    batch: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    backbone_lr_mult: float = MISSING
    grad_clip: float = MISSING
    decay_at: float = MISSING
    decay_gamma: float = MISSING
    max_gap: int = MISSING
    flip: bool = MISSING
    workers: int = MISSING
    freeze_backbone: bool = MISSING
    sample_unit: str = MISSING
    ref_window: int = MISSING
    ref_order: str = MISSING
    epochs: Optional[int] = MISSING
    track_query_keep: float = MISSING
    track_query_fp: float = MISSING
    key_track_weight: float = MISSING


@dataclass
class DenseStageConfig(StageConfig):
    steps: Optional[int] = 400
    clip_frames: int = 2               # key + 1 reference, each trained as an image
    ckpt_every: int = 100
    frame_loss_weights: List[float] = field(default_factory=lambda: [0.5, 1.0])  # ref x0.5, key x1
    feature_cache: bool = False        # train the head on cached backbone features (frozen backbone only)


@dataclass
class SparseStageConfig(StageConfig):
    steps: Optional[int] = 60
    clip_frames: int = 3               # chain reff -> ref -> key (Map-SM sees a previous frame)
    ckpt_every: int = 30
    frame_loss_weights: List[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])  # reff x0, ref x0.5, key x1
    lr: float = 5.0e-4
    backbone_lr_mult: float = 0.1


@dataclass
class TrainSection(TrainConfig):
    dense: DenseStageConfig = field(default_factory=DenseStageConfig)
    sparse: SparseStageConfig = field(default_factory=SparseStageConfig)


@dataclass
class PrunerParams:
    """Pruner constructor arguments (vppkit.models.pruning.build_pruner); each is left out unless set."""

    schedule: str = MISSING            # VPP preset
    m: Optional[float] = MISSING
    rho: Optional[float] = MISSING
    kappa_init: float = MISSING
    lambda_sm: float = MISSING
    lambda_map: float = MISSING
    value_block: int = MISSING
    tau: float = MISSING
    pool_radius: int = MISSING
    inference_noise: bool = MISSING
    targets: List[float] = MISSING     # SViT
    depth: int = MISSING
    ratio_loss_weight: float = MISSING
    blocks: List[int] = MISSING        # DynamicViT
    ratios: Optional[List[float]] = MISSING
    keep_rates: Dict[int, float] = MISSING  # EViT
    r: Any = MISSING                   # ToMe: int or a per-block list
    prop_attn: bool = MISSING


@dataclass
class PruningConfig(PrunerParams):
    """``pruning``: the sparse stage's pruner (the dense stage ignores it)."""

    method: str = "vpp"                # vpp | svit | dynamicvit | evit | tome | none
    schedule: str = "pkr55"


@dataclass
class EvalConfig:
    """``eval``: inference and evaluation (vppkit.engine.infer)."""

    split: str = "val"
    top_k: int = 10                    # instances kept per video (MinVIS)
    score: str = "present_mask"        # (track, class) score: mean | present | present_mask
    mask_threshold: float = 0.0        # mask logit threshold
    tracker_momentum: float = 0.0      # 0 = match to the previous frame (MinVIS)
    # model.tracker rovis only (vppkit.models.vis.rovis; official ROVIS.predict / TrackFormerTracker):
    rovis_new_score: float = 0.3       # a static-query detection starts a track above this score
    rovis_keep_score: float = 0.25     # a track-query detection continues its track above this score
    rovis_retain: int = 10             # frames an undetected track stays in memory (queried again; mmtrack default)
    inference_noise: bool = True       # Gumbel noise at inference (official code, supplementary §B); seeded
    workers: int = 0                   # DataLoader processes (speed only; RUNTIME_KEYS)
    patch_rule: str = "half"           # patch membership (= vppkit.metrics.patch_labels.DEFAULT_RULE; tested)


@dataclass
class FGSConfig:
    """``fgs``: FGS per layer (experiments/fgs.py)."""

    backbones: List[str] = field(default_factory=lambda: ["dense", "random"])
    pretrained: Optional[str] = None   # imgfocus adds the pretrained ViT-S/14
    pretrained_img_size: Optional[List[int]] = None  # [H, W] multiples of 14; null = img_size rounded to 14
    init_seed: int = 0                 # seed of the random-init backbone
    frame_stride: int = 2
    max_frames: int = 64               # per split
    batch_size: int = 8
    epochs: int = 2
    lr: float = 1.0e-2
    seeds: List[int] = field(default_factory=lambda: [0])
    bootstrap: int = 1000
    ci: float = 0.95


@dataclass
class SelectorsConfig:
    """``selectors``: training-free selector study (experiments/selectors.py)."""

    block: int = 3                     # 0-based block whose input tokens are selected
    keep_ratios: List[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5])  # kept share of N
    lambdas: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0])    # spatial k-center λ sweep
    selectors: List[str] = field(default_factory=lambda: ["random", "uniform", "attention", "kcenter", "divprune",
                                                          "spatial_kcenter"])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])  # random selector: one condition per seed
    max_videos: int = 4                # first videos of the held-out split
    frame_stride: int = 2              # every s-th frame ...
    max_frames: int = 8                # ... at most this many per video (stride grows to spread them)
    split: str = "val"
    ap: bool = True                    # run the pruned VIS model and evaluate video AP
    qualitative_ratio: float = 0.2     # keep ratio shown in the qualitative panel
    batch: int = 16                    # frames per forward


@dataclass
class OracleConfig:
    """``oracle``: instance vs background patches dropped (experiments/oracle.py)."""

    block: int = 1                     # first block the dropped patches skip (0-based; Map-SM acts at block 1)
    fractions: List[float] = field(default_factory=lambda: [0.25, 0.5])  # share of each frame's instance patches
    frame_stride: int = 1              # every s-th frame of each held-out video
    max_videos: Optional[int] = None   # first videos of the held-out split (null: all)
    seed: int = 0                      # draws of the dropped patches
    batch: int = 16                    # frames per forward


@dataclass
class FeatCacheConfig:
    """``featcache``: dense AP at equal wall time, backbone features cached vs not (experiments/featcache.py). Each
    arm is the profile's dense stage with its ``train.dense.steps`` and ``train.dense.feature_cache`` replaced; an
    arm equal to the profile's dense model reuses it. Run only when the dense backbone is frozen."""

    uncached_steps: Optional[int] = None  # dense steps without the cache (null: train.dense.steps)
    cached_steps: Optional[int] = None    # dense steps on cached features (null: train.dense.steps)


@dataclass
class Profile:
    """A whole profile (DESIGN.md §5). ``base`` is read while loading and is not part of the result."""

    seed: int = 0                      # global seed: data order, init, Gumbel noise
    profile: Optional[str] = None      # null: the file stem
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainSection = field(default_factory=TrainSection)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    pruning_overrides: Dict[str, PrunerParams] = field(default_factory=dict)  # per-method settings (zoo)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fgs: FGSConfig = field(default_factory=FGSConfig)
    selectors: SelectorsConfig = field(default_factory=SelectorsConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    featcache: FeatCacheConfig = field(default_factory=FeatCacheConfig)


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
def list_profiles() -> list[str]:
    """Names of the profiles shipped in ``configs/`` (file stems)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = CONFIG_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise ConfigError(f"no profile or yaml file {str(name_or_path)!r} (profiles: {', '.join(list_profiles())})")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile must be a mapping at top level, got {type(data).__name__}")
    return data


def merge(base: dict, child: dict) -> dict:
    """Recursive merge of plain dicts: dict values merge, others replace. Returns a new dict (inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The ``base:`` chain of ``path`` as (file, its mapping without ``base``), root first."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: circular 'base:' chain {[str(s) for s in seen]}")
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    if base_name is None:
        return [(path, data)]
    return _chain(_resolve_path(base_name), seen + (path.resolve(),)) + [(path, data)]


def _field_kinds(cls) -> dict[str, tuple[str, Any]]:
    """Per field of schema dataclass ``cls``: ("section", dataclass) for a nested section, ("mapping", dataclass)
    for a ``Dict[str, <dataclass>]`` (free keys, each a section: ``pruning_overrides``), ("mapping", None) for a
    free-form ``Dict`` (``model.fallback``, ``model.backbone_kwargs``), ("value", None) otherwise."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out[f.name] = ("section", t)
        elif typing.get_origin(t) is dict:
            value_type = typing.get_args(t)[1]
            out[f.name] = ("mapping", value_type if dataclasses.is_dataclass(value_type) else None)
        else:
            out[f.name] = ("value", None)
    return out


def schema_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (sections and their keys), e.g. ``train.dense.steps``."""
    out = []
    for name, (kind, sub) in _field_kinds(Profile if cls is None else cls).items():
        out.append(f"{prefix}{name}")
        if kind == "section":
            out += schema_keys(sub, f"{prefix}{name}.")
    return out


def _unknown_key(key: str, siblings: Iterable[str], source: str) -> ConfigError:
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    hint = prefix + close[0] if close else None
    if hint is None:
        close = difflib.get_close_matches(key, schema_keys(), n=1, cutoff=0.6)
        hint = close[0] if close else None
    tip = f"; did you mean {hint!r}?" if hint else f"; valid keys here: {', '.join(sorted(siblings))}"
    return ConfigError(f"{source}: unknown key {key!r}{tip}")


def _check_keys(cls, data: dict, source: str, prefix: str = "") -> None:
    """Refuse a key of ``data`` that schema dataclass ``cls`` does not have (recursing into its sections)."""
    kinds = _field_kinds(cls)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in kinds:
            raise _unknown_key(full, kinds, source)
        kind, sub = kinds[key]
        if not isinstance(value, dict) or sub is None:
            continue
        if kind == "section":
            _check_keys(sub, value, source, full + ".")
        else:
            for k, v in value.items():
                if isinstance(v, dict):
                    _check_keys(sub, v, source, f"{full}.{k}.")


def _check_dotted(key: str, source: str) -> None:
    """Refuse an override key that is not a schema key (free keys below a mapping field are allowed)."""
    parts = key.split(".")
    cls, i = Profile, 0
    while i < len(parts):
        kinds = _field_kinds(cls)
        if parts[i] not in kinds:
            raise _unknown_key(".".join(parts[:i + 1]), kinds, source)
        kind, sub = kinds[parts[i]]
        rest = len(parts) - i - 1
        if kind == "value" and rest:
            raise ConfigError(f"{source} {key!r}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
        if kind == "mapping":
            if sub is None or rest <= 1:  # free-form dict, or a whole entry of a Dict[str, section]
                return
            cls, i = sub, i + 2               # skip the free key (e.g. the method of pruning_overrides)
            continue
        cls, i = sub, i + 1


def _merge_into(cfg: DictConfig, data: dict, source: str) -> DictConfig:
    _check_keys(Profile, data, source)
    try:
        return OmegaConf.merge(cfg, data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_omegaconf_message(exc)}") from exc


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).split("\n")[0]
    return f"{key!r}: {msg}" if key else msg


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> (``"a.b"``, YAML-parsed value).

    Raises:
        ConfigError: no ``=``, an empty key, or a value that is not valid YAML.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. train.dense.steps=10)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
    return key, value


def _apply(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    for item in overrides or ():
        key, value = parse_override(item)
        _check_dotted(key, "override")
        for part in reversed(key.split(".")):
            value = {part: value}
        try:
            cfg = _merge_into(cfg, value, "override")
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("override:", f"override {item!r}:", 1)) from exc
    return cfg


def _plain(obj: Any) -> Any:
    """A container without the unset (MISSING, ``"???"``) optional keys."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v != "???"}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _validate(cfg: dict, source: str) -> None:
    """Checks the types cannot express: ``model.img_size``, ``model.fallback`` keys."""
    try:
        img_size_hw(cfg["model"]["img_size"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: 'model.img_size' must be an int or [H, W], got "
                          f"{cfg['model']['img_size']!r}") from exc
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in cfg["model"]["fallback"]:
        if key not in names or key in ("fallback", "pretrained"):
            raise _unknown_key(f"model.fallback.{key}", [n for n in names if n not in ("fallback", "pretrained")],
                               source)


def _to_dict(cfg: DictConfig, source: str) -> dict:
    out = _plain(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    _validate(out, source)
    return out


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Return a copy of a resolved ``cfg`` with ``key=value`` overrides applied (values parsed as YAML) and the
    result validated against the schema.

    Raises:
        ConfigError: an override without ``=`` or with an empty key, an unknown key, a value of the wrong type.
    """
    schema = _merge_into(OmegaConf.structured(Profile), cfg, "config")
    return _to_dict(_apply(schema, overrides), "override")


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Load a profile by name (``configs/<name>.yaml``) or a yaml path, then apply overrides.

    Returns:
        the resolved profile as a plain nested dict: every schema default filled in (except the unset optional
        keys of ``train.dense`` / ``train.sparse`` / ``pruning``, module docstring); ``profile`` is the profile
        name (the file stem) unless a yaml sets it.

    Raises:
        ConfigError: unknown profile, invalid YAML, circular ``base:`` chain, a malformed override, an unknown or
            misspelt key (file or override; the message names the closest valid key) or a value of the wrong type.
    """
    path = _resolve_path(name_or_path)
    cfg = OmegaConf.structured(Profile)
    for file, data in _chain(path):
        cfg = _merge_into(cfg, data, str(file))
    if cfg.profile is None:
        cfg.profile = path.stem
    out = _to_dict(cfg, str(path))
    if overrides:
        out = _to_dict(_apply(cfg, overrides), "override")
    return out


def get_dotted(cfg: dict, key: str, default: Any = None) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``; ``default`` when any part is missing."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def img_size_hw(img_size) -> tuple[int, int]:
    """A config's ``model.img_size`` as (H, W) px; an int means a square input.

    Raises:
        ValueError: a list / tuple that is not (H, W).
    """
    if isinstance(img_size, (list, tuple)):
        if len(img_size) != 2:
            raise ValueError(f"img_size must be an int or (H, W), got {img_size!r}")
        return int(img_size[0]), int(img_size[1])
    return int(img_size), int(img_size)


#: Keys that change how fast a run goes, never what it computes; :func:`config_hash` leaves them out so that,
#: e.g., more data-loader workers reuse the trained models (``train.workers``: tests/test_engine_loaders.py shows
#: the batches and the trained weights do not depend on it).
RUNTIME_KEYS = frozenset({"workers"})


def _without_runtime_keys(obj):
    if isinstance(obj, dict):
        return {k: _without_runtime_keys(v) for k, v in obj.items() if k not in RUNTIME_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_without_runtime_keys(v) for v in obj]
    return obj


def config_hash(cfg: dict, length: int = 12) -> str:
    """Stable short SHA-256 hex digest of ``cfg`` (sorted-key JSON; order of dict keys does not matter;
    :data:`RUNTIME_KEYS` at any level are left out)."""
    text = json.dumps(_without_runtime_keys(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]

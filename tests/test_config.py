"""The profile schema (vppkit.config): defaults once, unknown keys and wrong types refused, shipped profiles
resolve to the values their yaml files state."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from vppkit.config import CONFIG_DIR, ConfigError, EvalConfig, config_hash, list_profiles, load_config, schema_keys
from vppkit.engine.train import stage_config
from vppkit.metrics.patch_labels import DEFAULT_RULE
from vppkit.models.vis.model import build_vis_model


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- shipped profiles
@pytest.mark.parametrize("profile", ["default", "smoke", "davis", "ytvis19_tiny", "ytvis19_small", "ytvis21_tiny",
                                     "ytvis21_small"])
def test_every_shipped_profile_loads(profile):
    cfg = load_config(profile)
    assert cfg["profile"] == profile
    for section in ("data", "model", "loss", "train", "pruning", "eval", "fgs", "selectors", "oracle"):
        assert isinstance(cfg[section], dict), section
    assert "base" not in cfg


def test_resolved_values_match_the_yaml_files():
    """A handful of values read off configs/*.yaml by hand (and the base chain: smoke/davis/ytvis -> default)."""
    default, smoke, davis, y19s = (load_config(p) for p in ("default", "smoke", "davis", "ytvis19_small"))
    # default.yaml
    assert default["seed"] == 0 and default["data"]["num_videos"] == 128 and default["data"]["val_seed"] == 1000
    assert default["model"]["arch"] == "vit_micro" and default["model"]["img_size"] == [192, 192]
    assert default["loss"]["w_mask"] == 5.0 and default["loss"]["num_points"] == 0
    assert default["train"]["lr"] == 1.0e-3 and default["train"]["decay_at"] == 0.667
    assert default["train"]["dense"] == {"steps": 400, "clip_frames": 2, "ckpt_every": 100,
                                         "frame_loss_weights": [0.5, 1.0], "feature_cache": False}
    assert default["train"]["sparse"] == {"steps": 60, "clip_frames": 3, "lr": 5.0e-4, "backbone_lr_mult": 0.1,
                                          "ckpt_every": 30, "frame_loss_weights": [0.0, 0.5, 1.0]}
    assert default["eval"]["inference_noise"] is True
    assert default["pruning"] == {"method": "vpp", "schedule": "pkr55"}
    assert default["eval"]["score"] == "present_mask" and default["eval"]["top_k"] == 10
    # smoke.yaml over default.yaml
    assert smoke["model"]["arch"] == "vit_nano" and smoke["model"]["img_size"] == [96, 96]
    assert smoke["data"]["num_frames"] == 6 and smoke["data"]["num_val_videos"] == 2
    assert smoke["train"]["dense"] == {"steps": 20, "clip_frames": 2, "ckpt_every": 10,
                                       "frame_loss_weights": [0.5, 1.0], "feature_cache": False}
    assert smoke["train"]["sparse"]["steps"] == 4 and smoke["train"]["sparse"]["lr"] == 5.0e-4  # inherited
    assert smoke["train"]["weight_decay"] == 0.05 and smoke["eval"]["score"] == "present_mask"
    # davis.yaml over default.yaml
    assert davis["data"]["source"] == "davis" and davis["data"]["res"] == "240p" and davis["data"]["root"] is None
    assert davis["model"]["pretrained"] == "imgfocus" and davis["model"]["fallback"] == {}
    assert davis["model"]["img_size"] == [168, 294]
    assert davis["train"]["freeze_backbone"] is True
    assert davis["train"]["dense"] == {"steps": 300, "clip_frames": 2, "ckpt_every": 100,
                                       "frame_loss_weights": [0.5, 1.0], "feature_cache": False}
    assert davis["featcache"] == {"uncached_steps": 300, "cached_steps": 375}
    assert davis["train"]["sparse"]["batch"] == 1 and davis["train"]["sparse"]["steps"] == 350
    assert davis["fgs"]["backbones"] == ["dense", "random"] and davis["fgs"]["pretrained_img_size"] == [224, 392]
    assert davis["fgs"]["max_frames"] == 48 and davis["fgs"]["lr"] == 1.0e-2  # set / schema default
    assert davis["oracle"]["frame_stride"] == 2 and davis["oracle"]["fractions"] == [0.25, 0.5]
    assert davis["selectors"]["keep_ratios"] == [0.1, 0.3, 0.5] and davis["selectors"]["block"] == 3
    # ytvis19_small.yaml over default.yaml
    assert y19s["data"]["train_json"] == "annotations/youtube_vis_2019_train.json" and y19s["data"]["cache"] is False
    assert y19s["model"]["arch"] == "deit_small" and y19s["model"]["img_size"] == [544, 960]
    assert y19s["loss"]["num_points"] == 12544 and y19s["train"]["epochs"] == 6 and y19s["train"]["workers"] == 4
    assert y19s["train"]["dense"]["steps"] is None and y19s["train"]["sparse"]["lr"] == 2.5e-5
    assert y19s["eval"]["inference_noise"] is True


def test_paper_scale_profiles_use_the_official_drop_path():
    """Stochastic depth 0.1 (ViT-Adapter-Tiny) / 0.2 (Small) as the official configs (vpp-notes §2.2), and
    build_vis_model hands it to timm: every block's DropPath carries the rate's share (timm: linspace(0, rate))."""
    for name, rate in (("ytvis19_tiny", 0.1), ("ytvis21_tiny", 0.1), ("ytvis19_small", 0.2), ("ytvis21_small", 0.2)):
        assert load_config(name)["model"]["backbone_kwargs"] == {"drop_path_rate": rate}, name
    mcfg = {**load_config("ytvis21_small")["model"], "img_size": [64, 64], "dim": 32, "num_queries": 2,
            "dec_layers": 1, "heads": 2}
    blocks = build_vis_model(mcfg, num_classes=2).backbone.vit.blocks
    probs = [float(getattr(b.drop_path1, "drop_prob", 0.0)) for b in blocks]
    assert probs[0] == 0.0 and abs(probs[-1] - 0.2) < 1e-6 and all(p > 0 for p in probs[1:])


def test_default_yaml_states_exactly_the_schema_defaults(tmp_path):
    """configs/default.yaml restates the schema defaults (with comments): the two must not drift apart."""
    schema = load_config(_write(tmp_path / "empty.yaml", ""))
    default = load_config("default")
    assert {**default, "profile": None} == {**schema, "profile": None}


def test_every_key_of_every_profile_yaml_is_a_schema_key():
    keys = set(schema_keys())

    def walk(node, prefix):
        for k, v in node.items():
            full = f"{prefix}{k}"
            if full == "base" or full.startswith(("model.fallback.", "model.backbone_kwargs.", "pruning_overrides.")):
                continue
            assert full in keys, full
            if isinstance(v, dict) and v:
                walk(v, full + ".")

    for name in list_profiles():
        walk(yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()), "")


def test_eval_score_and_patch_rule_defaults(tmp_path):
    """§2: eval.score is present_mask (configs/default.yaml) for every shipped profile; the schema's patch rule is
    the metric's own default rule."""
    for name in list_profiles():
        assert load_config(name)["eval"]["score"] == "present_mask", name
    assert load_config(_write(tmp_path / "empty.yaml", ""))["eval"]["patch_rule"] == DEFAULT_RULE == "half"
    assert {f.name: f.default for f in dataclasses.fields(EvalConfig)}["patch_rule"] == DEFAULT_RULE


# ----------------------------------------------------------------------------------------------- refusals
def test_unknown_key_in_yaml_names_file_key_and_suggestion(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "base: smoke\ntrain:\n  dense:\n    stpes: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert str(bad) in msg and "'train.dense.stpes'" in msg and "'train.dense.steps'" in msg
    bad = _write(tmp_path / "bad2.yaml", "base: default\nevall:\n  top_k: 3\n")
    with pytest.raises(ConfigError, match=r"bad2.yaml: unknown key 'evall'; did you mean 'eval'"):
        load_config(bad)


def test_unknown_key_in_a_base_file_names_that_file(tmp_path):
    _write(tmp_path / "parent.yaml", "base: smoke\nmodel:\n  num_querys: 4\n")
    child = _write(tmp_path / "child.yaml", f"base: {tmp_path / 'parent.yaml'}\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"parent.yaml: unknown key 'model.num_querys'; did you mean "
                                          r"'model.num_queries'"):
        load_config(child)


def test_misspelt_override_names_the_closest_key():
    with pytest.raises(ConfigError, match=r"override.*'train.lrr'.*did you mean 'train.lr'"):
        load_config("smoke", ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"'eval.topk'.*did you mean 'eval.top_k'"):
        load_config("smoke", ["eval.topk=3"])
    # train.steps would be overridden by every stage: there is no shared value, the per-stage key is suggested
    with pytest.raises(ConfigError, match=r"'train.steps'.*did you mean 'train.dense.steps'"):
        load_config("smoke", ["train.steps=3"])
    with pytest.raises(ConfigError, match=r"'pruning_overrides.vpp.pool_radus'.*'pruning_overrides.vpp.pool_radius'"):
        load_config("smoke", ["pruning_overrides.vpp.pool_radus=2"])
    with pytest.raises(ConfigError, match=r"'model.fallback.archh'.*'model.fallback.arch'"):
        load_config("smoke", ["model.fallback={archh: vit_micro}"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("smoke", ["train.dense.steps"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config("smoke", ["train.lr.x=1"])


@pytest.mark.parametrize("override, key", [("train.dense.steps=abc", "train.dense.steps"),
                                           ("eval.top_k=3.5", "eval.top_k"),
                                           ("train.flip=maybe", "train.flip"),
                                           ("selectors.keep_ratios=[a]", "selectors.keep_ratios"),
                                           ("model.img_size=[1,2,3]", "model.img_size")])
def test_wrong_type_refused(override, key):
    with pytest.raises(ConfigError, match=f"override.*'{key}"):
        load_config("smoke", [override])


def test_wrong_type_in_yaml_refused(tmp_path):
    bad = _write(tmp_path / "t.yaml", "base: smoke\ndata:\n  num_videos: many\n")
    with pytest.raises(ConfigError, match=r"t.yaml: 'data.num_videos'"):
        load_config(bad)


# ----------------------------------------------------------------------------------------------- what still works
def test_base_chain_and_stage_inheritance(tmp_path):
    _write(tmp_path / "mid.yaml", "base: smoke\ntrain:\n  lr: 0.02\n  dense:\n    steps: 7\n")
    child = _write(tmp_path / "leaf.yaml", f"base: {tmp_path / 'mid.yaml'}\ntrain:\n  sparse:\n    batch: 1\n")
    cfg = load_config(child)
    assert cfg["profile"] == "leaf" and cfg["model"]["arch"] == "vit_nano"      # smoke via mid
    assert cfg["train"]["dense"] == {"steps": 7, "clip_frames": 2, "ckpt_every": 10, "frame_loss_weights": [0.5, 1.0],
                                     "feature_cache": False}
    dense, sparse = stage_config(cfg, "dense"), stage_config(cfg, "sparse")
    assert dense["lr"] == 0.02 and dense["batch"] == 2                          # unset stage keys inherit
    assert sparse["lr"] == 5.0e-4 and sparse["batch"] == 1 and sparse["steps"] == 4
    loop = _write(tmp_path / "loop.yaml", f"base: {tmp_path / 'loop.yaml'}\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)


def test_overrides_of_lists_dicts_and_null():
    cfg = load_config("smoke", ["model.img_size=[64,64]", "data.root=null", "train.dense.steps=null",
                                "train.epochs=2", "fgs.seeds=[1,2]", "pruning.kappa_init=0.3",
                                "pruning_overrides.vpp.pool_radius=2", "model.fallback={arch: vit_micro}",
                                "train.lr=1e-3"])
    assert cfg["model"]["img_size"] == [64, 64] and cfg["data"]["root"] is None
    assert cfg["train"]["dense"]["steps"] is None and cfg["train"]["epochs"] == 2
    assert cfg["fgs"]["seeds"] == [1, 2]
    assert cfg["pruning"] == {"method": "vpp", "schedule": "pkr55", "kappa_init": 0.3}
    assert cfg["pruning_overrides"] == {"vpp": {"pool_radius": 2}}
    assert cfg["model"]["fallback"] == {"arch": "vit_micro"}
    assert cfg["train"]["lr"] == 0.001  # "1e-3" is a YAML string; the float field converts it
    assert load_config("smoke", ["model.img_size=96"])["model"]["img_size"] == 96


def test_hash_ignores_runtime_keys_and_key_order():
    a = load_config("smoke")
    assert config_hash(a) == config_hash(dict(reversed(list(a.items()))))
    assert config_hash(a) == config_hash(load_config("smoke", ["train.workers=3", "eval.workers=2"]))
    assert config_hash(a) != config_hash(load_config("smoke", ["seed=1"]))

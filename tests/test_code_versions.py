"""Saved results and trained models know the code that made them (issue 12 §5).

- :func:`vppkit.utils.provenance.code_version` hashes the source of named packages: an edit changes it, line
  endings and name order do not.
- :meth:`experiments.common.Context.cached` reuses a result only when config hash AND code version match: an edit
  to a package the result depends on recomputes it, an edit elsewhere does not.
- A trained model's key (:func:`vppkit.engine.train.run_key`) changes with training code only, not with analysis
  code (metrics, inference, FLOPs, benchmark, experiments, analyses).
- The report index flags a result computed by another commit, and one whose code changed since.

Source changes are simulated on a temporary package, or by appending a comment to one file's text as the hasher
reads it (so whatever package layout holds that file, the test sees whether the key covers it).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from analyses import report
from experiments import common
from experiments.common import Context, result_code
from vppkit.config import config_hash, load_config
from vppkit.engine import train as train_mod
from vppkit.utils import provenance
from vppkit.utils.io import atomic_write_json
from vppkit.utils.provenance import clear_code_cache, code_stamp, code_version, git_commit, same_commit


@pytest.fixture(autouse=True)
def _fresh_code_cache():
    clear_code_cache()
    yield
    clear_code_cache()


@pytest.fixture()
def tmp_pkgs(tmp_path, monkeypatch):
    """Two throwaway importable packages ``vdep`` (a dependency) and ``vother`` (unrelated code)."""
    for name in ("vdep", "vother"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "__init__.py").write_text('"""pkg"""\n')
        (tmp_path / name / "core.py").write_text("def f(x):\n    return x + 1\n")
        (tmp_path / name / "sub" / "__init__.py").write_text("")
        (tmp_path / name / "sub" / "deep.py").write_text("K = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _edit(path: Path, text: str) -> None:
    path.write_text(text)
    clear_code_cache()  # a new process would hash the new text


# --- code_version ---------------------------------------------------------------------------------------------

def test_code_version_changes_with_any_file_of_the_package(tmp_pkgs):
    before = code_version("vdep")
    _edit(tmp_pkgs / "vdep" / "sub" / "deep.py", "K = 4\n")  # a sub-package's file counts
    assert code_version("vdep") != before
    _edit(tmp_pkgs / "vdep" / "sub" / "deep.py", "K = 3\n")
    assert code_version("vdep") == before  # content hash: same text, same version
    (tmp_pkgs / "vdep" / "new.py").write_text("")
    clear_code_cache()
    assert code_version("vdep") != before  # a new file counts


def test_code_version_ignores_line_endings_name_order_and_caches(tmp_pkgs):
    before = code_version("vdep", "vother")
    assert code_version("vother", "vdep", "vdep") == before
    (tmp_pkgs / "vdep" / "core.py").write_bytes(b"def f(x):\r\n    return x + 1\r\n")
    clear_code_cache()
    assert code_version("vdep", "vother") == before
    assert code_version("vdep") != code_version("vother", "vdep")


def test_code_version_rejects_unknown_names():
    with pytest.raises(ModuleNotFoundError):
        code_version("vppkit.no_such_package")
    with pytest.raises(ValueError):
        code_version()


def test_every_name_in_the_key_tables_exists():
    """A package renamed without updating RESULT_CODE / TRAINING_CODE must fail here, not at `make reports`."""
    for name, code in common.RESULT_CODE.items():
        assert len(code_version(*code)) == 12, name
    assert len(code_version(*train_mod.TRAINING_CODE)) == 12


def test_same_commit_compares_hashes_without_dirty_suffix():
    full = "a0d8ee97daa9e2d7a851e4e81ff5fa8f37c17726"
    assert same_commit("a0d8ee9", full) and same_commit("a0d8ee9+dirty", full + "+dirty")
    assert same_commit("a0d8ee9+dirty", full)
    assert not same_commit("c4783c7", full)
    assert not same_commit("unknown", "unknown") and not same_commit(None, full)


# --- Context.cached -------------------------------------------------------------------------------------------

def _ctx(tmp_path) -> Context:
    return Context(profile="smoke", cfg={"seed": 0}, results_dir=tmp_path / "results", reports_dir=tmp_path / "rep")


def test_cached_recomputes_when_a_dependency_changes_and_only_then(tmp_pkgs):
    ctx = _ctx(tmp_pkgs)
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    first = ctx.cached("thing", {"a": 1}, compute, code=("vdep",))
    assert first["code"] == ["vdep"] and first["code_version"] == code_version("vdep")
    assert ctx.cached("thing", {"a": 1}, compute, code=("vdep",))["value"] == 1 and len(calls) == 1

    _edit(tmp_pkgs / "vother" / "core.py", "def f(x):\n    return x + 2\n")  # unrelated code: reused
    assert ctx.cached("thing", {"a": 1}, compute, code=("vdep",))["value"] == 1 and len(calls) == 1

    _edit(tmp_pkgs / "vdep" / "core.py", "def f(x):\n    return x + 2\n")  # the dependency: recomputed
    again = ctx.cached("thing", {"a": 1}, compute, code=("vdep",))
    assert again["value"] == 2 and len(calls) == 2 and again["code_version"] != first["code_version"]
    saved = json.loads(ctx.result_path("thing").read_text())
    assert saved["code_version"] == again["code_version"] and saved["value"] == 2


def test_cached_recomputes_a_result_saved_without_code_version(tmp_path):
    ctx = _ctx(tmp_path)
    cfg = {"a": 1}
    atomic_write_json(ctx.result_path("evtp"), {"value": "old", "config": cfg, "config_hash": config_hash(cfg)})
    out = ctx.cached("evtp", cfg, lambda: {"value": "new"})
    assert out["value"] == "new" and out["code"] == ["experiments.evtp", "vppkit.flops"]


def test_cached_uses_the_result_code_table(tmp_pkgs, monkeypatch):
    monkeypatch.setitem(common.RESULT_CODE, "fgs", ("vdep",))
    ctx = _ctx(tmp_pkgs)
    ctx.cached("fgs", {}, lambda: {"v": 1})
    _edit(tmp_pkgs / "vdep" / "__init__.py", '"""pkg, edited"""\n')
    assert ctx.cached("fgs", {}, lambda: {"v": 2})["v"] == 2


def test_result_code_per_artifact():
    assert result_code("eval_vpp55") == common.RESULT_CODE["eval"]
    assert "vppkit.metrics" in result_code("eval_dense") and "experiments.zoo" in result_code("eval_dense")
    assert "experiments.ioi" in result_code("ioi") and "vppkit.metrics" in result_code("ioi")  # transitive
    assert "vppkit.metrics" not in result_code("evtp")

    def compute():
        return {}

    for name in common.RESULT_CODE:  # the docstring's table lists every entry
        assert f"``{'eval_<variant>' if name == 'eval' else name}``" in common.__doc__, name
    unknown = result_code("not_in_table", compute)
    assert compute.__module__ in unknown and "vppkit.metrics" in unknown  # too much rather than too little


# --- which source edits change which key ----------------------------------------------------------------------

def _origin(module: str) -> Path:
    return Path(importlib.util.find_spec(module).origin).resolve()


def _key_after_editing(monkeypatch, module: str, key_fn):
    """``key_fn()`` as it would be if ``module``'s source file had one more comment line."""
    target, real = _origin(module), provenance._normalised
    with monkeypatch.context() as m:
        m.setattr(provenance, "_normalised",
                  lambda path: real(path) + (b"# edited\n" if Path(path).resolve() == target else b""))
        clear_code_cache()
        key = key_fn()
    clear_code_cache()
    return key


ANALYSIS_MODULES = ("vppkit.metrics", "vppkit.metrics.ioi", "vppkit.engine.infer", "vppkit.flops", "vppkit.bench",
                    "experiments.zoo", "experiments.fgs", "experiments.common", "analyses.report")
TRAINING_MODULES = ("vppkit.engine.train", "vppkit.models.vis.losses", "vppkit.models.vit", "vppkit.data.video",
                    "vppkit.models.pruning.vpp", "vppkit.engine.rovis_loss")


def test_trained_model_key_ignores_analysis_code_and_follows_training_code(monkeypatch):
    cfg = load_config("smoke")

    def key():
        return train_mod.run_key(cfg, "sparse", "dense.pt")

    base = key()
    for module in ANALYSIS_MODULES:
        assert _key_after_editing(monkeypatch, module, key) == base, f"{module} must not retrain models"
    for module in TRAINING_MODULES:
        assert _key_after_editing(monkeypatch, module, key) != base, f"{module} must retrain models"


def test_evaluation_key_follows_metrics_and_inference_code(monkeypatch):
    def key():
        return code_stamp(result_code("eval_dense"))["code_version"]

    base = key()
    for module in ("vppkit.metrics.ioi", "vppkit.engine.infer", "experiments.zoo", "vppkit.models.vit"):
        assert _key_after_editing(monkeypatch, module, key) != base, module
    for module in ("analyses.report", "experiments.fgs"):
        assert _key_after_editing(monkeypatch, module, key) == base, module


# --- the report index -----------------------------------------------------------------------------------------

def test_index_flags_results_from_another_commit_or_changed_code(tmp_path):
    head = git_commit(short=False)
    if head == "unknown":
        pytest.skip("not a git checkout")
    ctx = Context(profile="smoke", cfg=load_config("smoke"), results_dir=tmp_path / "results" / "smoke",
                  reports_dir=tmp_path / "reports" / "smoke")
    clean_head = head.split("+")[0]
    stamp = code_stamp(("experiments.evtp", "vppkit.flops"))
    manifest = {
        "evtp": {"entries": [], "provenance": {"commit": clean_head[:7], "time_utc": "t0"}, **stamp},
        "fgs": {"entries": [], "provenance": {"commit": "0000000", "time_utc": "t1"}, **stamp},
        "ioi": {"entries": [], "provenance": {"commit": clean_head[:7], "time_utc": "t2"},
                "code_version": "ffffffffffff", "code": stamp["code"]},
        "density": {"entries": [], "provenance": {"commit": clean_head[:9]}},  # saved before code versions
    }
    atomic_write_json(ctx.reports_dir / "manifest.json", manifest)
    index = report.write_index(ctx).read_text()
    section = index.split("## Provenance of the results")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["evtp"].rstrip().endswith("| current |")
    assert "computed by commit `0000000`, not the current" in rows["fgs"]
    assert "code changed" in rows["ioi"] and "ffffffffffff" in rows["ioi"]
    assert "no code version recorded" in rows["density"]
    assert "**Warning:** ioi, density" in section and "**Note:** fgs" in section
    assert f"`{clean_head}` (HEAD)" in section
    assert "**Warning (fgs):** computed by commit `0000000`" in index
    assert "**Warning (evtp)" not in index

"""Artifact 8: cost table: backbone GMACs per method and PKR (analytic, from every evaluated frame's own
per-block token counts, :func:`vppkit.flops.measure.macs_from_records`), pruner overhead separately, ideal
speed-up (dense GMACs / pruned GMACs incl. overhead) and, when `make bench` has run, the measured speed.

Also the nominal schedules at paper scale (DeiT-T/S, 960x544 -> N = 60x34 = 2040 patches; vpp-notes §2.3):
the closed form under each method's nominal keep ratios (no model run).
"""

from __future__ import annotations

from experiments import zoo
from experiments.bench import shared_context
from experiments.common import Context, result_ref
from vppkit.flops.analytic import backbone_macs, get_spec, method_schedule
from vppkit.models.pruning.schedules import VPPSchedule

VARIANTS = ("dense", "vpp55", "vpp40", "svit55", "svit40", "dynamicvit55", "dynamicvit40")
PAPER_GRID = (34, 60)


def _paper_scale() -> list[dict]:
    rows = []
    for arch in ("deit_tiny", "deit_small"):
        spec = get_spec(arch)
        settings = [("dense", {}, "dense")]
        for g in zoo.GOALS:
            sch = VPPSchedule.preset(f"pkr{g}")
            settings.append(("vpp", {"keep": sch.m, "rho": sch.rho}, f"VPP {g} %"))
            rho = zoo._dynamicvit_pruning(g)["rho"]
            settings.append(("svit", {"rho": rho}, f"SViT {g} %"))
            settings.append(("dynamicvit", {"rho": rho}, f"DynamicViT {g} %"))
        for method, kw, label in settings:
            schedule, overhead, note = method_schedule(method, spec, PAPER_GRID, **kw)
            m = backbone_macs(spec, schedule, overhead_macs=overhead)
            rows.append({"arch": arch, "setting": label, "nominal_PKR": 100 * schedule.pkr,
                         "backbone_GMACs": m.backbone / 1e9, "overhead_GMACs": m.overhead / 1e9,
                         "total_GMACs": m.total / 1e9, "note": note})
    return rows


def _bench_rows(bench: dict) -> list[dict]:
    """Measured speed from `make bench` (real pruner modules, backbone), one row per model x method x batch."""
    rows = []
    for model in bench["models"]:
        for r in model["rows"]:
            if r["part"] != "backbone" or r["variant"] not in ("dense", "real"):
                continue
            rows.append({"model": model["case"]["label"].split(" (")[0], "method": r["method"], "batch": r["batch"],
                         "PKR": 100 * r["realised_pkr"], "GMACs": r["GMACs"], "ms_per_frame": r["ms_per_frame"],
                         "measured_speedup": r["speedup_measured"], "ideal_speedup": r["speedup_ideal"],
                         "realized_over_ideal": r["realized_over_ideal"]})
    return rows


def run(ctx: Context) -> dict:
    evals, config = zoo.evaluate_many(ctx, "flops", VARIANTS)
    bench = shared_context(ctx).load_result("bench")  # shared by all profiles (experiments.bench)
    config["bench"] = result_ref(bench or {})

    def compute() -> dict:
        dense_total = evals["dense"]["backbone_GMACs"] + evals["dense"]["overhead_GMACs"]
        rows = []
        for v, e in evals.items():
            spec = zoo.variants()[v]
            total = e["backbone_GMACs"] + e["overhead_GMACs"]
            rows.append({"variant": v, "method": spec["method"], "goal_PKR": spec["goal_pkr"],
                         "PKR": 100 * e["pkr"]["all"], "backbone_GMACs": e["backbone_GMACs"],
                         "overhead_GMACs": e["overhead_GMACs"], "total_GMACs": total,
                         "ideal_speedup": dense_total / total,
                         "ms_per_frame_whole_model": 1000 * e["seconds_per_frame"]})
        return {"rows": rows, "paper_scale": _paper_scale(), "model": ctx.cfg["model"]["arch"],
                "img_size": ctx.cfg["model"]["img_size"], "bench_available": bench is not None,
                "bench_rows": _bench_rows(bench) if bench else [],
                "bench_provenance": (bench or {}).get("provenance")}

    return ctx.cached("flops", config, compute)

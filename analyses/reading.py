"""A reading of the results: which trends of the VPP paper show up in this profile's results.

Each check states a trend the paper reports (with its source), evaluates it on the saved results of this
run, and says whether it holds, with the numbers. The verdicts are computed, never written by hand; the
hand-written discussion of *why* lives in ``docs/reading.md`` and is linked, not mixed in.
"""

from __future__ import annotations

from typing import Callable

from experiments.common import Context
from vppkit.utils.io import atomic_write_text

Check = tuple[str, str, Callable[[dict], tuple[bool | None, str]]]


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def _by(rows: list[dict], **match) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _fgs_rises(r: dict) -> tuple[bool | None, str]:
    out, ok = [], []
    for name, b in r["backbones"].items():
        layers = b["layers"]
        first, last = layers[0]["fgs"], layers[-1]["fgs"]
        out.append(f"{name}: x_0 {first:.3f} → x_12 {last:.3f}")
        if name != "random":
            ok.append(last > first)
    return (all(ok) if ok else None), "; ".join(out)


#: bars of the default profile (issue 14): the premise VPP rests on must hold on the profile every new user runs
FGS_X0_MAX = 0.65       # random-init backbone at x_0: the patch embedding alone must not give instances away
FGS_RISE_MIN = 0.15     # trained dense backbone: best deep layer minus x_0
DENSE_AP_MIN = 40.0     # dense model's video AP (AP_track, %) on the held-out videos


def _fgs_x0_floor(r: dict) -> tuple[bool | None, str]:
    """FGS of the random-init backbone at x_0 (patch embedding + position) <= :data:`FGS_X0_MAX`."""
    b = r["backbones"].get("random")
    if b is None:
        return None, "no random-init backbone in this run"
    x0 = b["layers"][0]["fgs"]
    return x0 <= FGS_X0_MAX, f"random init: x_0 {x0:.3f} (bar ≤ {FGS_X0_MAX:.2f})"


def _fgs_rise_trained(r: dict) -> tuple[bool | None, str]:
    """Every trained backbone's FGS rises by >= :data:`FGS_RISE_MIN` from x_0 to its best layer x_1 .. x_L."""
    verdicts, text = [], []
    for name, b in r["backbones"].items():
        if name == "random":
            continue
        layers = b["layers"]
        x0 = layers[0]["fgs"]
        best = max(layers[1:], key=lambda x: x["fgs"])
        rise = best["fgs"] - x0
        verdicts.append(rise >= FGS_RISE_MIN)
        text.append(f"{name}: x_0 {x0:.3f} → {best['feature']} {best['fgs']:.3f} (rise {rise:+.3f}, bar ≥ "
                    f"{FGS_RISE_MIN:.2f})")
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _dense_ap(r: dict) -> tuple[bool | None, str]:
    """The dense model's video AP (AP_track, %) on the held-out videos >= :data:`DENSE_AP_MIN`."""
    dense = _by(r["rows"], variant="dense")
    if dense is None or dense.get("AP_track") is None:
        return None, "no dense row"
    return dense["AP_track"] >= DENSE_AP_MIN, f"dense AP_track {_fmt(dense['AP_track'])} (bar ≥ {DENSE_AP_MIN:.0f})"


def _ioi_vpp_beats_svit(r: dict) -> tuple[bool | None, str]:
    verdicts, text = [], []
    for goal in (55, 40):
        v, s = _by(r["rows"], goal_PKR=goal, method="VPP"), _by(r["rows"], goal_PKR=goal, method="SViT")
        if v and s and v["IoI"] is not None and s["IoI"] is not None:
            verdicts.append(v["IoI"] > s["IoI"])
            text.append(f"{goal} %: VPP {_fmt(v['IoI'])} (PKR {_fmt(v['PKR'])}) vs SViT {_fmt(s['IoI'])} "
                        f"(PKR {_fmt(s['PKR'])})")
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _ioi_above_pkr(r: dict) -> tuple[bool | None, str]:
    """Selectivity: a pruner that keeps instance patches more often than patches on average has IoI > PKR (both
    block-averaged percentages); a fg-blind gate gives IoI ≈ PKR, one that spends its budget on background less."""
    verdicts, text = [], []
    for goal in (55, 40):
        for method in ("VPP", "SViT"):
            x = _by(r["rows"], goal_PKR=goal, method=method)
            if x and x["IoI"] is not None and x["PKR"] is not None:
                verdicts.append(x["IoI"] > x["PKR"])
                text.append(f"{method} {goal} %: IoI {_fmt(x['IoI'])} vs PKR {_fmt(x['PKR'])}")
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _ioi_small_first(r: dict) -> tuple[bool | None, str]:
    verdicts, text = [], []
    for goal in (55, 40):
        v = _by(r["rows"], goal_PKR=goal, method="VPP")
        if v and v["IoI_S"] is not None and v["IoI_L"] is not None:
            verdicts.append(v["IoI_S"] > v["IoI_L"])
            text.append(f"{goal} %: IoI_S {_fmt(v['IoI_S'])} vs IoI_L {_fmt(v['IoI_L'])}")
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _density_early_vs_deep(r: dict) -> tuple[bool | None, str]:
    verdicts, text = [], []
    for goal in (55, 40):
        vpp = [x for x in r["rows"] if x["method"] == "VPP" and x["goal_PKR"] == goal]
        svit = [x for x in r["rows"] if x["method"] == "SViT" and x["goal_PKR"] == goal]
        if not vpp or not svit:
            continue
        early = lambda rows: sum(x["density"] for x in rows if x["layer"] in (2, 3)) / 2  # noqa: E731
        deep = lambda rows: sum(x["density"] for x in rows if x["layer"] >= 7) / 6  # noqa: E731
        verdicts.append(early(vpp) < early(svit) and deep(vpp) > deep(svit))
        text.append(f"{goal} %: layers 2-3 VPP {early(vpp):.2f} vs SViT {early(svit):.2f}; layers 7-12 VPP "
                    f"{deep(vpp):.2f} vs SViT {deep(svit):.2f}")
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _kappa_best(r: dict) -> tuple[bool | None, str]:
    rows = sorted(r["rows"], key=lambda x: x["kappa_init"])
    best = max(rows, key=lambda x: x["AP"])
    text = "; ".join(f"κ {x['kappa_init']}: PKR {_fmt(x['PKR'])}, AP {_fmt(x['AP'])}" for x in rows)
    return best["kappa_init"] == 0.5, text


def _kappa_pkr_monotone(r: dict) -> tuple[bool | None, str]:
    rows = sorted(r["rows"], key=lambda x: x["kappa_init"])
    pkrs = [x["PKR"] for x in rows]
    return all(a < b for a, b in zip(pkrs, pkrs[1:])), ", ".join(_fmt(p) for p in pkrs)


def _ap_loss_order(r: dict) -> tuple[bool | None, str]:
    verdicts, text = [], []
    for goal in (55, 40):
        loss = {m: _by(r["rows"], goal_PKR=goal, method=m) for m in ("VPP", "SViT", "DynamicViT")}
        if all(loss.values()):
            verdicts.append(loss["VPP"]["AP_loss"] <= min(loss["SViT"]["AP_loss"], loss["DynamicViT"]["AP_loss"]))
            text.append(f"{goal} %: " + ", ".join(f"{m} {_fmt(x['AP_loss'])} @ PKR {_fmt(x['PKR'])}"
                                                   for m, x in loss.items()))
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _vpp_small_loss(r: dict) -> tuple[bool | None, str]:
    dense = r["rows"][0]
    text, verdicts = [], []
    for row in r["rows"][1:]:
        drop = dense["AP_track"] - row["AP_track"]
        verdicts.append(drop <= 2.0)
        text.append(f"{row['model']}: AP_track {_fmt(row['AP_track'])} (dense {_fmt(dense['AP_track'])}, "
                    f"drop {drop:.1f}) at PKR {_fmt(row['PKR'])}")
    return (all(verdicts) if verdicts else None), "; ".join(text)


def _instances_matter_more(r: dict) -> tuple[bool | None, str]:
    verdicts, text = [], []
    for frac in sorted({x["fraction"] for x in r["rows"]}):
        fg = _by(r["rows"], fraction=frac, condition="drop_instance")
        bg = _by(r["rows"], fraction=frac, condition="drop_background")
        if fg and bg:
            verdicts.append(fg["AP"] < bg["AP"])
            text.append(f"{100 * frac:.0f} % dropped: AP {_fmt(fg['AP'])} (instance) vs {_fmt(bg['AP'])} "
                        "(background)")
    return (all(verdicts) if verdicts else None), "; ".join(text)


CHECKS: dict[str, list[Check]] = {
    "fgs": [("FGS rises with depth (trained backbones)", "Fig. 2 / supp. §C: ~0.6 at x_0, rising almost linearly "
             "to layer 9", _fgs_rises),
            ("the patch embedding alone does not give instances away (random-init FGS at x_0 ≤ 0.65)",
             "Fig. 2: ~0.6 at x_0; default-profile bar (issue 14)", _fgs_x0_floor),
            ("the trained backbone's FGS rises by ≥ 0.15 from x_0 to its best layer",
             "Fig. 2: ~0.6 at x_0 rising to layer 9; default-profile bar (issue 14)", _fgs_rise_trained)],
    "ioi": [("VPP covers instances better than SViT (IoI)", "Table 8: VPP > SViT by > 10 points at 55 % and 40 %",
             _ioi_vpp_beats_svit),
            ("both pruners keep instance patches more often than average (IoI > realised PKR)",
             "Table 8: IoI 54.9-82.3 % at goal PKR 40 / 55 %, every row above its PKR", _ioi_above_pkr),
            ("VPP gives small objects a higher IoI than large ones", "Table 8 / supp. §D: IoI_S > IoI_L",
             _ioi_small_first)],
    "density": [("VPP prunes early and keeps deep layers denser than SViT", "Fig. 5", _density_early_vs_deep)],
    "kappa": [("κ_init = 0.5 gives the best AP", "Table 7: AP 41.8 / 42.3 / 39.5", _kappa_best),
              ("realised PKR grows with κ_init", "Table 7: PKR 51.4 / 52.7 / 54.1", _kappa_pkr_monotone)],
    "curves": [("VPP loses the least AP at equal goal PKR", "Fig. 4: VPP < SViT < DynamicViT", _ap_loss_order)],
    "results": [("VPP stays within 2 AP points of dense", "README table: −0.6 / −1.9 (S), +0.1 / −1.3 (T)",
                 _vpp_small_loss),
                ("the dense model segments the held-out videos (video AP ≥ 40 %)",
                 "README table: dense 42.2 (T) / 50.4 (S); default-profile bar (issue 14)", _dense_ap)],
    "oracle": [("the dense model needs instance patches more than background ones (dropping them costs more AP)",
                "premise of supp. §E (task loss biases the gates toward foreground); no experiment in the paper",
                _instances_matter_more)],
}


def write_reading(ctx: Context) -> str:
    """Evaluate every check on the saved results and write ``reports/<profile>/reading.md``; returns the text."""
    lines = [f"# Reading of the results — profile `{ctx.profile}`", "",
             "Each row is a trend the VPP paper reports and whether it holds in *this* run's saved results "
             "(computed from the result files; nothing here is typed by hand). For a discussion of why trends do "
             "or do not transfer to the CPU-sized settings, see `docs/reading.md` in the repository.", "",
             "| artifact | trend (paper) | paper source | holds here? | our numbers |", "|---|---|---|---|---|"]
    for name, checks in CHECKS.items():
        result = ctx.load_result(name)
        for title, source, fn in checks:
            if result is None:
                lines.append(f"| {name} | {title} | {source} | not run | – |")
                continue
            try:
                verdict, text = fn(result)
            except (KeyError, TypeError, ValueError, IndexError) as exc:  # incomplete result: say so
                verdict, text = None, f"cannot evaluate: {exc!r}"
            mark = {True: "yes", False: "**no**", None: "undetermined"}[verdict]
            lines.append(f"| {name} | {title} | {source} | {mark} | {text} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(ctx.reports_dir / "reading.md", text)
    return text

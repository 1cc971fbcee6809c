"""Entry point of the make targets: ``python -m experiments.run --profile P TARGET [TARGET ...]``.

Targets are artifact names (one experiment module each), ``tables``, ``figures`` (render from saved
results only) and ``all`` (every artifact, then tables, figures and ``reports/index.md``).

Each artifact module in ``experiments/`` defines ``run(ctx) -> dict`` (computes or reuses its saved
result) and the renderers in ``analyses/`` turn saved results into tables and figures.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

from experiments.common import Context

# artifact name -> module in experiments/ (order = order of `make reports`; shared models are trained
# by the first artifact that needs them and reused by the others).
ARTIFACTS: dict[str, str] = {
    "evtp": "experiments.evtp_flops",
    "bench": "experiments.bench",
    "flops": "experiments.flops",
    "fgs": "experiments.fgs",
    "results": "experiments.results_table",
    "ioi": "experiments.ioi",
    "density": "experiments.density",
    "kappa": "experiments.kappa_ablation",
    "curves": "experiments.curves",
    "qualitative": "experiments.qualitative",
    "selectors": "experiments.selectors",
    "oracle": "experiments.oracle",
}


def run_artifact(ctx: Context, name: str) -> dict:
    """Compute (or reuse) one artifact's result and render its tables and figures."""
    from analyses import report

    module = importlib.import_module(ARTIFACTS[name])
    start = time.perf_counter()
    result = module.run(ctx)
    report.render_artifact(ctx, name, result)
    logging.getLogger("vppkit.experiments").info("%s done in %.1f s", name, time.perf_counter() - start)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.splitlines()[0])
    choices = [*ARTIFACTS, "tables", "figures", "all"]
    parser.add_argument("targets", nargs="+", metavar="TARGET_OR_OVERRIDE",
                        help=f"one of {', '.join(choices)}; key=value tokens override the profile config")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--data", default=None, help="dataset root for real-data profiles (sets data.root)")
    parser.add_argument("--force", action="store_true", help="recompute even when saved results match")
    args = parser.parse_args(argv)
    overrides = [t for t in args.targets if "=" in t]
    args.targets = [t for t in args.targets if "=" not in t]
    unknown = [t for t in args.targets if t not in choices]
    if unknown or not args.targets:
        parser.error(f"unknown target(s) {unknown or '(none given)'}; choose from {', '.join(choices)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ctx = Context.create(args.profile, data=args.data, force=args.force, overrides=tuple(overrides))

    from analyses import report

    for target in args.targets:
        if target == "all":
            for name in ARTIFACTS:
                run_artifact(ctx, name)
            report.write_index(ctx)
        elif target in ("tables", "figures"):
            report.render_saved(ctx, kind=target)
            report.write_index(ctx)
        else:
            run_artifact(ctx, target)
            report.write_index(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())

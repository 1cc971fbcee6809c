"""``vppkit run``: the make targets. ``vppkit run --profile P TARGET [TARGET ...] [key=value ...]``.

Targets are artifact names (:data:`experiments.common.ARTIFACTS`, one experiment module each), ``tables``,
``figures`` (render from saved results only) and ``all`` (every artifact, then tables, figures,
``reports/<profile>/reading.md`` and ``reports/<profile>/index.md``). ``make fgs`` is ``vppkit run fgs``.

This is the one place that runs both layers: each artifact module in ``experiments/`` computes (or reuses)
its saved result, and the renderers in ``analyses/`` turn saved results into tables and figures. It sits on
top of both, so neither imports the other upward.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time

from analyses import report
from experiments.common import ARTIFACTS, Context, artifact_module

log = logging.getLogger("vppkit.experiments")

TARGETS = (*ARTIFACTS, "tables", "figures", "all")


def run_artifact(ctx: Context, name: str) -> dict:
    """Compute (or reuse) one artifact's result and render its tables and figures.

    Raises:
        KeyError: ``name`` is not in :data:`experiments.common.ARTIFACTS`.
    """
    module = importlib.import_module(artifact_module(name))
    start = time.perf_counter()
    result = module.run(ctx)
    report.render_artifact(ctx, name, result)
    log.info("%s done in %.1f s", name, time.perf_counter() - start)
    return result


def run_targets(ctx: Context, targets: list[str]) -> None:
    """Run ``targets`` in order (see the module docstring), then write the report index."""
    for target in targets:
        if target == "all":
            for name in ARTIFACTS:
                run_artifact(ctx, name)
        elif target in ("tables", "figures"):
            report.render_saved(ctx, kind=target)
        else:
            run_artifact(ctx, target)
        report.write_index(ctx)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` sub-command (what the Makefile's experiment targets call)."""
    p = subparsers.add_parser("run", help="run artifacts and render reports (the make targets)",
                              description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="+", metavar="TARGET_OR_OVERRIDE",
                   help=f"one of {', '.join(TARGETS)}; key=value tokens override the profile config")
    p.add_argument("--profile", default="default")
    p.add_argument("--data", default=None, help="dataset root for real-data profiles (sets data.root)")
    p.add_argument("--force", action="store_true", help="recompute even when saved results match")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    overrides = [t for t in args.targets if "=" in t]
    targets = [t for t in args.targets if "=" not in t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        args.parser.error(f"unknown target(s) {unknown or '(none given)'}; choose from {', '.join(TARGETS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ctx = Context.create(args.profile, data=args.data, force=args.force, overrides=tuple(overrides))
    run_targets(ctx, targets)
    return 0

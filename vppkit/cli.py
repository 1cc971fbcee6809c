"""``vppkit`` console command: discovers the sub-commands in :mod:`vppkit.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vppkit
import vppkit.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vppkit", description=vppkit.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vppkit {vppkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(vppkit.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"vppkit.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

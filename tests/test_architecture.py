"""The package's shape: imports run one way (docs/contracts.md, ``[tool.importlinter]`` in pyproject.toml) and no
first-party module is imported inside a function body (such imports hide cycles from readers and tools)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("vppkit", "experiments", "analyses")


def test_import_layers_and_no_cycles():
    """import-linter's contracts (layers + acyclic siblings) hold; its report names the offending import."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _function_body_imports(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        def _enter(self, node):
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _enter

        def visit_Import(self, node):
            for alias in node.names:
                if self.depth and alias.name.split(".")[0] in FIRST_PARTY:
                    found.append(f"{path.relative_to(root)}:{node.lineno} import {alias.name}")

        def visit_ImportFrom(self, node):
            mod = node.module or ""
            if self.depth and (node.level > 0 or mod.split(".")[0] in FIRST_PARTY):
                found.append(f"{path.relative_to(root)}:{node.lineno} from {'.' * node.level}{mod} import ...")

    Visitor().visit(tree)
    return found


def test_no_first_party_imports_inside_functions():
    offenders = [hit for pkg in FIRST_PARTY for path in sorted((ROOT / pkg).rglob("*.py"))
                 for hit in _function_body_imports(path)]
    assert not offenders, f"{len(offenders)} first-party imports inside function bodies:\n" + "\n".join(offenders)


def test_the_checker_finds_a_function_body_import(tmp_path):
    """The AST check above is not vacuous: a nested first-party import is reported, a top-level one is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from vppkit.config import load_config\n\ndef f():\n    from vppkit.data import ytvis\n"
                     "    import json\n    return ytvis, json\n")
    hits = _function_body_imports(probe, root=tmp_path)
    assert len(hits) == 1 and hits[0].endswith("from vppkit.data import ...")

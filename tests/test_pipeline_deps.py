"""dvc.yaml's code dependencies follow the package: every stage lists exactly the package
folders (wings) its script imports, transitively, lazy imports included. A missing wing
would silently skip a rebuild; an extra one would re-run the stage for nothing."""

import ast
from pathlib import Path

import yaml

from conftest import ROOT

PACKAGE = ROOT / "vae_engines"


def imported_files(path: Path, seen: set[Path]) -> set[Path]:
    """Project files `path` imports, transitively (package __init__ files included)."""
    if path in seen:
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vae_engines"):
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names if a.name.startswith("vae_engines")]
        for module in modules:
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                base = ROOT.joinpath(*parts[:depth])
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        imported_files(candidate, seen)
    return seen


def wing(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return str(rel.parent) if rel.parent != Path("vae_engines") else str(rel)


def test_the_package_root_holds_no_code():
    """Every stage imports vae_engines/__init__.py; it must stay a docstring and a version."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert all(isinstance(n, (ast.Expr, ast.Assign)) for n in tree.body)


def test_stage_deps_are_exactly_the_wings_they_import():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        deps = {d for d in body["deps"] if isinstance(d, str)}
        script = next(d for d in deps if d.startswith("stages/"))
        files = imported_files(ROOT / script, set()) - {ROOT / script, PACKAGE / "__init__.py"}
        needed = {wing(p) for p in files}
        declared = {d for d in deps if d.startswith("vae_engines")}
        assert declared == needed, (f"stage {name}: imports {sorted(needed)} but lists {sorted(declared)} "
                                    f"(missing {sorted(needed - declared)}, unused {sorted(declared - needed)})")

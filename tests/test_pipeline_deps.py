"""Every DVC stage lists, as dependencies, every project module its script imports
(transitively, lazy imports included): a missing one would silently skip a rebuild."""

import ast
from pathlib import Path

import yaml

from conftest import ROOT


def imported_modules(path: Path, seen: set[Path]) -> set[Path]:
    if path in seen:
        return seen
    seen.add(path)
    tree = ast.parse(path.read_text())
    package = path.parent
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                mod = base / (node.module or "").replace(".", "/") if node.module else base
                names = [mod] + [mod / alias.name for alias in node.names]
            elif node.module and node.module.startswith("vae_engines"):
                mod = ROOT / node.module.replace(".", "/")
                names = [mod] + [mod / alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [ROOT / a.name.replace(".", "/") for a in node.names if a.name.startswith("vae_engines")]
        for name in names:
            for candidate in (name.with_suffix(".py"), name / "__init__.py"):
                if candidate.is_file() and candidate.name != "__init__.py":
                    imported_modules(candidate, seen)
    return seen


def test_stage_deps_cover_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        deps = {d for d in body["deps"] if isinstance(d, str)}
        script = next(d for d in deps if d.startswith("stages/"))
        needed = {str(p.relative_to(ROOT)) for p in imported_modules(ROOT / script, set())}
        missing = needed - deps
        assert not missing, f"stage {name} imports {sorted(missing)} but does not list them in deps"

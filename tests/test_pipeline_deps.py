"""dvc.yaml's dependencies follow the code: every stage lists exactly the package folders
(wings) its script imports, transitively, and exactly the params keys its script reads. A
missing wing or key would silently skip a rebuild; an extra one would re-run the stage for
nothing. Stage scripts read params one way (tests enforce it): `p = params.load(...)`, then
`p.<section>` or `p.<section>.<key>` handed to the library as named values, never `p` itself."""

import ast
from pathlib import Path

import yaml

from conftest import ROOT

PACKAGE = ROOT / "vae_engines"


def runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Import nodes that run: those under `if TYPE_CHECKING:` are for type checkers only."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def imported_files(path: Path, seen: set[Path]) -> set[Path]:
    """Project files `path` imports, transitively (package __init__ files included)."""
    if path in seen:
        return seen
    seen.add(path)
    tree = ast.parse(path.read_text())
    lazy = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "lazy_import"
            and n.args and isinstance(n.args[0], ast.Constant) and str(n.args[0].value).startswith("vae_engines")]
    for node in runtime_imports(tree) + lazy:
        modules = []
        if isinstance(node, ast.Call):  # lazy_import("vae_engines.x"): imported on first use, a dependency all the same
            modules = [node.args[0].value]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vae_engines"):
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is None:
            continue
        elif isinstance(node, ast.ImportFrom) and node.module == "vae_engines":
            modules = [f"vae_engines.{alias.name}" for alias in node.names]
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


def stages() -> dict[str, dict]:
    out = {}
    for dvcfile in (ROOT / "dvc.yaml", ROOT / "check" / "dvc.yaml"):
        for name, stage in yaml.safe_load(dvcfile.read_text())["stages"].items():
            out[name] = stage.get("do", stage)
    return out


def script_of(body: dict) -> Path:
    return ROOT / next(d for d in body["deps"] if isinstance(d, str) and d.startswith("stages/"))


def test_the_package_root_holds_no_code():
    """Every stage imports vae_engines/__init__.py; it must stay a docstring and a version."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert all(isinstance(n, (ast.Expr, ast.Assign)) for n in tree.body)


def test_stage_deps_are_exactly_the_wings_they_import():
    for name, body in stages().items():
        script = script_of(body)
        files = imported_files(script, set()) - {script, PACKAGE / "__init__.py"}
        needed = {wing(p) for p in files}
        declared = {d for d in body["deps"] if isinstance(d, str) and d.startswith("vae_engines")}
        assert declared == needed, (f"stage {name}: imports {sorted(needed)} but lists {sorted(declared)} "
                                    f"(missing {sorted(needed - declared)}, unused {sorted(declared - needed)})")


def _chain(node: ast.AST) -> list[str] | None:
    """['p', 'a', 'b'] for the expression p.a.b (None if it is not a plain name chain)."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return [node.id, *reversed(names)] if isinstance(node, ast.Name) else None


def params_read(script: Path) -> set[str]:
    """The params keys `script`'s main() reads, normalised: a key read whole covers its sub-keys."""
    main = next(n for n in ast.parse(script.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    roots: dict[str, list[str]] = {}  # variable -> the params path it holds
    for node in ast.walk(main):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value, path = node.value, []
            while isinstance(value, ast.Attribute):
                path.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Call) and _chain(value.func) == ["params", "load"]:
                roots[node.targets[0].id] = path
    inner = {id(n.value) for n in ast.walk(main) if isinstance(n, ast.Attribute)}  # p.a inside p.a.b
    reads: set[str] = set()
    for node in ast.walk(main):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "variant":
            if (_chain(node.func.value) or [None])[0] in roots:
                reads.add("int8.${key}")
        chain = _chain(node) if isinstance(node, ast.Attribute) and id(node) not in inner else None
        if chain and chain[0] in roots and chain[-1] != "variant":
            reads.add(".".join((roots[chain[0]] + chain[1:])[:2]))
    return {k for k in reads if not any(k != o and k.startswith(o + ".") for o in reads)}


def test_stage_params_are_exactly_the_keys_their_scripts_read():
    for name, body in stages().items():
        if name == "check":  # validates the whole file; depends on none of it
            continue
        reads = params_read(script_of(body))
        declared = set(body.get("params", []))
        reads = {k for k in reads if not (k.startswith("int8.") and "int8" in reads and k != "int8")}
        assert declared == reads, (f"stage {name}: its script reads {sorted(reads)} but dvc.yaml lists "
                                   f"{sorted(declared)} (missing {sorted(reads - declared)}, unread "
                                   f"{sorted(declared - reads)})")


def test_stage_scripts_never_hand_the_whole_params_to_the_library():
    for script in sorted((ROOT / "stages").glob("*.py")):
        tree = next(n for n in ast.parse(script.read_text()).body if isinstance(n, ast.FunctionDef)
                    and n.name == "main")
        roots = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                 and _chain(n.value.func) == ["params", "load"] for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                passed = [a for a in [*node.args, *(k.value for k in node.keywords)] if isinstance(a, ast.Name)]
                assert not [a.id for a in passed if a.id in roots], f"{script.name} passes the whole params object"


def test_the_measure_modules_are_named_by_what_they_measure():
    """One module per job (evaluate, the timing primitives, the plans' bench stage, the PyTorch
    engines' bench stages, the INT8 engine-against-graph comparison), and each bench stage
    imports its own."""
    modules = {p.stem for p in (PACKAGE / "measure").glob("*.py")} - {"__init__"}
    assert modules == {"evaluate", "timing", "plans", "torch_engines", "agreement"}
    assert "vae_engines.measure.plans" in (ROOT / "stages" / "bench.py").read_text()
    for stage in ("bench_torch", "bench_int8"):
        assert "vae_engines.measure.torch_engines" in (ROOT / "stages" / f"{stage}.py").read_text()


def test_no_extra_installs_what_no_code_imports():
    """Every optional dependency group names packages the code or the tests use (the runner extra
    once installed cuda-python for a runner that no longer exists)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) == {"tensorrt-rtx", "remote", "test"}
    assert not any("cuda" in req for reqs in extras.values() for req in reqs)

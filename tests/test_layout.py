"""The layering rules of the package, checked on every module's imports (top-level and inside functions).

    process, nets     import nothing of difflab outside themselves (pure math; tensors in, tensors out)
    models            imports only process
    samplers          import only process and models (they know no method)
    methods           never import cli, demo, argparse, matplotlib or viz (numbers, not plots or commands)
    metrics           never import methods
    train.checkpoint  knows nothing of the zoo
    viz               the only module that imports matplotlib
    no import cycle between the top-level packages/modules of difflab
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "difflab"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_module(name: str) -> bool:
    return name in MODULES


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in its file: difflab modules by full name (``from
    difflab import viz`` counts as difflab.viz), others by their top-level package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}")]
            out |= set(subs) if subs and len(subs) == len(node.names) else {mod, *subs}
    return {m if m.startswith("difflab") else m.split(".")[0] for m in out}


IMPORTS = {name: imports_of(name) for name in MODULES}


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(where: str, allowed=None, forbidden=()):
    bad = []
    for name, deps in IMPORTS.items():
        if not _in(name, where):
            continue
        for d in deps:
            if any(_in(d, f) for f in forbidden):
                bad.append(f"{name} imports {d}")
            elif allowed is not None and d.startswith("difflab") and not any(_in(d, a) for a in allowed):
                bad.append(f"{name} imports {d}")
    return sorted(bad)


@pytest.mark.parametrize("where, allowed", [
    ("difflab.process", ["difflab.process"]),
    ("difflab.nets", ["difflab.nets"]),
    ("difflab.models", ["difflab.process", "difflab.models"]),
    ("difflab.samplers", ["difflab.samplers", "difflab.process", "difflab.models"]),
])
def test_lower_layers_import_only_what_is_below_them(where, allowed):
    assert _violations(where, allowed=allowed) == []


@pytest.mark.parametrize("where, forbidden", [
    ("difflab.methods", ["difflab.cli", "difflab.demo", "argparse", "matplotlib", "difflab.viz"]),
    ("difflab.metrics", ["difflab.methods"]),
    ("difflab.train.checkpoint", ["difflab.zoo"]),
    ("difflab.process", ["torch.nn"]),
])
def test_forbidden_imports(where, forbidden):
    assert _violations(where, forbidden=forbidden) == []


def test_only_viz_imports_matplotlib():
    assert sorted(n for n, deps in IMPORTS.items() if "matplotlib" in deps) == ["difflab.viz"]


def _unit(name: str) -> str:
    """difflab.X: the top-level package or module a module belongs to."""
    return ".".join(name.split(".")[:2])


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for name, deps in IMPORTS.items():
        if name == "difflab":
            continue
        for d in deps:
            if d.startswith("difflab.") and _unit(d) != _unit(name):
                graph.setdefault(_unit(name), set()).add(_unit(d))
    # Tarjan's strongly connected components: any with two or more members is a cycle.
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    detail = {tuple(c): sorted(f"{a} -> {b}" for a in c for b in graph.get(a, ()) if b in c) for c in cycles}
    assert cycles == [], detail


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The rules above would pass vacuously if the parser missed imports: check it on known ones."""
    assert "difflab.process.param" in IMPORTS["difflab.process.schedules"]          # relative, top-level
    assert "tqdm" in IMPORTS["difflab.samplers.base"]                                 # inside a function
    assert "difflab.viz" in imports_of("difflab.io.samples")                          # from difflab import viz

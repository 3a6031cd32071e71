"""The package layout is the architecture: imports go down the layers, never round in a circle.

Read from the source with ``ast`` (imports inside functions count too: a lazy import is
still a dependency), so the rules hold for code that a test run never executes.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("strategies", "alft", "tasks", "flows")

# Lowest first. A module may import its own layer and the layers below it, nothing above.
# Longest prefix wins, so ``alft.store`` is matched before ``alft``.
LAYERS: dict[str, int] = {
    "strategies": 0,  # pure: numpy, faiss, scipy
    "alft": 1,  # the base: errors, config, data, fsutil, progress, faults, resolve, params
    "alft.store": 2,
    "alft.models": 3,
    "alft.campaign": 4,
    "alft.human": 5,
    "tasks": 6,
    "flows": 7,
    "alft.cli": 8,  # the entry point: it starts flows
}
# What the pure strategies may import from outside the project. threadpoolctl does no I/O: the
# k-center traversal holds the BLAS/OpenMP pools of its own small sequential calls to one thread.
STRATEGY_THIRD_PARTY = {"numpy", "faiss", "scipy", "threadpoolctl"}
MAX_LINES = 600


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.src} imports {self.dst}"


def module_files() -> dict[str, Path]:
    """Every project module name -> its file (packages as ``pkg`` -> ``pkg/__init__.py``)."""
    out: dict[str, Path] = {}
    for top in PACKAGES:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


MODULES = module_files()


def resolve(name: str) -> str | None:
    """The project module an import refers to: ``a.b.c`` or its longest module prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path) -> tuple[list[Edge], set[str]]:
    """Project import edges of one module, and the top-level names of everything else it imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    edges, external = [], set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: anchor at this module's package
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` names a submodule when one exists; else a name in pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            dst = resolve(t)
            if dst is None:
                external.add(t.split(".")[0])
            elif dst != module:
                edges.append(Edge(module, dst, rel, node.lineno))
    return edges, external


def graph() -> tuple[list[Edge], dict[str, set[str]]]:
    edges, external = [], {}
    for module, path in MODULES.items():
        e, ext = imports_of(module, path)
        edges += e
        external[module] = ext
    return edges, external


def layer_of(module: str) -> tuple[str, int]:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    succ: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        succ[e.src].add(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(succ):
        if root in index:
            continue
        work = [(root, iter(sorted(succ[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(succ[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


EDGES, EXTERNAL = graph()


def test_the_walk_sees_the_whole_project():
    # a guard against a rule that passes because it read nothing
    assert {"alft.config", "alft.store.campaign_store", "tasks.select", "flows.campaign", "strategies.registry"} <= set(MODULES)
    assert len(EDGES) > 200
    assert "tasks.select" in {e.dst for e in EDGES if e.src == "flows.campaign"}


def test_no_circular_imports():
    found = cycles(EDGES)
    detail = []
    for comp in found:
        members = set(comp)
        detail += [f"  {e}" for e in EDGES if e.src in members and e.dst in members]
    assert not found, "circular imports (function-level imports count):\n" + "\n".join(detail)


def test_imports_go_down_the_layers():
    wrong = []
    for e in EDGES:
        (src_layer, src_rank), (dst_layer, dst_rank) = layer_of(e.src), layer_of(e.dst)
        if dst_rank > src_rank:
            wrong.append(f"  {e}  ({src_layer} is layer {src_rank}, {dst_layer} is layer {dst_rank})")
    assert not wrong, "a lower layer imports a higher one:\n" + "\n".join(wrong)


def test_strategies_stay_pure():
    std = set(sys.stdlib_module_names) | {"__future__"}
    wrong = {
        m: sorted(ext - std - STRATEGY_THIRD_PARTY)
        for m, ext in EXTERNAL.items()
        if m.startswith("strategies") and ext - std - STRATEGY_THIRD_PARTY
    }
    assert not wrong, f"strategies import more than numpy/faiss/scipy/threadpoolctl: {wrong}"


def test_no_product_module_is_over_the_size_limit():
    long = {str(p.relative_to(REPO)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from alft.human.labeling import submit\n", "alft.human.labeling"),
        ("def f():\n    import flows.campaign\n", "flows.campaign"),
    ],
)
def test_the_rules_catch_a_violation(tmp_path, source, bad):
    # the same walk over a planted store module must flag the upward import
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    edges, _ = imports_of("alft.store.planted", planted)
    assert [e.dst for e in edges] == [bad]
    assert layer_of(edges[0].dst)[1] > layer_of("alft.store.planted")[1]


def test_a_planted_cycle_is_found():
    a_b = [Edge("alft.errors", "alft.fsutil", "x", 1), Edge("alft.fsutil", "alft.errors", "y", 1)]
    assert cycles(a_b) == [["alft.errors", "alft.fsutil"]]

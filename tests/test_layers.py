"The house rules, checked on the package's source: every import (even inside a function) points down the layer order, no cycles, no raw store queries outside the store, no heavy import on the serving path."
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "stock_twins"

# The layer order, written once (the README's module table follows it). A module may import only modules that
# come before it in this list; names not yet written are allowed (they are planned), modules missing from the
# list are an error.
LAYERS = [
    ("contracts", ["config", "schema", "losses", "store", "checkpoint"]),
    ("data and features", ["data", "features", "simulate", "regime"]),
    ("graph and foundation", ["graph", "foundation", "pretrain", "embed"]),
    ("twins, fallback, manager", ["baselines", "priors", "calibration", "twin", "twin_data", "twin_train", "fallback", "manager"]),
    ("options", ["bsm", "options"]),
    ("portfolio", ["portfolio", "portfolio_env", "paper"]),
    ("agents", ["text", "policy", "explain", "agents"]),
    ("harness", ["metrics", "report", "evaluation", "backtest"]),
    ("jobs", ["integrity", "featurestore", "pipeline", "health", "schedule"]),
    ("faces", ["cli", "api"]),
    ("test fixtures", ["testing"]),
]
ORDER = [m for _, ms in LAYERS for m in ms]
SERVING_PATH = ("stock_twins.cli", "stock_twins.manager", "stock_twins.schema", "stock_twins.checkpoint", "stock_twins.store")
HEAVY = ("lightning", "pytorch_lightning", "pytorch_forecasting", "torch_geometric", "feast", "stable_baselines3", "ray")


def imports(pkg: Path, name: str = "stock_twins") -> dict[str, set[str]]:
    "Module -> the package's modules it imports anywhere in its source (top level or inside functions)."
    mods = {p.stem: p for p in pkg.glob("*.py") if not p.stem.startswith("_")}
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom):
                if n.level and not n.module: targets = [a.name for a in n.names]           # from . import x
                elif n.level or (n.module or "").split(".")[0] == name:
                    parts = (n.module or "").split(".")
                    targets = [parts[-1]] if parts[-1] != name else [a.name for a in n.names]  # from stock_twins import x
                else: targets = []
            elif isinstance(n, ast.Import):
                targets = [a.name.split(".")[1] for a in n.names if a.name.startswith(name + ".")]
            else: continue
            edges[m] |= {t for t in targets if t in mods and t != m}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    "Every cycle found by a depth-first search, each as the list of modules around it."
    state, stack, found = {}, [], []
    def visit(u):
        state[u] = 1; stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1: found.append(stack[stack.index(v):] + [v])
            elif v not in state: visit(v)
        stack.pop(); state[u] = 2
    for u in sorted(edges):
        if u not in state: visit(u)
    return found


def upward(edges: dict[str, set[str]], order: list[str]) -> list[str]:
    "Imports that point to a module at or above the importer in `order`, as 'a -> b' strings."
    rank = {m: i for i, m in enumerate(order)}
    return sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs if a in rank and b in rank and rank[b] >= rank[a])


def test_every_module_has_a_layer():
    missing = sorted(set(imports(PKG)) - set(ORDER))
    assert not missing, f"modules without a layer: {missing}; add them to LAYERS in tests/test_layers.py (and to the README's table)"


def test_no_cycles_and_no_upward_imports():
    e = imports(PKG)
    assert not cycles(e), f"import cycles: {cycles(e)}"
    assert not upward(e, ORDER), f"imports pointing up the layer order: {upward(e, ORDER)}"


def test_the_checker_catches_a_planted_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "stock_twins"; pkg.mkdir()
    (pkg / "store.py").write_text("def f():\n    from stock_twins.cli import main\n")   # hidden inside a function
    (pkg / "cli.py").write_text("from .store import f\n")
    (pkg / "schema.py").write_text("import stock_twins.config\n")
    (pkg / "config.py").write_text("x = 1\n")
    e = imports(pkg)
    assert e == {"store": {"cli"}, "cli": {"store"}, "schema": {"config"}, "config": set()}
    assert cycles(e) == [["cli", "store", "cli"]]
    assert upward(e, ORDER) == ["store -> cli"]
    assert upward({"schema": {"config"}}, ORDER) == []


def test_no_raw_store_queries_outside_the_store():
    bad = [f"{p.name}:{i}" for p in sorted(PKG.glob("*.py")) if p.stem not in ("store", "graph")
           for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.con\.(execute|sql|register)\b|\bstore\.con\b", line)]
    assert not bad, f"raw DuckDB queries outside stock_twins.store / graph: {bad}; give Store the query instead"


def test_serving_path_imports_nothing_heavy():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in SERVING_PATH) +
            "import stock_twins.cli as c; c.build_parser()\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"the serving path imports {out}; keep heavy imports inside the functions that need them"

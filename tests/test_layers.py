"""The package's layers: imports flow one way, data → core → run → report, with the tools (PyTorch and
transformers) and the command line at the edge. Every import is read, function-local ones included."""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "leverjax")

# Rank of each layer: a module may import its own layer and lower ranks only.
LAYERS = {"base": 0, "data": 1, "core": 2, "run": 3, "report": 4, "tools": 5, "cli": 6}
BASE = {"leverjax", "leverjax.errors", "leverjax.fileio", "leverjax.command"}
# Command entry points filed under a layer by their name while the work they start lives higher up:
# ``python -m leverjax.data.calibrate`` is the simulator's check, which trains selectors (report layer).
COMMANDS = {"leverjax.data.calibrate": "cli", "leverjax.data.generate": "cli", "leverjax.vlm_eval": "cli"}


def layer_of(module: str) -> str:
    if module in COMMANDS:
        return COMMANDS[module]
    if module in BASE:
        return "base"
    parts = module.split(".")
    if parts[1] in ("data", "core", "run", "report", "tools"):
        return parts[1]
    if parts[1] == "cli":
        return "cli"
    raise AssertionError(f"{module} belongs to no layer: put it in one of {sorted(LAYERS)}")


def modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: str, module: str) -> list[tuple[int, str]]:
    """Every ``leverjax`` module imported anywhere in the file (``from X import y`` counts ``X.y`` when
    that is a module), with its line."""
    known = modules()
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = []
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test)
                   in ("TYPE_CHECKING", "typing.TYPE_CHECKING") for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "leverjax"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "leverjax":
                continue
            for a in node.names:
                out.append((node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in known else base))
    return out


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_flow_one_way():
    bad = []
    for name, path in sorted(modules().items()):
        mine = LAYERS[layer_of(name)]
        for line, target in imports_of(path, name):
            theirs = LAYERS[layer_of(target)]
            if theirs > mine:
                bad.append(f"{os.path.relpath(path, ROOT)}:{line}: {layer_of(name)} imports {target} ({layer_of(target)})")
    assert not bad, "backward imports:\n" + "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph = {name: {t for _, t in imports_of(path, name) if t != name} for name, path in modules().items()}
    graph = {k: {t for t in v if t in graph} for k, v in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("source, target, expected", [
    ("leverjax.core.train", "leverjax.data.device", True),
    ("leverjax.core.train", "leverjax.run.engine", False),
    ("leverjax.run.engine", "leverjax.tools.interop", False),
    ("leverjax.report.plots", "leverjax.run.launch", True),
    ("leverjax.data.device", "leverjax.core.model", False),
])
def test_the_rule_itself(source, target, expected):
    """The rank order decides what the import test accepts (so a broken table cannot pass everything)."""
    assert (LAYERS[layer_of(target)] <= LAYERS[layer_of(source)]) == expected

"""The code's shape, checked: data flows down the layers, never up; no import cycles; no
shell line built outside rig/commands/; the spec is read from disk once per command.

    config -> commands (pure) -> tasks (pyinfra) -> inventory/lab -> runner -> ops -> cli
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import rig
import tasks

ROOTS = {"rig": Path(rig.__file__).parent, "tasks": Path(tasks.__file__).parent}

# rank of a module (by longest matching prefix): a module may import only equal or lower ranks
RANKS = [
    ("rig.errors", 0), ("rig.config", 0),
    ("rig.commands", 1), ("rig.tags", 1), ("rig.plan", 1), ("rig.ledger", 1), ("rig.images", 1),
    ("rig.rollout.gate", 1), ("rig.secrets", 1), ("rig.hosts", 1), ("rig.registry", 1),
    ("rig.prune", 1), ("rig.supply", 1),
    ("rig.proc", 1), ("rig.rollout", 1),
    ("tasks", 2),
    ("rig.lab", 3), ("rig.inventory", 3), ("rig.verify", 3), ("rig.connector", 3),
    ("rig.runner", 4),
    ("rig.build", 5), ("rig.rollout.engine", 5), ("rig.rollout.locks", 5), ("rig.ops", 5),
    ("rig.cli", 6),
    ("rig", 0),
]


def rank(module: str) -> int:
    for prefix, value in sorted(RANKS, key=lambda r: -len(r[0])):
        if module == prefix or module.startswith(prefix + "."):
            return value
    raise AssertionError(f"no layer for {module}: add it to RANKS")


def modules() -> dict[str, Path]:
    found = {}
    for top, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every rig/tasks module this one imports, at the top or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    result = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                result.add(name)
    return result


GRAPH = {m: imports_of(m, p, set(modules())) for m, p in modules().items()}


def test_every_module_has_a_layer():
    for module in GRAPH:
        rank(module)


def test_imports_only_go_down_the_layers():
    upward = sorted(f"{m} (layer {rank(m)}) imports {i} (layer {rank(i)})"
                    for m, deps in GRAPH.items() for i in deps
                    if rank(i) > rank(m) and not m.startswith(i + "."))
    assert upward == []


def test_no_import_cycles():
    # package __init__ modules re-export their children: an edge child -> package is not a cycle
    def edges(m):
        return {i for i in GRAPH[m] if not m.startswith(i + ".")}

    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(m, path):
        state[m] = 1
        for i in sorted(edges(m)):
            if state.get(i) == 1:
                cycles.append(" -> ".join(path[path.index(i):] + [i]))
            elif i not in state:
                visit(i, path + [i])
        state[m] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


# a piece of an f-string that starts a shell command, or joins two
SHELL = re.compile(r"^\s*(docker|rm|mkdir|install|sh|sudo|usermod|systemctl|curl|chmod|chown|"
                   r"mv|cp|tar|apt-get|grep|cat|echo|printf)\s+\S|&&|\|\||\S\s\|\s|>\s*/")


def shell_fstrings(path: Path) -> list[str]:
    """f-strings that build a shell line: what rig/commands/ is for."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            pieces = [v.value for v in node.values if isinstance(v, ast.Constant)]
            if any(SHELL.search(piece) for piece in pieces):
                found.append(f"{path.name}:{node.lineno}: {''.join(pieces)[:60]!r}")
    return found


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if not m.startswith("rig.commands")))
def test_no_shell_line_is_built_outside_rig_commands(module):
    assert shell_fstrings(modules()[module]) == []


def test_the_shell_check_would_see_one():
    sample = Path(__file__).with_name("shell_sample.txt")
    sample.write_text('name = "x"\nline = f"docker rm -f {name}"\n')
    try:
        assert shell_fstrings(sample) == ["shell_sample.txt:2: 'docker rm -f '"]
    finally:
        sample.unlink()


def test_the_cli_stays_thin():
    """No CLI module over 250 lines, no CLI function over 40: the logic lives in rig/ops."""
    too_big = []
    for module, path in modules().items():
        if not module.startswith("rig.cli"):
            continue
        text = path.read_text()
        if len(text.splitlines()) > 250:
            too_big.append(f"{module}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 40:
                too_big.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_big == []

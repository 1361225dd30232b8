"""Mutation check of the rollout core: does a one-line change to the code fail a unit test?

Each target file gets one-line mutants, made with the ast module (so every mutant is valid
Python, on a line of real code, never in a docstring, annotation or f-string):

  compare      == <-> !=, < <-> >=, > <-> <=, in <-> not in, is <-> is not
  boolop       `and` <-> `or` (one operator of a chain at a time)
  drop         one operand of an `and`/`or` chain left out
  not          `not x` -> `x`
  bool         True <-> False
  number       n -> n + 1, and n -> 0
  return       `return X` -> `return None`
  statement    a bare call, or an assignment to an attribute or subscript, -> `pass`

The work tree is never touched. At the start the script snapshots it into a temporary folder
(one copy per parallel job): rig/ and tasks/ into jobN/pkgs, which goes FIRST on the pytest
subprocess's PYTHONPATH and so shadows the installed packages the unit tests import (they run
with --import-mode=importlib, and nothing puts the checkout on sys.path); the tests and the files
they read (fleet.yml, profiles/, ...) into jobN/tree, where pytest runs. A mutant is written into
a copy only, and code or tests edited in the work tree meanwhile change nothing in the run. Before
any mutant runs, a sanity mutant (rig/__init__.py raising at import) must fail the tests, naming
the copy's file: else the results would mean nothing, and the script stops.

Each mutant runs only the unit test files that cover its file (TESTS below; the whole of
tests/unit for a file not in it) with -x. KILLED: a test failed; TIMEOUT: the tests ran longer
than --timeout (counted as killed: the mutant changed behaviour); SURVIVED: every test passed.
Per file and in total: killed / total, less the mutants that --equivalent FILE lists, each a line

  rig/rollout/gate.py:78: if probe.t >= self.deadline: -> if probe.t < self.deadline:  # why

(the `file:line: original -> mutated` part exactly as this script prints it). Tests of the
installation itself (DESELECT below) are left out: the copy fails them by design. Exit 0: it is
a report; 1 with --fail-under N when the total score is below N %; 2 when it could not measure
(the sanity mutant survived, or a file's tests fail without any mutant); 130 when interrupted.

  python tools/mutate.py --list                      # the mutants, not run
  python tools/mutate.py --max-per-file 15 --seed 1  # a deterministic sample per file
  python tools/mutate.py --only rig/rollout/gate.py:78     # every mutant of that line
  python tools/mutate.py --only rig/rollout/gate.py:78#2   # the second one (as listed)
"""

from __future__ import annotations

import argparse
import ast
import bisect
import glob
import io
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rig", "tasks")  # copied, and shadowing the installed ones

DEFAULT_TARGETS = [
    "rig/rollout/engine.py",
    "rig/rollout/gate.py",
    "rig/rollout/locks.py",
    "rig/ops/rollout.py",
    "rig/ops/pause.py",
    "rig/prune.py",
    "tasks/rollout.py",
]
EXTRA_TARGETS = ["rig/rollout/*.py"]  # whatever exists when the script runs

# target file (a glob) -> the unit test files (globs) that cover it; the first key that matches
# wins. Globs that match nothing are left out; a file with no key or no test file gets the whole
# of tests/unit.
CORE_TESTS = [
    "tests/unit/test_engine.py",
    "tests/unit/test_rollout.py",
    "tests/unit/test_tasks.py",
    "tests/unit/test_*core*.py",
    "tests/unit/test_lock*.py",
    "tests/unit/test_pause*.py",
    "tests/unit/test_proxy.py",
    "tests/unit/test_maintenance.py",
    "tests/unit/test_ops_tasks_rollout.py",
]
# the pyinfra runner and its SSH connector: sessions, connections, the greeting, late commands
RUNNER_TESTS = ["tests/unit/test_runner.py", "tests/unit/test_late_commands.py"]
SUPPLY_TESTS = ["tests/unit/test_supply_attest.py", "tests/unit/test_supply_cosign.py"]
TESTS: dict[str, list[str]] = {
    "rig/rollout/*.py": CORE_TESTS,
    "rig/ops/rollout.py": CORE_TESTS,
    "rig/ops/pause.py": CORE_TESTS,
    "tasks/rollout.py": CORE_TESTS,
    "rig/ledger.py": CORE_TESTS,     # the ledger and state.json the core writes
    "rig/commands/proxy.py": CORE_TESTS,
    "rig/commands/container.py": CORE_TESTS,   # the swap, restore and switch commands
    "rig/ops/service.py": CORE_TESTS,          # stop/start/restart/maintenance
    "tasks/control.py": CORE_TESTS,
    "rig/prune.py": ["tests/unit/test_day2.py", "tests/unit/test_prune*.py"],
    "rig/supply/*.py": SUPPLY_TESTS,
    "rig/ops/signing.py": SUPPLY_TESTS,
    "rig/runner.py": RUNNER_TESTS,
    "rig/connector.py": RUNNER_TESTS,
}
ALL_TESTS = ["tests/unit"]
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider"]
# tests of the installation itself, which the shadowing copy fails by design: left out
DESELECT = ["tests/unit/test_cli.py::test_the_installed_rig_is_not_the_checkout"]

SANITY_MARK = "rig-mutate sanity mutant"


# ---------------------------------------------------------------- mutants


@dataclass
class Mutant:
    path: str           # relative to the repo: rig/rollout/gate.py
    line: int           # where the change starts
    col: int
    kind: str
    original: str       # the line(s) changed, as shown
    mutated: str
    source: str         # the whole mutated file
    index: int = 0      # 1-based, among the mutants of its line (before any sampling)
    equivalent: str | None = None   # why, from --equivalent

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def ident(self) -> str:
        return f"{self.where}#{self.index}"

    @property
    def text(self) -> str:
        """`file:line: original -> mutated`, as --equivalent lists it."""
        return f"{self.where}: {self.original} -> {self.mutated}"


COMPARE_SWAP = {
    ast.Eq: "!=", ast.NotEq: "==", ast.Lt: ">=", ast.GtE: "<", ast.Gt: "<=", ast.LtE: ">",
    ast.In: "not in", ast.NotIn: "in", ast.Is: "is not", ast.IsNot: "is",
}
BRACKETS = {"(", ")"}


class Source:
    """A file's text with the conversions between ast positions (UTF-8 byte columns),
    tokenize positions (character columns) and offsets into the text."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        layout = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                  tokenize.ENDMARKER)
        self.tokens = [(self.offset(*t.start), self.offset(*t.end), t.string)
                       for t in tokenize.generate_tokens(io.StringIO(text).readline)
                       if t.type not in layout]
        self.token_starts = [t[0] for t in self.tokens]

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def byte_offset(self, line: int, byte_col: int) -> int:
        text = self.lines[line - 1] if line <= len(self.lines) else ""
        return self.offset(line, len(text.encode()[:byte_col].decode(errors="replace")))

    def start(self, node: ast.AST) -> int:
        return self.byte_offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        return self.byte_offset(node.end_lineno, node.end_col_offset)

    def line_of(self, offset: int) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:  # the last line start <= offset
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def tokens_between(self, start: int, end: int) -> list[tuple[int, int, str]]:
        """(start, end, string) of the code tokens (no comments) wholly inside [start, end)."""
        first = bisect.bisect_left(self.token_starts, start)
        last = bisect.bisect_left(self.token_starts, end)
        return [t for t in self.tokens[first:last] if t[1] <= end]


def shown(text: str, start: int, end: int) -> str:
    """The lines [start, end) of text touch, as one line: stripped, joined, at most 160 chars."""
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", max(end - 1, start))
    region = text[first: len(text) if last < 0 else last]
    parts = (part.strip().removesuffix("\\").rstrip() for part in region.splitlines())
    one = " ".join(part for part in parts if part)
    return one if len(one) <= 160 else one[:157] + "..."


def skipped_nodes(tree: ast.AST) -> set[int]:
    """Annotations (mutating them changes nothing at run time) and f-strings (whose inner
    positions are not reliable before Python 3.12): never mutated."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            roots.append(node.returns)
        elif isinstance(node, ast.arg) and node.annotation:
            roots.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            roots.append(node)
    return {id(n) for root in roots for n in ast.walk(root)}


def edits(src: Source, tree: ast.AST) -> Iterator[tuple[str, int, int, str]]:
    """(kind, start, end, replacement) over the text."""
    skip = skipped_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                toks = [t for t in src.tokens_between(src.end(operands[i]), src.start(operands[i + 1]))
                        if t[2] not in BRACKETS]
                if toks:
                    yield "compare", toks[0][0], toks[-1][1], COMPARE_SWAP[type(op)]
        elif isinstance(node, ast.BoolOp):
            yield from boolop_edits(src, node)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            toks = src.tokens_between(src.start(node), src.end(node))
            if len(toks) > 1 and toks[0][2] == "not":
                yield "not", toks[0][0], toks[1][0], ""
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield "bool", src.start(node), src.end(node), str(not node.value)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            yield "number", src.start(node), src.end(node), repr(node.value + 1)
            if node.value != 0:
                yield "number", src.start(node), src.end(node), "0"
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield "return", src.start(node.value), src.end(node.value), "None"
        elif removable(node):
            yield "statement", src.start(node), src.end(node), "pass"


def removable(node: ast.AST) -> bool:
    """A bare call (`f(x)`, `await f(x)`), or an assignment to an attribute or a subscript
    (`a.b = x`, `a[k] += x`, `a.b, c = x, y`)."""
    if isinstance(node, ast.Expr):
        value = node.value.value if isinstance(node.value, ast.Await) else node.value
        return isinstance(value, ast.Call)
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AugAssign) or (isinstance(node, ast.AnnAssign) and node.value):
        targets = [node.target]
    flat = [e for t in targets for e in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]
    return any(isinstance(t, (ast.Attribute, ast.Subscript)) for t in flat)


def boolop_edits(src: Source, node: ast.BoolOp) -> Iterator[tuple[str, int, int, str]]:
    word = "and" if isinstance(node.op, ast.And) else "or"
    other = "or" if word == "and" else "and"
    values = node.values
    for i in range(len(values) - 1):
        left_end, right_start = src.end(values[i]), src.start(values[i + 1])
        gap = src.tokens_between(left_end, right_start)
        ops = [t for t in gap if t[2] == word]
        if len(ops) != 1:
            continue
        op = ops[0]
        yield "boolop", op[0], op[1], other
        closing = [t for t in gap if t[1] <= op[0] and t[2] == ")"]   # belong to values[i]
        opening = [t for t in gap if t[0] >= op[1] and t[2] == "("]   # belong to values[i + 1]
        if i == 0:  # drop values[0], its brackets with it, up to values[1] (with its own)
            before = [t for t in src.tokens_between(src.start(node), src.start(values[0])) if t[2] == "("]
            if len(before) >= len(closing):
                start = before[-len(closing)][0] if closing else src.start(values[0])
                yield "drop", start, opening[0][0] if opening else right_start, ""
        # drop values[i + 1]: from the end of values[i] (its brackets kept) to the end of
        # values[i + 1] (its brackets with it)
        start = closing[-1][1] if closing else left_end
        end = src.end(values[i + 1])
        if opening:
            after = src.tokens_between(end, len(src.text))[: len(opening)]
            if len(after) < len(opening) or any(t[2] != ")" for t in after):
                continue
            end = after[-1][1]
        yield "drop", start, end, ""


def mutants_of(path: str, text: str) -> list[Mutant]:
    tree = ast.parse(text)
    original_dump = ast.dump(tree)
    src = Source(text)
    found: dict[str, Mutant] = {}
    for kind, start, end, replacement in edits(src, tree):
        new = text[:start] + replacement + text[end:]
        try:
            if ast.dump(ast.parse(new)) == original_dump:
                continue
        except SyntaxError:
            continue
        if new in found:
            continue
        line = src.line_of(start)
        found[new] = Mutant(path, line, start - src.starts[line - 1], kind, shown(text, start, end),
                            shown(new, start, start + len(replacement)), new)
    mutants = sorted(found.values(), key=lambda m: (m.line, m.col, m.kind, m.mutated))
    per_line: dict[int, int] = {}
    for m in mutants:
        per_line[m.line] = m.index = per_line.get(m.line, 0) + 1
    return mutants


def sample(mutants: list[Mutant], limit: int, seed: int, path: str) -> list[Mutant]:
    if len(mutants) <= limit:
        return mutants
    chosen = random.Random(f"{seed}:{path}").sample(range(len(mutants)), limit)
    return [mutants[i] for i in sorted(chosen)]


# ---------------------------------------------------------------- what to run


def targets_from(args: list[str]) -> list[str]:
    if args:
        names = []
        for arg in args:
            path = Path(arg).resolve()
            try:
                names.append(str(path.relative_to(REPO)))
            except ValueError:
                sys.exit(f"mutate: {arg}: not in {REPO}")
    else:
        names = list(DEFAULT_TARGETS)
        for pattern in EXTRA_TARGETS:
            names += sorted(str(Path(p)) for p in glob.glob(pattern, root_dir=REPO))
    result = []
    for name in names:
        if name in result:
            continue
        if not (REPO / name).is_file():
            print(f"mutate: {name}: no such file, left out")
            continue
        if name.split("/")[0] not in PACKAGES:
            sys.exit(f"mutate: {name}: only files of {', '.join(PACKAGES)} can be mutated")
        result.append(name)
    return result


def tests_for(target: str, root: Path = REPO) -> list[str]:
    for pattern, globs in TESTS.items():
        if Path(target).match(pattern) and target.count("/") == pattern.count("/"):
            found = sorted({f for g in globs for f in glob.glob(g, root_dir=root)})
            return found or ALL_TESTS
    return ALL_TESTS


def parse_only(specs: list[str]) -> list[tuple[str, int, int | None]]:
    result = []
    for spec in specs:
        match = re.fullmatch(r"(.+):(\d+)(?:#(\d+))?", spec)
        if not match:
            sys.exit(f"mutate: --only {spec}: expected FILE:LINE or FILE:LINE#N")
        name = str(Path(match[1]).resolve().relative_to(REPO)) if Path(match[1]).is_absolute() \
            else match[1].removeprefix("./")
        result.append((name, int(match[2]), int(match[3]) if match[3] else None))
    return result


def read_equivalents(path: Path) -> list[tuple[str, int, str, str]]:
    """(file, line, `original -> mutated` text, why) per entry."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = re.match(r"\s*([^\s:]+):(\d+)(?:#\d+)?:\s*(.*)$", raw)
        if not match:
            sys.exit(f"mutate: {path}:{number}: expected `file:line: original -> mutated  # why`")
        entries.append((match[1], int(match[2]), match[3], raw))
    return entries


def squash(text: str) -> str:
    return " ".join(text.split())


def match_equivalent(mutant: Mutant, entry_text: str) -> str | None:
    """The entry's `# why` when it names this mutant, else None."""
    want = squash(f"{mutant.original} -> {mutant.mutated}")
    got = squash(entry_text)
    if not got.startswith(want):
        return None
    rest = got[len(want):].strip()
    if rest and not rest.startswith(("#", "[")):
        return None
    why = rest.split("#", 1)[1].strip() if "#" in rest else ""
    return why or "listed as equivalent"


# ---------------------------------------------------------------- running


Outcome = tuple[int | None, str, float]  # exit code (None: timed out), output, seconds


@dataclass
class Result:
    mutant: Mutant
    status: str          # KILLED, SURVIVED, TIMEOUT, EQUIVALENT
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Runner:
    pytest: list[str]
    timeout: float
    jobs: int
    workers: queue.Queue = field(default_factory=queue.Queue)
    running: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def env(self, copy: Path | None) -> dict[str, str]:
        env = dict(os.environ)
        if copy is not None:
            first = str(copy / "pkgs")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (first, os.environ.get("PYTHONPATH")) if p)
        # never a cached .pyc of a copy: a mutant of the same size within the same second would
        # otherwise run the previous mutant's bytecode
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def run(self, argv: list[str], copy: Path | None, timeout: float | None = None) -> Outcome:
        """(exit code, None on a timeout; output; seconds), in a process group of its own: in the
        copy's tree with its packages first on PYTHONPATH, or (no copy) in the work tree as is."""
        began = time.monotonic()
        cwd = copy / "tree" if copy is not None else REPO
        proc = subprocess.Popen(argv, cwd=cwd, env=self.env(copy), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        with self.lock:
            self.running.add(proc)
        try:
            out, _ = proc.communicate(timeout=timeout or self.timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            kill(proc)
            out, _ = proc.communicate()
            code = None
        finally:
            with self.lock:
                self.running.discard(proc)
        return code, out or "", time.monotonic() - began

    def stop_all(self) -> None:
        with self.lock:
            for proc in list(self.running):
                kill(proc)

    def tests(self, copy: Path, tests: list[str], timeout: float | None = None) -> Outcome:
        deselect = [a for d in DESELECT if any(d.startswith(t) for t in tests) for a in ("--deselect", d)]
        return self.run([*self.pytest, *tests, *PYTEST_ARGS, *deselect], copy, timeout)

    def mutant(self, mutant: Mutant, tests: list[str]) -> Result:
        copy = self.workers.get()
        target = copy / "pkgs" / mutant.path
        original = target.read_text()
        try:
            target.write_text(mutant.source)
            code, out, seconds = self.tests(copy, tests)
        finally:
            target.write_text(original)
            self.workers.put(copy)
        if code is None:
            return Result(mutant, "TIMEOUT", seconds, f"no result within {self.timeout:.0f} s")
        if code == 0:
            return Result(mutant, "SURVIVED", seconds)
        return Result(mutant, "KILLED", seconds, first_failure(out, code))


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def first_failure(out: str, code: int) -> str:
    for line in out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line
    return f"pytest exit {code}"


def snapshot(dest: Path, source: Path) -> None:
    """dest/pkgs: rig/ and tasks/; dest/tree: the rest of the work tree (tests/, fleet.yml,
    profiles/, ...), less what is hidden (.git, .venv, .lab, caches) and build output."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for entry in sorted(source.iterdir()):
        name = entry.name
        if name.startswith(".") or name in ("build", "dist") or name.endswith(".egg-info"):
            continue
        where = dest / ("pkgs" if name in PACKAGES else "tree") / name
        if entry.is_dir():
            shutil.copytree(entry, where, ignore=ignore, symlinks=True)
        elif entry.is_file():
            where.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(entry, where)
    shared = source.parent / "shared"      # ../shared beside the tree, as beside the checkout
    if shared.is_dir() and not (dest / "shared").exists():    # (the supply-chain vectors)
        (dest / "shared").symlink_to(shared.resolve())


def sanity(runner: Runner, copies: list[Path], tests: list[str]) -> bool:
    """Each copy shadows the installed packages: a python in the tests' environment imports rig
    and tasks from it, and a mutant of rig/__init__.py fails the tests, naming the copy's file."""
    probe = "import rig, tasks; print(rig.__file__); print(tasks.__file__)"
    python = [sys.executable, "-P", "-c", probe]  # -P: no cwd (the checkout) on sys.path
    code, out, _ = runner.run(python, None, 60)
    print(f"installed:  {out.split()[0] if code == 0 and out else 'rig is not importable: ' + out.strip()}")
    ok = True
    for copy in copies:
        code, out, _ = runner.run(python, copy, 60)
        where = out.split()
        if code != 0 or len(where) != 2 or not all(w.startswith(str(copy / "pkgs") + os.sep) for w in where):
            print(f"mutate: the copy in {copy} does not shadow the installed packages: {out.strip()}")
            ok = False
        else:
            print(f"shadowing:  {where[0]}, {where[1]}")
    init = copies[0] / "pkgs" / "rig" / "__init__.py"
    original = init.read_text()
    init.write_text(original + f'\nraise RuntimeError(f"{SANITY_MARK}: {{__file__}}")\n')
    try:
        code, out, _ = runner.tests(copies[0], tests)
    finally:
        init.write_text(original)
    if code in (None, 0) or f"{SANITY_MARK}: {init}" not in out:
        print(f"mutate: the sanity mutant ({init} raising at import) was not seen by pytest "
              f"(exit {code}): mutants of the copy would not be tested")
        print(out[-3000:])
        return False
    print(f"sanity:     a mutant of rig/__init__.py in the copy is KILLED under pytest ({code=})")
    return ok


# ---------------------------------------------------------------- report


def report_line(result: Result, verbose: bool = False) -> str:
    m = result.mutant
    extra = f"[#{m.index} {m.kind}" + (f" {result.seconds:.1f}s" if result.seconds else "") + "]"
    line = f"{result.status:<10} {m.text}    {extra}"
    if result.status == "EQUIVALENT":
        line += f"  # {m.equivalent}"
    elif result.status == "TIMEOUT":
        line += f"  ({result.detail}; counted as killed)"
    elif result.status == "KILLED" and verbose:
        line += f"\n           by {result.detail}"
    return line


def summary(results: list[Result], targets: list[str], skipped: dict[str, str]) -> float | None:
    def row(name: str, counts: list[int]) -> str:
        return f"{name:<28} " + " ".join(f"{c:>8}" for c in counts) + f" {score(*counts):>16}"

    print("\nscore: killed and timed out (counted as killed) / all but the equivalent ones")
    print(f"{'file':<28} {'killed':>8} {'timeout':>8} {'survived':>8} {'equiv':>8} {'score':>16}")
    totals = [0, 0, 0, 0]
    for target in targets:
        if target in skipped:
            print(f"{target:<28} not measured: {skipped[target]}")
            continue
        mine = [r for r in results if r.mutant.path == target]
        counts = [sum(r.status == s for r in mine) for s in ("KILLED", "TIMEOUT", "SURVIVED", "EQUIVALENT")]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        print(row(target, counts))
    print(row("TOTAL", totals))
    survivors = sorted((r for r in results if r.status == "SURVIVED"),
                       key=lambda r: (r.mutant.path, r.mutant.line, r.mutant.index))
    if survivors:
        print(f"\nsurvived ({len(survivors)}): a test should fail on each, or list it with --equivalent")
        for r in survivors:
            print(f"  {r.mutant.text}    [#{r.mutant.index} {r.mutant.kind}]")
    measured = totals[0] + totals[1] + totals[2]
    return 100.0 * (totals[0] + totals[1]) / measured if measured else None


def score(killed: int, timeout: int, survived: int, _equivalent: int = 0) -> str:
    measured = killed + timeout + survived
    if not measured:
        return "-"
    return f"{killed + timeout}/{measured} {100.0 * (killed + timeout) / measured:5.1f}%"


# ---------------------------------------------------------------- main


def interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("targets", nargs="*", help=f"files to mutate (default: {' '.join(DEFAULT_TARGETS)}"
                        f" and {' '.join(EXTRA_TARGETS)})")
    parser.add_argument("--max-per-file", type=int, default=1_000_000, metavar="N",
                        help="at most N mutants per file, a deterministic sample (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests, run nothing")
    parser.add_argument("--only", action="append", default=[], metavar="FILE:LINE[#N]",
                        help="run only the mutants of that line (the N-th of them); repeatable")
    parser.add_argument("--equivalent", type=Path, metavar="FILE",
                        help="mutants known to be equivalent: listed, not run, not scored")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant (default 120)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run in parallel (default 2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show which test killed each mutant")
    parser.add_argument("--fail-under", type=float, metavar="PCT",
                        help="exit 1 when the total score is below PCT %%")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)  # stopped: the temporary folder goes all the same
    if args.jobs < 1 or args.max_per_file < 1:
        parser.error("--jobs and --max-per-file must be at least 1")

    targets = targets_from(args.targets)
    only = parse_only(args.only)
    if only:
        targets = list(dict.fromkeys(  # each file once, however many of its lines are named
            [t for t in targets if any(t == o[0] for o in only)]
            + [o[0] for o in only if o[0] not in targets and (REPO / o[0]).is_file()]))
    equivalents = read_equivalents(args.equivalent) if args.equivalent else []

    tmp = Path(tempfile.mkdtemp(prefix="rig-mutate-"))
    pytest = shutil.which("pytest", path=str(Path(sys.executable).parent))
    runner = Runner([pytest] if pytest else [sys.executable, "-P", "-m", "pytest"],
                    args.timeout, args.jobs)
    try:
        # one snapshot of the checkout: mutants are made from it, whatever changes meanwhile
        snapshot(tmp / "base", REPO)
        plan: list[tuple[Mutant, list[str]]] = []
        used_entries: set[int] = set()
        for target in targets:
            text = (tmp / "base" / "pkgs" / target).read_text()
            try:
                every = mutants_of(target, text)
            except SyntaxError as error:
                print(f"mutate: {target}: does not parse ({error}), left out")
                continue
            if only:
                chosen = [m for m in every if any(
                    o[0] == target and o[1] == m.line and o[2] in (None, m.index) for o in only)]
            else:
                chosen = sample(every, args.max_per_file, args.seed, target)
            for m in chosen:
                for n, (path, line, entry_text, _raw) in enumerate(equivalents):
                    why = match_equivalent(m, entry_text) if (path, line) == (m.path, m.line) else None
                    if why:
                        m.equivalent = why
                        used_entries.add(n)
            tests = tests_for(target, tmp / "base" / "tree")
            print(f"{target}: {len(chosen)} of {len(every)} mutants; tests: {' '.join(tests)}")
            plan += [(m, tests) for m in chosen]
        for n, (path, _line, _text, raw) in enumerate(equivalents):
            if n not in used_entries and (not only or any(o[0] == path for o in only)):
                print(f"mutate: --equivalent: no mutant matches `{raw.strip()}` (stale?)")

        if args.list:
            for m, _tests in plan:
                note = f"  # equivalent: {m.equivalent}" if m.equivalent else ""
                print(f"{m.text}    [#{m.index} {m.kind}]{note}")
            return 0
        if not plan:
            print("mutate: no mutants")
            return 0

        copies = []
        for n in range(args.jobs):
            copy = tmp / f"job{n}"
            shutil.copytree(tmp / "base", copy, symlinks=True)
            copies.append(copy)
            runner.workers.put(copy)
        print(f"\npytest: {' '.join(runner.pytest)} TESTS {' '.join(PYTEST_ARGS)}, in {tmp}/jobN/tree "
              f"with PYTHONPATH={tmp}/jobN/pkgs first, {args.jobs} at a time")
        if not sanity(runner, copies, plan[0][1]):
            return 2

        # the tests of each file must pass without a mutant, or its mutants mean nothing
        skipped: dict[str, str] = {}
        suites = sorted({tuple(tests) for _m, tests in plan})
        for tests in suites:
            code, out, seconds = runner.tests(copies[0], list(tests), max(args.timeout, 600))
            names = sorted({m.path for m, t in plan if t == list(tests)})
            if code != 0:
                print(f"\nmutate: without a mutant, {' '.join(tests)} {'FAIL' if code else 'TIME OUT'} "
                      f"(exit {code}); not measured: {' '.join(names)}")
                print("\n".join(out.strip().splitlines()[-15:]))
                skipped.update({n: f"its tests fail without a mutant ({' '.join(tests)})" for n in names})
            else:
                print(f"baseline:   {' '.join(tests)} pass in {seconds:.1f} s")
                if seconds * 2 > args.timeout:
                    print(f"mutate: warning: --timeout {args.timeout:.0f} s is under twice the baseline")
        print()

        results: list[Result] = []
        todo = [(m, t) for m, t in plan if m.path not in skipped]
        for m, _t in todo:
            if m.equivalent:
                results.append(Result(m, "EQUIVALENT"))
                print(report_line(results[-1]), flush=True)
        todo = [(m, t) for m, t in todo if not m.equivalent]
        began, stopped = time.monotonic(), False
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(runner.mutant, m, t) for m, t in todo]
            try:
                for n, future in enumerate(as_completed(futures), 1):
                    results.append(future.result())
                    print(f"{report_line(results[-1], args.verbose)}  ({n}/{len(todo)})", flush=True)
            except KeyboardInterrupt:
                for future in futures:
                    future.cancel()
                runner.stop_all()
                stopped = True
                print("\nmutate: interrupted; the report covers the mutants that ran")
        print(f"\n{len(results)} mutants in {time.monotonic() - began:.0f} s")
        total = summary(results, [t for t in targets if any(m.path == t for m, _ in plan)], skipped)
        if stopped:
            return 130
        if skipped:
            return 2
        if args.fail_under is not None and (total is None or total < args.fail_under):
            print(f"mutate: total score {'-' if total is None else f'{total:.1f}'}% is under "
                  f"--fail-under {args.fail_under:g}%")
            return 1
        return 0
    finally:
        runner.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `--list | head`: the temporary folder is gone already
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

#!/usr/bin/env python3
"""The import rule between the rooms, checked from the source with `ast` (standard library only).

    python scripts/check_imports.py [ROOT]     # exit 0: clean; 1: each violation printed as path:line: message

The rule (ARCHITECTURE.md):
  - engine/, trainer/ and evalkit/ import `reportminer.data` and never each other;
  - data/ (the contract) imports none of the three;
  - nothing imports the old bare top-level names (`import data`, `from engine import ...`, `trainer.x`,
    `evalkit.x`): the rooms are installed only as `reportminer.<room>` (pkg/__init__.py says why);
  - a relative import does not climb out of the `reportminer` package;
  - no import loop between the package's modules (two or more modules that import each other, directly
    or around a circle), counting lazy and TYPE_CHECKING imports too: a loop is reported once, as the
    modules of one strongly connected component of the import graph.
Every import is checked, at module level or inside a function, under `if TYPE_CHECKING:` too, and so are
`importlib.import_module("...")` / `__import__("...")` calls with a literal name. Absolute
(`reportminer.engine.x`) and relative (`from ..engine import x`) forms are resolved to the same name.
scripts/ and tests/ may import any room; only the bare-name rule applies to them.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

TOP = "reportminer"
ROOMS = ("data", "engine", "trainer", "evalkit")
WORKERS = ("engine", "trainer", "evalkit")  # the three rooms that import only the contract
# Folders whose Python files are checked: the top package, the rooms, and the code around them.
SCANNED = ("pkg", *ROOMS, "scripts", "tests")


def module_name(root: Path, path: Path) -> tuple[str | None, bool]:
    """(dotted name under reportminer or None outside the package, whether the file is a package __init__)."""
    rel = path.relative_to(root)
    is_pkg = rel.name == "__init__.py"
    parts = list(rel.with_suffix("").parts)
    if parts[0] == "pkg":
        return (TOP, True) if rel == Path("pkg/__init__.py") else (None, False)
    if parts[0] not in ROOMS:
        return None, False
    if is_pkg:
        parts = parts[:-1]
    return ".".join([TOP, *parts]), is_pkg


def room_of(name: str) -> str | None:
    """`reportminer.engine.x` -> `engine`; None for anything outside the rooms."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == TOP and parts[1] in ROOMS else None


def imported_names(tree: ast.AST, module: str | None, is_pkg: bool) -> Iterator[tuple[int, str | None, str]]:
    """(line, absolute module name or None when it cannot be resolved, how it was written) per import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            written = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
            base = node.module
            if node.level:
                base = _resolve_relative(module, is_pkg, node.level, node.module)
                if base is None:
                    yield node.lineno, None, written
                    continue
            assert base is not None
            yield node.lineno, base, written
            # `from reportminer import engine` imports the submodule reportminer.engine
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}", written
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                yield node.lineno, arg.value, f"{ast.unparse(node.func)}({arg.value!r})"


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _resolve_relative(module: str | None, is_pkg: bool, level: int, target: str | None) -> str | None:
    if module is None:
        return None
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    if level - 1 >= len(package):
        return None  # climbs above `reportminer`
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def check_file(root: Path, path: Path) -> list[str]:
    rel = path.relative_to(root)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
    except SyntaxError as e:
        return [f"{rel}:{e.lineno}: cannot parse: {e.msg}"]
    module, is_pkg = module_name(root, path)
    own = room_of(module) if module else None
    problems: list[str] = []
    seen: set[tuple[int, str]] = set()

    def report(line: int, message: str) -> None:
        if (line, message) not in seen:
            seen.add((line, message))
            problems.append(f"{rel}:{line}: {message}")

    for line, name, written in imported_names(tree, module, is_pkg):
        if name is None:
            report(line, f"`{written}`: relative import outside the {TOP} package")
            continue
        top = name.split(".")[0]
        if top in ROOMS:
            report(line, f"`{written}`: bare top-level name `{top}`; the room is `{TOP}.{top}`")
            continue
        target = room_of(name)
        if own is None or target is None or target == own:
            continue
        if own == "data":
            report(line, f"`{written}`: data/ (the contract) imports no room; found {TOP}.{target}")
        elif own in WORKERS and target in WORKERS:
            report(line, f"`{written}`: {own}/ imports only {TOP}.data, never {TOP}.{target}")
    return problems


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (every import, lazy and TYPE_CHECKING included). An import
    of a name inside a module counts as an import of that module; a module's own parent packages do not
    count (Python imports them first anyway)."""
    mods: dict[str, tuple[Path, bool]] = {}
    for path in python_files(root):
        name, is_pkg = module_name(root, path)
        if name:
            mods[name] = (path, is_pkg)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue  # named by check_file
        for _line, name, _written in imported_names(tree, m, is_pkg):
            parts = (name or "").split(".")
            while parts and ".".join(parts) not in mods:
                parts.pop()
            target = ".".join(parts)
            if target and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """Every import loop: the strongly connected components of more than one module (Tarjan's algorithm)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return loops


def python_files(root: Path) -> Iterator[Path]:
    for folder in SCANNED:
        d = root / folder
        if d.is_dir():
            yield from sorted(p for p in d.rglob("*.py") if "__pycache__" not in p.parts)
    yield from sorted(root.glob("*.py"))


def check(root: Path) -> tuple[list[str], int]:
    """(violations, number of files checked) for the repository at `root`."""
    problems: list[str] = []
    n = 0
    for path in python_files(root):
        n += 1
        problems.extend(check_file(root, path))
    for loop in import_cycles(root):
        problems.append(f"import loop: {' -> '.join(loop)} (each imports another of them; move what they share "
                        "into a module below them)")
    return problems, n


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else Path(__file__).resolve().parents[1]
    problems, n = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"import check: {len(problems)} violation(s) in {n} files (the rule: ARCHITECTURE.md)", file=sys.stderr)
        return 1
    print(f"import check: {n} files, the rooms import only reportminer.data and never each other; no import loop")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

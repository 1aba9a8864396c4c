"""kubirun's layers, checked from the source: every import of every module
(inside functions too, ``from . import``, ``importlib.import_module`` and the
CLI table's ``"kubirun.module:handler"`` strings) against the table in
ARCHITECTURE.md, and no circle of imports anywhere."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kubirun"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
HANDLER = re.compile(r"^(kubirun(?:\.\w+)*):\w+$")


def parse_table(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """ARCHITECTURE.md's table: member prefix -> layer, layer -> the layers
    it may import."""
    members: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not line.lstrip().startswith("|"):
            continue
        layer, names, may = cells
        if layer in ("layer", "") or set(layer) <= set("-"):
            continue
        allowed[layer] = {name.strip() for name in may.split(",") if name.strip()}
        for name in names.split(","):
            members[name.strip()] = layer
    return members, allowed


def module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = module_names()


def _owner(name: str) -> str | None:
    """The module an imported name is in (``kubirun.errors.KubirunError``
    -> ``kubirun.errors``)."""
    while name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for each kubirun import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    in_function = {id(node) for fn in ast.walk(tree)
                   if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                   for node in ast.walk(fn) if node is not fn}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (_absolute(module, path.name == "__init__.py", node.level, node.module)
                    if node.level else node.module or "")
            # "from kubirun import errors" imports the module kubirun.errors;
            # "from kubirun.errors import KubirunError" imports kubirun.errors.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) in ("import_module", "__import__"))):
            names = [node.args[0].value]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = HANDLER.match(node.value)
            names = [match.group(1)] if match else []
        for name in names:
            owner = _owner(name) if name.startswith("kubirun") else None
            if owner and owner != module:
                found.append((owner, node.lineno, id(node) in in_function))
    return found


def _entries(module: str, members: dict[str, str]) -> list[str]:
    # "kubirun" stands for the package's __init__ alone: a module at the
    # package root must be placed by name.
    return [m for m in members
            if module == m or (m != "kubirun" and module.startswith(m + "."))]


def layer_of(module: str, members: dict[str, str]) -> str | None:
    candidates = _entries(module, members)
    return members[max(candidates, key=len)] if candidates else None


def unit_of(module: str, members: dict[str, str]) -> str:
    """The table's entry a module falls under: imports inside it are free."""
    return max(_entries(module, members), key=len)


def forbidden_arrows(members: dict[str, str], allowed: dict[str, set[str]]) -> list[str]:
    wrong: list[str] = []
    for module in sorted(MODULES):
        layer = layer_of(module, members)
        if layer is None:
            continue  # test_every_module_belongs_to_a_layer says so
        for target, line, _ in imports(module):
            other = layer_of(target, members)
            if other is None:
                continue
            if unit_of(target, members) == unit_of(module, members):
                continue
            if other != layer and other not in allowed[layer]:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: "
                             f"{module} ({layer}) imports {target} ({other})")
    return list(dict.fromkeys(wrong))


def circles() -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module."""
    graph = {module: sorted({target for target, _, _ in imports(module)}) for module in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


@pytest.fixture(scope="module")
def table():
    members, allowed = parse_table(ARCHITECTURE.read_text())
    assert members and allowed, "ARCHITECTURE.md has no layer table"
    return members, allowed


def test_the_table_names_only_layers_it_defines(table):
    members, allowed = table
    unknown = {layer for layers in allowed.values() for layer in layers} - set(allowed)
    assert not unknown, f"ARCHITECTURE.md allows imports of undefined layers: {unknown}"


def test_every_module_belongs_to_a_layer(table):
    members, _ = table
    homeless = [module for module in sorted(MODULES) if layer_of(module, members) is None]
    assert not homeless, f"modules ARCHITECTURE.md does not place: {homeless}"


def test_every_member_of_the_table_exists(table):
    members, _ = table
    missing = [member for member in members if member not in MODULES]
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"


def test_no_module_imports_across_a_forbidden_arrow(table):
    members, allowed = table
    wrong = forbidden_arrows(members, allowed)
    assert not wrong, "imports the layer table forbids:\n" + "\n".join(wrong)


def test_the_base_and_native_layers_import_nothing_else_of_kubirun(table):
    members, allowed = table
    assert allowed["base"] == set() and allowed["native"] == set()


def test_no_modules_import_each_other_in_a_circle():
    found = circles()
    assert not found, "circles of imports (module level and inside functions):\n" + \
        "\n".join(" <-> ".join(component) for component in found)


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    seen = {(target, in_function) for target, _, in_function in imports("kubirun.cgroups.v2")}
    assert ("kubirun.cgroups.ebpf", True) in seen
    assert ("kubirun.cgroups.fs", False) in seen

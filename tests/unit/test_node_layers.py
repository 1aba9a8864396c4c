"""kubirun.node imports only kubirun's declared library API (kubirun.api)
and its own modules, never the runtime's insides: checked from the source,
imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "kubirun" / "node"
ALLOWED = ("kubirun.api", "kubirun.node")


def _kubirun_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append("kubirun.node")  # relative: within the package
    return [name for name in found if name == "kubirun" or name.startswith("kubirun.")]


def test_the_node_package_uses_only_the_library_api():
    modules = sorted(NODE.glob("*.py"))
    assert modules, f"no modules in {NODE}"
    wrong = {str(path.relative_to(NODE.parent.parent)): name for path in modules
             for name in _kubirun_imports(path)
             if not any(name == a or name.startswith(a + ".") for a in ALLOWED)}
    assert not wrong, f"kubirun.node reaches past kubirun.api: {wrong}"

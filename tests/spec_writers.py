"""A static scan of the operator package for code that writes a CoaiInstance other than its status.

Every request the operator sends for a CoaiInstance goes through coai_operator.kube.Kube; a write
is a call of patch / replace / create / apply / request / delete naming the CoaiInstance kind or
its plural. Only `patch(..., subresource="status")` is allowed. kopf's own bookkeeping (its
annotations and finalizers on metadata) is done by kopf itself, not by this package.
Used by tests/unit/test_git_owns_the_spec.py and e2e/test_gitops.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "coai_operator"
WRITES = {"patch", "replace", "create", "apply", "request", "delete"}


def _names_instance(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr in ("INSTANCE_KIND", "INSTANCE_PLURAL"):
            return True
        if isinstance(sub, ast.Name) and sub.id in ("INSTANCE_KIND", "INSTANCE_PLURAL"):
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and (
                sub.value == "CoaiInstance" or "coaiinstances" in sub.value):
            return True
    return False


def _status_only(call: ast.Call) -> bool:
    return any(k.arg == "subresource" and isinstance(k.value, ast.Constant) and k.value.value == "status"
               for k in call.keywords)


def spec_writers(source: str, label: str) -> set[str]:
    """`label:function` for every call in `source` that may write a CoaiInstance other than its status."""
    found = set()
    tree = ast.parse(source)
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for call in ast.walk(func):
            if not (isinstance(call, ast.Call) and _names_instance(call)):
                continue
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            if name in WRITES and not (name == "patch" and _status_only(call)):
                found.add(f"{label}:{func.name}")
    return found


def package_spec_writers() -> set[str]:
    found: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        found |= spec_writers(path.read_text(), str(path.relative_to(PACKAGE)))
    return found

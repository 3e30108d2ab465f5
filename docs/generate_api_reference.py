"""Write docs/api-reference.md from the CRD schemas in crds/ (the one source), or check it.

  python docs/generate_api_reference.py           rewrite docs/api-reference.md
  python docs/generate_api_reference.py --check   exit 1 when it is stale (tests/unit/test_docs.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"
OUT = REPO / "docs" / "api-reference.md"
HEADER = """# API reference

<!-- Generated from crds/*.yaml by docs/generate_api_reference.py: edit the CRDs, then run it. -->

Every field of the two custom resources, from their OpenAPI schemas (the API server enforces the
same types, limits, defaults and rules). Group `{group}`, version `{version}`.
"""


def _type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "object" if "properties" in schema else "any")
    if kind == "array":
        return f"[]{_type(schema.get('items') or {})}"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        return f"map[string]{_type(schema['additionalProperties'] or {})}"
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _details(schema: Mapping[str, Any], required: bool) -> str:
    parts = []
    if required:
        parts.append("**required**")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, label in (("minimum", "min"), ("maximum", "max"), ("minLength", "min length"),
                       ("maxLength", "max length"), ("maxItems", "max items")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    for rule in schema.get("x-kubernetes-validations") or []:
        parts.append(f"rule: {rule.get('message') or rule['rule']}")
    return "; ".join(parts)


def fields(schema: Mapping[str, Any], prefix: str, required: bool = False) -> Iterator[tuple[str, ...]]:
    """(path, type, description, details) for `schema` and everything under it, depth first."""
    if prefix:
        yield (prefix, _type(schema), _cell(schema.get("description", "")), _cell(_details(schema, required)))
    node = schema
    while node.get("type") == "array":
        node, prefix = node.get("items") or {}, prefix + "[]"
    if isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"].get("properties"):
        node, prefix = node["additionalProperties"], prefix + ".*"
    needed = set(node.get("required") or [])
    for name, child in (node.get("properties") or {}).items():
        yield from fields(child, f"{prefix}.{name}" if prefix else name, name in needed)


def render_crd(crd: Mapping[str, Any]) -> str:
    names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [f"## {names['kind']}", "",
             f"`kubectl get {names['plural']}` (short names: {', '.join(names.get('shortNames') or []) or 'none'}). "
             f"{_cell(schema.get('description', ''))}", ""]
    columns = version.get("additionalPrinterColumns") or []
    if columns:
        lines += ["Columns of `kubectl get`: " + ", ".join(c["name"] for c in columns if not c.get("priority"))
                  + "; with `-o wide` also: " + ", ".join(c["name"] for c in columns if c.get("priority")) + ".", ""]
    for part in ("spec", "status"):
        sub = schema["properties"].get(part)
        if not sub:
            continue
        lines += [f"### {names['kind']} `{part}`", "", _cell(sub.get("description", "")), "",
                  "| field | type | description | constraints |", "|---|---|---|---|"]
        lines += [f"| `{p}` | {t} | {d} | {c} |" for p, t, d, c in fields(sub, "", False) if p]
        lines.append("")
    return "\n".join(lines)


def generate() -> str:
    crds = [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))]
    first = crds[0]["spec"]
    head = HEADER.format(group=first["group"], version=first["versions"][0]["name"])
    toc = "\n".join(f"- [{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})" for c in crds)
    return head + "\n" + toc + "\n\n" + "\n".join(render_crd(c) for c in crds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run python docs/generate_api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Read a compose file the way `docker compose` does before import-compose looks at it. Pure.

- variables come from a `.env` beside the file, overridden by the process environment (compose's
  precedence: the shell wins over .env);
- every string value is interpolated: `$VAR`, `${VAR}`, `${VAR:-default}` / `${VAR-default}`,
  `${VAR:?error}` / `${VAR?error}`, `${VAR:+alt}` / `${VAR+alt}`, `$$` for a literal `$`;
- a variable that is unset (and has no default) is an error, and ALL of them are listed at once
  (compose would substitute an empty string with a warning: a JWT secret must never be "");
- a service's `env_file:` entries and bare `- KEY` environment items are resolved too.
Nothing is written by any of this; the caller only prints manifests when it all resolved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class InterpolationError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_dotenv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
            if raw.strip().split("=", 1)[1].strip().startswith('"'):
                value = value.replace("\\n", "\n").replace('\\"', '"')
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out


def variables(compose_file: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    if compose_file is not None:
        dotenv = compose_file.parent / ".env"
        if dotenv.is_file():
            found.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
    found.update(environ)
    return found


def _braced(body: str, env: Mapping[str, str], where: str, problems: list[str]) -> str:
    spec = _BRACED.match(body)
    if spec is None:
        problems.append(f"{where}: invalid interpolation ${{{body}}}")
        return ""
    name, op, arg = spec.group("name"), spec.group("op"), spec.group("arg") or ""
    value = env.get(name)
    empty = not value
    if op in (":-", "-"):
        use_default = value is None or (op == ":-" and empty)
        return interpolate_text(arg, env, where, problems) if use_default else str(value)
    if op in (":?", "?"):
        if value is None or (op == ":?" and empty):
            problems.append(f"{where}: {name}: {arg or 'required variable is not set'}")
            return ""
        return str(value)
    if op in (":+", "+"):
        present = value is not None and not (op == ":+" and empty)
        return interpolate_text(arg, env, where, problems) if present else ""
    if value is None:
        problems.append(f"{where}: variable {name} is not set")
        return ""
    return value


def interpolate_text(text: str, env: Mapping[str, str], where: str, problems: list[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                problems.append(f"{where}: unterminated ${{ in {text!r}")
                return "".join(out)
            out.append(_braced(text[i + 2:j - 1], env, where, problems))
            i = j
        elif plain := _NAME.match(text, i + 1):
            name = plain.group(0)
            if name not in env:
                problems.append(f"{where}: variable {name} is not set")
            out.append(env.get(name, ""))
            i = plain.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def interpolate(node: Any, env: Mapping[str, str], where: str = "", problems: list[str] | None = None) -> Any:
    """A copy of the parsed compose document with every string value interpolated."""
    top = problems is None
    problems = [] if problems is None else problems
    if isinstance(node, dict):
        out: Any = {k: interpolate(v, env, f"{where}.{k}" if where else str(k), problems) for k, v in node.items()}
    elif isinstance(node, list):
        out = [interpolate(v, env, f"{where}[{i}]", problems) for i, v in enumerate(node)]
    elif isinstance(node, str):
        out = interpolate_text(node, env, where, problems)
    else:
        out = node
    if top and problems:
        raise InterpolationError(problems)
    return out


def resolve_service_env(service: Mapping[str, Any], env: Mapping[str, str], base: Path | None,
                        where: str) -> dict[str, str]:
    """The container environment compose would give: env_file entries, then `environment:`
    (bare `KEY` items take the value from the variables)."""
    problems: list[str] = []
    result: dict[str, str] = {}
    files = service.get("env_file") or []
    for entry in [files] if isinstance(files, str | dict) else files:
        path = entry.get("path") if isinstance(entry, dict) else entry
        required = entry.get("required", True) if isinstance(entry, dict) else True
        full = (base / str(path)) if base is not None else Path(str(path))
        if full.is_file():
            result.update(parse_dotenv(full.read_text(encoding="utf-8")))
        elif required:
            problems.append(f"{where}.env_file: {path} does not exist")
    raw = service.get("environment") or {}
    items = [str(i).partition("=") for i in raw] if isinstance(raw, list) else \
        [(str(k), "" if v is None else "=", "" if v is None else str(v)) for k, v in raw.items()]
    for key, sep, value in items:
        if sep:
            result[key] = value
        elif key in env:
            result[key] = env[key]
        else:
            problems.append(f"{where}.environment: {key} takes its value from the environment, which does not set it")
    if problems:
        raise InterpolationError(problems)
    return result

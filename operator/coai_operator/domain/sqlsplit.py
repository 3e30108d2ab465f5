"""Split an SQL script into statements the way the `mariadb` client would (pure).

Handles quoted strings ('', "", ``), backslash escapes, `--`/`#`/`/* */` comments. Client-side
commands such as DELIMITER are refused: bundle steps hold plain statements, no stored programs.
"""

from __future__ import annotations

import re

_DELIMITER_RE = re.compile(r"^\s*delimiter\b", re.IGNORECASE)


class SqlSplitError(ValueError):
    pass


def split_statements(script: str) -> list[str]:
    """Statements of `script` without their terminating `;`; empty and comment-only ones dropped."""
    statements: list[str] = []
    buf: list[str] = []
    meaningful = False
    i, n = 0, len(script)

    def flush() -> None:
        nonlocal meaningful
        text = "".join(buf).strip()
        if meaningful:
            if _DELIMITER_RE.match(_strip_leading_comments(text)):
                raise SqlSplitError("DELIMITER is a client command; bundle SQL must be plain statements")
            statements.append(text)
        buf.clear()
        meaningful = False

    while i < n:
        ch = script[i]
        if ch in "'\"`":
            end = _quoted_end(script, i)
            buf.append(script[i:end])
            meaningful = True
            i = end
        elif ch == "#" or (script.startswith("--", i) and (i + 2 >= n or script[i + 2].isspace())):
            end = script.find("\n", i)
            end = n if end < 0 else end
            buf.append(script[i:end])
            i = end
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            if end < 0:
                raise SqlSplitError("unterminated /* comment")
            end += 2
            # /*! ... */ is MySQL's executable comment: it is code, not a comment.
            if script.startswith("/*!", i):
                meaningful = True
            buf.append(script[i:end])
            i = end
        elif ch == ";":
            flush()
            i += 1
        else:
            if not ch.isspace():
                meaningful = True
            buf.append(ch)
            i += 1
    flush()
    return statements


def _quoted_end(script: str, start: int) -> int:
    quote = script[start]
    i, n = start + 1, len(script)
    while i < n:
        ch = script[i]
        if ch == "\\" and quote != "`":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and script[i + 1] == quote:  # doubled quote is an escaped quote
                i += 2
                continue
            return i + 1
        i += 1
    raise SqlSplitError(f"unterminated {quote} quote starting at offset {start}")


def _strip_leading_comments(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(("--", "#"))]
    return "\n".join(lines)

"""`${NAME}`, `${NAME:-default}`, `${file:PATH}` and `$${` in string values (SPEC 2.3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from triggerd.errors import SubstitutionError

_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


@dataclass(slots=True)
class Expansion:
    """The expanded text, a sentence for each variable or file that could not be found, and the
    values inserted from the environment or a file (the secrets to mask; a default written in
    the file is not one)."""

    text: str
    missing: list[str] = field(default_factory=list)
    inserted: list[str] = field(default_factory=list)


def has_substitution(text: str) -> bool:
    return "${" in text


def expand(text: str, env: Mapping[str, str], base_dir: Path) -> Expansion:
    """Expand every ${...} in text; raises SubstitutionError when one is malformed.

    Relative ${file:...} paths are read from base_dir. Missing variables and
    unreadable files are listed in Expansion.missing and expand to "".
    """
    out: list[str] = []
    missing: list[str] = []
    inserted: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("$${", i):
            out.append("${")
            i += 3
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            out.append(_resolve(text[i + 2 : end], env, base_dir, missing, inserted))
            i = end + 1
        else:
            nxt = text.find("$", i + 1)
            nxt = n if nxt == -1 else nxt
            out.append(text[i:nxt])
            i = nxt
    return Expansion("".join(out), list(dict.fromkeys(missing)), inserted)  # a name used twice is one problem


def _closing_brace(text: str, start: int) -> int:
    depth, j = 1, start + 2
    while j < len(text):
        if text.startswith("${", j):
            depth += 1
            j += 2
            continue
        if text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise SubstitutionError(f"unterminated '${{' in {text!r}")


def _resolve(expr: str, env: Mapping[str, str], base_dir: Path, missing: list[str], inserted: list[str]) -> str:
    if expr.startswith("file:"):
        # The path is not a secret (it is named in messages about the file); the content is.
        inner = expand(expr[5:], env, base_dir)
        if inner.missing:
            missing.extend(inner.missing)
            return ""
        path = base_dir / inner.text
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            missing.append(f"file {inner.text} cannot be read ({reason})")
            return ""
        content = content.removesuffix("\n").removesuffix("\r")
        inserted.append(content)
        return content
    match = _VARIABLE.fullmatch(expr)
    if match is None:
        raise SubstitutionError(
            f"invalid substitution '${{{expr}}}' (use ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}})"
        )
    name, default = match.group(1), match.group(2)
    value = env.get(name)
    if value is not None and (value != "" or default is None):
        inserted.append(value)
        return value
    if default is not None:
        inner = expand(default, env, base_dir)
        missing.extend(inner.missing)
        inserted.extend(inner.inserted)
        return inner.text
    missing.append(f"environment variable {name} is not set")
    return ""

"""YAML files -> JSON-like documents that remember the line and column of every node.

Scalars follow the YAML 1.2 core schema (what editors use): only true/false are
booleans, timestamps stay strings, keys are always the text as written. ${...}
substitution (SPEC 2.3) happens here, on string values, so that every later stage
sees final values and still knows where each came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import yaml

from triggerd.config.durations import parse_duration
from triggerd.config.problems import Mark, Problem, Severity, problem_at
from triggerd.config.substitution import expand, has_substitution
from triggerd.errors import DurationError, PathError, SubstitutionError
from triggerd.mapping import JsonPath, compile_path
from triggerd.masking import MIN_LENGTH, register

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STANDARD_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_START = Mark(1, 1)
_MAX_NODES = 200_000  # guards against alias bombs ("billion laughs")

_NULL = re.compile(r"~|null|Null|NULL|")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"([-+]?)\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


def resolve_plain(text: str) -> Any:
    """The value of a plain (unquoted) scalar under the YAML 1.2 core schema."""
    if _NULL.fullmatch(text):
        return None
    if _TRUE.fullmatch(text):
        return True
    if _FALSE.fullmatch(text):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    inf = _INF.fullmatch(text)
    if inf:
        return -math.inf if inf.group(1) == "-" else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def pointer_join(pointer: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{pointer}/{token}"


@dataclass(slots=True)
class Document:
    """One YAML document of a file, as plain data plus where each part came from."""

    file: str
    index: int
    value: Any
    marks: dict[str, Mark] = field(default_factory=dict)
    key_marks: dict[str, Mark] = field(default_factory=dict)
    substituted: dict[str, tuple[str, str]] = field(default_factory=dict)
    """pointer -> (the text ${...} substitution made, the text as written) for every substituted scalar."""
    problems: list[Problem] = field(default_factory=list)

    def mark(self, pointer: str, *, key: bool = False) -> Mark:
        """Where the value at pointer starts (or its key, with key=True); the nearest parent if absent."""
        if key and pointer in self.key_marks:
            return self.key_marks[pointer]
        while pointer not in self.marks and pointer:
            pointer = pointer.rsplit("/", 1)[0]
        return self.marks.get(pointer, Mark(1, 1))

    def problem(self, pointer: str, message: str, severity: Severity = Severity.ERROR, *, key: bool = False) -> Problem:
        """A problem at pointer; a substituted value it quotes is quoted as written (`${NAME}`)."""
        return problem_at(self.file, self.mark(pointer, key=key), self._as_written(pointer, message), pointer, severity)

    def shown(self, pointer: str, value: object) -> str:
        """How to quote the value at pointer in a message: as written, never a substituted secret."""
        if pointer in self.substituted:
            return repr(self.substituted[pointer][1])
        return repr(value)

    def _as_written(self, pointer: str, message: str) -> str:
        # SPEC 2.3: a problem about a substituted value names the ${NAME} it came from. The values
        # at pointer and below are the ones a message about pointer can quote; quoted forms are
        # replaced whatever their length, a bare value only from the masking floor up (a short
        # one, say "10", would match inside unrelated words). One pass, so that a value found
        # again inside its own replacement (${X:-10.0.0.300}) is left alone.
        written: dict[str, str] = {}
        for at, (text, source) in self.substituted.items():
            if text and (at == pointer or at.startswith(pointer + "/")):
                if len(text) >= MIN_LENGTH:
                    written.setdefault(text, source)
                for quote in ("'", '"'):
                    written[f"{quote}{text}{quote}"] = f"{quote}{source}{quote}"
                written[repr(text)] = repr(source)
        if not written:
            return message
        forms = sorted(written, key=len, reverse=True)
        return re.sub("|".join(map(re.escape, forms)), lambda m: written[m.group(0)], message)

    @property
    def has_errors(self) -> bool:
        return any(p.is_error for p in self.problems)

    def fail(self, pointer: str, message: str, *, key: bool = False) -> None:
        self.problems.append(self.problem(pointer, message, key=key))

    def warn(self, pointer: str, message: str, *, key: bool = False) -> None:
        self.problems.append(self.problem(pointer, message, Severity.WARNING, key=key))

    def duration(self, pointer: str, value: object) -> float:
        """A duration in seconds, or 0 with a problem recorded."""
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.fail(pointer, str(exc))
            return 0.0

    def networks(self, pointer: str, items: list[str]) -> tuple[IPv4Network | IPv6Network, ...]:
        """IP networks from addresses or CIDRs; each bad item is a problem at its own index."""
        found = []
        for i, text in enumerate(items):
            try:
                found.append(ip_network(text.strip(), strict=False))
            except ValueError:
                self.fail(f"{pointer}/{i}", f"{text!r} is not an IP address or CIDR network")
        return tuple(found)

    def jsonpath(self, pointer: str, text: str) -> JsonPath | None:
        """A compiled JSONPath, or None with a problem recorded."""
        try:
            return compile_path(text)
        except PathError as exc:
            self.fail(pointer, str(exc))
            return None


class _Converter:
    def __init__(self, doc: Document, env: Mapping[str, str], base_dir: Path, missing: Severity):
        self.doc = doc
        self.env = env
        self.base_dir = base_dir
        self.missing = missing
        self.nodes = 0

    def convert(self, node: yaml.Node, pointer: str, active: frozenset[int]) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise _TooLarge
        self.doc.marks[pointer] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
        if not node.tag.startswith(_STANDARD_TAG) and node.tag != "!":
            self.doc.problems.append(self.doc.problem(pointer, f"unsupported YAML tag {node.tag}"))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, pointer)
        if id(node) in active:
            self.doc.problems.append(self.doc.problem(pointer, "recursive YAML alias"))
            return None
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, pointer_join(pointer, i), active) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode)
        return self.mapping(node, pointer, active)

    def scalar(self, node: yaml.ScalarNode, pointer: str) -> Any:
        text: str = node.value
        plain = not node.style  # None from the pure loader, "" from libyaml
        if has_substitution(text):
            text = self.substitute(text, pointer)
        return resolve_plain(text) if plain else text

    def substitute(self, text: str, pointer: str) -> str:
        try:
            expansion = expand(text, self.env, self.base_dir)
        except SubstitutionError as exc:
            self.doc.problems.append(self.doc.problem(pointer, str(exc)))
            return text
        for value in expansion.inserted:
            register(value)
        if expansion.missing:
            for what in expansion.missing:
                self.doc.problems.append(self.doc.problem(pointer, what, self.missing))
            return text  # keep the reference itself so later checks see a placeholder
        if expansion.text != text:
            self.doc.substituted[pointer] = (expansion.text, text)
        return expansion.text

    def mapping(self, node: yaml.MappingNode, pointer: str, active: frozenset[int]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self.merge_source(value_node, pointer, active))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.problems.append(self.doc.problem(pointer, "mapping keys must be plain text"))
                continue
            key = key_node.value
            child = pointer_join(pointer, key)
            key_mark = Mark(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in first_seen:
                self.doc.problems.append(
                    problem_at(
                        self.doc.file,
                        key_mark,
                        f"duplicate key '{key}' (first at line {first_seen[key]})",
                        child,
                    )
                )
                continue
            first_seen[key] = key_mark.line
            self.doc.key_marks[child] = key_mark
            result[key] = self.convert(value_node, child, active)
        return {**merged, **result}

    def merge_source(self, node: yaml.Node, pointer: str, active: frozenset[int]) -> dict[str, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            value = self.convert(source, pointer, active)
            if isinstance(value, dict):
                merged.update(value)
            else:
                self.doc.problems.append(self.doc.problem(pointer, "a merge key '<<' needs a mapping"))
        return merged


class _TooLarge(Exception):
    pass


def _mistake(exc: yaml.MarkedYAMLError, text: str) -> Any:
    """Where a syntax error's mistake is. The parser reports where it gave up (problem_mark) and
    what it was inside of (context_mark). Inside a quote or a [ ] / { } that it ran through to the
    end of the file or onto a later line, the mistake is the opening that was never closed."""
    problem, context = exc.problem_mark, exc.context_mark
    if context is None or problem is None:
        return problem or context
    opening = (exc.context or "").startswith(("while scanning a quoted scalar", "while parsing a flow"))
    lines = text.split("\n")
    rest = lines[problem.line][problem.column :] if problem.line < len(lines) else ""
    at_end = not (rest + "".join(lines[problem.line + 1 :])).strip()
    if opening and (problem.line > context.line or at_end):
        return context
    return problem


def read_documents(
    path: Path,
    display: str,
    env: Mapping[str, str],
    *,
    missing: Severity = Severity.ERROR,
    data: bytes | None = None,
) -> tuple[list[Document], list[Problem]]:
    """Parse every YAML document of a file (its bytes as `data` when the caller has read them).

    Returns the documents (each with its own problems) and problems that concern
    the whole file (unreadable, not UTF-8, YAML syntax). A file with a syntax
    error yields no documents: it loads whole or not at all. `missing` is the
    severity of a variable or file that ${...} names but that does not exist.
    """

    def whole_file(message: str, mark: Mark = _START) -> tuple[list[Document], list[Problem]]:
        return [], [problem_at(display, mark, message)]

    try:
        text = (path.read_bytes() if data is None else data).decode("utf-8")
    except OSError as exc:
        return whole_file(f"cannot read file: {exc.strerror}")
    except UnicodeDecodeError as exc:
        raw = exc.object[: exc.start]
        where = Mark(raw.count(b"\n") + 1, exc.start - (raw.rfind(b"\n") + 1) + 1)
        return whole_file("file is not UTF-8 text", where)
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = _mistake(exc, text)
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        return whole_file(f"YAML syntax error: {detail}", where)
    except yaml.YAMLError as exc:
        return whole_file(f"YAML error: {exc}")
    documents = []
    for index, node in enumerate(nodes):
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            continue  # an empty document, e.g. a trailing '---'
        doc = Document(display, index, None)
        try:
            doc.value = _Converter(doc, env, path.parent, missing).convert(node, "", frozenset())
        except _TooLarge:
            return whole_file(f"document {index + 1} expands to more than {_MAX_NODES} nodes")
        except RecursionError:
            return whole_file(f"document {index + 1} is nested too deeply")
        documents.append(doc)
    return documents, []

"""Load a whole configuration: settings, every definition file, and the checks across files.

Two modes share one path. The daemon's (LoadMode.DAEMON) treats a missing ${VAR}
as an error that keeps that definition out; `triggerd validate` (LoadMode.VALIDATE)
reports it as a warning so CI can check files without production secrets.
A definition with errors never enters the Configuration; the others do.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from triggerd.config.agents import build_agent
from triggerd.config.documents import Document, read_documents
from triggerd.config.models import (
    AnthropicAgent,
    AnyAgent,
    CommandAgent,
    Configuration,
    HttpAgent,
    Settings,
    SourceDefinition,
    Tool,
    Trigger,
)
from triggerd.config.problems import Mark, Problem, Severity, problem_at, sort_key
from triggerd.config.schema import SchemaKind, schema_problems
from triggerd.config.settings import build_settings
from triggerd.config.sources import KNOWN_PRODUCERS, build_source
from triggerd.config.triggers import build_trigger, definition_id

SETTINGS_NAMES = frozenset({"triggerd.yaml", "triggerd.yml"})
_SUFFIXES = (".yaml", ".yml")


class LoadMode(Enum):
    DAEMON = "daemon"
    VALIDATE = "validate"


@dataclass(slots=True)
class LoadResult:
    """What loading produced: the configuration (None if the settings are unusable) and every problem."""

    configuration: Configuration | None
    problems: list[Problem] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    """Each definition file read, as named in problems, to the SHA-256 of its bytes ("" if unreadable)."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]


def display_path(path: Path, cwd: Path | None = None) -> str:
    """How a file is named in messages: relative to the working directory when below it."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(cwd or Path.cwd()))
    except ValueError:
        return str(path)


def load(
    settings_path: Path | None,
    *,
    paths: Sequence[Path] | None = None,
    mode: LoadMode = LoadMode.DAEMON,
    env: Mapping[str, str] | None = None,
) -> LoadResult:
    """Load settings (None: all defaults) and definitions.

    Without `paths` the definitions are those the settings name; with `paths`,
    exactly those files and directories (a triggerd.yaml among them is read as
    settings).
    """
    env = dict(os.environ) if env is None else env
    missing = Severity.ERROR if mode is LoadMode.DAEMON else Severity.WARNING
    problems: list[Problem] = []
    settings = _load_settings(settings_path, env, missing, problems)
    if settings is None:
        return LoadResult(None, sorted(problems, key=sort_key))
    if paths is None:
        files = _discover(settings, problems)
    else:
        files = []
        for path in _expand_paths(paths):
            if path.name in SETTINGS_NAMES:
                _load_settings(path, env, missing, problems)
            else:
                files.append(path)
    digests: dict[str, str] = {}
    triggers, agents, sources = _load_definitions(files, env, missing, problems, digests)
    configuration = Configuration(settings, triggers, agents, tuple(files), sources)
    return LoadResult(configuration, sorted(problems, key=sort_key), digests)


def _load_settings(
    path: Path | None, env: Mapping[str, str], missing: Severity, problems: list[Problem]
) -> Settings | None:
    if path is None:
        return build_settings(None, None, Path.cwd(), env)
    shown = display_path(path)
    documents, file_problems = read_documents(path, shown, env, missing=missing)
    problems.extend(file_problems)
    if file_problems:
        return None
    if len(documents) > 1:
        problems.append(documents[1].problem("", "a settings file holds a single YAML document"))
        return None
    doc = documents[0] if documents else None
    if doc is not None:
        doc.problems.extend(schema_problems(doc, SchemaKind.SETTINGS))
        if doc.has_errors:
            problems.extend(doc.problems)
            return None
    settings = build_settings(doc, path.resolve(), path.resolve().parent, env)
    if doc is not None:
        problems.extend(doc.problems)
        if doc.has_errors:
            return None
    return settings


def _expand_paths(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_yaml_files(path))
        else:
            files.append(path)
    return _unique(files)


def _yaml_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / n for n in sorted(names) if n.endswith(_SUFFIXES) and not n.startswith("."))
    return found


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: set[Path] = set()
    result = []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.append(path)
    return result


def _discover(settings: Settings, problems: list[Problem]) -> list[Path]:
    """Every definition file the settings name, never the settings file itself."""
    files: list[Path] = []
    for entry in settings.definitions:
        target = settings.base_dir / entry
        if glob.has_magic(entry):
            matches = sorted(Path(p) for p in glob.glob(str(target), recursive=True))
            files.extend(m for m in matches if m.is_file() and m.name.endswith(_SUFFIXES))
            files.extend(f for m in matches if m.is_dir() for f in _yaml_files(m))
            if not matches:
                problems.append(_settings_warning(settings, f"definitions pattern {entry!r} matches nothing"))
        elif target.is_dir():
            files.extend(_yaml_files(target))
        elif target.is_file():
            files.append(target)
        else:
            problems.append(_settings_warning(settings, f"definitions path {entry!r} does not exist"))
    settings_file = settings.path.resolve() if settings.path else None
    return [f for f in _unique(files) if f.resolve() != settings_file]


def _settings_warning(settings: Settings, message: str) -> Problem:
    shown = display_path(settings.path) if settings.path else "<defaults>"
    return problem_at(shown, Mark(1, 1), message, "/definitions", Severity.WARNING)


@dataclass(slots=True)
class _Loaded:
    """A definition document, its id, and its model (None when the document itself failed).

    `rejected` is set when a check across files fails on it. Either way it still takes part in
    the other checks across files, so that every problem is reported at once (SPEC 6), but it
    never enters the Configuration.
    """

    doc: Document
    kind: str
    id: str
    model: Any
    rejected: bool = False

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.doc.value[self.kind]
        return body

    @property
    def where(self) -> str:
        return f"{self.doc.file}:{self.doc.mark(f'/{self.kind}', key=True).line}"

    @property
    def loads(self) -> bool:
        return self.model is not None and not self.rejected


def _load_definitions(
    files: Sequence[Path],
    env: Mapping[str, str],
    missing: Severity,
    problems: list[Problem],
    digests: dict[str, str],
) -> tuple[dict[str, Trigger], dict[str, AnyAgent], dict[str, SourceDefinition]]:
    definitions: list[_Loaded] = []
    for path in files:
        shown = display_path(path)
        try:
            data: bytes | None = path.read_bytes()
        except OSError:
            data = None  # read_documents reports why
        digests[shown] = hashlib.sha256(data).hexdigest() if data is not None else ""
        documents, file_problems = read_documents(path, shown, env, missing=missing, data=data)
        problems.extend(file_problems)
        if not documents and not file_problems:
            problems.append(
                problem_at(shown, Mark(1, 1), "no trigger, agent or source in this file", "", Severity.WARNING)
            )
        for doc in documents:
            loaded = _build(doc, path.stem)
            problems.extend(doc.problems)
            if loaded is not None and loaded.id:
                definitions.append(loaded)
    agents = [item for item in definitions if item.kind == "agent"]
    triggers = [item for item in definitions if item.kind == "trigger"]
    sources = [item for item in definitions if item.kind == "source"]
    _unique_ids(agents, problems)
    _unique_ids(triggers, problems)
    _unique_ids(sources, problems)
    _resolve_tools(agents, problems)
    _known_agents(triggers, agents, problems)
    _unique_endpoints(triggers, problems)
    _known_sources(triggers, sources, problems)
    return (
        {item.id: item.model for item in triggers if item.loads},
        {item.id: item.model for item in agents if item.loads},
        {item.id: item.model for item in sources if item.loads},
    )


_KINDS: dict[str, Callable[[Document, str], Any]] = {
    "trigger": build_trigger,
    "agent": build_agent,
    "source": build_source,
}


def _build(doc: Document, stem: str) -> _Loaded | None:
    value = doc.value
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _KINDS:
        found = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
        doc.fail(
            "",
            "a definition document has exactly one top-level key, 'trigger', 'agent' or 'source' "
            f"(found: {found or 'nothing'})",
        )
        return None
    kind = next(iter(value))
    doc.problems.extend(schema_problems(doc, SchemaKind(kind)))
    body = value[kind]
    if not isinstance(body, dict) or not isinstance(body.get("id", ""), str):
        return None
    ident = definition_id(doc, kind, stem)
    if doc.has_errors:
        _checks_beside_schema_errors(doc, kind, ident)
        return _Loaded(doc, kind, ident, None)
    try:
        model = _KINDS[kind](doc, ident)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # The schema should make this impossible; a bad file must still never crash the loader.
        doc.fail("", f"cannot load this {kind}: {exc.__class__.__name__}: {exc}")
        model = None
    return _Loaded(doc, kind, ident, model)


def _checks_beside_schema_errors(doc: Document, kind: str, ident: str) -> None:
    """Run the per-field checks (cron, time zone, regex, JSONPath, durations...) of a definition the
    schema refused, so that one mistake does not hide another (SPEC 6: all problems at once).

    The definition never loads. A check that cannot read its field stays quiet (the schema has
    already said why), and a problem at or below a place the schema already named is dropped.
    """
    named = [p.pointer for p in doc.problems if p.is_error]
    before = len(doc.problems)
    with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError, IndexError):
        _KINDS[kind](doc, ident)
    found = doc.problems[before:]
    del doc.problems[before:]
    doc.problems.extend(p for p in found if not any(p.pointer == n or p.pointer.startswith(n + "/") for n in named))


def _unique_ids(items: list[_Loaded], problems: list[Problem]) -> None:
    """The first definition of an id keeps it, loaded or not; a later one is rejected."""
    first: dict[str, _Loaded] = {}
    for item in items:
        if item.id not in first:
            first[item.id] = item
            continue
        kind = item.kind
        pointer = f"/{kind}/id" if "id" in item.body else f"/{kind}"
        message = f"duplicate {kind} id '{item.id}' (also defined at {first[item.id].where})"
        problems.append(item.doc.problem(pointer, message, key=pointer == f"/{kind}"))
        item.rejected = True


def _known_agents(triggers: list[_Loaded], agents: list[_Loaded], problems: list[Problem]) -> None:
    """Every trigger that names an agent, loaded or not, names one that loads."""
    by_id: dict[str, _Loaded] = {}
    for each in agents:
        by_id.setdefault(each.id, each)
    for item in triggers:
        call = item.body.get("agent")
        agent_id = call.get("id") if isinstance(call, dict) else None
        if not isinstance(agent_id, str):
            continue  # the schema has already reported it
        agent = by_id.get(agent_id)
        if agent is not None and agent.loads:
            continue
        if agent is not None:
            message = f"agent '{agent_id}' failed to load ({agent.where})"
        else:
            hint = difflib.get_close_matches(agent_id, list(by_id), n=1)
            message = f"unknown agent '{agent_id}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
        problems.append(item.doc.problem("/trigger/agent/id", message))
        item.rejected = True


def _resolve_tools(agents: list[_Loaded], problems: list[Problem]) -> None:
    """Every tool of an anthropic agent names a command or http agent that loads (SPEC 5.1); the
    agent's model then holds those definitions, and its fingerprint covers theirs, so that a
    changed tool agent replaces the caller's backend too.

    Tools are never anthropic agents, so the tool-use loop never nests and a cycle of agents
    calling each other cannot be written; one is still named as a cycle, that being the mistake.
    """
    by_id: dict[str, _Loaded] = {}
    for each in agents:
        by_id.setdefault(each.id, each)
    for item in agents:
        model = item.model
        if not isinstance(model, AnthropicAgent) or not model.tools or item.rejected:
            continue
        resolved: list[Tool] = []
        for index, tool in enumerate(model.tools):
            message = _tool_problem(item.id, tool.name, by_id)
            if message is not None:
                problems.append(item.doc.problem(f"/agent/tools/{index}/agent", message))
                item.rejected = True
                continue
            target = by_id[tool.name].model
            assert isinstance(target, (CommandAgent, HttpAgent))
            resolved.append(replace(tool, agent=target))
        if not item.rejected:
            digest = hashlib.sha256(model.fingerprint.encode())
            for tool in resolved:
                assert tool.agent is not None
                digest.update(tool.agent.fingerprint.encode())
            item.model = replace(model, tools=tuple(resolved), fingerprint=digest.hexdigest())


def _tool_problem(caller: str, name: str, by_id: Mapping[str, _Loaded]) -> str | None:
    """Why agent `caller` cannot have agent `name` as a tool, or None when it can."""
    target = by_id.get(name)
    if target is None:
        hint = difflib.get_close_matches(name, list(by_id), n=1)
        return f"tool names unknown agent '{name}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
    if target.body.get("type") == "anthropic":
        path = _tool_path(name, caller, by_id, [caller, name])
        if path is not None:
            return f"tools form a cycle: {' -> '.join(path)}; a tool is a command or http agent"
        return f"tool '{name}' is an anthropic agent; a tool is a command or http agent"
    if not target.loads:
        return f"tool agent '{name}' failed to load ({target.where})"
    return None


def _tool_path(start: str, goal: str, by_id: Mapping[str, _Loaded], path: list[str]) -> list[str] | None:
    """A chain of tools from `start` that reaches `goal` (the agents named so far in `path`), if any."""
    if start == goal:
        return path
    tools = by_id[start].body.get("tools") if start in by_id else None
    for tool in tools if isinstance(tools, list) else []:
        name = tool.get("agent") if isinstance(tool, dict) else None
        if isinstance(name, str) and name not in path[1:]:
            found = _tool_path(name, goal, by_id, [*path, name])
            if found is not None:
                return found
    return None


def _unique_endpoints(triggers: list[_Loaded], problems: list[Problem]) -> None:
    """No two webhook triggers, loaded or not, share a method and endpoint (a trailing / aside)."""
    routes: dict[tuple[str, str], _Loaded] = {}
    for item in triggers:
        webhook = item.body.get("webhook")
        if item.body.get("type") != "webhook" or not isinstance(webhook, dict):
            continue
        endpoint, method = webhook.get("endpoint", f"/webhooks/{item.id}"), webhook.get("method", "POST")
        if not isinstance(endpoint, str) or not isinstance(method, str):
            continue  # the schema has already reported it
        route = (method, endpoint.rstrip("/") or "/")
        other = routes.setdefault(route, item)
        if other is item:
            continue
        pointer = "/trigger/webhook/endpoint" if "endpoint" in webhook else "/trigger/webhook"
        message = f"{method} {endpoint} is already the endpoint of trigger '{other.id}' ({other.where})"
        problems.append(item.doc.problem(pointer, message))
        item.rejected = True


def _known_sources(triggers: list[_Loaded], sources: list[_Loaded], problems: list[Problem]) -> None:
    """A warning for an event trigger's event.source that no source or known producer could give:
    a typo there would make the trigger silently never fire. Globs and /regex/ are left alone."""
    known = {item.id for item in sources} | set(KNOWN_PRODUCERS)
    for item in triggers:
        event = item.body.get("event")
        names = event.get("source") if isinstance(event, dict) else None
        for index, name in enumerate(names if isinstance(names, list) else [names]):
            if not isinstance(name, str) or name in known or any(c in name for c in "*?[/"):
                continue
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            pointer = f"/trigger/event/source/{index}" if isinstance(names, list) else "/trigger/event/source"
            message = (
                f"event.source '{name}' names no source and no producer triggerd knows ({', '.join(KNOWN_PRODUCERS)})"
            )
            problems.append(
                item.doc.problem(pointer, message + (f"; did you mean '{hint[0]}'?" if hint else ""), Severity.WARNING)
            )

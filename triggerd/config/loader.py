"""Load a whole configuration: settings, every definition file, and the checks across files.

Two modes share one path. The daemon's (LoadMode.DAEMON) treats a missing ${VAR}
as an error that keeps that definition out; `triggerd validate` (LoadMode.VALIDATE)
reports it as a warning so CI can check files without production secrets.
A definition with errors never enters the Configuration; the others do.
"""

from __future__ import annotations

import difflib
import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from triggerd.config.agents import build_agent
from triggerd.config.documents import Document, read_documents
from triggerd.config.models import AnyAgent, Configuration, Settings, Trigger, TriggerType
from triggerd.config.problems import Mark, Problem, Severity, problem_at, sort_key
from triggerd.config.schema import SchemaKind, schema_problems
from triggerd.config.settings import build_settings
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
    triggers, agents = _load_definitions(files, env, missing, problems)
    configuration = Configuration(settings, triggers, agents, tuple(files))
    return LoadResult(configuration, sorted(problems, key=sort_key))


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
    """A built definition and the document it came from (for locating problems)."""

    doc: Document
    id: str
    model: Any


def _load_definitions(
    files: Sequence[Path], env: Mapping[str, str], missing: Severity, problems: list[Problem]
) -> tuple[dict[str, Trigger], dict[str, AnyAgent]]:
    triggers: list[_Loaded] = []
    agents: list[_Loaded] = []
    failed_agents: dict[str, Document] = {}
    for path in files:
        documents, file_problems = read_documents(path, display_path(path), env, missing=missing)
        problems.extend(file_problems)
        if not documents and not file_problems:
            problems.append(
                problem_at(display_path(path), Mark(1, 1), "no trigger or agent in this file", "", Severity.WARNING)
            )
        for doc in documents:
            loaded = _build(doc, path.stem)
            problems.extend(doc.problems)
            if loaded is None:
                continue
            kind = "trigger" if "trigger" in doc.value else "agent"
            if loaded.model is None:
                if kind == "agent" and loaded.id:
                    failed_agents.setdefault(loaded.id, doc)
                continue
            (triggers if kind == "trigger" else agents).append(loaded)
    agent_map = {item.id: item.model for item in _unique_ids(agents, "agent", problems)}
    trigger_list = _unique_ids(triggers, "trigger", problems)
    trigger_list = _known_agents(trigger_list, agent_map, failed_agents, problems)
    trigger_list = _unique_endpoints(trigger_list, problems)
    return {item.id: item.model for item in trigger_list}, agent_map


def _build(doc: Document, stem: str) -> _Loaded | None:
    value = doc.value
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("trigger", "agent"):
        found = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
        doc.fail(
            "",
            f"a definition document has exactly one top-level key, 'trigger' or 'agent' (found: {found or 'nothing'})",
        )
        return None
    kind = next(iter(value))
    doc.problems.extend(schema_problems(doc, SchemaKind.TRIGGER if kind == "trigger" else SchemaKind.AGENT))
    body = value[kind]
    if not isinstance(body, dict) or not isinstance(body.get("id", ""), str):
        return _Loaded(doc, "", None)
    ident = definition_id(doc, kind, stem)
    if doc.has_errors:
        return _Loaded(doc, ident, None)
    try:
        model = build_trigger(doc, ident) if kind == "trigger" else build_agent(doc, ident)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # The schema should make this impossible; a bad file must still never crash the loader.
        doc.fail("", f"cannot load this {kind}: {exc.__class__.__name__}: {exc}")
        model = None
    return _Loaded(doc, ident, model)


def _unique_ids(items: list[_Loaded], kind: str, problems: list[Problem]) -> list[_Loaded]:
    first: dict[str, _Loaded] = {}
    kept = []
    for item in items:
        if item.id in first:
            origin = first[item.id].model.origin
            pointer = f"/{kind}/id" if "id" in item.doc.value[kind] else f"/{kind}"
            problems.append(
                item.doc.problem(
                    pointer,
                    f"duplicate {kind} id '{item.id}' (also defined at {origin})",
                    key=pointer == f"/{kind}",
                )
            )
            continue
        first[item.id] = item
        kept.append(item)
    return kept


def _known_agents(
    items: list[_Loaded],
    agents: Mapping[str, AnyAgent],
    failed: Mapping[str, Document],
    problems: list[Problem],
) -> list[_Loaded]:
    kept = []
    for item in items:
        agent_id = item.model.agent.id
        if agent_id in agents:
            kept.append(item)
            continue
        if agent_id in failed:
            mark = failed[agent_id].mark("/agent", key=True)
            message = f"agent '{agent_id}' failed to load ({failed[agent_id].file}:{mark.line})"
        else:
            hint = difflib.get_close_matches(agent_id, list(agents), n=1)
            message = f"unknown agent '{agent_id}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
        problems.append(item.doc.problem("/trigger/agent/id", message))
    return kept


def _unique_endpoints(items: list[_Loaded], problems: list[Problem]) -> list[_Loaded]:
    routes: dict[tuple[str, str], Trigger] = {}
    kept = []
    for item in items:
        trigger: Trigger = item.model
        if trigger.type is TriggerType.WEBHOOK and trigger.webhook is not None:
            route = (trigger.webhook.method, trigger.webhook.endpoint.rstrip("/") or "/")
            if route in routes:
                other = routes[route]
                pointer = "/trigger/webhook/endpoint"
                if "endpoint" not in item.doc.value["trigger"]["webhook"]:
                    pointer = "/trigger/webhook"
                problems.append(
                    item.doc.problem(
                        pointer,
                        f"{route[0]} {trigger.webhook.endpoint} is already the endpoint of trigger "
                        f"'{other.id}' ({other.origin})",
                    )
                )
                continue
            routes[route] = trigger
        kept.append(item)
    return kept

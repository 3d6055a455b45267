"""The `triggerd` command line (SPEC 6): parse arguments, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from triggerd import __version__
from triggerd.config.loader import LoadMode, LoadResult, load
from triggerd.config.models import Configuration, Trigger, TriggerType
from triggerd.config.problems import Problem, format_github, format_json, format_text
from triggerd.config.schema import SchemaKind, schema_text
from triggerd.config.settings import default_settings_path

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that names something that is not there; exits 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triggerd", description="Declarative trigger daemon.")
    parser.add_argument("--version", action="version", version=f"triggerd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check settings and definition files")
    validate.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="files or directories (default: the settings file and its definitions)",
    )
    validate.add_argument("--config", type=Path, help="settings file")
    validate.add_argument("--format", choices=["text", "json", "github"], default="text")
    validate.add_argument(
        "--strict", action="store_true", help="treat warnings (missing variables included) as errors"
    )

    schema = commands.add_parser("schema", help="print a JSON Schema")
    schema.add_argument(
        "kind",
        nargs="?",
        choices=[k.value for k in SchemaKind],
        help="which schema (default: all three in one JSON object)",
    )

    listing = commands.add_parser("list", help="list the configured triggers")
    listing.add_argument("--config", type=Path, help="settings file")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args)
        if args.command == "schema":
            return _schema(args)
        return _list(args)
    except UsageError as exc:
        print(f"triggerd {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _settings_path(explicit: Path | None) -> Path:
    path = explicit if explicit is not None else default_settings_path(Path.cwd())
    if not path.is_file():
        raise UsageError(f"no settings file at {path} (use --config PATH)")
    return path


def _validate(args: argparse.Namespace) -> int:
    if args.paths:
        for path in args.paths:
            if not path.exists():
                raise UsageError(f"no such file or directory: {path}")
        settings = _settings_path(args.config) if args.config is not None else None
        result = load(settings, paths=args.paths, mode=LoadMode.VALIDATE)
    else:
        result = load(_settings_path(args.config), mode=LoadMode.VALIDATE)
    problems = [p.escalated() for p in result.problems] if args.strict else result.problems
    formatter = {"text": format_text, "json": format_json, "github": format_github}[args.format]
    sys.stdout.write(formatter(problems))
    errors = sum(p.is_error for p in problems)
    if args.format == "text":
        files = len(result.configuration.files) if result.configuration else 0
        print(
            f"{errors} error(s), {len(problems) - errors} warning(s) in {files} definition file(s)",
            file=sys.stderr,
        )
    return EXIT_INVALID if errors else EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    if args.kind:
        sys.stdout.write(schema_text(SchemaKind(args.kind)))
    else:
        combined = {k.value: json.loads(schema_text(k)) for k in SchemaKind}
        print(json.dumps(combined, indent=2))
    return EXIT_OK


def _report(result: LoadResult) -> None:
    for problem in result.problems:
        print(problem, file=sys.stderr)


def _loaded(explicit: Path | None) -> tuple[Configuration | None, list[Problem], LoadResult]:
    path = explicit if explicit is not None else default_settings_path(Path.cwd())
    if explicit is not None and not path.is_file():
        raise UsageError(f"no settings file at {path}")
    result = load(path if path.is_file() else None, mode=LoadMode.DAEMON)
    _report(result)
    return result.configuration, result.errors, result


def _fires_on(trigger: Trigger) -> str:
    if trigger.type is TriggerType.SCHEDULE and trigger.schedule:
        return f"{trigger.schedule.cron} ({trigger.schedule.timezone})"
    if trigger.type is TriggerType.WEBHOOK and trigger.webhook:
        return f"{trigger.webhook.method} {trigger.webhook.endpoint}"
    if trigger.event:
        return trigger.event.pattern
    return ""


def _list(args: argparse.Namespace) -> int:
    configuration, errors, _ = _loaded(args.config)
    if configuration is None:
        return EXIT_INVALID
    rows: list[dict[str, Any]] = [
        {"id": t.id, "type": str(t.type), "enabled": t.enabled, "agent": t.agent.id, "on": _fires_on(t)}
        for t in sorted(configuration.triggers.values(), key=lambda t: t.id)
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        header = {"id": "ID", "type": "TYPE", "enabled": "ENABLED", "agent": "AGENT", "on": "FIRES ON"}
        table = [header, *({**r, "enabled": "yes" if r["enabled"] else "no"} for r in rows)]
        widths = {k: max(len(str(r[k])) for r in table) for k in header}
        for row in table:
            print("  ".join(str(row[k]).ljust(widths[k]) for k in header).rstrip())
    return EXIT_INVALID if errors else EXIT_OK

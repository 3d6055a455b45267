"""The `triggerd` command line (SPEC 6): parse arguments, call the library, print."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from triggerd import __version__
from triggerd.client import AdminClient, ClientError
from triggerd.clock import isoformat
from triggerd.conditions import SEVERITIES
from triggerd.config.loader import LoadMode, LoadResult, load
from triggerd.config.models import Configuration, Trigger, TriggerType
from triggerd.config.problems import format_github, format_json, format_text
from triggerd.config.schema import SchemaKind, schema_text
from triggerd.config.settings import LOCAL_SETTINGS, SYSTEM_SETTINGS, default_settings_path
from triggerd.runs import FlowKeys, RunStatus
from triggerd.sources.brokers.abc import target

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
FLOW_QUERY_SECONDS = 3.0  # `test` asks a running daemon for its counts; none answering is no error


class UsageError(Exception):
    """A command line that names something that is not there; exits 2."""


_CONFIG_HELP = f"settings file (default: {LOCAL_SETTINGS} in the working directory, else {SYSTEM_SETTINGS})"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in an epilog as written and ends each option's help with its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or "(default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0 and action.default is False:  # a flag
            return f"{text} (default: off)"
        if action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def _examples(*lines: str) -> str:
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triggerd",
        description="Declarative trigger daemon.",
        formatter_class=_Formatter,
        epilog=_examples("triggerd validate", "triggerd run --config /etc/triggerd/triggerd.yaml"),
    )
    parser.add_argument("--version", action="version", version=f"triggerd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=help_text, formatter_class=_Formatter, epilog=_examples(*examples)
        )

    def config(sub: argparse.ArgumentParser, help_text: str = _CONFIG_HELP) -> None:
        sub.add_argument("--config", type=Path, metavar="PATH", help=help_text)

    def definitions(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "paths",
            nargs="*",
            type=Path,
            metavar="PATH",
            help="definition files or folders to read instead of the settings' definitions "
            "(default: the settings file and its definitions)",
        )

    validate = command(
        "validate",
        "check settings and definition files",
        "triggerd validate",
        "triggerd validate examples/github-pr-review --strict --format github",
    )
    definitions(validate)
    config(validate)
    validate.add_argument("--format", choices=["text", "json", "github"], default="text", help="how to print problems")
    validate.add_argument("--strict", action="store_true", help="treat warnings (missing variables included) as errors")

    schema = command("schema", "print a JSON Schema", "triggerd schema trigger > trigger.schema.json")
    schema.add_argument(
        "kind",
        nargs="?",
        choices=[k.value for k in SchemaKind],
        help="which schema (default: all of them in one JSON object keyed by kind)",
    )

    listing = command("list", "list the configured triggers", "triggerd list --format json")
    config(listing)
    listing.add_argument("--format", choices=["text", "json"], default="text", help="a table or JSON")

    upcoming = command(
        "next",
        "the next slots of a schedule trigger",
        "triggerd next daily-sales-report examples/daily-report -n 3",
        "triggerd next nightly --after 2026-03-07T12:00:00Z --format json",
    )
    upcoming.add_argument("trigger_id", metavar="TRIGGER_ID", help="id of a schedule trigger")
    definitions(upcoming)
    upcoming.add_argument("-n", type=int, default=5, help="how many slots")
    upcoming.add_argument("--after", help="RFC 3339 instant to start after (default: now)")
    upcoming.add_argument("--format", choices=["text", "json"], default="text", help="a table or JSON")
    config(upcoming)

    trial = command(
        "test",
        "try a webhook trigger on a sample request, or an event trigger on sample events, offline",
        "triggerd test github-pr-review examples/github-pr-review --payload examples/github-pr-review/payload.json "
        '--header "X-GitHub-Event: pull_request"',
        "triggerd test error-analysis examples/error-analyzer --event examples/error-analyzer/events.json",
        "triggerd test run-task examples/queue-worker --message examples/queue-worker/task.json --source tasks",
    )
    trial.add_argument("trigger_id", metavar="TRIGGER_ID", help="id of a webhook or event trigger")
    definitions(trial)
    trial.add_argument("--payload", type=Path, metavar="FILE", help="file holding the request body (default: empty)")
    trial.add_argument(
        "--event",
        type=Path,
        metavar="FILE",
        help="file holding a sample event, or a JSON list of events, for an event trigger (default: none)",
    )
    trial.add_argument(
        "--message",
        type=Path,
        metavar="FILE",
        help="file holding a broker message's body, tried through the source named by --source (SPEC 5.4)",
    )
    trial.add_argument("--source", metavar="ID", help="the source that delivers the --message")
    trial.add_argument(
        "--header",
        action="append",
        default=[],
        metavar='"K: V"',
        help="a request header, or a --message header; repeat for more",
    )
    trial.add_argument("--query", action="append", default=[], metavar="K=V", help="a query parameter; repeat for more")
    trial.add_argument(
        "--verify", action="store_true", help="check the authentication too (the secrets must be set, as for run)"
    )
    config(trial)

    run = command("run", "run the daemon", "triggerd run", "triggerd run --config /etc/triggerd/triggerd.yaml")
    config(run)

    def remote(name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
        sub = command(name, help_text, *examples)
        config(sub, f"settings file, to find the daemon (default: {LOCAL_SETTINGS}, else {SYSTEM_SETTINGS}, if any)")
        sub.add_argument(
            "--url",
            help="admin API base URL (default: TRIGGERD_URL, else the settings' address, else http://127.0.0.1:8080)",
        )
        sub.add_argument("--token", help="admin token (default: TRIGGERD_TOKEN, else the settings' first token)")
        return sub

    fire = remote(
        "fire", "fire a trigger by hand", 'triggerd fire daily-sales-report --input \'{"report_type": "weekly"}\''
    )
    fire.add_argument("trigger_id", metavar="TRIGGER_ID", help="id of any trigger, even a disabled one")
    fire.add_argument(
        "--input", type=_json_object, default={}, help="JSON object merged over the trigger's static input"
    )
    emit = remote(
        "emit",
        "send an event to the daemon's event bus",
        'triggerd emit error.db --source system --severity high --data \'{"service": "api"}\'',
    )
    emit.add_argument("type", metavar="TYPE", help="the event type, e.g. error.db")
    emit.add_argument("--source", default="cli", help="the event's source")
    emit.add_argument("--severity", help=f"one of {', '.join(SEVERITIES)} (default: none)")
    emit.add_argument("--data", type=_json_value, default={}, help="the event's data, as JSON")
    runs = remote("runs", "list runs", "triggerd runs --trigger github-pr-review --status failed --limit 5")
    runs.add_argument("--trigger", metavar="ID", help="only the runs of this trigger (default: every trigger)")
    runs.add_argument("--status", choices=[s.value for s in RunStatus], help="only runs in this state (default: any)")
    runs.add_argument("--limit", type=int, default=20, help="at most this many, newest first")
    runs.add_argument("--format", choices=["text", "json"], default="text", help="a table or JSON")
    for name, help_text in (
        ("pause", "pause a trigger: it fires nothing until resumed (the state is stored)"),
        ("resume", "resume a paused trigger"),
    ):
        sub = remote(name, help_text, f"triggerd {name} github-pr-review")
        sub.add_argument("trigger_id", metavar="TRIGGER_ID", help="the trigger's id, as `triggerd list` shows it")
    for name, help_text in (("show", "show a run"), ("cancel", "cancel a run"), ("replay", "replay a run")):
        sub = remote(name, help_text, f"triggerd {name} 01m8npg0f4fmxj750wz0b62qep")
        sub.add_argument("run_id", metavar="RUN_ID", help="the run's id, as `triggerd runs` shows it")
        if name == "show":
            sub.add_argument(
                "--format",
                choices=["text", "json"],
                default="text",
                help="text: the record, then its tool calls as a transcript; json: the whole record",
            )
    return parser


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes a command's positionals in one run, so paths after an option come back
    # unrecognized (`test ID --payload F examples/x`); they are paths all the same.
    if extra and isinstance(getattr(args, "paths", None), list) and not any(e.startswith("-") for e in extra):
        args.paths.extend(Path(e) for e in extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    commands = {"validate": _validate, "schema": _schema, "list": _list, "run": _run, "test": _test, "next": _next}
    try:
        if args.command in commands:
            return commands[args.command](args)
        return _remote(args)
    except UsageError as exc:
        print(f"triggerd {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as exc:
        print(f"triggerd {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID


def _settings_file(explicit: Path | None) -> Path:
    """The settings file `run`, `validate`, `list`, `next` and `test` read (SPEC 2.1).

    Never the built-in defaults: they would read (and the daemon would watch) whatever folder the
    command was started in.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"no settings file at {explicit} (use --config PATH)")
        return explicit
    path = default_settings_path(Path.cwd())
    if not path.is_file():
        raise UsageError(
            f"no settings file: neither {LOCAL_SETTINGS} (in the working directory) nor {SYSTEM_SETTINGS} "
            "exists (use --config PATH)"
        )
    return path


def _load(args: argparse.Namespace, mode: LoadMode) -> LoadResult:
    """The definitions named on the command line (with --config's settings, if given), else the settings'."""
    if not args.paths:
        return load(_settings_file(args.config), mode=mode)
    for path in args.paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
    settings = _settings_file(args.config) if args.config is not None else None
    return load(settings, paths=args.paths, mode=mode)


def _validate(args: argparse.Namespace) -> int:
    result = _load(args, LoadMode.VALIDATE)
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


def _fires_on(trigger: Trigger) -> str:
    if trigger.type is TriggerType.SCHEDULE and trigger.schedule:
        return f"{trigger.schedule.cron} ({trigger.schedule.timezone})"
    if trigger.type is TriggerType.WEBHOOK and trigger.webhook:
        return f"{trigger.webhook.method} {trigger.webhook.endpoint}"
    if trigger.event:
        return trigger.event.pattern
    return ""


def _list(args: argparse.Namespace) -> int:
    result = load(_settings_file(args.config), mode=LoadMode.DAEMON)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    configuration = result.configuration
    if configuration is None:
        return EXIT_INVALID
    rows: list[dict[str, Any]] = [
        {"id": t.id, "type": str(t.type), "enabled": t.enabled, "agent": t.agent.id, "on": _fires_on(t)}
        for t in sorted(configuration.triggers.values(), key=lambda t: t.id)
    ]
    sources: list[dict[str, Any]] = [
        {"id": s.id, "kind": "source", "type": s.type, "enabled": s.enabled, "target": target(s)}
        for s in sorted(configuration.sources.values(), key=lambda s: s.id)
    ]
    if args.format == "json":
        print(json.dumps(rows + sources, indent=2))
    else:
        _table({"id": "ID", "type": "TYPE", "enabled": "ENABLED", "agent": "AGENT", "on": "FIRES ON"}, rows)
        if sources:
            print()
            _table({"id": "SOURCE", "type": "TYPE", "enabled": "ENABLED", "target": "CONSUMES"}, sources)
    return EXIT_INVALID if result.errors else EXIT_OK


def _table(header: dict[str, str], rows: list[dict[str, Any]]) -> None:
    table = [header, *({**r, "enabled": "yes" if r["enabled"] else "no"} for r in rows)]
    widths = {k: max(len(str(r[k])) for r in table) for k in header}
    for row in table:
        print("  ".join(str(row[k]).ljust(widths[k]) for k in header).rstrip())


def _next(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from triggerd.clock import parse_instant
    from triggerd.sources.schedule import cron_of, fire_time
    from triggerd.sources.slots import next_slots

    if args.n < 1:
        raise UsageError("-n takes a whole number of at least 1")
    try:
        after = parse_instant(args.after) if args.after else datetime.now(UTC)
    except ValueError:
        raise UsageError(f"--after takes an RFC 3339 instant with an offset, not {args.after!r}") from None
    result = _load(args, LoadMode.VALIDATE)
    trigger = result.configuration.triggers.get(args.trigger_id) if result.configuration else None
    if trigger is None:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        raise UsageError(f"no trigger '{args.trigger_id}' is loaded")
    if trigger.schedule is None:
        raise UsageError(f"trigger '{trigger.id}' is a {trigger.type} trigger; `next` takes schedule triggers")
    cron = cron_of(trigger)
    rows = [
        {
            "nominal": isoformat(slot),
            "fire_at": isoformat(fire_time(trigger, cron, slot)),
            "local": slot.astimezone(cron.zone).isoformat(),
        }
        for slot in next_slots(cron, after, args.n)
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'NOMINAL':<26}{'FIRE AT':<26}LOCAL ({trigger.schedule.timezone})")
        for row in rows:
            print(f"{row['nominal']:<26}{row['fire_at']:<26}{row['local']}")
    return EXIT_OK


def _test(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from triggerd.dryrun import own_problems, try_event, try_webhook

    headers = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header takes 'Name: value', not {item!r}")
        headers.append((name.strip(), value.strip()))
    query = []
    for item in args.query:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--query takes 'name=value', not {item!r}")
        query.append((name, value))
    if args.payload is not None and not args.payload.is_file():
        raise UsageError(f"no such file: {args.payload}")
    # --verify needs the real secrets: load like the daemon, where a missing one is an error.
    result = _load(args, LoadMode.DAEMON if args.verify else LoadMode.VALIDATE)
    configuration = result.configuration
    trigger = configuration.triggers.get(args.trigger_id) if configuration else None
    if configuration is None or trigger is None:
        for problem in result.problems:  # one of them may say why the trigger did not load
            print(problem, file=sys.stderr)
        raise UsageError(f"no trigger '{args.trigger_id}' is loaded")
    for problem in own_problems(result.problems, trigger.origin, configuration.agents[trigger.agent.id].origin):
        print(problem, file=sys.stderr)
    if trigger.type not in (TriggerType.WEBHOOK, TriggerType.EVENT):
        raise UsageError(f"trigger '{trigger.id}' is a {trigger.type} trigger; `test` takes webhook and event triggers")
    if args.message is not None or args.source is not None:
        return _test_message(args, configuration, trigger, headers)
    samples = {"--payload": args.payload, "--header": args.header, "--query": args.query, "--event": args.event}
    wrong = [
        flag for flag, given in samples.items() if given and (flag == "--event") != (trigger.type is TriggerType.EVENT)
    ]
    if wrong:
        raise UsageError(f"{wrong[0]} does not apply to {trigger.type} trigger '{trigger.id}'")
    if trigger.type is TriggerType.EVENT:
        if args.event is None or not args.event.is_file():
            raise UsageError(f"trigger '{trigger.id}' is an event trigger: give a sample with --event FILE")
        try:
            sample = json.loads(args.event.read_text())
        except ValueError as exc:
            raise UsageError(f"{args.event} is not JSON: {exc}") from None
        trial = try_event(configuration, trigger, sample, datetime.now(UTC))
        print("\n".join(trial.lines))
        _flow_now(configuration, trigger, trial.keys)
        return EXIT_OK if trial.accepted else EXIT_INVALID
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "application/json")
    body = args.payload.read_bytes() if args.payload is not None else b""
    trial = try_webhook(
        configuration,
        trigger,
        body=body,
        content_type=content_type.split(";")[0].strip(),
        headers=[(k, v) for k, v in headers if k.lower() != "content-type"],
        query=query,
        verify=args.verify,
        now=datetime.now(UTC),
    )
    print("\n".join(trial.lines))
    _flow_now(configuration, trigger, trial.keys)
    return EXIT_OK if trial.accepted else EXIT_INVALID


def _flow_now(configuration: Configuration, trigger: Trigger, keys: FlowKeys | None) -> None:
    """Ask a running daemon (found as `fire` finds it) whether the sample would be paused, over
    budget, debounced or throttled now (SPEC 12); say so when none answers."""
    from datetime import UTC, datetime

    from triggerd.flow_trial import group_query, verdicts

    if keys is None:
        return
    client = replace(AdminClient.locate(configuration.settings, None, None), timeout=FLOW_QUERY_SECONDS)
    try:
        described = client.request("GET", f"/v1/triggers/{client.quoted(trigger.id)}", query=group_query(keys))
    except ClientError as exc:
        print(f"{'daemon':<16}{exc} (its counts are not shown)")
        return
    print(f"{'daemon':<16}{client.url}, now:")
    agent = configuration.agents.get(trigger.agent.id)
    for title, text in verdicts(trigger, agent.budget if agent else None, described, datetime.now(UTC)):
        print(f"  {title:<14}{text}")


def _test_message(
    args: argparse.Namespace, configuration: Configuration, trigger: Trigger, headers: list[tuple[str, str]]
) -> int:
    """`test --message FILE --source ID`: a broker message through the source's mapping, then the trigger."""
    from datetime import UTC, datetime

    from triggerd.dryrun import try_message
    from triggerd.sources.brokers.abc import BROKER_TYPES, Message, target

    if args.message is None or args.source is None:
        raise UsageError("--message FILE and --source ID go together")
    for flag, given in (("--payload", args.payload), ("--query", args.query), ("--event", args.event)):
        if given:
            raise UsageError(f"{flag} does not apply with --message")
    if trigger.type is not TriggerType.EVENT:
        raise UsageError(f"--message does not apply to {trigger.type} trigger '{trigger.id}'")
    source = configuration.sources.get(args.source)
    if source is None:
        known = ", ".join(sorted(configuration.sources)) or "none loaded"
        raise UsageError(f"no source '{args.source}' is loaded (sources: {known})")
    if not args.message.is_file():
        raise UsageError(f"no such file: {args.message}")
    message = Message(
        broker_id="sample",
        body=args.message.read_bytes(),
        headers=dict(headers),
        context={BROKER_TYPES[source.type].target: target(source)},
    )
    trial = try_message(configuration, trigger, source, message, datetime.now(UTC))
    print("\n".join(trial.lines))
    return EXIT_OK if trial.accepted else EXIT_INVALID


def _run(args: argparse.Namespace) -> int:
    from triggerd.daemon import run_daemon  # the daemon's imports are not needed by the offline commands

    return run_daemon(_settings_file(args.config))


def _remote(args: argparse.Namespace) -> int:
    # The settings only say where the daemon listens: without a file, the defaults find it.
    path = args.config if args.config is not None else default_settings_path(Path.cwd())
    if args.config is not None and not path.is_file():
        raise UsageError(f"no settings file at {path} (use --config PATH)")
    settings = load(path, paths=[]).configuration if path.is_file() else None
    client = AdminClient.locate(settings.settings if settings else None, args.url, args.token)
    if args.command == "fire":
        answer = client.request("POST", f"/v1/triggers/{client.quoted(args.trigger_id)}/fire", {"input": args.input})
        print(f"{answer['run_id']} {answer['status']}")
    elif args.command == "emit":
        event = {"type": args.type, "source": args.source, "data": args.data}
        if args.severity:
            event["severity"] = args.severity
        answer = client.request("POST", "/v1/events", event)
        print(
            f"{answer['event_ids'][0]} matched: {', '.join(answer['matched']) or 'none'}; "
            f"runs: {', '.join(answer['run_ids']) or 'none'}"
        )
    elif args.command == "runs":
        query = {"trigger": args.trigger, "status": args.status, "limit": args.limit}
        runs = client.request("GET", "/v1/runs", query=query)["runs"]
        print(json.dumps(runs, indent=2) if args.format == "json" else _runs_table(runs))
    elif args.command == "show":
        run = client.request("GET", f"/v1/runs/{client.quoted(args.run_id)}")
        steps = run.pop("steps") if args.format == "text" and run.get("steps") else None
        print(json.dumps(run, indent=2))
        if steps:
            print(f"\nsteps ({len(steps)}):\n" + transcript(steps))
    elif args.command in ("pause", "resume"):
        answer = client.request("POST", f"/v1/triggers/{client.quoted(args.trigger_id)}/{args.command}")
        print(f"{answer['trigger_id']} {'paused since ' + answer['paused_at'] if answer['paused'] else 'resumed'}")
    elif args.command == "cancel":
        answer = client.request("POST", f"/v1/runs/{client.quoted(args.run_id)}/cancel")
        print(f"{answer['id']} {answer['status']}")
    else:
        answer = client.request("POST", f"/v1/runs/{client.quoted(args.run_id)}/replay")
        print(f"{answer['run_id']} {answer['status']} (replay of {answer['replay_of']})")
    return EXIT_OK


# C0 and C1 controls but the newline and the tab: what a tool or a model wrote must not drive
# the operator's terminal (escape sequences retitle it, \r overwrites a line).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def transcript(steps: list[dict[str, Any]], width: int = 2000) -> str:
    """A run's tool calls (SPEC 5.1) as text: one heading per call, then its input and its output or error.

    Control characters in them are shown escaped (\\x1b), as JSON would show them.
    """
    lines = []
    for step in steps:
        lines.append(
            f"  attempt {step.get('attempt')}, turn {step.get('turn')}: {step.get('tool')}"
            f"  {step.get('started_at')} .. {step.get('finished_at') or 'unfinished'}"
        )
        for key in ("input", "output", "error"):
            if key in step:
                value = step[key] if isinstance(step[key], str) else json.dumps(step[key], ensure_ascii=False)
                cut = f" ... ({len(value) - width} more characters)" if len(value) > width else ""
                shown = (value[:width] + cut).replace("\n", "\n" + " " * 12)  # a multi-line output stays indented
                lines.append(f"    {key + ':':7} {shown}")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "\n".join(lines))


def _runs_table(runs: list[dict[str, Any]]) -> str:
    header = ("RUN", "STATUS", "TRIGGER", "ATTEMPTS", "CREATED")
    rows = [header] + [(r["id"], r["status"], r["trigger_id"], str(len(r["attempts"])), r["created_at"]) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

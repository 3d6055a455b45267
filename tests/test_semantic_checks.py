"""Every semantic check of `triggerd validate`, pinned to its file, line and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import AGENT, Write, found, load_dir
from triggerd.config.loader import LoadMode, LoadResult, load


def schedule(cron: str, extra: str = "") -> str:
    return f"""\
trigger:
  id: nightly
  type: schedule
  schedule:
    cron: "{cron}"
{extra}  agent: {{id: worker}}
"""


def test_duplicate_trigger_ids_are_reported_at_the_second_definition(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    first = write("a.yaml", schedule("0 9 * * *"))
    second = write("b.yaml", schedule("0 10 * * *"))
    result = load_dir(tmp_path)
    assert found(result) == [(str(second), 2, "error", f"duplicate trigger id 'nightly' (also defined at {first}:1)")]
    assert result.configuration is not None
    assert result.configuration.triggers["nightly"].schedule.cron == "0 9 * * *"  # type: ignore[union-attr]


def test_default_ids_come_from_the_name_then_the_file_stem(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    body = "  type: event\n  event: {pattern: x}\n  agent: {id: worker}\n"
    write("Named.yaml", 'trigger:\n  name: "Daily Sales Report!"\n' + body)
    write("From-Stem.yaml", "trigger:\n" + body)
    result = load_dir(tmp_path)
    assert result.problems == []
    assert result.configuration is not None
    assert sorted(result.configuration.triggers) == ["daily-sales-report", "from-stem"]


def test_two_unnamed_documents_in_one_file_share_the_stem_and_collide(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    body = "trigger:\n  type: event\n  event: {pattern: x}\n  agent: {id: worker}\n"
    path = write("alerts.yaml", body + "---\n" + body)
    assert found(load_dir(tmp_path)) == [
        (str(path), 6, "error", f"duplicate trigger id 'alerts' (also defined at {path}:1)")
    ]


def test_duplicate_agent_ids(write: Write, tmp_path: Path) -> None:
    path = write("agents.yaml", AGENT + "---\n" + AGENT)
    assert found(load_dir(tmp_path)) == [
        (str(path), 7, "error", f"duplicate agent id 'worker' (also defined at {path}:1)")
    ]


def test_unknown_agent_id_suggests_the_closest(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", schedule("0 9 * * *").replace("id: worker", "id: wroker"))
    assert found(load_dir(tmp_path)) == [(str(path), 6, "error", "unknown agent 'wroker'; did you mean 'worker'?")]


def test_trigger_of_a_broken_agent_names_the_agent_file(write: Write, tmp_path: Path) -> None:
    agent = write("agents.yaml", 'agent:\n  id: worker\n  type: command\n  command: ["x {{ bad key }}"]\n')
    path = write("t.yaml", schedule("0 9 * * *"))
    assert found(load_dir(tmp_path)) == [
        (str(agent), 4, "error", "placeholder '{{ bad key }}' is not a dotted path like {{ a.b }}"),
        (str(path), 6, "error", f"agent 'worker' failed to load ({agent}:1)"),
    ]


def webhook(trigger_id: str, endpoint: str | None, method: str = "POST") -> str:
    lines = [f"trigger:\n  id: {trigger_id}\n  type: webhook\n  webhook:\n    method: {method}\n"]
    if endpoint:
        lines.append(f"    endpoint: {endpoint}\n")
    lines.append("  agent: {id: worker}\n")
    return "".join(lines)


def test_duplicate_endpoint_and_method(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    first = write("a.yaml", webhook("a", "/hooks/x"))
    second = write("b.yaml", webhook("b", "/hooks/x/"))
    write("c.yaml", webhook("c", "/hooks/x", method="PUT"))
    assert found(load_dir(tmp_path)) == [
        (str(second), 6, "error", f"POST /hooks/x/ is already the endpoint of trigger 'a' ({first}:1)")
    ]


def test_default_endpoint_collides_with_an_explicit_one(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    first = write("a.yaml", webhook("a", "/webhooks/b"))
    second = write("b.yaml", webhook("b", None))
    assert found(load_dir(tmp_path)) == [
        (str(second), 5, "error", f"POST /webhooks/b is already the endpoint of trigger 'a' ({first}:1)")
    ]


@pytest.mark.parametrize("endpoint", ["/v1/runs", "/ui/hook"])  # the admin API, the console (SPEC 13)
def test_endpoint_under_the_admin_api_is_refused(write: Write, tmp_path: Path, endpoint: str) -> None:
    write("agents.yaml", AGENT)
    path = write("a.yaml", webhook("a", endpoint))
    assert found(load_dir(tmp_path)) == [
        (str(path), 6, "error", f"endpoint {endpoint} is reserved for triggerd's own API")
    ]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 31 2 *", "cron expression '0 0 31 2 *' can never fire (no such day in those months)"),
        (
            "0 0 31 4,6,9,11 *",
            "cron expression '0 0 31 4,6,9,11 *' can never fire (no such day in those months)",
        ),
        (
            "0 0 9 * * *",
            "cron expression has 6 fields; triggerd takes 5 (minute hour day-of-month month "
            "day-of-week), without seconds or years",
        ),
        (
            "0 0 9 * * * 2026",
            "cron expression has 7 fields; triggerd takes 5 (minute hour day-of-month month "
            "day-of-week), without seconds or years",
        ),
        ("CRON_TZ=UTC 0 9 * * *", "CRON_TZ= prefixes are not supported; set schedule.timezone instead"),
        ("0 9 * *", "cron expression has 4 fields; expected 5 (minute hour day-of-month month day-of-week)"),
        (
            "61 9 * * *",
            "malformed cron expression '61 9 * * *': [61 9 * * *] is not acceptable, out of range",
        ),
        (
            "@reboot",
            "unknown cron macro '@reboot' (use one of: @yearly, @annually, @monthly, @weekly, "
            "@daily, @midnight, @hourly)",
        ),
    ],
)
def test_bad_cron_expressions(write: Write, tmp_path: Path, cron: str, message: str) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", schedule(cron))
    assert found(load_dir(tmp_path)) == [(str(path), 5, "error", message)]


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "0 0 31 2 1", "0 0 L 2 *", "@daily", "*/5 1-3 * * mon-fri"])
def test_crons_that_can_fire_are_accepted(write: Write, tmp_path: Path, cron: str) -> None:
    write("agents.yaml", AGENT)
    write("t.yaml", schedule(cron))
    assert load_dir(tmp_path).problems == []


def test_unknown_time_zone(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", schedule("0 9 * * *", "    timezone: Mars/Olympus_Mons\n"))
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            6,
            "error",
            "unknown time zone 'Mars/Olympus_Mons' (use an IANA name such as 'America/New_York' or 'UTC')",
        )
    ]


def test_start_date_after_end_date(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    extra = '    start_date: "2026-06-01T00:00:00Z"\n    end_date: "2026-05-01T00:00:00+02:00"\n'
    path = write("t.yaml", schedule("0 9 * * *", extra))
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            7,
            "error",
            "end_date 2026-05-01T00:00:00+02:00 is before start_date 2026-06-01T00:00:00Z",
        )
    ]


def test_dates_need_an_offset(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", schedule("0 9 * * *", "    start_date: 2026-06-01T00:00:00\n"))
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            6,
            "error",
            "'2026-06-01T00:00:00' has no UTC offset; write e.g. 2026-06-01T00:00:00Z or 2026-06-01T00:00:00+01:00",
        )
    ]


EVENT = """\
trigger:
  id: errors
  type: event
  event:
    pattern: "{pattern}"
{event}  agent:
    id: worker
{agent}"""


def event(pattern: str = "error.*", event: str = "", agent: str = "") -> str:
    return EVENT.format(pattern=pattern, event=event, agent=agent)


def test_jsonpath_that_does_not_compile_in_input_mapping(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", event(agent='    input_mapping:\n      a: "$.event["\n'))
    assert found(load_dir(tmp_path)) == [
        (str(path), 9, "error", "JSONPath '$.event[' does not compile: Parse error near the end of string!")
    ]


def test_jsonpath_that_does_not_compile_in_group_by_and_conditions(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    text = event(event='    group_by: "$..[?(@.x >)]"\n    condition: {"$.event.data[": 1}\n')
    path = write("t.yaml", text)
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            6,
            "error",
            "JSONPath '$..[?(@.x >)]' does not compile: Parse error at 1:11 near token ) ())",
        ),
        (
            str(path),
            7,
            "error",
            "JSONPath '$.event.data[' does not compile: Parse error near the end of string!",
        ),
    ]


def test_regex_pattern_that_does_not_compile(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", event(pattern="/error.(db|net/"))
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            5,
            "error",
            "regular expression '/error.(db|net/' does not compile: missing ): error.(db|net",
        )
    ]


def test_regex_in_matches_clause_that_does_not_compile(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    text = event(event='    condition:\n      field: message\n      operator: matches\n      value: "[a-"\n')
    path = write("t.yaml", text)
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            7,
            "error",
            "regular expression '[a-' does not compile: missing ]: [a-",
        )
    ]


def test_unknown_structured_condition_operator(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    text = event(event="    condition:\n      field: severity\n      operator: like\n      value: high\n")
    path = write("t.yaml", text)
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            8,
            "error",
            "unknown condition operator 'like' (expected one of: eq, ne, gt, gte, lt, lte, in, "
            "not_in, contains, starts_with, ends_with, matches, exists, ==, !=, >, >=, <, <=)",
        )
    ]


def test_unknown_shorthand_condition_operator(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", event(event='    condition:\n      severity: "=> high"\n'))
    assert found(load_dir(tmp_path)) == [
        (
            str(path),
            7,
            "error",
            "unknown condition operator '=>' (expected one of: eq, ne, gt, gte, lt, lte, in, "
            "not_in, contains, starts_with, ends_with, matches, exists, ==, !=, >, >=, <, <=)",
        )
    ]


def test_count_threshold_without_window_in_the_shorthand(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    text = event(event='    condition:\n      severity: ">= high"\n      count_threshold: 5\n')
    path = write("t.yaml", text)
    assert found(load_dir(tmp_path)) == [(str(path), 8, "error", "count_threshold needs a window (e.g. window: 5m)")]


def test_count_threshold_without_window_under_event(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", event(event="    count_threshold: 3\n"))
    assert found(load_dir(tmp_path)) == [(str(path), 6, "error", "count_threshold needs a window (e.g. window: 5m)")]


def test_count_threshold_and_window_in_the_shorthand_are_settings_not_fields(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    text = event(event='    condition:\n      severity: ">= high"\n      count_threshold: 5\n      window: 5m\n')
    write("t.yaml", text)
    result = load_dir(tmp_path)
    assert result.problems == []
    assert result.configuration is not None
    match = result.configuration.triggers["errors"].event
    assert match is not None
    assert (match.count_threshold, match.window) == (5, 300.0)
    assert repr(match.condition).count("Clause(") == 1  # severity only


@pytest.mark.parametrize(
    ("header", "extra", "warning"),
    [
        (
            "X-Hub-Signature-256",
            "",
            "generic hmac on header X-Hub-Signature-256 is verified with the github preset, exactly as type "
            "'github', not as an HMAC of the bare body",
        ),
        (
            "stripe-signature",
            "prefix: 'v1='\n          algorithm: sha512",
            "generic hmac on header stripe-signature is verified with the stripe preset, exactly as type "
            "'stripe', not as an HMAC of the bare body (algorithm, prefix ignored)",
        ),
        (
            "X-Hub-Signature",
            "",
            "generic hmac on header X-Hub-Signature is verified with the github-sha1 preset, GitHub's "
            "'sha1=<hex HMAC-SHA1 of the body>' with delivery id X-GitHub-Delivery, not as an HMAC of the bare body",
        ),
        ("X-Gitlab-Token", "", "GitLab sends its token in X-Gitlab-Token, not a signature: use type 'gitlab'"),
        ("X-Signature", "", None),
    ],
)
def test_generic_hmac_on_a_provider_header_warns_naming_the_preset(
    write: Write, tmp_path: Path, header: str, extra: str, warning: str | None
) -> None:
    write("agents.yaml", AGENT)
    text = f"""\
    trigger:
      id: gh
      type: webhook
      webhook:
        authentication:
          type: hmac
          secret: s3cret
          header: {header}
          {extra}
      agent: {{id: worker}}
    """
    path = write("t.yaml", text)
    result = load_dir(tmp_path)
    assert found(result) == ([(str(path), 8, "warning", warning)] if warning else [])
    assert result.configuration is not None and "gh" in result.configuration.triggers


SETTINGS_OPEN = """\
server:
  listen: "0.0.0.0:8080"
admin:
  tokens: []
"""


def test_non_loopback_listen_without_admin_tokens_is_an_error(write: Write) -> None:
    path = write("triggerd.yaml", SETTINGS_OPEN)
    result = load(path, mode=LoadMode.VALIDATE, env={})
    assert [p for p in found(result) if p[2] == "error"] == [
        (
            str(path),
            2,
            "error",
            "the admin API would listen on 0.0.0.0:8080, which is not loopback, with no "
            "admin.tokens; set admin.tokens or a loopback admin.listen",
        )
    ]
    assert result.configuration is None


def test_a_store_url_is_sqlite_or_postgresql_and_an_error_names_only_its_scheme(write: Write) -> None:
    text = 'server: {listen: "127.0.0.1:8080"}\nstore:\n  url: "mysql://u:hunter2@db/triggerd"\n'
    path = write("triggerd.yaml", text)
    assert [p for p in found(load(path, mode=LoadMode.VALIDATE, env={})) if p[2] == "error"] == [
        (str(path), 3, "error", "store URL scheme 'mysql' is not supported: use sqlite:///PATH or postgresql://...")
    ]
    for name, url in (("sqlite.yaml", "sqlite:///./x.db"), ("pg.yaml", "postgresql://u:hunter2@db:5432/triggerd")):
        plain = write(name, f'store: {{url: "{url}"}}\n')
        assert load(plain, mode=LoadMode.VALIDATE, env={}).errors == []
    several = write("several.yaml", 'store: {url: "postgresql://u@db1:5432,db2:5433/triggerd?sslmode=require"}\n')
    assert load(several, mode=LoadMode.VALIDATE, env={}).errors == []  # libpq's syntax, several hosts included
    for n, url in enumerate(("postgresql://u:hunter2@db:port/triggerd", "postgresql://u:hunter2@db/t?nope=1")):
        broken = write(f"broken{n}.yaml", f'store: {{url: "{url}"}}\n')
        assert [p[3] for p in found(load(broken, mode=LoadMode.VALIDATE, env={}))] == [
            "the postgresql:// URL does not parse (libpq URL syntax: postgresql://user@host:5432/db)"
        ]


def test_non_loopback_server_is_fine_with_a_loopback_admin_listener(write: Write) -> None:
    path = write("triggerd.yaml", SETTINGS_OPEN + '  listen: "127.0.0.1:9090"\n')
    assert load(path, mode=LoadMode.VALIDATE, env={}).errors == []


def test_non_loopback_admin_listener_with_a_token_is_fine(write: Write) -> None:
    path = write("triggerd.yaml", 'admin:\n  listen: "[::]:9090"\n  tokens: ["${TOKEN}"]\n')
    assert load(path, mode=LoadMode.VALIDATE, env={"TOKEN": "t0ken-of-16-chars"}).errors == []


def test_an_empty_token_is_no_token(write: Write) -> None:
    path = write("triggerd.yaml", 'admin:\n  listen: "10.0.0.1:9090"\n  tokens: ["${TOKEN:-}"]\n')
    assert [p.line for p in load(path, mode=LoadMode.VALIDATE, env={}).errors] == [2]


def test_bad_addresses_in_ip_allowlist_and_trusted_proxies(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    text = "trigger:\n  id: h\n  type: webhook\n  webhook:\n    ip_whitelist: [10.0.0.0/8, 10.0.0.300]\n"
    path = write("t.yaml", text + "  agent: {id: worker}\n")
    assert found(load_dir(tmp_path)) == [(str(path), 5, "error", "'10.0.0.300' is not an IP address or CIDR network")]
    settings = write("triggerd.yaml", "server:\n  trusted_proxies:\n    - 192.168.0.0/16\n    - proxy.local\n")
    assert [p for p in found(load(settings, mode=LoadMode.VALIDATE, env={})) if p[2] == "error"] == [
        (str(settings), 4, "error", "'proxy.local' is not an IP address or CIDR network")
    ]


def shown(result: LoadResult) -> list[str]:
    """Every problem as `validate` prints it: FILE:LINE:COL: severity: message (at pointer)."""
    return [str(p) for p in result.problems]


def test_a_trigger_with_a_bad_time_zone_is_still_checked_for_its_agent(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", schedule("0 9 * * *", "    timezone: Mars/Olympus_Mons\n").replace("worker", "wroker"))
    assert shown(load_dir(tmp_path)) == [
        f"{path}:6:15: error: unknown time zone 'Mars/Olympus_Mons' (use an IANA name such as 'America/New_York' "
        "or 'UTC') (at /trigger/schedule/timezone)",
        f"{path}:7:15: error: unknown agent 'wroker'; did you mean 'worker'? (at /trigger/agent/id)",
    ]


def test_a_trigger_with_an_unknown_agent_still_takes_part_in_the_endpoint_check(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    first = write("a.yaml", webhook("a", "/hooks/x").replace("worker", "nobody"))
    second = write("b.yaml", webhook("b", "/hooks/x"))
    result = load_dir(tmp_path)
    assert shown(result) == [
        f"{first}:7:15: error: unknown agent 'nobody' (at /trigger/agent/id)",
        f"{second}:6:15: error: POST /hooks/x is already the endpoint of trigger 'a' ({first}:1) "
        "(at /trigger/webhook/endpoint)",
    ]
    assert result.configuration is not None and result.configuration.triggers == {}


def test_a_trigger_that_failed_to_build_still_claims_its_id_and_route(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    broken = webhook("a", "/hooks/x").replace("    endpoint:", "    ip_allowlist: [10.0.0.300]\n    endpoint:")
    first = write("a.yaml", broken)
    second = write("b.yaml", webhook("a", "/hooks/x"))
    result = load_dir(tmp_path)
    assert shown(result) == [
        f"{first}:6:20: error: '10.0.0.300' is not an IP address or CIDR network (at /trigger/webhook/ip_allowlist/0)",
        f"{second}:2:7: error: duplicate trigger id 'a' (also defined at {first}:1) (at /trigger/id)",
        f"{second}:6:15: error: POST /hooks/x is already the endpoint of trigger 'a' ({first}:1) "
        "(at /trigger/webhook/endpoint)",
    ]
    assert result.configuration is not None and result.configuration.triggers == {}


def test_an_agent_that_failed_to_load_still_claims_its_id(write: Write, tmp_path: Path) -> None:
    broken = write("a.yaml", 'agent:\n  id: worker\n  type: command\n  command: ["x {{ bad key }}"]\n')
    second = write("b.yaml", AGENT)
    path = write("t.yaml", schedule("0 9 * * *"))
    assert shown(load_dir(tmp_path)) == [
        f"{broken}:4:13: error: placeholder '{{{{ bad key }}}}' is not a dotted path like {{{{ a.b }}}} "
        "(at /agent/command/0)",
        f"{second}:2:7: error: duplicate agent id 'worker' (also defined at {broken}:1) (at /agent/id)",
        f"{path}:6:15: error: agent 'worker' failed to load ({broken}:1) (at /trigger/agent/id)",
    ]


def test_a_schema_error_does_not_hide_the_field_checks_of_the_same_definition(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write(
        "t.yaml",
        """\
        trigger:
          id: s
          bogus: 1
          type: schedule
          schedule: {cron: "99 * * * *", timezone: "Mars/X"}
          agent: {id: worker}
        ---
        trigger:
          id: e
          type: event
          max_concurrent: -1
          event: {pattern: "/(?<=a)/"}
          agent: {id: worker, input_mapping: {a: "$.[[["}}
        """,
    )
    result = load_dir(tmp_path)
    assert [(p.line, p.pointer) for p in result.problems] == [
        (3, "/trigger/bogus"),
        (5, "/trigger/schedule/cron"),
        (5, "/trigger/schedule/timezone"),
        (11, "/trigger/max_concurrent"),
        (12, "/trigger/event/pattern"),
        (13, "/trigger/agent/input_mapping/a"),
    ]
    assert all(p.file == str(path) and p.is_error for p in result.problems)
    assert result.configuration is not None and result.configuration.triggers == {}


def test_a_check_is_not_repeated_where_the_schema_already_named_the_place(write: Write, tmp_path: Path) -> None:
    write("agents.yaml", AGENT)
    path = write("t.yaml", schedule("0 9 * * *", "    timezone: 7\n").replace('cron: "0 9 * * *"', "cron: [0, 9]"))
    problems = load_dir(tmp_path).problems
    assert [(p.pointer, p.message) for p in problems] == [
        ("/trigger/schedule/cron", "expected string, got list [0, 9]"),
        ("/trigger/schedule/timezone", "expected string, got integer 7"),
    ], [str(p) for p in problems]
    assert all(p.file == str(path) for p in problems)

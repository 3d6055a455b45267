"""Every example folder's README shows `triggerd` lines with their output; each is run as written.

A README's ```console block holds `$ [NAME=value ...] triggerd ...` lines, each followed by the
output it prints, abridged with `...` lines. The command runs from the repository root through
the real command line; it must exit 0 and print the shown lines in that order (the first and last
exactly where the block does not start or end with `...`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
_BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Shown:
    readme: Path
    command: str
    output: list[str]

    def __str__(self) -> str:
        return f"{self.readme.parent.name}: {self.command[:60]}"


def shown_commands(readme: Path) -> list[Shown]:
    found: list[Shown] = []
    for block in _BLOCK.findall(readme.read_text()):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, *output = chunk.rstrip("\n").split("\n")
            found.append(Shown(readme, command, output))
    return found


SHOWN = [shown for example in EXAMPLES for shown in shown_commands(example / "README.md")]


def test_every_example_shows_a_command_to_try_it() -> None:
    assert {shown.readme.parent for shown in SHOWN} == set(EXAMPLES)
    for shown in SHOWN:
        words = [w for w in shlex.split(shown.command) if not _ASSIGNMENT.match(w)]
        assert words[:2] in (["triggerd", "test"], ["triggerd", "next"]), shown
        if words[1] == "test":  # the answer the daemon would give closes every `test` block
            assert shown.output[-1].startswith("answer          2"), shown


@pytest.mark.parametrize("shown", SHOWN, ids=str)
def test_the_shown_command_prints_the_shown_output(shown: Shown) -> None:
    words = shlex.split(shown.command)
    env = {"PATH": os.environ["PATH"]}
    while _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[0] == "triggerd"
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", *words[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = proc.stdout.splitlines()
    expected = shown.output
    if expected[0] != "...":
        assert printed[0] == expected[0]
    if expected[-1] != "...":
        assert printed[-1] == expected[-1]
    position = 0
    for line in expected:
        if line == "...":
            continue
        assert line in printed[position:], f"{line!r} not printed (in order) by {shown.command}:\n{proc.stdout}"
        position = printed.index(line, position) + 1

"""Fuzzing the loader and validator from valid files (issue 8): problems with a file and a line, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES, REPO
from triggerd.config.loader import LoadMode, load

SEEDS = sorted(
    [*(REPO / "examples").rglob("*.yaml"), *(FIXTURES / "compat").glob("*.yaml"), *(REPO / "config").rglob("*.yaml")]
)
SEED_TEXTS = [path.read_text() for path in SEEDS]
JUNK = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ":",
        "- ",
        "'",
        '"',
        "\t",
        "&a",
        "*a",
        "!!str ",
        "<<: *a",
        "---\n",
        "${",
        "${X}",
        "$${",
        "{{ }}",
        "\\x00",
        "é",
        "\ufeff",
        "  ",
        "\n",
        "#",
        "%YAML 1.1\n",
        "true",
        "null",
        "1e999",
        "0x",
        "~",
        "?",
        "|",
        ">-",
        "@",
        "`",
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(SEED_TEXTS)).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "insert", "swap", "duplicate", "indent", "dedent", "replace"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        line = lines[i] if lines else ""
        if kind == "cut" and line:
            a = draw(st.integers(0, len(line)))
            lines[i] = line[:a] + line[draw(st.integers(a, len(line))) :]
        elif kind == "insert":
            a = draw(st.integers(0, len(line)))
            lines[i] = line[:a] + draw(JUNK) + line[a:]
        elif kind == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "indent":
            lines[i] = "  " + line
        elif kind == "dedent":
            lines[i] = line.lstrip()
        elif kind == "replace":
            lines[i] = draw(st.text(max_size=30))
    return "\n".join(lines)


CASES = {"count": 0, "with_problems": 0}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated(), strict=st.booleans())
def test_mutated_files_give_located_problems_never_a_traceback(text: str, strict: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        result = load(None, paths=[path], mode=LoadMode.DAEMON if strict else LoadMode.VALIDATE, env={"X": "x"})
    CASES["count"] += 1
    CASES["with_problems"] += bool(result.problems)
    line_count = text.count("\n") + 1
    for problem in result.problems:
        assert problem.file == str(path)
        assert 1 <= problem.line <= line_count + 1, (problem, text)
        assert problem.column >= 1
        assert problem.message


def test_the_fuzzer_produced_broken_files() -> None:
    # Runs after the fuzzer above (file order): most mutations must have broken something.
    assert CASES["count"] >= 400
    assert CASES["with_problems"] > CASES["count"] // 3, CASES
    print(f"loader fuzz: {CASES['count']} files, {CASES['with_problems']} with problems")

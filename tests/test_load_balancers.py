"""docs/scale-out.md's nginx and HAProxy examples are configurations the tools themselves accept.

Each snippet is taken from the page as printed and checked by the real program (`haproxy -c`,
`nginx -t`), from Debian's `haproxy` and `nginx-light` packages (`.ci/run` installs them).
A snippet spoiled by one wrong directive must be refused, so a check that accepts anything
cannot pass for one that works.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers import unavailable

PAGE = Path(__file__).parent.parent / "docs" / "scale-out.md"


def snippet(language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", PAGE.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"docs/scale-out.md should show one {language} example, found {len(blocks)}"
    return str(blocks[0])


def tool(name: str, package: str) -> str:
    # Debian puts both in /usr/sbin, which a non-root PATH may lack
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        unavailable(f"{name} is not installed (Debian: apt-get install {package})")
        raise AssertionError("unreachable")
    return found


def haproxy_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run(
        [tool("haproxy", "haproxy"), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )


def nginx_check(snippet_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # The page shows what goes in the http block; the rest is what any nginx.conf has, with every
    # path the check writes to kept below tmp_path.
    temp = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    body = "".join(f"    {line}\n" if line else "\n" for line in snippet_text.splitlines())
    path = tmp_path / "nginx.conf"
    path.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n    access_log off;\n{temp}{body}}}\n"
    )
    return subprocess.run(
        [tool("nginx", "nginx-light"), "-t", "-q", "-p", str(tmp_path), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


Check = Callable[[str, Path], subprocess.CompletedProcess[str]]


def test_the_haproxy_example_is_a_valid_configuration(tmp_path: Path) -> None:
    config = snippet("haproxy")
    assert "uri /readyz" in config
    proc = haproxy_check(config, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_nginx_example_is_a_valid_configuration(tmp_path: Path) -> None:
    config = snippet("nginx")
    assert "http_503" in config
    proc = nginx_check(config, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("language", "check", "spoil"),
    [
        ("haproxy", haproxy_check, ("http-check expect status 200", "http-check expect stat 200")),
        ("nginx", nginx_check, ("proxy_next_upstream error", "proxy_next_upstream eror")),
    ],
)
def test_a_spoiled_example_is_refused(language: str, check: Check, spoil: tuple[str, str], tmp_path: Path) -> None:
    config = snippet(language)
    assert spoil[0] in config
    proc = check(config.replace(*spoil), tmp_path)
    assert proc.returncode != 0, f"{language} accepted a spoiled configuration"

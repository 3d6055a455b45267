"""Reload latency with 1,000 definition files: one edited file to its route being live, and a full reload.

A real daemon watches 1,000 webhook trigger files. For the first figure, one file's endpoint is
rewritten and requests poll the new path until it answers 202 (the time includes the file
watcher's debounce, loading and checking all 1,000 files, and the swap). For the second,
POST /v1/reload is timed (load and check everything, swap, answer). Baseline in the same run:
`triggerd validate` of the same files in-process, i.e. loading without swapping. Loopback only.

    .venv/bin/python bench/reload.py [--files 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from loopback import free_port

from triggerd.config.loader import LoadMode, load


def post(url: str) -> int:
    body = b'{"action": "opened", "n": 1}'  # passes the triggers' filter
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def trigger(i: int, endpoint: str) -> str:
    return (
        f"trigger:\n  id: hook{i:04d}\n  type: webhook\n  webhook:\n    endpoint: {endpoint}\n"
        f"    filter: {{action: [opened, closed]}}\n  agent:\n    id: echo\n    input_mapping:\n"
        f"      n: $.body.n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root, port = Path(folder), free_port()
        defs = root / "defs"
        defs.mkdir()
        (defs / "agent.yaml").write_text("agent: {id: echo, type: command, command: [cat]}\n")
        for i in range(args.files):
            (defs / f"hook{i:04d}.yaml").write_text(trigger(i, f"/hooks/{i}"))
        (root / "triggerd.yaml").write_text(
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{url: "sqlite:///./state.db"}}\ndefinitions: [defs]\n'
            "logging: {level: warning, format: json}\nlimits: {shutdown_grace_seconds: 0}\n"
        )
        started = time.perf_counter()
        loads = []
        for _ in range(args.repeat):
            begin = time.perf_counter()
            assert load(root / "triggerd.yaml", mode=LoadMode.DAEMON).errors == []
            loads.append(time.perf_counter() - begin)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "triggerd", "run", "--config", str(root / "triggerd.yaml")],
            cwd=root,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                        if json.loads(response.read())["status"] == "ready":
                            break
                except OSError:
                    time.sleep(0.05)
            ready = time.perf_counter() - started - sum(loads)
            edits = []
            for n in range(args.repeat):
                path = f"/edited/{n}"
                written = time.perf_counter()
                (defs / "hook0500.yaml").write_text(trigger(500, path))
                deadline = time.perf_counter() + 60
                while post(url + path) != 202:
                    if time.perf_counter() > deadline:
                        sys.exit(f"{path} did not go live within 60 s")
                    time.sleep(0.005)
                edits.append(time.perf_counter() - written)
                time.sleep(0.5)
            reloads = []
            for _ in range(args.repeat):
                begin = time.perf_counter()
                assert post(url + "/v1/reload") == 200
                reloads.append(time.perf_counter() - begin)
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(f"definition files            {args.files} webhook triggers + 1 agent file")
    print(f"daemon start to ready       {ready:.2f} s")
    print(f"load + check, in-process    median {statistics.median(loads):.2f} s (baseline: no swap, no watcher)")
    print(f"one file edited -> live     median {statistics.median(edits):.2f} s, max {max(edits):.2f} s")
    print(f"full reload (POST /v1/reload) median {statistics.median(reloads):.2f} s, max {max(reloads):.2f} s")


if __name__ == "__main__":
    main()

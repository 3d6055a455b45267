"""Time `triggerd validate` on 1,000 generated trigger files (issue goal: under 3 s on 2 cores).

Baselines measured in the same run: the bare interpreter starting, and PyYAML's
own safe_load of the same files (parsing alone, no schema, no checks). Prints
the median of --repeat runs of each, and the ratios.

    .venv/bin/python bench/validate.py [--files 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("schedule", "webhook", "event")


def trigger_file(i: int) -> str:
    kind = KINDS[i % 3]
    head = f'trigger:\n  id: t{i:04d}\n  name: "Generated trigger {i}"\n  type: {kind}\n'
    agent = f"  agent:\n    id: agent-{i % 10}\n    input: {{n: {i}}}\n"
    if kind == "schedule":
        body = (
            f'  schedule:\n    cron: "{i % 60} {i % 24} * * 1-5"\n    timezone: America/New_York\n'
            f"    jitter_seconds: 30\n"
        )
    elif kind == "webhook":
        body = (
            f"  webhook:\n    endpoint: /webhooks/gen/{i}\n    authentication:\n      type: github\n"
            f'      secret: "${{GEN_SECRET:-x}}"\n    filter:\n      all:\n'
            f'        - {{field: "$.body.action", operator: in, value: [opened, closed]}}\n'
            f'        - not: {{field: "$.body.draft", operator: eq, value: true}}\n'
        )
        agent += (
            '    input_mapping:\n      number: {path: "$.body.number", required: true}\n'
            '      labels: "$.body.labels[*].name"\n'
        )
    else:
        body = (
            f'  event:\n    pattern: "app{i % 7}.error.*"\n    source: ["svc-*"]\n'
            f'    condition:\n      severity: ">= high"\n      count_threshold: 3\n      window: 5m\n'
            f'    group_by: "$.event.data.service"\n'
        )
    return f"# generated\n{head}{body}{agent}  retry: {{max_attempts: 3, backoff: 10s}}\n"


def agents_file() -> str:
    docs = [f'agent:\n  id: agent-{n}\n  type: command\n  command: ["echo", "{{{{ n }}}}"]\n' for n in range(10)]
    return "---\n".join(docs)


def timed(argv: list[str], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        runs.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "agents.yaml").write_text(agents_file())
        for i in range(args.files):
            (root / f"trigger-{i:04d}.yaml").write_text(trigger_file(i))
        python = sys.executable
        startup = timed([python, "-c", "pass"], args.repeat)
        parse_only = timed(
            [
                python,
                "-c",
                "import sys, pathlib, yaml\n"
                "for p in sorted(pathlib.Path(sys.argv[1]).glob('*.yaml')):\n"
                "    list(yaml.load_all(p.read_text(), Loader=yaml.CSafeLoader))",
                folder,
            ],
            args.repeat,
        )
        validate = timed([python, "-m", "triggerd", "validate", folder, "--strict"], args.repeat)
    per_file_ms = (validate - startup) / args.files * 1000
    print(f"files                        {args.files} triggers + 1 agents file")
    print(f"python startup               {startup:.3f} s")
    print(f"yaml.load_all only (C)       {parse_only:.3f} s")
    print(f"triggerd validate --strict   {validate:.3f} s  (goal < 3 s)")
    print(f"per file, startup excluded   {per_file_ms:.2f} ms")
    print(f"ratio validate / parse-only  {validate / parse_only:.2f}x")


if __name__ == "__main__":
    main()

"""The slowest single calls a template may make: each candidate is rendered with the
largest inputs the limits let through (a caller value of up to 1 MiB, the size of the
longest events line; 64 KiB for what the limits cap there), and its CPU time printed,
slowest first. A call the sandbox cannot interrupt (one C-level call) is bounded only
by its input size; this script is how docs/security.md's figure is measured.

    .venv/bin/python bench/template_worst_case.py [--repeat N]

Refused calls are printed as refused, with the time the refusal took.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from typing import Any

from flowrunner.errors import TemplateError, Where
from flowrunner.templating import Variables, compile_value

MIB = 1 << 20
rng = random.Random(7)
DISTINCT = "".join(chr(c) for c in range(0x100, 0x100 + 65_000) if chr(c).isprintable())
VALUES: dict[str, Any] = {
    "ascii": "".join(rng.choices(string.ascii_letters + " ", k=MIB - 16)),
    "distinct": (DISTINCT * 20)[: MIB // 4],  # 4-byte-ish characters, all different
    "words": ("word " * (MIB // 5))[: MIB - 16],
    "digits": "9" * 4000,
    "aaa": "a" * (MIB - 16),
    "needle": "a" * 60_000 + "b",
    "url": ("http://x.example/" + "a" * 100 + " ") * (MIB // 120),
    "tags": "<a " * (MIB // 3),
    "items": list(range(60_000)),
    "codec": "punycode",
    "strings": ["".join(rng.choices(string.ascii_letters, k=7)) for _ in range(120_000)],
}

CANDIDATES = [
    "{{ $call.distinct.encode('punycode') }}",
    "{{ $call.distinct.encode($call.codec) }}",
    "{{ $call.distinct.encode('idna') }}",
    "{{ $call.distinct.encode('unicode_escape') | length }}",
    "{{ $call.distinct.encode('utf-8') | length }}",
    "{{ $call.distinct.encode('utf-16') | length }}",
    "{{ $call.distinct.encode('utf-8').decode('utf-8') | length }}",
    "{{ $call.ascii.upper() | length }}",
    "{{ $call.ascii.title() | length }}",
    "{{ $call.ascii.split() | length }}",
    "{{ $call.ascii.splitlines() | length }}",
    "{{ $call.ascii.count('ab') }}",
    "{{ $call.aaa.count($call.needle) }}",
    "{{ $call.needle in $call.aaa }}",
    "{{ $call.aaa.find($call.needle) }}",
    "{{ $call.aaa.rfind($call.needle) }}",
    "{{ $call.aaa.split($call.needle) | length }}",
    "{{ $call.ascii.strip('abc') | length }}",
    "{{ $call.ascii | wordcount }}",
    "{{ $call.ascii | truncate(10) }}",
    "{{ $call.ascii | striptags | length }}",
    "{{ $call.tags | striptags | length }}",
    "{{ $call.url[:60000] | urlize | length }}",
    "{{ $call.words[:60000] | wordwrap(10) | length }}",
    "{{ $call.ascii[:60000] | title | length }}",
    "{{ $call.ascii | list | length }}",
    "{{ $call.items | sort | length }}",
    "{{ $call.strings | sort | length }}",
    "{{ $call.strings | unique | list | length }}",
    "{{ $call.items | unique | list | length }}",
    "{{ $call.items | sum }}",
    "{{ $call.digits | int }}",
    "{{ ($call.digits[:3000] | int) * ($call.digits[:3000] | int) }}",
    "{{ $call.ascii | escape | length }}",
    "{{ $call.ascii | tojson | length }}",
    "{{ $call.ascii | replace('a', 'b') | length }}",
    "{{ $call.ascii.replace('a', '') | length }}",
    "{{ $call.ascii.expandtabs(1) | length }}",
    "{{ $call.ascii.isidentifier() }}",
    "{{ $call.ascii.casefold() | length }}",
    "{{ $call.ascii.partition('zzzz') | length }}",
    "{{ $call.ascii.ljust(10) | length }}",
    "{{ $call.ascii.encode('ascii').hex() | length }}",
    "{{ $call.ascii.encode('latin-1').decode('latin-1') | length }}",
]


def run(template: str) -> tuple[float, str]:
    compiled = compile_value(template, Where())
    variables = Variables(call=VALUES)
    started = time.process_time()
    try:
        compiled.render(variables)
        outcome = "ok"
    except TemplateError as exc:
        outcome = f"refused ({exc.rule})"
    return time.process_time() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for template in CANDIDATES:
        try:
            times, outcome = [], ""
            for _ in range(args.repeat):
                seconds, outcome = run(template)
                times.append(seconds)
        except TemplateError as exc:  # refused when compiled (as validate refuses it)
            rows.append((0.0, template, f"refused by validate ({exc.rule})"))
            continue
        rows.append((statistics.median(times), template, outcome))
    rows.sort(reverse=True)
    for seconds, template, outcome in rows:
        print(f"{seconds * 1000:9.1f} ms  {outcome:32}  {template}")
    allowed = [r for r in rows if r[2] == "ok"]
    if allowed:
        print(f"slowest allowed call: {allowed[0][1]} in {allowed[0][0] * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()

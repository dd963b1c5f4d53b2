"""Codec bombs: ``str.encode('punycode')`` runs in quadratic time inside one C call the
render clock cannot interrupt (16,000 distinct characters took 33 s). Only codecs whose
time is linear are allowed; a constant codec is refused by ``validate``, one chosen by a
caller fails the step, quickly."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from flowrunner.templating import limits

from .helpers import cli, run_json, write_project
from .test_templates import assign_flow

DISTINCT = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 16_000))  # all different

REFUSED_BY_VALIDATE = {
    "{{ $flow.key.x.encode('punycode') }}": ("encode", "punycode"),
    "{{ $flow.key.x.encode('PunyCode') }}": ("encode", "PunyCode"),
    "{{ $flow.key.x.encode('idna') }}": ("encode", "idna"),
    "{{ $flow.key.x.encode(encoding='punycode') }}": ("encode", "punycode"),
    "{{ $flow.key.x.encode('utf-8').decode('punycode') }}": ("decode", "punycode"),
    "{{ $flow.key.x.encode('raw_unicode_escape') }}": ("encode", "raw_unicode_escape"),
}


@pytest.mark.parametrize("template", list(REFUSED_BY_VALIDATE))
def test_a_constant_slow_codec_is_refused_by_validate(tmp_path: Path, template: str) -> None:
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    path = project.root / "flows" / "t.yaml"
    result = cli(project.root, "validate", str(path))
    assert (result.exit_code, result.stderr) == (1, "")
    line, _ = result.stdout.splitlines()
    method, codec = REFUSED_BY_VALIDATE[template]
    message = limits.codec_refusal(method, codec)
    assert line.endswith(f"step 't': {message} [template-unsafe]"), line
    assert re.match(rf"{re.escape(str(path))}:10:\d+: error: ", line)


@pytest.mark.parametrize("codec", ["punycode", "idna", "PUNYCODE", "punycode" + " " * 50])
@pytest.mark.parametrize("method", ["encode", "decode"])
def test_a_slow_codec_chosen_by_a_caller_fails_the_step_quickly(
    tmp_path: Path, codec: str, method: str
) -> None:
    value = "$call.x" if method == "encode" else "$call.x.encode('utf-8')"
    template = f"{{{{ {value}.{method}($call.codec) }}}}"
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    started = time.monotonic()
    call = ["--call", f"x={DISTINCT}", "--call", f"codec={codec}"]
    code, record, stderr = run_json(project.root, "t", *call)
    assert time.monotonic() - started < 2
    assert (code, stderr, record["error"]["reason"]) == (1, "", "TEMPLATE_ERROR")
    assert f"{method}() with the codec" in record["error"]["message"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ $call.x.encode('utf-8') | length }}", len(DISTINCT.encode())),
        ("{{ $call.x.encode('UTF8').decode('utf_8') | length }}", len(DISTINCT)),
        ("{{ 'é'.encode('latin-1') | length }}", 1),
        ("{{ $call.x.encode('ascii', 'replace') | length }}", len(DISTINCT)),
    ],
)
def test_linear_codecs_still_work(tmp_path: Path, template: str, expected: int) -> None:
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    code, record, _ = run_json(project.root, "t", "--call", f"x={DISTINCT}")
    assert code == 0, record
    assert json.loads(json.dumps(record["keys"]["y"])) == expected

"""Templates under attack, through the real command line: sandbox escapes are refused
(at validate time when they can be seen, else as a failed step naming it), renders are
bounded in size, work and time, header values cannot carry line breaks, and values
reach the wire byte for byte, never rendered again."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qsl

import pytest

from flowrunner.errors import Where
from flowrunner.templating import Variables, compile_value

from .helpers import CALL_FLOW, cli, run_json, write_project

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports


def assign_flow(template: str) -> str:
    """A flow whose only step assigns ``template`` (YAML-quoted) to flow key y."""
    return (
        "flow: t\nkeys:\n  x: abc\n  d: {a: 1}\n  big: ''\n"
        "steps:\n  - id: t\n    operation: assign\n"
        f"    set:\n      y: {json.dumps(template)}\n"
    )


# --- escapes refused by `flowrunner validate` -----------------------------------------


def attribute(name: str) -> str:
    return f"access to attribute '{name}' is not allowed"


COMPILE_TIME_ESCAPES = {
    "{{ ''.__class__.__mro__ }}": attribute("__mro__"),
    "{{ ().__class__.__base__.__subclasses__() }}": attribute("__subclasses__"),
    "{{ $flow.key.x | attr('__class__') }}": "the attr filter is not allowed",
    "{{ cycler.__init__.__globals__ }}": attribute("__globals__"),
    "{{ joiner.__init__.__globals__.os }}": attribute("__globals__"),
    "{{ namespace.__init__.__globals__ }}": attribute("__globals__"),
    "{{ lipsum.__globals__['os'] }}": attribute("__globals__"),
    "{{ range.__class__ }}": attribute("__class__"),
    "{{ self.__dict__ }}": attribute("__dict__"),
    "{{ $flow.key.x['__class__'] }}": attribute("__class__"),
    "{{ $flow.key.x.__init__() }}": attribute("__init__"),
    "{% set c = (1).__class__ %}{{ c }}": attribute("__class__"),
}


@pytest.mark.parametrize("template", list(COMPILE_TIME_ESCAPES))
def test_escape_is_refused_by_validate(tmp_path, template):
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    path = project.root / "flows" / "t.yaml"
    result = cli(project.root, "validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == ""
    line, summary = result.stdout.splitlines()
    message = f"step 't': unsafe template: {COMPILE_TIME_ESCAPES[template]} [template-unsafe]"
    assert re.fullmatch(rf"{re.escape(str(path))}:10:\d+: error: {re.escape(message)}", line)
    assert summary == "1 error(s), 0 warning(s)"


FOLDED = ["{{ ''.x ~ 'a' }}", "{{ 'a' if ''.x else 'b' }}", "{{ 'x' ~ (1).y ~ $flow.key.x }}"]


@pytest.mark.parametrize("template", FOLDED)
def test_failing_constant_part_is_reported_by_validate(tmp_path, template):
    """Jinja evaluates constant parts while compiling; what fails there is reported as
    a problem of the flow (found by fuzzing: it used to escape as an internal error)."""
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    result = cli(project.root, "validate")
    assert (result.exit_code, result.stderr) == (1, "")
    line, summary = result.stdout.splitlines()
    assert re.fullmatch(
        r".*/flows/t\.yaml:10:\d+: error: step 't': could not render template: "
        r"'(str|int) object' has no attribute '[xy]' \[template-render\]",
        line,
    )
    assert summary == "1 error(s), 0 warning(s)"


def test_python_compiler_warnings_are_not_printed(tmp_path):
    """``2[1:2]`` makes Python's compiler warn about the code Jinja writes (found by
    fuzzing); the warning is not printed, and the render fails with the reason."""
    project = write_project(tmp_path, {}, {"t": assign_flow("{{ 2[1:2] }}")})
    result = cli(project.root, "validate")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    code, record, stderr = run_json(project.root, "t")
    assert (code, stderr) == (1, "")
    assert record["error"]["message"] == (
        "in 'set.y': could not render template: 'int' object is not subscriptable"
    )


def test_template_over_64_kib_is_refused_by_validate(tmp_path):
    template = "{{ 1 }}" * 10_000
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    result = cli(project.root, "validate")
    assert result.exit_code == 1
    line, _ = result.stdout.splitlines()
    assert line.endswith(
        "error: step 't': template is 70000 characters; the limit is 65536 (64 KiB) "
        "[template-too-large]"
    )


# --- escapes and limits met while running: a failed step, named ------------------------

# whichever comes first on this machine: the work budget or the deadline
TOO_SLOW = re.compile(r"template (does too much work|took longer than 1 s to render)")

RUNTIME_REFUSALS = {
    "format-attribute": ("{{ '{0.__class__}'.format($flow.key.x) }}", "unsafe template: "),
    "format-map-attribute": ("{{ '{a.__class__}'.format_map($flow.key.d) }}", "unsafe template: "),
    "format-globals": ("{{ '{0.__globals__}'.format(lipsum) }}", "unsafe template: "),
    "mutation": ("{{ $flow.key.d.update({'a': 2}) }}", "unsafe template: "),
    "map-attribute": ("{{ $flow.key.x | map(attribute='__class__') | list }}", "unsafe template: "),
    "reference-dunder": ("{{ $flow.key.x.__class__ }}", "undefined variable $flow.key.x.__class__"),
    "self": ("{{ self }}", "could not render template: the template gives a TemplateReference"),
    "cycler-object": ("{{ cycler }}", "could not render template: the template gives a type"),
    "nested-ranges": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        TOO_SLOW,
    ),
    "nested-loops-over-a-value": (
        "{% for a in $flow.key.big %}{% for b in $flow.key.big %}{% endfor %}{% endfor %}",
        TOO_SLOW,
    ),
    "printf-width": ("{{ '%0999999999d' % 1 }}", "value too large: the result of % is over"),
    "printf-star-width": ("{{ '%*d' % (999999999, 1) }}", "value too large: the result of %"),
    "printf-precision": ("{{ '%.999999999f' % 1.0 }}", "value too large: the result of %"),
    "format-width": ("{{ '{:>999999999}'.format(1) }}", "value too large: the result of format"),
    "format-nested-width": ("{{ '{:{w}}'.format(1, w=10**9) }}", "value too large: the result"),
    "format-filter": ("{{ '%0999999999d' | format(1) }}", "value too large: the result of the"),
    "center": ("{{ 'x'.center(10**9) }}", "value too large: the result of center() is over"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", "value too large: the result of ljust() is over"),
    "zfill": ("{{ 'x'.zfill(10**9) }}", "value too large: the result of zfill() is over"),
    "expandtabs": ("{{ 'x\\t'.expandtabs(10**9) }}", "value too large: the result of expandtabs"),
    "center-filter": ("{{ 'x' | center(10**9) }}", "value too large: the result of the center"),
    "indent-filter": ("{{ 'a\\nb' | indent(10**9) }}", "value too large: the result of the"),
    "repeat-in-filter": ("{{ ('x' * 10**9) | upper }}", "value too large: the result of * is"),
    "replace-amplifies": (
        "{{ ('a' * 60000).replace('a', 'b' * 60000) }}",
        "value too large: the result of replace() is over",
    ),
    "join-of-shared": (
        "{% set s = 'x' * 60000 %}{{ ([s] * 60000) | join }}",
        "value too large: the input of the join filter is over 1 MiB",
    ),
    "shared-references": (
        "{% set s = 'x' * 60000 %}{{ [s] * 60000 }}",
        "value too large: a rendered value is over 64 KiB",
    ),
    "doubling": (
        "{% set a = 'x' * 60000 %}{% set a = a ~ a %}{{ a | length }}",
        "value too large: joined text is over 64 KiB",
    ),
    "lipsum": ("{{ lipsum(10**6) }}", "value too large: the result of lipsum() is over"),
    "to-bytes": ("{{ (1).to_bytes(10**9, 'big') }}", "value too large: to_bytes() is over"),
    "output": ("{% for i in range(7000) %}0123456789{% endfor %}", "rendered text is over 64 KiB"),
    "recursion": (
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "could not render template: recursion too deep",
    ),
}


@pytest.mark.parametrize("name", list(RUNTIME_REFUSALS))
def test_runtime_refusal_fails_the_step(tmp_path, name):
    template, message = RUNTIME_REFUSALS[name]
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    started = time.monotonic()
    code, record, stderr = run_json(
        project.root, "t", "--key", f"big={'x' * 60_000}", "--key", 'd:={"a": 1}'
    )
    assert time.monotonic() - started < 5
    assert (code, stderr) == (1, "")
    assert record["status"] == "FAILED"
    assert record["error"]["step"] == "t"
    assert record["error"]["reason"] == "TEMPLATE_ERROR"
    pattern = message.pattern if isinstance(message, re.Pattern) else re.escape(message)
    assert re.match(re.escape("in 'set.y': ") + pattern, record["error"]["message"])
    assert "y" not in record["keys"]


def test_render_time_is_bounded(tmp_path):
    """A render under every size and work limit, but slow, stops at the deadline."""
    template = (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}"
    )
    project = write_project(tmp_path, {}, {"t": assign_flow(template)})
    started = time.monotonic()
    code, record, _ = run_json(project.root, "t")
    assert time.monotonic() - started < 5
    assert code == 1
    assert record["error"]["message"] == "in 'set.y': template took longer than 1 s to render"


def test_caller_values_are_data(tmp_path):
    project = write_project(tmp_path, {}, {"t": assign_flow("Hi $call.cli {{ $call.cli }}")})
    code, record, _ = run_json(project.root, "t", "--call", "cli={{ 7*7 }}$flow.key.x")
    assert code == 0
    assert record["keys"]["y"] == "Hi {{ 7*7 }}$flow.key.x {{ 7*7 }}$flow.key.x"


# --- header values ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rX-Injected: 1"])
def test_line_break_in_a_header_value_is_refused(tmp_path, server, value):
    hook = {"url": f"{server.url}/ok", "headers": {"X-Caller": "$call.cli"}}
    project = write_project(tmp_path, {"hook": hook}, {"call": CALL_FLOW.format(hook="hook")})
    code, record, stderr = run_json(project.root, "call", "--call", f"cli={value}")
    assert (code, stderr) == (1, "")
    assert record["error"] == {
        "step": "call",
        "reason": "TEMPLATE_ERROR",
        "message": "in 'headers.X-Caller': header value contains a line break",
    }
    assert server.hits == []


def test_line_break_in_a_secret_header_is_not_sent(tmp_path, server):
    hook = {"url": f"{server.url}/ok", "auth": {"bearer": {"token": {"secret": "TOKEN"}}}}
    project = write_project(tmp_path, {"hook": hook}, {"call": CALL_FLOW.format(hook="hook")})
    env = {"TOKEN": "t0ken\r\nX-Injected: 1"}
    code, record, stderr = run_json(project.root, "call", env=env)
    assert (code, stderr) == (1, "")
    assert record["error"] == {
        "step": "call",
        "reason": "CONNECTION_ERROR",
        "message": "request could not be sent (invalid header or method)",
    }
    assert server.hits == []


# --- values on the wire, byte for byte ----------------------------------------------------

CALL_VALUES = {
    "amp": "a&b",
    "eq": "k=v",
    "pct": "100%25 %",
    "plus": "1+1 2",
    "hash": "#frag?q",
    "nl": "line1\nline2\r\n",
    "uni": "héllo ☎ 𝄞 ünïcödé",
    "tpl": "{{ 7*7 }}{% raw %}",
    "ref": "$call.amp $$",
    "mix": "a=1&b=2#c%20d+e;f",
}
TYPED = {"n": ("3", 3), "obj": ('{"a":[1,null]}', {"a": [1, None]}), "none": ("null", None)}


def wire_project(tmp_path, server, body: str):
    hook = {"url": f"{server.url}/hook?fixed=1&x=%2B", "body": body}
    flow = CALL_FLOW.format(hook="hook") + "        params:\n          hint: $call.tpl\n"
    return write_project(tmp_path, {"hook": hook}, {"call": flow})


def call_args() -> list[str]:
    args = [a for name, value in CALL_VALUES.items() for a in ("--call", f"{name}={value}")]
    return args + [a for name, (text, _) in TYPED.items() for a in ("--call", f"{name}:={text}")]


def flat_pairs() -> list[tuple[str, str]]:
    flat = {"n": "3", "obj": '{"a":[1,null]}', "none": ""}
    return (
        [("method", "m")]
        + [(f"call.{name}", value) for name, value in CALL_VALUES.items()]
        + [(f"call.{name}", flat[name]) for name in TYPED]
        + [("hint", CALL_VALUES["tpl"])]
    )


def test_query_string_is_exact(tmp_path, server):
    project = wire_project(tmp_path, server, "none")
    code, _, _ = run_json(project.root, "call", *call_args())
    assert code == 0
    (hit,) = server.hits
    pairs = parse_qsl(hit["query"], keep_blank_values=True, strict_parsing=True)
    assert pairs == [("fixed", "1"), ("x", "+"), *flat_pairs()]
    assert hit["body"] == b""


def test_form_body_is_exact(tmp_path, server):
    project = wire_project(tmp_path, server, "form")
    code, _, _ = run_json(project.root, "call", *call_args())
    assert code == 0
    (hit,) = server.hits
    assert hit["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert hit["query"] == "fixed=1&x=%2B"
    body = hit["body"].decode("ascii")
    assert parse_qsl(body, keep_blank_values=True, strict_parsing=True) == flat_pairs()


def test_json_body_is_exact(tmp_path, server):
    project = wire_project(tmp_path, server, "json")
    code, _, _ = run_json(project.root, "call", *call_args())
    assert code == 0
    (hit,) = server.hits
    assert hit["headers"]["Content-Type"] == "application/json"
    call = {**CALL_VALUES, **{name: value for name, (_, value) in TYPED.items()}}
    assert json.loads(hit["body"].decode("utf-8")) == {
        "method": "m",
        "call": call,
        "flow": {"key": {}},
        "params": {"hint": "{{ 7*7 }}{% raw %}"},
    }
    assert b"{{ 7*7 }}" in hit["body"]


# --- the limits leave ordinary templates alone -------------------------------------------

ORDINARY = {
    "{{ '%05d-%s' % (42, 'x') }}": "00042-x",
    "{{ '{:>6}|{:.2f}'.format('ab', 2.5) }}": "    ab|2.50",
    "{{ 'ab'.center(6, '*') }}": "**ab**",
    "{{ [1, 2, 3] | join(', ') }}": "1, 2, 3",
    "{{ [[1], [2, 3]] | sum(start=[]) }}": [1, 2, 3],
    "{{ 'a-b c' | wordwrap(1) }}": "a\n-\nb\nc",
    "{{ 'x' * 3 ~ 1 }}": "xxx1",
    "{{ range(1000) | list | length }}": 1000,
    "{% set ns = namespace(s='') %}{% for i in range(50) %}{% set ns.s = ns.s ~ i %}"
    "{% endfor %}{{ ns.s | length }}": "90",
    "{% for a in range(300) %}{% for b in range(300) %}{% endfor %}{% endfor %}ok": "ok",
    "{{ {'b': [1, {'c': none}]} | tojson }}": '{"b": [1, {"c": null}]}',
    "{{ 'a\\tb'.expandtabs(4) | replace('a', 'A') | indent(2, true) }}": "  A   b",
}


@pytest.mark.parametrize("template", list(ORDINARY))
def test_ordinary_templates_still_render(template):
    compiled = compile_value(template, Where(step="t", field="set.y"))
    assert compiled.render(Variables()) == ORDINARY[template]

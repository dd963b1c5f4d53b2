"""Property tests of the parsers under attack (hypothesis).

* the loader: any bytes or text give a Document or a LoadError; YAML-ish data survives a
  dump and a load unchanged;
* the schema check: any data gives a list of diagnostics, never an exception;
* the `$`-reference scanner and templates: any text gives a Compiled or a TemplateError,
  and rendering gives a value or a TemplateError; a value is never rendered again;
* the request builder: any call values and params reach the query string, the form body
  or the JSON body exactly;
* the egress policy and the secret scrubber: any URL gets a verdict; loopback in any
  spelling is refused; a remembered secret never survives scrubbing.
"""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowrunner.errors import Diagnostic, LoadError, Mark, TemplateError, Where
from flowrunner.execution.context import Context, MemoryUserKeys, Services
from flowrunner.execution.steps.webhook import build_request
from flowrunner.net.egress import EgressPolicy
from flowrunner.project import load_plan
from flowrunner.secrets import Scrubber, Secrets
from flowrunner.source import fastcheck, loader, schema, schema_errors
from flowrunner.source.model import HttpPolicy
from flowrunner.templating import MAX_OUTPUT, Variables, compile_value
from flowrunner.templating.references import Construct, Literal, Reference, scan

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


def one_line(diagnostic: Diagnostic) -> None:
    line = diagnostic.format()
    assert "\n" not in line and diagnostic.line >= 1 and diagnostic.column >= 1


# --- the loader --------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=2048))
def test_loader_takes_any_bytes(raw):
    try:
        document = loader.load_bytes(raw, "f.yaml")
    except LoadError as exc:
        one_line(exc.diagnostic)
        return
    for problem in document.problems:
        one_line(problem)


YAML_PIECES = st.sampled_from(
    ["a: 1\n", "- x\n", "  ", "&a ", "*a", "!!str ", "!x ", "{", "}", "[", "]", ", ", ": ",
     "? ", "'", '"', "\\", "#", "---\n", "...\n", "|\n", ">-\n", "\t", "0x1f", "1:30", "~",
     "<<: ", "%YAML 1.1\n", "\ufeff", "\x85", "\u2028", "é", "\n"]
)  # fmt: skip


@SETTINGS
@given(st.lists(YAML_PIECES, max_size=30).map("".join))
def test_loader_takes_any_yaml_ish_text(source):
    try:
        document = loader.load_text(source, "f.yaml")
    except LoadError as exc:
        one_line(exc.diagnostic)
        return
    for problem in document.problems:
        one_line(problem)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


@SETTINGS
@given(st.dictionaries(text, data, max_size=5))
def test_loader_round_trips_plain_data(value):
    # (escaped: PyYAML writes a raw NEL into a quoted scalar, where it reads as a space)
    source = yaml.dump(value, Dumper=_Dumper)
    document = loader.load_text(source, "f.yaml")
    assert document.data == value
    # PyYAML writes y and n unquoted (it reads them as strings too): only those warn
    assert all(p.rule == "yaml-truthy" for p in document.problems), document.problems


QUOTED_PIECES = {
    '"': st.sampled_from(
        ["ab", "x", " ", "  ", "\\\"", "\\\\", "\\n", "\\t", "\\u00e9", "\\x21", "\\U0001F600",
         "'", "é", "\n", "\n\n", "\n  ", "\\\n", "{{ a }}", "$flow.key.k"]
    ),
    "'": st.sampled_from(
        ["ab", "x", " ", "  ", "''", "\\", '"', "é", "\n", "\n\n", "\n  ", "{{ a }}", "$flow.key.k"]
    ),
}  # fmt: skip


@SETTINGS
@given(st.sampled_from(['"', "'"]).flatmap(
    lambda quote: st.tuples(st.just(quote), st.lists(QUOTED_PIECES[quote], max_size=12))
))  # fmt: skip
def test_positions_inside_quoted_strings_point_at_the_character(case):
    """Every letter of a quoted value, over lines, after escapes and folding, maps back
    to the very character of the source that wrote it."""
    from flowrunner.templating.compiling import offset_mark

    quote, pieces = case
    source = "key:  " + quote + "".join(pieces) + quote + "\n"
    try:
        document = loader.load_text(source, "f.yaml")
    except LoadError:
        return  # e.g. an escape cut by a line break: not a quoted string this test is about
    assume(not document.problems and isinstance(document.data, dict))
    value = document.data["key"]
    mark = document.mark(("key",))
    lines = source.split("\n")
    for offset, char in enumerate(value):
        if char.isalpha() and char.isascii():
            at = offset_mark(mark, value, offset)
            assert lines[at.line - 1][at.column - 1] == char, (value, offset, at)


# --- the schema check ------------------------------------------------------------------------

flowish = st.fixed_dictionaries(
    {},
    optional={
        "flow": data,
        "keys": data,
        "on_complete": data,
        "steps": st.lists(
            st.fixed_dictionaries(
                {},
                optional={"id": data, "operation": data, "webhook": data, "method": data,
                          "set": data, "when": data, "next": data, "params": data,
                          "parameters": data, "on_failure": data},
            ) | data,
            max_size=3,
        ) | data,
    },
)  # fmt: skip
projectish = st.fixed_dictionaries(
    {},
    optional={"version": data, "http": data, "webhooks": st.dictionaries(text, data) | data,
              "user_keys": data, "state": data, "delivery": data},
)  # fmt: skip


@SETTINGS
@given(st.sampled_from(["flow", "project"]), flowish | projectish | data)
def test_schema_check_gives_diagnostics(kind, value):
    document = loader.Document("f.yaml", value)
    diagnostics = schema.check(value, kind, "f.yaml", document.mark, document.key_mark)
    assert isinstance(diagnostics, list)
    for diagnostic in diagnostics:
        one_line(diagnostic)


@SETTINGS
@given(st.sampled_from(["flow", "project"]), flowish | projectish | data)
def test_quick_check_agrees_with_jsonschema(kind, value):
    # a document the quick check passes never reaches jsonschema: they must agree
    quick = fastcheck.is_valid(schema.inlined(kind), value)
    assert quick is schema_errors.validator(kind, schema.inlined(kind)).is_valid(value)


# --- references and templates -------------------------------------------------------------

TEMPLATE_PIECES = st.sampled_from(
    ["$call.cli", "$flow.key.n", "$user.key.tier", "$sys.flow", "$$", "$", "$x.y", ".", "(",
     ")", "{{ ", " }}", "{% ", " %}", "{#", "#}", "{% raw %}", "{% endraw %}", "{% if ",
     "{% endif %}", "{% for i in ", "{% endfor %}", "range(3)", " | upper", " | default('d')",
     " is defined", " ~ ", " + ", " * ", " % ", "'", '"', "[0]", "[1:]", ".__class__",
     "lipsum", "cycler", "7*7", "-", "é", "\n", " ", "x"]
)  # fmt: skip
template_text = st.lists(TEMPLATE_PIECES, max_size=14).map("".join) | text
WHERE = Where(file="f.yaml", mark=Mark(4, 9, '"'), step="s", field="set.x")


def variables_for(value: Any) -> Variables:
    flat = {"cli": value, "n": 3, "tier": "gold", "flow": "f"}
    return Variables(call=dict(flat), flow=dict(flat), user=dict(flat), sys=dict(flat))


@SETTINGS
@given(template_text)
def test_scan_pieces_match_the_text(source):
    try:
        pieces = scan(source)
    except Exception as exc:  # only ScanError is allowed
        assert type(exc).__name__ == "ScanError"
        return
    position = 0
    for piece in pieces:
        if isinstance(piece, Construct):
            opener = "{%" if piece.opener == "raw" else piece.opener
            assert piece.start == position and source.startswith(opener, piece.start)
            position = piece.end
        elif isinstance(piece, Reference):
            assert piece.offset == position and source[position] == "$"
            position += len(piece.text)
        else:
            assert isinstance(piece, Literal) and piece.offset == position
            width = 2 if piece.text == "$" and source.startswith("$$", position) else 1
            position += len(piece.text) if piece.text != "$" else width
    assert position == len(source)


@SETTINGS
@given(template_text, data)
def test_templates_compile_and_render_or_fail_cleanly(source, value):
    try:
        compiled = compile_value(source, WHERE)
    except TemplateError as exc:
        assert exc.where.mark is not None and exc.where.mark.line >= 4
        return
    try:
        result = compiled.render(variables_for(value))
    except TemplateError:
        return
    assert isinstance(result, str | int | float | bool | type(None) | list | dict)
    if isinstance(result, str):
        assert len(result) <= MAX_OUTPUT


@SETTINGS
@given(data)
def test_values_are_never_rendered_again(value):
    for source in ("$call.cli", "{{ $call.cli }}"):
        assert compile_value(source, WHERE).render(variables_for(value)) == value


@SETTINGS
@given(text.filter(lambda t: "$" not in t and "{" not in t))
def test_plain_text_is_constant(source):
    assert compile_value(source, WHERE).render(Variables()) == source


# --- the request builder -----------------------------------------------------------------

PROJECT = """\
version: 1
http: {allow_http: true, allowlist: [127.0.0.1]}
webhooks:
  none: {url: "http://127.0.0.1:9/h?fixed=1", body: none, methods: {m: {}}}
  json: {url: "http://127.0.0.1:9/h", body: json, methods: {m: {}}}
  form: {url: "http://127.0.0.1:9/h", body: form, methods: {m: {}}}
"""
FLOW = """\
flow: {body}
keys: {{extra: null}}
steps:
  - id: call
    webhook: {body}
    method: m
    parameters: [call, flow.key, user.key]
    params: {{extra: $flow.key.extra, constant: "a&b=c"}}
"""


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("wire")
    (root / "flowrunner.yaml").write_text(PROJECT)
    (root / "flows").mkdir()
    for body in ("none", "json", "form"):
        (root / "flows" / f"{body}.yaml").write_text(textwrap.dedent(FLOW.format(body=body)))
    return {body: load_plan(Path(root), body) for body in ("none", "json", "form")}


def flat(value: Any) -> str:
    """The documented wire format, written out independently of the code under test."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def request_for(plan: Any, call: dict, flow: dict, user: dict) -> dict[str, Any]:
    services = Services(client=None, secrets=Secrets(env={}), users=MemoryUserKeys())
    variables = Variables(call=call, flow=flow, user=user, sys={"execution_id": "e"})
    ctx = Context(execution_id="e", plan=plan, variables=variables, services=services)
    return build_request(plan.steps[0], ctx)


groups = st.dictionaries(text, data, max_size=4)


@SETTINGS
@given(groups, groups, groups, data, st.sampled_from(["none", "json", "form"]))
def test_requests_carry_values_exactly(plans, call, flow, user, extra, body):
    flow = {**flow, "extra": extra}
    request = request_for(plans[body], call, flow, user)
    params = {"extra": extra, "constant": "a&b=c"}
    pairs = (
        [("method", "m")]
        + [(f"call.{k}", flat(v)) for k, v in call.items()]
        + [(f"flow.key.{k}", flat(v)) for k, v in flow.items()]
        + [(f"user.key.{k}", flat(v)) for k, v in user.items()]
        + [(k, flat(v)) for k, v in params.items()]
    )
    if body == "json":
        assert json.loads(request["body"]) == {
            "method": "m",
            "call": call,
            "flow": {"key": flow},
            "user": {"key": user},
            "params": params,
        }
        return
    encoded = urlsplit(request["url"]).query if body == "none" else request["body"].decode()
    decoded = parse_qsl(encoded, keep_blank_values=True, strict_parsing=bool(encoded))
    assert decoded == ([("fixed", "1")] if body == "none" else []) + pairs


@pytest.mark.parametrize("body", ["none", "json", "form"])
def test_request_with_a_lone_surrogate_is_built_or_refused(plans, body):
    try:
        request_for(plans[body], {"cli": "a\ud800b"}, {"extra": None}, {})
    except TemplateError:
        pass  # a clean step failure is as good as a request


# --- egress and scrubbing --------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=80) | st.builds("https://{}/".format, text))
def test_any_url_gets_a_verdict(url):
    verdict = EgressPolicy(HttpPolicy(allow_http=True)).check_url(url)
    assert verdict is None or isinstance(verdict, str)


@SETTINGS
@given(st.integers(0x7F000000, 0x7FFFFFFF), st.sampled_from(["dotted", "int", "hex", "mapped"]))
def test_loopback_in_any_spelling_is_refused(number, spelling):
    dotted = ".".join(str((number >> s) & 0xFF) for s in (24, 16, 8, 0))
    host = {"dotted": dotted, "int": str(number), "hex": hex(number),
            "mapped": f"[::ffff:{dotted}]"}[spelling]  # fmt: skip
    assert EgressPolicy(HttpPolicy(allow_http=True)).check_url(f"http://{host}:80/") is not None


secret_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="*"),
                      min_size=4, max_size=30)  # fmt: skip


@SETTINGS
@given(secret_text, text, text, st.text("abcdefghij:", max_size=8))
def test_a_remembered_secret_never_survives_scrubbing(secret, before, after, user):
    scrubber = Scrubber()
    scrubber.remember(secret)
    encoded = base64.b64encode(f"{user}:{secret}".encode()).decode()
    for shown in (before + secret + after, json.dumps({"v": secret}), f"Basic {encoded}"):
        scrubbed = scrubber.scrub(shown)
        assert secret not in scrubbed
        assume(len(secret.encode()) >= 8)  # shorter ones have no trusted base64 fragment
        assert encoded not in scrubbed

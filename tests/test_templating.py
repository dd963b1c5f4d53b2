from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowrunner.errors import Mark, TemplateError, UndefinedReference, Where
from flowrunner.templating import (
    SCOPES,
    Constant,
    Expression,
    JinjaText,
    ListValue,
    MappingValue,
    Reference,
    ReferenceValue,
    Text,
    Variables,
    compile_value,
    format_text,
    offset_mark,
    suggest,
)

WHERE = Where(file="flows/order.yaml", mark=Mark(14, 17), step="lookup")
PREFIX = "flows/order.yaml:14:17: step 'lookup': "


def variables() -> Variables:
    return Variables(
        call={"cli": {"number": "0612345678"}, "note": "{{ 7*7 }}", "dnis": "0800"},
        flow={
            "attempts": 0,
            "order_id": "A-17",
            "status": "shipped",
            "order_status": None,
            "ok": True,
            "caller": "ann",
            "basket": {"id": 7, "items": [1, "é"]},
            "price": 2.5,
        },
        user={"tier": "gold"},
        sys={"flow": "order-status", "execution_id": "e1"},
    )


def render(text: object, where: Where = WHERE) -> object:
    return compile_value(text, where).render(variables())


def failure(text: str, where: Where = WHERE) -> TemplateError:
    """The TemplateError that compiling or rendering ``text`` raises."""
    with pytest.raises(TemplateError) as info:
        render(text, where)
    return info.value


# --- typed values and text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$flow.key.attempts", 0),
        ("{{ $flow.key.attempts + 1 }}", 1),
        ("{{ $flow.key.attempts == 0 }}", True),
        ("$flow.key.ok", True),
        ("$flow.key.order_status", None),
        ("{{ $flow.key.order_status }}", None),
        ("$flow.key.basket", {"id": 7, "items": [1, "é"]}),
        ("{{- $flow.key.basket.id -}}", 7),
        ("$flow.key.price", 2.5),
        ("{{ $flow.key.price * 2 }}", 5.0),
        ("$call.cli.number", "0612345678"),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ {'a': [$user.key.tier]} }}", {"a": ["gold"]}),
        ("{{ $sys.flow ~ '!' }}", "order-status!"),
    ],
)
def test_a_whole_reference_or_expression_keeps_the_type(text: str, expected: object) -> None:
    result = render(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("plain words", Constant),
        ("$call.dnis", ReferenceValue),
        ("{{ $call.dnis }}", ReferenceValue),
        ("Hello $call.dnis", Text),
        ("{{ 1 + 1 }}", Expression),
        ("a {{ 1 + 1 }}", JinjaText),
        (" {{ $call.dnis }}", JinjaText),
    ],
)
def test_each_string_gets_the_cheapest_shape(text: str, shape: type) -> None:
    assert type(compile_value(text, WHERE)) is shape


def test_references_and_plain_text_never_touch_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_jinja() -> None:
        raise AssertionError("Jinja used")

    # every module of the package that can reach Jinja's environment, all imported
    # before any is patched: one imported after would keep the patch for good
    names = ("parsing", "environment", "static", "syntax")
    modules = [importlib.import_module(f"flowrunner.templating.{name}") for name in names]
    for target in modules:
        monkeypatch.setattr(target, "sandbox_environment", no_jinja)
    assert render("$call.dnis") == "0800"
    assert render("{{ $call.dnis }}") == "0800"
    assert render("Dial $call.dnis, $$1 a minute") == "Dial 0800, $1 a minute"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (3, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ({"a": [1, "é"], "b": None}, '{"a":[1,"é"],"b":null}'),
        ([1, 2], "[1,2]"),
    ],
)
def test_format_text(value: object, expected: str) -> None:
    assert format_text(value) == expected


def test_text_formatting_is_the_same_with_and_without_jinja() -> None:
    plain = (
        "n=$flow.key.attempts p=$flow.key.price ok=$flow.key.ok"
        " none=[$flow.key.order_status] o=$flow.key.basket"
    )
    jinja = (
        "n={{ $flow.key.attempts }} p={{ $flow.key.price }} ok={{ $flow.key.ok }}"
        " none=[{{ $flow.key.order_status }}] o={{ $flow.key.basket }}"
    )
    expected = 'n=0 p=2.5 ok=true none=[] o={"id":7,"items":[1,"é"]}'
    assert render(plain) == expected
    assert render(jinja) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$$5 and $$call.cli", "$5 and $call.cli"),
        ("costs $5", "costs $5"),
        ("a $ b $", "a $ b $"),
        ("$$ {{ 1 }}", "$ 1"),
        ("{{ '$call.dnis' }}", "$call.dnis"),
        ("{{ 'a$$b' }}", "a$$b"),
    ],
)
def test_dollar_signs(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Order is $flow.key.status.", "Order is shipped."),
        ("$flow.key.status...", "shipped..."),
        ("$flow.key.status.5", "shipped.5"),
        ("Order {{ $flow.key.order_id }} is $flow.key.status.", "Order A-17 is shipped."),
        ("($call.dnis)", "(0800)"),
    ],
)
def test_a_dot_not_followed_by_a_name_ends_the_reference(text: str, expected: str) -> None:
    assert render(text) == expected


def test_nested_references() -> None:
    assert render("{{ $flow.key.basket.items[1] }}") == "é"
    assert render("id $flow.key.basket.id") == "id 7"
    assert compile_value("$flow.key.basket.id", WHERE).references == (
        Reference("flow.key", ("basket", "id"), 0),
    )


def test_a_reference_followed_by_a_parenthesis_calls_a_method() -> None:
    compiled = compile_value("{{ $flow.key.caller.upper() }}", WHERE)
    assert compiled.references == (Reference("flow.key", ("caller",), 3),)
    assert compiled.render(variables()) == "ANN"
    assert render("{{ $flow.key.caller.replace('a', 'e') }}") == "enn"
    assert render("{{ $call.cli.number[-4:] }}") == "5678"
    assert render("{{ $call.cli.number | length }}") == 10
    assert render("{{ $flow.key.basket.items | join(',') }}") == "1,é"


def test_outside_jinja_a_parenthesis_is_text() -> None:
    error = failure("$flow.key.caller.upper()")
    assert error.bare_message == "undefined variable $flow.key.caller.upper"


def test_blocks() -> None:
    template = "{% if $flow.key.attempts == 0 %}first{% else %}again{% endif %} call"
    assert render(template) == "first call"
    loop = "{% for item in $flow.key.basket.items %}{{ loop.index }}:{{ item }};{% endfor %}"
    assert render(loop) == "1:1;2:é;"
    assert render("{% set n = $flow.key.attempts + 2 %}{{ n * n }}") == "4"
    assert render("{% raw %}{{ $call.dnis }}{% endraw %} $call.dnis") == "{{ $call.dnis }} 0800"
    assert render("{{ 1 }} line\n") == "1 line\n"
    assert render("{#$call.dnis#} {{ 1 }}") == "{#0800#} 1"
    assert render("{$call.dnis} {{ 1 }}") == "{0800} 1"


def test_references_are_listed_in_source_order() -> None:
    compiled = compile_value("{{ $flow.key.a + $call.b }} $user.key.c {{ '$sys.x' }}", WHERE)
    assert compiled.references == (
        Reference("flow.key", ("a",), 3),
        Reference("call", ("b",), 17),
        Reference("user.key", ("c",), 28),
    )
    assert [ref.text for ref in compiled.references] == ["$flow.key.a", "$call.b", "$user.key.c"]
    assert not compiled.is_constant
    assert SCOPES == ("call", "flow.key", "user.key", "sys")


# --- values are data ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$call.note", "{{ 7*7 }}"),
        ("note: $call.note", "note: {{ 7*7 }}"),
        ("{{ $call.note }}!", "{{ 7*7 }}!"),
        ("{{ $call.note ~ '' }}", "{{ 7*7 }}"),
        ("{% for c in [$call.note] %}{{ c }}{% endfor %}", "{{ 7*7 }}"),
    ],
)
def test_values_are_never_rendered_again(text: str, expected: str) -> None:
    assert render(text) == expected


# --- undefined references --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "$flow.key.ordr",
        "Order $flow.key.ordr",
        "{{ $flow.key.ordr }} x",
        "{{ $flow.key.ordr + 1 }}",
    ],
)
def test_an_unset_flow_key_is_an_error_with_a_suggestion(text: str) -> None:
    error = failure(text)
    assert isinstance(error, UndefinedReference)
    assert (
        str(error)
        == PREFIX + "undefined variable $flow.key.ordr (did you mean $flow.key.order_id?)"
    )
    assert error.rule == "undefined-key"
    assert (error.reference, error.suggestion) == ("$flow.key.ordr", "$flow.key.order_id")


@pytest.mark.parametrize("text", ["$call.cli.numbr", "{{ $call.cli.numbr[-4:] }}"])
def test_a_nested_suggestion(text: str) -> None:
    error = failure(text)
    assert (
        error.bare_message == "undefined variable $call.cli.numbr (did you mean $call.cli.number?)"
    )


def test_undefined_without_a_suggestion() -> None:
    assert failure("a $flow.key.zzz b").bare_message == "undefined variable $flow.key.zzz"
    assert failure("$user.key.tier.level").bare_message == "undefined variable $user.key.tier.level"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ $call.digits | default('none') }}", "none"),
        ("{{ $call.digits | d('1,2') | length }}", 3),
        ("{{ $call.dnis | default('x') }}", "0800"),
        ("{{ $call.digits is defined }}", False),
        ("{{ $call.dnis is not undefined }}", True),
        ("{% if $flow.key.basket.zz is undefined %}unset{% endif %}", "unset"),
    ],
)
def test_default_and_defined_see_unset_values(text: str, expected: object) -> None:
    assert render(text) == expected


def test_elsewhere_in_jinja_an_unset_value_is_an_error() -> None:
    error = failure("{{ $call.topics | upper }}")
    assert isinstance(error, UndefinedReference)
    assert error.bare_message == "undefined variable $call.topics"


def test_render_errors_carry_the_compile_time_where() -> None:
    where = Where(file="f.yaml", mark=Mark(3, 9, '"'), step="s", field="url")
    error = failure("{{ 1 / 0 }}", where)
    assert error.where == where
    assert (
        str(error)
        == "f.yaml:3:9: step 's' field 'url': could not render template: division by zero"
    )


# --- compile errors and their positions -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "$calls.cli",
            17,
            "unknown reference $calls.cli: references start with $call., $flow.key., "
            "$user.key. or $sys. (did you mean $call.cli?)",
        ),
        (
            "is $flow.ky.x",
            20,
            "unknown reference $flow.ky.x: references start with $call., $flow.key., "
            "$user.key. or $sys. (did you mean $flow.key.x?)",
        ),
        ("dial $call", 22, "reference $call needs a name, as in $call.<name>"),
        ("$flow.key.", 17, "reference $flow.key needs a name, as in $flow.key.<name>"),
        (
            "{{ $usr.key.x }}",
            20,
            "unknown reference $usr.key.x: references start with $call., $flow.key., "
            "$user.key. or $sys. (did you mean $user.key.x?)",
        ),
        (
            "{{ flow.key.x }}",
            20,
            "unknown name 'flow' in template; references start with $: "
            "$call.<name>, $flow.key.<name>, $user.key.<name>, $sys.<name>",
        ),
    ],
)
def test_unknown_scope_is_a_compile_error_at_the_dollar(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value(text, WHERE)
    assert info.value.rule == "unknown-scope"
    assert info.value.bare_message == message
    assert info.value.where.mark == Mark(14, column)


def test_positions_count_the_opening_quote() -> None:
    where = Where(file="f.yaml", mark=Mark(14, 17, "'"), step="s")
    with pytest.raises(TemplateError) as info:
        compile_value("Hi $calls.cli", where)
    assert str(info.value).startswith("f.yaml:14:21: step 's': unknown reference $calls.cli")


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("Order {{ 1 + }} x", 23, "template syntax error: unexpected 'end of print statement'"),
        ("{{ 1 $ 2 }}", 22, "template syntax error: unexpected char '$'"),
        ("ab {% if true %}x", 20, "template syntax error: Unexpected end of template. Jinja was"),
        ("{% if true %}{% for %}{% endif %}", 30, "template syntax error: Expected an expression"),
        ("a {{ x", 19, "template syntax error: unexpected end of template, expected"),
        (
            "x {{ $call.b|lenght }}",
            30,
            "template syntax error: No filter named 'lenght' (did you mean 'length'?)",
        ),
        (
            "{{ $call.a $call.b }}",
            17,
            "template syntax error: expected token 'end of print statement', got a $ reference",
        ),
        ("{% include 'x' %}", 20, "template syntax error: {% include %} is not supported"),
    ],
)
def test_syntax_errors_are_positioned_inside_the_string(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value(text, WHERE)
    assert info.value.rule == "template-syntax"
    assert info.value.bare_message.startswith(message)
    assert info.value.where.mark == Mark(14, column)
    assert str(info.value).startswith(f"flows/order.yaml:14:{column}: step 'lookup': {message}")


@pytest.mark.parametrize(
    ("mark", "source", "offset", "expected"),
    [
        (Mark(14, 17), "abc {{ x", 4, Mark(14, 21)),
        (Mark(14, 17, '"'), "abc {{ x", 4, Mark(14, 22, '"')),
        (Mark(14, 17, "'"), "abc", 0, Mark(14, 18, "'")),
        (Mark(3, 10, "|"), "line one\n  {{ x", 11, Mark(5, 3, "|")),
        (Mark(3, 10, ">"), "one", 2, Mark(4, 3, ">")),
        (Mark(3, 10), "a\nbc", 3, Mark(4, 2)),
        (Mark(3, 10), "abc", 99, Mark(3, 13)),
        (Mark(3, 10), "abc", -5, Mark(3, 10)),
    ],
)
def test_offset_mark(mark: Mark, source: str, offset: int, expected: Mark) -> None:
    assert offset_mark(mark, source, offset) == expected


def test_suggest() -> None:
    assert suggest("ordr", ["order_id", "attempts"]) == "order_id"
    assert suggest("zzz", ["order_id"]) is None
    assert suggest("tier", [1, None, "tier"]) == "tier"


# --- the sandbox and the limits ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__ }}",
        "{{ ($call.dnis).__class__.__mro__ }}",
        "{{ range.__globals__ }}",
        "{{ $call.dnis|attr('format') }}",
        "{{ '{0.__class__}'.format($call.dnis) }}",
        "{{ $call.dnis[('__cla' ~ 'ss__')] }}",
        "{{ range(10**9) | list }}",
        "{% for i in range(10**9) %}{% endfor %}",
        "{{ $flow.key.basket.items.append(3) }}",
    ],
)
def test_sandbox_escapes_are_refused(text: str) -> None:
    error = failure(text)
    assert error.rule == "template-unsafe"
    assert error.bare_message.startswith("unsafe template: ")


def test_unsafe_messages() -> None:
    assert failure("{{ ''.__class__ }}").bare_message == (
        "unsafe template: access to attribute '__class__' is not allowed"
    )
    assert failure("{{ range(10**9) }}").bare_message == (
        "unsafe template: range() is limited to 100000 items"
    )
    assert failure("{{ '{0.__class__}'.format(1) }}").bare_message == (
        "unsafe template: access to attribute '__class__' of 'int' object is unsafe."
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{% for i in range(7000) %}0123456789{% endfor %}", "rendered text is over 64 KiB"),
        ("{{ 'a' * 65536 }}x", "rendered text is over 64 KiB"),
        ("{{ 'é' * 40000 }}", "rendered text is over 64 KiB"),
        ("x {{ 'é' * 40000 }}", "rendered text is over 64 KiB"),
        ("{{ 'a' * 10**9 }}", "value too large: the result of * is over 64 KiB"),
        ("{{ 10 ** 100000000 }}", "value too large: the result of ** is over the limit"),
    ],
)
def test_output_and_values_are_capped(text: str, message: str) -> None:
    error = failure(text)
    assert (error.rule, error.bare_message) == ("template-too-large", message)


def test_text_from_references_is_capped_too() -> None:
    big = Variables(flow={"big": "x" * 70_000})
    assert compile_value("$flow.key.big", WHERE).render(big) == "x" * 70_000
    with pytest.raises(TemplateError) as info:
        compile_value("a $flow.key.big", WHERE).render(big)
    assert info.value.rule == "template-too-large"
    assert render("{{ 'a' * 65536 }}") == "a" * 65536


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion too deep"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ 1.5 ** 100000 }}", "number out of range"),
        ("{{ 1 + 'a' }}", "unsupported operand type(s) for +: 'int' and 'str'"),
        ("{{ $flow.key.caller.index('zz') }}", "ValueError"),
        ("{{ $call.dnis.nope() }}", "'str object' has no attribute 'nope'"),
        ("{{ range(3) }}", "the template gives a range object, not data"),
        (
            "a {{ $flow.key.basket.items }}{{ lipsum }}",
            "the template gives a function object, not data",
        ),
    ],
)
def test_render_failures_are_short_template_errors(text: str, reason: str) -> None:
    error = failure(text)
    assert error.rule == "template-render"
    assert error.bare_message == f"could not render template: {reason}"


# --- dicts and lists ---------------------------------------------------------------------------


def test_structures_compile_their_strings_but_not_their_keys() -> None:
    value = {"$call.dnis": "$call.dnis", "n": 3, "l": ["{{ 1 + 1 }}", None, "x $flow.key.caller"]}
    compiled = compile_value(value, WHERE)
    assert isinstance(compiled, MappingValue)
    assert compiled.render(variables()) == {"$call.dnis": "0800", "n": 3, "l": [2, None, "x ann"]}
    assert [ref.text for ref in compiled.references] == ["$call.dnis", "$flow.key.caller"]
    assert not compiled.is_constant


def test_constant_structures_render_fresh_containers() -> None:
    compiled = compile_value({"a": [1, "x"]}, WHERE)
    assert compiled.is_constant
    first = compiled.render(variables())
    assert first == {"a": [1, "x"]}
    assert first is not compiled.render(variables())
    assert isinstance(compile_value([1], WHERE), ListValue)


def test_errors_in_nested_strings_name_the_field_and_keep_the_mark() -> None:
    where = Where(file="f.yaml", mark=Mark(5, 7), step="s", field="params")
    with pytest.raises(TemplateError) as info:
        compile_value({"a": ["ok", {"b": "x $calls.y"}]}, where)
    assert str(info.value).startswith(
        "f.yaml:5:7: step 's' field 'params.a[1].b': unknown reference"
    )


# --- never another exception ------------------------------------------------------------------

_TOKENS = st.sampled_from(
    ["$", "$$", "{{", "}}", "{%", "%}", "{#", "'", '"', "\\", "(", ")", "[", "]", "{", "}",
     ".", "-", "|", " ", "\n", "call", "flow", "key", "user", "sys", "cli", "x", "_ref",
     "range", "if", "endif", "for", "in", "endfor", "raw", "endraw", "set", "=", "*", "**",
     "9", "__class__", "attr", "loop", "default", "is", "defined", "é"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.lists(_TOKENS, max_size=25).map("".join)))
def test_any_string_compiles_or_fails_with_a_template_error(text: str) -> None:
    try:
        compiled = compile_value(text, Where(file="f.yaml", mark=Mark(2, 3, '"')))
    except TemplateError:
        return
    try:
        compiled.render(Variables())
    except TemplateError:
        pass

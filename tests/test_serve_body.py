"""The request body of ``serve``: the direct check agrees with the JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from flowrunner.server.body import conforms, parse, request_schema
from flowrunner.server.problems import Problem

VALIDATOR = Draft202012Validator(request_schema())

names = st.sampled_from(["a", "_x", "n1", "1bad", "bad name", "x\n", "", "$flow.key.n", "é"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2), max_leaves=4)
mappings = st.dictionaries(names, values, max_size=3)
key_items = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(names, st.integers()),
        "value": values,
        "other": values,
    },
)
calls = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "client-identifier": st.one_of(st.text(max_size=3), st.just("x" * 257), st.integers()),
            "call": st.one_of(mappings, values),
            "keys": st.one_of(mappings, st.lists(st.one_of(key_items, values), max_size=3), values),
            "user_keys": st.one_of(mappings, values),
            "extra": values,
        },
    ),
    values,
)
bodies = st.one_of(
    st.fixed_dictionaries({"calls": st.lists(calls, max_size=3)}, optional={"more": values}),
    st.fixed_dictionaries({"calls": values}),
    values,
)


@settings(max_examples=600, deadline=None)
@given(bodies)
def test_the_direct_check_agrees_with_the_schema(data: Any) -> None:
    assert conforms(data) == VALIDATOR.is_valid(data)


def test_limits_of_the_number_of_calls() -> None:
    assert conforms({"calls": [{}] * 500})
    assert not conforms({"calls": [{}] * 501}) and not VALIDATOR.is_valid({"calls": [{}] * 501})
    assert not conforms({"calls": []})


def test_parse_gives_mapping_keys_from_either_form() -> None:
    calls = parse(
        b'{"calls": [{"keys": [{"name": "$flow.key.a", "value": 1}, {"name": "b"}]},'
        b' {"keys": {"c": [1]}, "client-identifier": "x"}]}'
    )
    assert calls[0]["keys"] == {"a": 1, "b": None}
    assert calls[1] == {"call": {}, "keys": {"c": [1]}, "user_keys": {}, "client-identifier": "x"}


@pytest.mark.parametrize("raw", [b"", b"\xff", b"[1,", b'"\\ud800"', b"[" * 100_000])
def test_hostile_bodies_are_bad_json_or_invalid(raw: bytes) -> None:
    with pytest.raises(Problem) as info:
        parse(raw)
    assert info.value.kind in ("bad-json", "invalid-body")


def test_the_curl_example_of_the_docs_is_a_valid_body() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "serve.md").read_text()
    example = doc.split("  -d '", 1)[1].split("'", 1)[0]
    calls = parse(example.encode())
    assert calls[0]["keys"] == {"order_id": "A-1"} and calls[1]["keys"] == {"order_id": "A-2"}

"""``@frozen`` behaves as ``@dataclass(frozen=True, slots=True)``: the same repr,
equality, hash and refusal to change, field options honoured."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from flowrunner.frozen import frozen


def _pair(kw_only: bool) -> tuple[type, type]:
    def body() -> dict[str, object]:
        return {
            "__annotations__": {"a": "int", "b": "str", "hidden": "list[int]", "c": "tuple"},
            "b": "x",
            "hidden": field(default_factory=list, compare=False, repr=False),
            "c": (),
        }

    made = (
        frozen(kw_only=True)(type("Item", (), body()))
        if kw_only
        else frozen(type("Item", (), body()))
    )
    plain = dataclass(frozen=True, slots=True, kw_only=kw_only)(type("Item", (), body()))
    return made, plain


@pytest.mark.parametrize("kw_only", [False, True])
def test_frozen_matches_a_frozen_slotted_dataclass(kw_only: bool) -> None:
    made, plain = _pair(kw_only)
    for values in ({"a": 1}, {"a": 2, "b": "y", "hidden": [3], "c": (1, [2])}):
        ours, theirs = made(**values), plain(**values)
        assert repr(ours) == repr(theirs)
        assert ours == made(**{**values, "hidden": [9]})  # compare=False
        assert ours != made(**{**values, "a": 7})
        assert (ours == theirs) is False  # another class
        if values.get("c") == ():
            assert hash(ours) == hash(theirs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            ours.a = 5  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del ours.a  # type: ignore[misc]
        assert dataclasses.replace(ours, a=3).a == 3
        assert not hasattr(ours, "__dict__")
    assert [f.name for f in dataclasses.fields(made)] == ["a", "b", "hidden", "c"]
    assert made.__match_args__ == plain.__match_args__


def test_no_field_one_field_and_pickling() -> None:
    empty = frozen(type("Empty", (), {}))
    assert empty() == empty() and hash(empty()) == hash(()) and repr(empty()) == "Empty()"
    one = frozen(type("One", (), {"__annotations__": {"n": "int"}}))
    assert one(1) == one(1) != one(2)
    assert hash(one(1)) == hash((1,))
    globals()["One"] = one
    one.__qualname__ = "One"
    assert pickle.loads(pickle.dumps(one(4))) == one(4)


def test_what_frozen_does_not_support_is_refused() -> None:
    with pytest.raises(TypeError, match="init=False"):
        frozen(type("Late", (), {"__annotations__": {"n": "int"}, "n": field(init=False)}))
    with pytest.raises(TypeError, match="__post_init__"):
        frozen(type("Post", (), {"__annotations__": {}, "__post_init__": lambda self: None}))
    with pytest.raises(TypeError, match="InitVar"):
        frozen(type("Var", (), {"__annotations__": {"n": "dataclasses.InitVar[int]"}}))


def test_mixed_positional_and_keyword_fields_and_factories() -> None:
    base = frozen(type("Base", (), {"__annotations__": {"a": "int"}}))
    made = frozen(kw_only=True)(
        type("Sub", (base,), {"__annotations__": {"b": "list"}, "b": field(default_factory=list)})
    )
    plain_base = dataclass(frozen=True, slots=True)(
        type("Base", (), {"__annotations__": {"a": "int"}})
    )
    plain = dataclass(frozen=True, slots=True, kw_only=True)(
        type(
            "Sub",
            (plain_base,),
            {"__annotations__": {"b": "list"}, "b": field(default_factory=list)},
        )
    )
    assert repr(made(1)) == repr(plain(1)) == "Sub(a=1, b=[])"
    assert made(1).b is not made(1).b
    assert made(1, b=[2]) == made(1, b=[2])
    with pytest.raises(TypeError):
        made(1, [2])  # b is keyword-only
    with pytest.raises(TypeError):
        made()  # a is required

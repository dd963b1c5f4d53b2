"""``@frozen``: the immutable, slotted dataclasses of the model, the plan and the
templates, cheaper to define.

``@frozen`` is ``@dataclass(frozen=True, slots=True)`` (``@frozen(kw_only=True)`` adds
``kw_only=True``) with the same behaviour: the same ``__init__``, the same
``FrozenInstanceError`` on assignment, and a ``__repr__``, ``__eq__`` and ``__hash__``
that give what dataclasses' would (fields with ``repr=False`` or ``compare=False``
left out alike). The difference is the cost: on Python 3.11 dataclasses compiles every
method it generates from source text, six per frozen class, which made the ~45 classes
a ``validate`` imports cost about 25 ms. Here dataclasses still compiles ``__init__``
and the frozen ``__setattr__`` and ``__delattr__``; the other three are one set of
functions over each class's fields, made without compiling anything.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def frozen(cls: type[T], /) -> type[T]: ...


@overload
def frozen(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    """The class as a frozen, slotted dataclass (keyword-only with ``kw_only=True``)."""

    def build(cls: type[T]) -> type[T]:
        made = dataclass(frozen=True, slots=True, kw_only=kw_only, repr=False, eq=False)(cls)
        _add_methods(made)
        return made

    return build if cls is None else build(cls)


def _add_methods(cls: type) -> None:
    every = fields(cls)
    shown = tuple(f.name for f in every if f.repr)
    compared = _values([f.name for f in every if f.compare])
    hashed = _values([f.name for f in every if (f.compare if f.hash is None else f.hash)])

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        inside = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({inside})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(hashed(self))

    for method in (__repr__, __eq__, __hash__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)


def _values(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A function giving the tuple of these attributes of an object, as the methods that
    dataclasses generates compare and hash them."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda item: (one(item),)
    return lambda item: ()

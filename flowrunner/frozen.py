"""``@frozen``: the immutable, slotted dataclasses of the model, the plan and the
templates, cheaper to define.

``@frozen`` is ``@dataclass(frozen=True, slots=True)`` (``@frozen(kw_only=True)`` adds
``kw_only=True``) with the same behaviour: the same ``__init__`` signature, the same
``FrozenInstanceError`` on assignment, the same pickling, and a ``__repr__``, ``__eq__``
and ``__hash__`` that give what dataclasses' would (fields with ``repr=False`` or
``compare=False`` left out alike). What differs is the cost: on Python 3.11 dataclasses
compiles every method it generates from source text, six per frozen class, which made
the ~45 classes a ``validate`` imports cost about 25 ms. Here only ``__init__`` is
compiled; the other methods are functions over each class's fields, made without
compiling anything. ``InitVar``, ``field(init=False)`` and ``__post_init__`` are not
supported (nothing uses them): the decorator refuses them. Introspection sees one
difference: ``__dataclass_params__.frozen`` is False, since dataclasses did not make
the class frozen itself (so a plain ``@dataclass(frozen=True)`` cannot subclass one).
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import MISSING, Field, FrozenInstanceError, dataclass, field, fields
from operator import attrgetter
from typing import Any, TypeVar, cast, dataclass_transform, overload

T = TypeVar("T")


@overload
def frozen(cls: type[T], /) -> type[T]: ...


@overload
def frozen(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    """The class as a frozen, slotted dataclass (keyword-only with ``kw_only=True``)."""

    def build(cls: type[T]) -> type[T]:
        # dataclasses makes the fields, the slots and __match_args__; the methods are ours
        made: Any = dataclass(slots=True, kw_only=kw_only, init=False, repr=False, eq=False)(cls)
        every = fields(made)
        _refuse_unsupported(made, every)
        made.__init__ = _init(made, every)
        _add_methods(made, every)
        return cast("type[T]", made)

    return build if cls is None else build(cls)


def _refuse_unsupported(cls: Any, every: tuple[Field[Any], ...]) -> None:
    declared: dict[str, Field[Any]] = cls.__dataclass_fields__
    pseudo = [f for f in declared.values() if f not in every]  # ClassVars and InitVars
    if (
        hasattr(cls, "__post_init__")
        or not all(f.init for f in every)
        or any("InitVar" in str(f.type) for f in pseudo)
    ):
        raise TypeError(f"@frozen {cls.__name__}: no __post_init__, InitVar or init=False")


_FACTORY = object()  # the default of a field with a default_factory


def _init(cls: type, every: tuple[Field[Any], ...]) -> Callable[..., None]:
    """``__init__`` as dataclasses writes it for a frozen class: one compiled function."""
    names: dict[str, Any] = {"_set": object.__setattr__, "_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in every:
        value = f.name
        if f.default is not MISSING:
            names[f"_default_{f.name}"] = f.default
            parameter = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            parameter = f"{f.name}=_FACTORY"
            value = f"_factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
        else:
            parameter = f.name
        (keyword if f.kw_only else positional).append(parameter)
        body.append(f"    _set(self, {f.name!r}, {value})")
    parameters = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({parameters}) -> None:\n" + ("\n".join(body) or "    pass")
    exec(source, names)
    init: Callable[..., None] = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


def _add_methods(cls: Any, every: tuple[Field[Any], ...]) -> None:
    names = frozenset(f.name for f in every)
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

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    def __getstate__(self: Any) -> list[Any]:
        return [getattr(self, f.name) for f in every]

    def __setstate__(self: Any, state: list[Any]) -> None:
        for f, value in zip(every, state, strict=False):
            object.__setattr__(self, f.name, value)

    methods = (__repr__, __eq__, __hash__, __setattr__, __delattr__, __getstate__, __setstate__)
    for method in methods:
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

"""Small value classes without `dataclasses`, which costs every hook call about 11 ms to import.

A record names its fields in order in `_fields` and keeps them in `__slots__ = _fields`; its
`__init__` is written out (typed, and checking what it must). This base gives what `@dataclass`
would: `==`, `repr()`, `replace()`, and for a `Frozen` record a hash and no assignment.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self


class Record:
    """Equal to a record of the same class with equal fields."""

    _fields: tuple[str, ...] = ()
    __slots__ = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == tuple(getattr(other, name) for name in self._fields)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self) -> tuple[object, ...]:
        # copy, deepcopy and pickle: the fields as they are (a Frozen refuses setattr).
        return _rebuild, (self.__class__, self._values())

    def replace(self, **changes: object) -> Self:
        """A copy with some fields changed, made (and checked) by `__init__` like the original."""
        values = {name: getattr(self, name) for name in self._fields}
        values.update(changes)
        make: Callable[..., Self] = self.__class__
        return make(**values)


class Frozen(Record):
    """A record whose fields are set once, in `__init__` through `_set`; hashable."""

    __slots__ = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())


def _rebuild(cls: type[Record], values: tuple[object, ...]) -> Record:
    obj = object.__new__(cls)
    for name, value in zip(cls._fields, values, strict=True):
        object.__setattr__(obj, name, value)
    return obj

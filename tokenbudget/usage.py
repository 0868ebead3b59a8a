"""Token usage of one API request or a sum of them: the unit everything else counts in."""

from __future__ import annotations

# typing.NamedTuple would cost a hook call the 5 ms of importing typing: the type checker (which
# reads any name TYPE_CHECKING as true) sees the typed class, the program the same namedtuple.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    class _Fields(NamedTuple):
        input: int = 0
        output: int = 0
        cache_write_5m: int = 0
        cache_write_1h: int = 0
        cache_read: int = 0

else:
    from collections import namedtuple

    _Fields = namedtuple(
        "_Fields",
        ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"),
        defaults=(0, 0, 0, 0, 0),
    )


class Usage(_Fields):
    """Input, output, cache writes (5-minute and 1-hour apart) and cache reads, in tokens."""

    __slots__ = ()

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        """All four kinds: what ccusage calls totalTokens."""
        return (
            self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read
        )

    def __add__(self, other: object) -> Usage:  # type: ignore[override,unused-ignore]
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(*(a + b for a, b in zip(self, other, strict=True)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(self, other, strict=True)))

    def clamp(self) -> Usage:
        """Negative fields become 0 (for differences that must not go below zero)."""
        return Usage(*(max(0, v) for v in self))

    def fieldwise_max(self, other: Usage) -> Usage:
        return Usage(*(max(a, b) for a, b in zip(self, other, strict=True)))

    def as_list(self) -> list[int]:
        return list(self)

    @classmethod
    def from_list(cls, values: object) -> Usage:
        if not isinstance(values, list | tuple) or len(values) != 5:
            raise ValueError(f"usage must be a list of 5 integers, not {values!r}")
        return cls(*(int(v) for v in values))


ZERO = Usage()

"""Usage: a named tuple of the five token counts, typed for mypy without importing typing."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

from tokenbudget import usage
from tokenbudget.usage import ZERO, Usage


def test_the_typed_fields_are_the_fields_the_program_uses() -> None:
    # mypy checks the class under TYPE_CHECKING; the program runs the namedtuple next to it.
    tree = ast.parse(Path(usage.__file__).read_text(encoding="utf-8"))
    [typed] = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "_Fields"]
    fields = [s for s in typed.body if isinstance(s, ast.AnnAssign)]
    names = tuple(f.target.id for f in fields if isinstance(f.target, ast.Name))
    assert names == Usage._fields
    assert all(ast.unparse(f.annotation) == "int" for f in fields)
    assert {ast.literal_eval(f.value) for f in fields if f.value is not None} == {0}
    assert Usage._field_defaults == dict.fromkeys(names, 0)


def test_a_tuple_with_names_and_sums() -> None:
    u = Usage(1, 2, 3, 4, 5)
    assert u == (1, 2, 3, 4, 5) and ZERO == Usage() == (0, 0, 0, 0, 0)
    assert (u.input, u.output, u.cache_write, u.cache_read, u.total) == (1, 2, 7, 5, 15)
    assert u + u == Usage(2, 4, 6, 8, 10) and u - u == ZERO
    assert (ZERO - u).clamp() == ZERO
    assert u._replace(output=9) == Usage(1, 9, 3, 4, 5)
    assert Usage.from_list([1, 2, 3, 4, 5]) == u
    assert repr(u) == "Usage(input=1, output=2, cache_write_5m=3, cache_write_1h=4, cache_read=5)"
    assert type(pickle.loads(pickle.dumps(u))) is Usage
    assert not hasattr(u, "__dict__")

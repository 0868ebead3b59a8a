"""The value classes behave as the dataclasses they replace: equality, repr, hash, replace."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenbudget.budgets import Block, Budget, Decision, evaluate
from tokenbudget.config import Config
from tokenbudget.enforce import Context
from tokenbudget.errors import ConfigError

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_equal_by_class_and_fields() -> None:
    assert Budget("daily", 1000) == Budget("daily", 1000.0)
    assert Budget("daily", 1000) != Budget("daily", 1001)
    assert Budget("daily", 1000) != Budget("daily", 1000, source="project")
    assert Budget("daily", 1000) != ("daily", 1000.0)
    assert Block(NOW, NOW, NOW, NOW) != Decision("allow")


def test_repr_names_every_field_in_order() -> None:
    assert repr(Budget("command", 5, "usd", name="test")) == (
        "Budget(kind='command', limit=5.0, unit='usd', name='/test', mode='block', "
        "warn_at=0.8, project=None, source='user')"
    )
    assert repr(Decision("allow")) == "Decision(action='allow', checks=())"


def test_frozen_records_hash_and_refuse_assignment() -> None:
    budget = Budget("daily", 1000)
    assert len({budget, Budget("daily", 1000), Budget("weekly", 1000)}) == 2
    with pytest.raises(AttributeError, match="cannot assign to field 'limit'"):
        budget.limit = 5
    with pytest.raises(AttributeError, match="cannot delete field 'limit'"):
        del budget.limit
    check = evaluate(budget, 900, 0, NOW, None)
    with pytest.raises(AttributeError):
        check.used = 0
    assert hash(check) == hash(evaluate(budget, 900, 0, NOW, None))


def test_replace_goes_through_init() -> None:
    budget = Budget("command", 1000, name="test", warn_at=0.5)
    assert budget.replace(limit=2000) == Budget("command", 2000, name="/test", warn_at=0.5)
    assert budget.replace(mode="warn").mode == "warn"
    assert budget.limit == 1000  # the original is unchanged
    with pytest.raises(ConfigError, match="limit"):
        budget.replace(limit=-1)
    with pytest.raises(TypeError):
        budget.replace(colour="red")


def test_context_is_mutable_and_unhashable() -> None:
    ctx = Context(session_id="s", project="/p", now=NOW, tz=UTC)
    ctx.listing = True
    assert ctx == Context("s", "/p", NOW, UTC, listing=True)
    with pytest.raises(TypeError):
        hash(ctx)


def test_each_config_gets_its_own_prices() -> None:
    a, b = Config(), Config()
    assert a.prices == {} and a.prices is not b.prices
    assert a.replace(week_start=6) == Config(week_start=6)


def test_records_copy_and_pickle_like_the_dataclasses_did() -> None:
    import copy
    import pickle

    from tokenbudget.budgets import Budget
    from tokenbudget.config import Config

    for value in (Budget("daily", 1000, mode="warn"), Config(budgets=(Budget("5h", 5),))):
        for twin in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
            assert twin == value and twin is not value
            with pytest.raises(AttributeError):
                twin.limit = 1  # type: ignore[misc]  # still frozen
    assert hash(copy.deepcopy(Budget("daily", 1000))) == hash(Budget("daily", 1000))

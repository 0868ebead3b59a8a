"""The arithmetic that turns tokens into the dollars a budget compares, at edges that
bench/mutation.py found unguarded (pricing.py)."""

from __future__ import annotations

from tokenbudget.pricing import price_for


def test_an_override_of_the_output_rate_keeps_the_tables_own_cache_rates() -> None:
    """Opus 5.5 reads its cache at 0.05x input ($0.20), not the usual 0.1x: overriding only its
    output rate leaves that (and every other table rate) as the table has it."""
    table = price_for("claude-opus-5-5")
    price = price_for("claude-opus-5-5", {"claude-opus-5-5": {"output": 30}})
    assert table is not None and price is not None
    assert (price.input, price.output) == (table.input, 30)
    assert (price.cache_write_5m, price.cache_write_1h, price.cache_read) == (5, 8, 0.20)

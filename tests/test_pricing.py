"""The price table, model-name normalisation, user overrides and per-request cost."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbudget.errors import ConfigError
from tokenbudget.pricing import (
    PRICES_AS_OF,
    SYNTHETIC,
    Price,
    check_overrides,
    known_models,
    normalize_model,
    price_for,
    request_cost,
)
from tokenbudget.usage import Usage

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code-2.1.328"

MTOK = 1_000_000


def cost(
    model: str, usage: Usage, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> float:
    result = request_cost(model, usage, overrides)
    assert result is not None
    return result


# --- the table ------------------------------------------------------------------------------


def test_prices_as_of_is_an_iso_date() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", PRICES_AS_OF)


@pytest.mark.parametrize(
    ("model", "rates"),
    [
        # (input, output, 5m write, 1h write, cache read), USD per million tokens
        ("claude-fable-5-2", (8, 40, 10, 16, 0.20)),
        ("claude-fable-5-1", (10, 50, 12.50, 20, 0.25)),
        ("claude-mythos-5-1", (10, 50, 12.50, 20, 0.25)),
        ("claude-fable-5", (10, 50, 12.50, 20, 1.00)),
        ("claude-opus-5-5", (4, 20, 5, 8, 0.20)),
        ("claude-opus-5", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-8", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-7", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-6", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-5", (5, 25, 6.25, 10, 0.50)),
        ("claude-opus-4-1", (15, 75, 18.75, 30, 1.50)),
        ("claude-opus-4", (15, 75, 18.75, 30, 1.50)),
        ("claude-3-opus", (15, 75, 18.75, 30, 1.50)),
        ("claude-sonnet-5-5", (2, 10, 2.50, 4, 0.10)),
        ("claude-sonnet-5", (2, 10, 2.50, 4, 0.20)),
        ("claude-sonnet-4-6", (3, 15, 3.75, 6, 0.30)),
        ("claude-sonnet-4-5", (3, 15, 3.75, 6, 0.30)),
        ("claude-sonnet-4", (3, 15, 3.75, 6, 0.30)),
        ("claude-3-7-sonnet", (3, 15, 3.75, 6, 0.30)),
        ("claude-3-5-sonnet", (3, 15, 3.75, 6, 0.30)),
        ("claude-haiku-5-5", (0.10, 0.50, 0.125, 0.20, 0.01)),
        ("claude-haiku-4-5", (1, 5, 1.25, 2, 0.10)),
        ("claude-3-5-haiku", (0.80, 4, 1, 1.60, 0.08)),
        ("claude-3-haiku", (0.25, 1.25, 0.30, 0.50, 0.03)),
    ],
)
def test_table_rates(model: str, rates: tuple[float, ...]) -> None:
    price = price_for(model)
    assert price is not None
    got = (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read)
    assert got == pytest.approx(rates, abs=1e-12)


def test_every_family_and_generation_is_covered() -> None:
    models = known_models()
    for family in ("opus", "sonnet", "haiku"):
        assert f"claude-3-{family}" in models
    for key in ("claude-3-5-sonnet", "claude-3-5-haiku", "claude-3-7-sonnet", "claude-opus-4"):
        assert key in models
    for version in ("4", "4-1", "4-5"):
        assert f"claude-opus-{version}" in models
    assert "claude-sonnet-4-5" in models and "claude-haiku-4-5" in models


def test_every_table_price_is_sane() -> None:
    for model in known_models():
        price = price_for(model)
        assert price is not None, model
        for tier in (price, price.long_context):
            if tier is None:
                continue
            assert 0 < tier.cache_read < tier.input < tier.output, model
            assert tier.input < tier.cache_write_5m < tier.cache_write_1h, model


def test_only_the_tiered_models_have_a_long_context_tier() -> None:
    tiered = {m for m in known_models() if (p := price_for(m)) and p.long_context}
    assert tiered == {"claude-sonnet-4", "claude-sonnet-4-5", "claude-haiku-5-5"}


def test_price_is_frozen() -> None:
    price = price_for("claude-opus-5-5")
    assert price is not None
    with pytest.raises(AttributeError):
        price.input = 0  # type: ignore[misc]


# --- exact costs ----------------------------------------------------------------------------


def test_exact_cost_opus_5_5_matches_claude_code() -> None:
    # The `plain` fixture: Claude Code 2.1.328 itself reported total_cost_usd 0.005331.
    usage = Usage(input=901, output=41, cache_write_5m=101, cache_read=2010)
    assert cost("claude-opus-5-5", usage) == pytest.approx(0.005331, abs=1e-12)


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # one million of a kind costs exactly the rate
        ("claude-sonnet-4-5", Usage(input=MTOK // 10), 0.30),
        ("claude-sonnet-4-5", Usage(output=10_000), 0.15),
        ("claude-opus-4-1", Usage(cache_write_5m=2_000, cache_write_1h=1_000), 0.0675),
        ("claude-opus-4-5", Usage(1000, 500, 2000, 3000, 100_000), 0.11),
        ("claude-haiku-4-5", Usage(10_000, 2_000, 0, 0, 50_000), 0.025),
        ("claude-3-5-haiku", Usage(1_000_000, 1_000_000, 1_000_000, 1_000_000, 1_000_000), 7.48),
        ("claude-3-haiku", Usage(4_000, 400), 0.0015),
        ("claude-fable-5-1", Usage(cache_read=1_000_000), 0.25),
        ("claude-sonnet-5-5", Usage(5_000, 1_000, 0, 0, 40_000), 0.024),
        ("claude-haiku-5-5", Usage(50_000, 2_000, 0, 0, 40_000), 0.0064),
    ],
)
def test_exact_costs(model: str, usage: Usage, expected: float) -> None:
    assert cost(model, usage) == pytest.approx(expected, abs=1e-12)


def test_cost_is_linear_in_each_kind() -> None:
    price = price_for("claude-opus-4-8")
    assert price is not None
    for i, rate in enumerate(
        (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read)
    ):
        counts = [0] * 5
        counts[i] = 123_456
        assert cost("claude-opus-4-8", Usage(*counts)) == pytest.approx(123_456 * rate / MTOK)


def test_zero_usage_costs_zero() -> None:
    assert request_cost("claude-opus-5-5", Usage()) == 0.0


@pytest.mark.parametrize("case", ["plain", "loop", "slash", "agent"])
def test_table_reproduces_claude_codes_own_total(case: str) -> None:
    """Summing per-request costs over what the fake API served equals Claude Code's figure."""
    output = json.loads((FIXTURES / case / "claude-output.json").read_text())
    total = 0.0
    for line in (FIXTURES / case / "truth.jsonl").read_text().splitlines():
        served = json.loads(line)
        usage = Usage(
            input=served["input_tokens"],
            output=served["output_tokens"],
            cache_write_5m=served["cache_creation_input_tokens"],
            cache_read=served["cache_read_input_tokens"],
        )
        total += cost(served["model"], usage)
    assert total == pytest.approx(output["total_cost_usd"], abs=1e-9)


# --- the long-context tier ------------------------------------------------------------------


def test_sonnet_4_5_switches_tier_just_past_200k() -> None:
    at = Usage(input=200_000, output=1_000)
    past = Usage(input=200_001, output=1_000)
    assert cost("claude-sonnet-4-5", at) == pytest.approx(200_000 * 3 / MTOK + 1_000 * 15 / MTOK)
    assert cost("claude-sonnet-4-5", past) == pytest.approx(
        200_001 * 6 / MTOK + 1_000 * 22.50 / MTOK
    )


def test_the_prompt_counts_cache_writes_and_reads() -> None:
    # 10k fresh input, 150k read from cache, 41k written: 201k prompt tokens.
    usage = Usage(
        input=10_000, output=2_000, cache_write_5m=40_000, cache_write_1h=1_000, cache_read=150_000
    )
    expected = (10_000 * 6 + 2_000 * 22.50 + 40_000 * 7.50 + 1_000 * 12 + 150_000 * 0.60) / MTOK
    assert cost("claude-sonnet-4", usage) == pytest.approx(expected)
    assert cost("claude-sonnet-4-20250514[1m]", usage) == pytest.approx(expected)


def test_output_does_not_count_toward_the_threshold() -> None:
    usage = Usage(input=199_000, output=50_000)
    assert cost("claude-sonnet-4-5", usage) == pytest.approx((199_000 * 3 + 50_000 * 15) / MTOK)


def test_sonnet_4_6_and_opus_have_no_long_context_premium() -> None:
    usage = Usage(input=900_000)
    assert cost("claude-sonnet-4-6", usage) == pytest.approx(2.70)
    assert cost("claude-opus-5-5", usage) == pytest.approx(3.60)


def test_haiku_5_5_tier_starts_past_100k() -> None:
    at = Usage(input=60_000, cache_read=40_000, output=1_000)
    past = Usage(input=60_001, cache_read=40_000, output=1_000)
    assert cost("claude-haiku-5-5", at) == pytest.approx(
        (60_000 * 0.10 + 40_000 * 0.01 + 1_000 * 0.50) / MTOK
    )
    assert cost("claude-haiku-5-5", past) == pytest.approx(
        (60_001 * 0.50 + 40_000 * 0.05 + 1_000 * 2.50) / MTOK
    )


def test_tier_applies_per_request_not_per_sum() -> None:
    # Two 150k requests are each under the threshold even though together they pass it.
    one = Usage(input=150_000)
    assert cost("claude-sonnet-4-5", one) * 2 == pytest.approx(0.90)
    assert cost("claude-sonnet-4-5", one + one) == pytest.approx(1.80)


def test_for_prompt_picks_the_tier() -> None:
    long = Price(2, 4, 5, 6, 0.5)
    price = Price(1, 2, 3, 4, 0.1, long_context=long, long_context_threshold=10)
    assert price.for_prompt(10) is price
    assert price.for_prompt(11) is long
    assert Price(1, 2, 3, 4, 0.1).for_prompt(10**9).input == 1


# --- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-3-opus-20240229", "claude-3-opus"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        # Claude Code's 1M-context suffix
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
        ("claude-opus-4-6[1M]", "claude-opus-4-6"),
        ("claude-sonnet-4-20250514[1m]", "claude-sonnet-4"),
        # Bedrock
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
        ("global.anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5"),
        ("apac.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("anthropic.claude-haiku-5-5", "claude-haiku-5-5"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-opus-4-1-20250805-v1:0",
            "claude-opus-4-1",
        ),
        # Vertex
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        (
            "projects/p/locations/us-east5/publishers/anthropic/models/claude-3-haiku@20240307",
            "claude-3-haiku",
        ),
        # gateways and sloppy spelling
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("  Claude-Opus-4-5  ", "claude-opus-4-5"),
    ],
)
def test_normalize_model(raw: str, key: str) -> None:
    assert normalize_model(raw) == key
    assert price_for(raw) is price_for(key)


def test_normalize_leaves_unknown_and_synthetic_names_recognisable() -> None:
    assert normalize_model(SYNTHETIC) == "<synthetic>"
    assert normalize_model("gpt-6-sol") == "gpt-6-sol"
    assert normalize_model("claude-opus-9-9-20300101") == "claude-opus-9-9"


def test_only_the_first_anthropic_prefix_of_a_model_id_is_taken_off() -> None:
    """A Bedrock-style id naming `anthropic.` again after its prefix keeps the rest of its
    name whole: it is not cut at the second one into something else."""
    raw = "us.anthropic.claude-opus-4-1.anthropic.custom"
    assert normalize_model(raw) == "claude-opus-4-1.anthropic.custom"
    assert price_for(raw) is None


@given(st.text(max_size=60))
def test_normalize_is_idempotent_and_total(raw: str) -> None:
    once = normalize_model(raw)
    assert normalize_model(once) == once


# --- unpriced and synthetic -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-opus-9-9", "gpt-6-sol", "", "opus", "sonnet"])
def test_unknown_model_is_unpriced_never_zero(model: str) -> None:
    assert price_for(model) is None
    assert request_cost(model, Usage(input=1_000, output=1_000)) is None


def test_synthetic_costs_nothing() -> None:
    assert request_cost(SYNTHETIC, Usage(input=5, output=7)) == 0.0
    price = price_for(SYNTHETIC)
    assert price is not None and price.input == price.output == 0


def test_a_synthetic_message_costs_nothing_in_any_kind_of_token() -> None:
    """Claude Code's made-up messages cost $0 whatever usage they carry, cache writes and
    reads included: no rate of theirs is ever below 0."""
    assert price_for(SYNTHETIC) == Price(0.0, 0.0, 0.0, 0.0, 0.0)
    assert request_cost(SYNTHETIC, Usage(5, 7, 11_000, 13_000, 17_000)) == 0.0


# --- overrides ------------------------------------------------------------------------------

FULL = {"input": 5, "output": 25, "cache_write_5m": 6.25, "cache_write_1h": 10, "cache_read": 0.5}


def test_override_prices_an_unknown_model() -> None:
    price = price_for("claude-opus-9-9", {"claude-opus-9-9": FULL})
    assert price == Price(5, 25, 6.25, 10, 0.5)
    assert cost("claude-opus-9-9", Usage(1_000_000, 100_000), {"claude-opus-9-9": FULL}) == 7.5


def test_override_wins_over_the_table() -> None:
    overrides = {"claude-opus-5-5": FULL}
    assert price_for("claude-opus-5-5", overrides) == Price(5, 25, 6.25, 10, 0.5)
    assert price_for("claude-opus-5-5") == Price(4, 20, 5, 8, 0.20)


def test_override_replaces_the_long_context_tier_too() -> None:
    overrides = {"claude-sonnet-4-5": {"input": 3, "output": 15}}
    assert cost("claude-sonnet-4-5", Usage(input=300_000), overrides) == pytest.approx(0.90)


def test_missing_cache_rates_are_derived_from_input() -> None:
    price = price_for("my-model", {"my-model": {"input": 2, "output": 8}})
    assert price is not None
    assert (price.cache_write_5m, price.cache_write_1h, price.cache_read) == pytest.approx(
        (2.5, 4.0, 0.2)
    )


def test_partial_override_of_a_known_model_keeps_its_other_rates() -> None:
    # e.g. a user who learns of a cache-read price change before tokenbudget does
    price = price_for("claude-sonnet-5", {"claude-sonnet-5": {"cache_read": 0.1}})
    assert price == Price(2, 10, 2.50, 4, 0.1)
    price = price_for("claude-opus-4-5", {"claude-opus-4-5-20251101": {"output": 30}})
    assert price == Price(5, 30, 6.25, 10, 0.5)


def test_new_input_rate_of_a_known_model_moves_its_cache_rates() -> None:
    price = price_for("claude-opus-5-5", {"claude-opus-5-5": {"input": 6}})
    assert price is not None
    got = (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read)
    assert got == pytest.approx((6, 20, 7.5, 12, 0.6))


def test_given_cache_rates_are_kept() -> None:
    price = price_for("m", {"m": {"input": 2, "output": 8, "cache_read": 0.05}})
    assert price is not None
    assert price.cache_read == 0.05 and price.cache_write_5m == 2.5


def test_override_keys_match_after_normalisation() -> None:
    overrides = {"claude-opus-9-9": {"input": 1, "output": 2}}
    for spelling in (
        "claude-opus-9-9-20300101",
        "us.anthropic.claude-opus-9-9-v1:0",
        "claude-opus-9-9[1m]",
        "claude-opus-9-9@20300101",
    ):
        assert price_for(spelling, overrides) == Price(1, 2, 1.25, 2, 0.1)
    dated_key = {"claude-opus-9-9-20300101": {"input": 1, "output": 2}}
    assert price_for("claude-opus-9-9", dated_key) == Price(1, 2, 1.25, 2, 0.1)


def test_integer_and_zero_rates_are_fine() -> None:
    price = price_for("free", {"free": {"input": 0, "output": 0}})
    assert price == Price(0.0, 0.0, 0.0, 0.0, 0.0)
    assert isinstance(price.input, float)


def test_other_models_ignore_overrides() -> None:
    assert price_for("claude-haiku-4-5", {"claude-opus-9-9": FULL}) == price_for("claude-haiku-4-5")


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ({"input": -1, "output": 2}, "input must be 0 or more, not -1"),
        ({"input": "5", "output": 2}, "input must be a number, not '5'"),
        ({"input": True, "output": 2}, "input must be a number, not True"),
        ({"input": None, "output": 2}, "input must be a number, not None"),
        ({"input": 1, "output": math.nan}, "output must be 0 or more, not nan"),
        ({"input": 1, "output": math.inf}, "output must be 0 or more, not inf"),
        ({"input": 1, "output": 2, "cache_read": -0.1}, "cache_read must be 0 or more"),
        ({"output": 2}, "needs 'input'"),
        ({"input": 2}, "needs 'output'"),
        ({"input": 1, "output": 2, "cache_write": 3}, "unknown rate 'cache_write'"),
    ],
)
def test_invalid_override_raises_config_error(rates: dict[str, object], message: str) -> None:
    overrides = {"claude-x": rates}
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        price_for("claude-x", overrides)  # type: ignore[arg-type]
    text = str(err.value)
    assert "\n" not in text and "claude-x" in text
    with pytest.raises(ConfigError):
        check_overrides(overrides)  # type: ignore[arg-type]


def test_an_override_with_unknown_rates_names_the_first_in_order() -> None:
    """Several misspelt rates: the error names the first of them in sorted order, on one
    line with the rates it knows."""
    with pytest.raises(ConfigError) as e:
        price_for("m", {"m": {"outptu": 1, "input": 3, "inptu": 2}})
    assert str(e.value) == (
        "price override for 'm': unknown rate 'inptu'"
        " (known: input, output, cache_write_5m, cache_write_1h, cache_read)"
    )


def test_override_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        price_for("claude-x", {"claude-x": 5})  # type: ignore[dict-item]


def test_check_overrides_checks_every_entry() -> None:
    check_overrides({"a": {"input": 1, "output": 2}})
    check_overrides({})
    with pytest.raises(ConfigError, match="'b'"):
        check_overrides({"a": {"input": 1, "output": 2}, "b": {"input": -1, "output": 2}})


def test_an_invalid_override_for_another_model_does_not_break_pricing() -> None:
    # The hot path only parses the entry it uses; check_overrides() is for config loading.
    overrides = {"claude-x": {"input": -1, "output": 2}}
    assert price_for("claude-opus-5-5", overrides) == price_for("claude-opus-5-5")

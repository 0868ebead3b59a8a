"""Dollar prices of Claude models: an embedded, dated table plus the user's overrides."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping

from tokenbudget.errors import ConfigError
from tokenbudget.record import Frozen
from tokenbudget.usage import Usage

PRICES_AS_OF = "2026-11-28"
"""The day the table below was last checked against Anthropic's published prices."""

SYNTHETIC = "<synthetic>"
"""The model Claude Code writes on messages it made up itself (errors, interruptions)."""

_PER_TOKEN = 1_000_000  # every rate is in USD per million tokens


class Price(Frozen):
    """USD per million tokens of each kind, and the dearer tier for long prompts if any.

    A record, not a dataclass: importing dataclasses cost a hook call with news about 9 ms."""

    _fields = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read",
               "long_context", "long_context_threshold")
    __slots__ = _fields
    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_context: Price | None
    long_context_threshold: int

    def __init__(
        self,
        input: float,
        output: float,
        cache_write_5m: float,
        cache_write_1h: float,
        cache_read: float,
        long_context: Price | None = None,
        long_context_threshold: int = 200_000,
    ) -> None:
        self._set(input=input, output=output, cache_write_5m=cache_write_5m,
                  cache_write_1h=cache_write_1h, cache_read=cache_read,
                  long_context=long_context, long_context_threshold=long_context_threshold)

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The rates that apply to one request whose prompt has this many tokens."""
        # Anthropic bills the whole request (output included) at the long-context rates
        # once the prompt passes the threshold, not just the tokens past it.
        if self.long_context is not None and prompt_tokens > self.long_context_threshold:
            return self.long_context
        return self


def _standard(input: float, output: float) -> Price:
    """A price whose cache rates follow Anthropic's usual multipliers of the input rate."""
    return Price(input, output, input * 1.25, input * 2, input * 0.1)


_ZERO = Price(0.0, 0.0, 0.0, 0.0, 0.0)

_OPUS_4 = _standard(15, 75)
_OPUS_4_5 = _standard(5, 25)
_SONNET = _standard(3, 15)
# Sonnet 4 and 4.5 with the 1M-context beta: double input, 1.5x output, and the cache
# rates follow the input rate. Sonnet 4.6 and later bill their 1M window flat.
_SONNET_LONG = Price(3, 15, 3.75, 6, 0.30, long_context=Price(6, 22.50, 7.50, 12, 0.60))
_FABLE_5 = Price(10, 50, 12.50, 20, 1.00)
_FABLE_5_1 = Price(10, 50, 12.50, 20, 0.25)  # cache hits at 0.025x input, not 0.1x

# Keys are what normalize_model() returns. Sources: platform.claude.com/docs/en/about-claude/pricing
# and each model's overview page under platform.claude.com/docs/en/models/. Where a rate was
# only found in release notes of tools that track the pricing page, the line says so.
_TABLE: dict[str, Price] = {
    "claude-fable-5-2": Price(8, 40, 10, 16, 0.20),  # cache rates: release notes, not the docs
    "claude-mythos-5-2": Price(8, 40, 10, 16, 0.20),  # same model and price as Fable 5.2
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": Price(4, 20, 5, 8, 0.20),  # cache hits at 0.05x input
    "claude-opus-5": _OPUS_4_5,
    "claude-opus-4-8": _OPUS_4_5,
    "claude-opus-4-7": _OPUS_4_5,
    "claude-opus-4-6": _OPUS_4_5,
    "claude-opus-4-5": _OPUS_4_5,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4": _OPUS_4,
    "claude-3-opus": _OPUS_4,
    # Sonnet 5.5 cache hits were cut from $0.20 to $0.10 on 2026-10-07 (reported by several
    # trackers of the pricing page; the stored copies of the docs predate the cut).
    "claude-sonnet-5-5": Price(2, 10, 2.50, 4, 0.10),
    "claude-sonnet-5": Price(2, 10, 2.50, 4, 0.20),
    "claude-sonnet-4-6": _SONNET,
    "claude-sonnet-4-5": _SONNET_LONG,
    "claude-sonnet-4": _SONNET_LONG,
    "claude-3-7-sonnet": _SONNET,
    "claude-3-5-sonnet": _SONNET,
    "claude-3-sonnet": _SONNET,  # retired before 1h caching existed; multipliers assumed
    # Haiku 5.5 is priced by prompt length: over 100k tokens every token costs 5x.
    "claude-haiku-5-5": Price(
        0.10,
        0.50,
        0.125,
        0.20,
        0.01,
        long_context=Price(0.50, 2.50, 0.625, 1.00, 0.05),
        long_context_threshold=100_000,
    ),
    "claude-haiku-4-5": _standard(1, 5),
    "claude-3-5-haiku": Price(0.80, 4, 1, 1.60, 0.08),
    "claude-3-haiku": Price(0.25, 1.25, 0.30, 0.50, 0.03),
}

# Old spellings of the same models.
_ALIASES = {
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
}

_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|latest)$")
_VERSION_SUFFIX = re.compile(r"-v\d+(?::\d+)?$")  # Bedrock "-v1:0", Vertex "-v2"
_BRACKET_SUFFIX = re.compile(r"\[[^\]]*\]$")  # Claude Code's "[1m]"
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")  # gateways write "claude-sonnet-4.5"


@functools.lru_cache(maxsize=256)
def normalize_model(model: str) -> str:
    """The table key for a model id as transcripts, Bedrock, Vertex or gateways write it."""
    key = model.strip().lower()
    key = key.rsplit("/", 1)[-1]  # Bedrock ARNs, Vertex resource paths, "anthropic/..."
    if "anthropic." in key:  # Bedrock, with or without a region prefix such as "us."
        key = key.split("anthropic.", 1)[1]
    key = _BRACKET_SUFFIX.sub("", key)
    key = key.split("@", 1)[0]  # Vertex "claude-3-5-sonnet-v2@20241022"
    key = _VERSION_SUFFIX.sub("", key)
    key = _DATE_SUFFIX.sub("", key)
    key = _DOTTED_VERSION.sub("-", key).strip()  # a path's last part may bring its own spaces
    return _ALIASES.get(key, key)


def _rate(model: str, field: str, value: object) -> float:
    # bool is an int to Python, but `true` in a config is a mistake, not a price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"price override for {model!r}: {field} must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"price override for {model!r}: {field} must be 0 or more, not {value!r}")
    return float(value)


def _override_price(model: str, rates: Mapping[str, float]) -> Price:
    """The user's rates for a model; what they leave out comes from the table or the input."""
    if not isinstance(rates, Mapping):
        raise ConfigError(f"price override for {model!r} must be a mapping of rates")
    unknown = sorted(set(rates) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"price override for {model!r}: unknown rate {unknown[0]!r}"
            f" (known: {', '.join(_FIELDS)})"
        )
    values = {field: _rate(model, field, value) for field, value in rates.items()}
    table = _TABLE.get(normalize_model(model))
    for needed in ("input", "output"):
        if needed not in values:
            if table is None:
                raise ConfigError(f"price override for {model!r} needs {needed!r}")
            values[needed] = getattr(table, needed)
    # A new input rate moves the cache rates with it unless they are given too; a model the
    # table knows keeps its own cache rates otherwise. An override has no long-context tier.
    if table is not None and "input" not in rates:
        derived = table
    else:
        derived = _standard(values["input"], values["output"])
    return Price(
        input=values["input"],
        output=values["output"],
        cache_write_5m=values.get("cache_write_5m", derived.cache_write_5m),
        cache_write_1h=values.get("cache_write_1h", derived.cache_write_1h),
        cache_read=values.get("cache_read", derived.cache_read),
    )


def check_overrides(overrides: Mapping[str, Mapping[str, float]]) -> None:
    """Raise ConfigError for the first invalid override, so a config fails when loaded."""
    for model, rates in overrides.items():
        _override_price(model, rates)


def price_for(
    model: str, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> Price | None:
    """The price of a model: the user's override first, then the table; None if unknown."""
    if overrides:
        if model in overrides:
            return _override_price(model, overrides[model])
        key = normalize_model(model)
        for name, rates in overrides.items():
            if normalize_model(name) == key:
                return _override_price(name, rates)
    if model == SYNTHETIC:
        return _ZERO
    return _TABLE.get(normalize_model(model))


def request_cost(
    model: str, usage: Usage, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> float | None:
    """USD cost of ONE API request (tiers apply per request); None if the model is unpriced."""
    price = price_for(model, overrides)
    if price is None:
        return None
    prompt = usage.input + usage.cache_write_5m + usage.cache_write_1h + usage.cache_read
    rates = price.for_prompt(prompt)
    micro_dollars = (
        usage.input * rates.input
        + usage.output * rates.output
        + usage.cache_write_5m * rates.cache_write_5m
        + usage.cache_write_1h * rates.cache_write_1h
        + usage.cache_read * rates.cache_read
    )
    return micro_dollars / _PER_TOKEN


def known_models() -> list[str]:
    """The table's keys, for `--help` text and diagnostics."""
    return sorted(_TABLE)

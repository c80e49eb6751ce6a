"""Prices from fal: the account's own unit price (fal's pricing API; custom pricing and discounts included) turned
into a price per video length, and recorded as a new row of the price table when it differs from the one in
effect, so reservations (and therefore budgets) hold at what fal will really bill.

fal gives one `unit_price` per endpoint. With unit `second` it is the price of a second of video. With unit
`video` (or any other) it is the price of the default 6-s video, and the 10-s price moves by the same factor
from the published prices: recorded as derived."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from hailuo_pipeline.catalog.schema import published_prices
from hailuo_pipeline.catalog.storage import LedgerStore
from hailuo_pipeline.fal.platform import PlatformClient, PlatformError, Price
from hailuo_pipeline.model_limits import DEFAULT_DURATION_SECONDS, DURATIONS_SECONDS

CACHE_SECONDS = 600.0  # fal's price is asked at most every 10 minutes per process
FOUR_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class FalPrice:
    usd: Decimal
    source: str  # what the price table records as where it came from


def published(endpoint: str) -> dict[int, Decimal]:
    """The model page's prices (prices.csv), the base a per-video unit price scales."""
    return {
        int(row["duration_seconds"]): Decimal(row["usd"]) for row in published_prices() if row["endpoint"] == endpoint
    }


def fal_prices(price: Price, base: Mapping[int, Decimal]) -> dict[int, FalPrice]:
    """The price of each video length at fal's unit price (pure)."""
    unit = price.unit_price
    if price.unit == "second":
        return {
            d: FalPrice((unit * d).quantize(FOUR_PLACES), f"fal's pricing API: ${unit} per second x {d} s")
            for d in DURATIONS_SECONDS
        }
    default = DEFAULT_DURATION_SECONDS
    factor = unit / base[default]
    said = f"fal's pricing API: ${unit} per {price.unit} (the {default}-s video)"
    return {
        d: FalPrice(unit, said)
        if d == default
        else FalPrice(
            (base[d] * factor).quantize(FOUR_PLACES),
            f"derived from fal's pricing API: ${base[d]} x {unit}/{base[default]} (the published {d}-s price, "
            f"moved as the {default}-s one)",
        )
        for d in DURATIONS_SECONDS
    }


_asked: dict[tuple[str, str], tuple[float, Price]] = {}
_unreachable: dict[tuple[str, str], float] = {}  # not asked again (nor said again) for the cache's time


def check_prices_with_fal(catalog: LedgerStore, platform: PlatformClient, endpoint: str) -> list[str]:
    """Compare the price in effect with fal's price for the account (cached 10 minutes) and record a different
    one as a new price row taking effect now. What was done, in words; fal unreachable: the table's price,
    said once per process."""
    key = (platform.base_url, endpoint)
    cached = _asked.get(key)
    if key in _unreachable and time.monotonic() - _unreachable[key] < CACHE_SECONDS:
        return []
    if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
        try:
            price = platform.pricing([endpoint]).get(endpoint)
        except PlatformError as exc:
            _unreachable[key] = time.monotonic()
            return [f"fal's price could not be read ({exc}); reserving at the price table's prices"]
        if price is None:
            return [f"fal's pricing API has no price for {endpoint}; reserving at the price table's prices"]
        if price.currency.upper() != "USD":
            return [f"fal prices {endpoint} in {price.currency}; the price table (USD) is kept"]
        _asked[key] = (time.monotonic(), price)
    else:
        price = cached[1]
    wanted = fal_prices(price, published(endpoint))
    said: list[str] = []
    with catalog.transaction(decides=True) as t:
        now = t.now()
        for duration, new in sorted(wanted.items()):
            current = t.price(endpoint, duration, now)
            if current is not None and current[1] == new.usd:
                continue
            price_id = f"fal-{duration}s-{now:%Y%m%dT%H%M%S%f}"
            t.insert_price(price_id, endpoint, duration, new.usd, now, new.source)
            was = f"${current[1]}" if current else "none"
            said.append(f"the price of a {duration}-s video is now ${new.usd} (was {was}): {new.source}")
    return said

"""How money and time read in Dagster's metadata: dollars with their sign and cents ("$0.70", where a float shows
0.7), seconds to a tenth (where a float shows four decimals). Dagster has no currency type: money is text."""

from decimal import Decimal

from dagster import MetadataValue


def dollars_text(amount: Decimal | float | int) -> str:
    value = Decimal(str(amount)).quantize(Decimal("0.01"))
    return f"-${-value}" if value < 0 else f"${value}"


def dollars(amount: Decimal | float | int) -> MetadataValue:
    return MetadataValue.text(dollars_text(amount))


def tenths(seconds: float | None) -> float | None:
    return None if seconds is None else round(float(seconds), 1)

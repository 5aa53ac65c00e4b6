"""Kubernetes resource quantities ("500m", "1.5", "512Mi", "1e3") as exact Decimals.

A small parser rather than kubernetes.utils.parse_quantity: importing the kubernetes client costs
about a second and 100 MB, too much for the hook server. tests/test_quantity.py checks this parser
against kubernetes.utils.parse_quantity."""
from __future__ import annotations

import functools
import re
from decimal import Decimal, DecimalException

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


# Quantity texts up to this length are parsed once per worker: the same few ("500m", "1Gi") are
# compared for every warm pod of every pool sync.
_CACHED_TEXT_MAX = 64


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity; raise ValueError with a readable message when it is not one."""
    if isinstance(value, str) and len(value) <= _CACHED_TEXT_MAX:
        return _parse_text(value)  # Decimals are immutable: one parse serves every caller
    return _parse(value)


@functools.lru_cache(maxsize=1024)
def _parse_text(value: str) -> Decimal:
    return _parse(value)


def _parse(value: str | int | float) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 512Mi, 1Gi)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
        if suffix in _SUFFIXES:  # before the exponent test: "1E" is exa and "1Ei" exbi, not exponents
            return base * _SUFFIXES[suffix]
        return base * (Decimal(10) ** int(suffix[1:]))
    except (DecimalException, OverflowError) as exc:  # DecimalException: also Overflow of huge exponents (1e1000000)
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc


def whole_cpus(value: str) -> bool:
    """Whether a CPU quantity is a whole number of CPUs ("2", "2000m", "2.0"): the static CPU
    manager pins only those (kubelet: Guaranteed pod, integer CPU request)."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return False
    return amount > 0 and amount == amount.to_integral_value()

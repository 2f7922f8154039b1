"""How Kubernetes and Knative read the values inside an object: DNS labels, qualified names,
label values, integers, floats and Go durations, each as the Go function that parses it."""

from __future__ import annotations

import re
from fractions import Fraction

INT32_MAX = 2**31 - 1
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DURATION = re.compile(r"[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_MICRO = Fraction(1, 10**6)
_UNIT = {"ns": Fraction(1, 10**9), "us": _MICRO, "µs": _MICRO, "μs": _MICRO,
         "ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


def dns1035_label(value: object) -> bool:
    """validation.IsDNS1035Label: object names, revision names, route tags."""
    return isinstance(value, str) and len(value) <= 63 and _match(_DNS1035, value)


def dns1123_label(value: object) -> bool:
    """validation.IsDNS1123Label: namespaces."""
    return isinstance(value, str) and len(value) <= 63 and _match(_DNS1123, value)


def qualified_name(value: str) -> bool:
    """validation.IsQualifiedName: `[prefix/]name`, a DNS subdomain prefix."""
    prefix, slash, name = value.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _match(_SUBDOMAIN, prefix)):
        return False
    return len(name) <= 63 and _match(_NAME, name)


def label_value(value: str) -> bool:
    """validation.IsValidLabelValue: empty, or a name of at most 63 characters."""
    return value == "" or (len(value) <= 63 and _match(_NAME, value))


def int32(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 32); None when it does not parse or overflows."""
    if not _match(_INT, text) or not -INT32_MAX - 1 <= int(text) <= INT32_MAX:
        return None
    return int(text)


def number(text: str) -> Fraction | None:
    """strconv.ParseFloat for the decimal and exponent forms Knative's values use."""
    return Fraction(text) if _match(_FLOAT, text) else None


def go_duration(text: str) -> Fraction | None:
    """Seconds in a Go duration (`90s`, `1m30s`, `1.5h`, `0`) as time.ParseDuration reads it;
    None when it does not parse."""
    if text in ("0", "+0", "-0"):
        return Fraction(0)
    if not _match(_DURATION, text):
        return None
    parts = (Fraction(n) * _UNIT[unit] for n, unit in _DURATION_PART.findall(text))
    total = sum(parts, Fraction(0))
    return -total if text.startswith("-") else total


def _match(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None

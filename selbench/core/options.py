"""Typed plugin options: defaults, parsing of ``key=value`` strings, clear errors for unknown keys."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from selbench.core.errors import OptionError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One option of a plugin: its default (which also fixes its type), help text, allowed values or a lower bound.

    ``choices``: the only values allowed; ``minimum``: the smallest value allowed (numbers).
    """

    default: Any
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None

    def parse(self, value: Any, where: str) -> Any:
        kind = type(self.default)
        try:
            if isinstance(value, str) and kind is not str:
                value = _from_text(value, kind)
            elif kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if self.default is not None and not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"expected {kind.__name__}")
        except ValueError as exc:
            raise OptionError(f"{where}: bad value {value!r} ({exc})") from None
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum:
            raise OptionError(f"{where} must be at least {self.minimum}, got {value!r}")
        return value


def _from_text(text: str, kind: type) -> Any:
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    if kind is type(None):
        return text
    try:
        return kind(text)
    except ValueError:  # int("abc")'s "invalid literal for int() with base 10" says less than the expected type
        expected = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise ValueError(f"expected {expected}") from None


def resolve_options(spec: Mapping[str, Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Defaults overlaid with ``given``, each value parsed; unknown keys raise :class:`OptionError`."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        valid = ", ".join(sorted(spec)) or "none"
        raise OptionError(f"unknown option {unknown[0]!r} for {owner}; valid options: {valid}")
    resolved = {key: opt.default for key, opt in spec.items()}
    for key, value in given.items():
        resolved[key] = spec[key].parse(value, f"option {key!r} of {owner}")
    return resolved


def parse_assignments(items: list[str] | None, what: str = "option") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{what} {item!r} is not of the form key=value")
        out[key.strip()] = value.strip()
    return out

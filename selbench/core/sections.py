"""Typed configuration sections: a dict of defaults fixes each key and its type.

Recipes (``[data]``, ``[search]``, ``[retrain]``) and :func:`selbench.data.load_data` check
their sections here, so an unknown key or a value of the wrong type is always the same
kind of one-line error, naming where it came from.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from selbench.core.errors import SelbenchError
from selbench.core.options import Option, OptionError


def check_section(given: Mapping[str, Any], defaults: Mapping[str, Any], section: str, where: str) -> dict[str, Any]:
    """``given`` overlaid on ``defaults``; unknown keys and ill-typed values raise :class:`SelbenchError`.

    An int is accepted where the default is a float (TOML's ``0`` for ``0.0``).
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise SelbenchError(f"{where}: unknown key {section}.{unknown[0]}; valid keys in [{section}]: "
                            f"{', '.join(defaults)}")
    merged = dict(defaults)
    for key, value in given.items():
        merged[key] = typed_like(defaults[key], value, f"{where}: {section}.{key}")
    return merged


def typed_like(example: Any, value: Any, where: str) -> Any:
    """``value`` with the type of ``example``: text is parsed, an int widens to float, anything else must match."""
    if isinstance(value, str) and not isinstance(example, str):
        return parse_text_like(example, value, where)
    if isinstance(example, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if example is not None and (type(value) is not type(example)):
        raise SelbenchError(f"{where} must be {type(example).__name__}, got {value!r}")
    return value


def parse_text_like(example: Any, text: str, where: str) -> Any:
    """Parse a command-line ``text`` into the type of ``example`` (lists and unknown types as TOML values)."""
    if isinstance(example, (bool, int, float, str)):
        try:
            return Option(example).parse(text, where)
        except OptionError as exc:
            raise SelbenchError(str(exc)) from None
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if example is None:
            return text  # a bare word for a key without a typed default
        raise SelbenchError(f"{where}: cannot read {text!r} as a TOML value (e.g. [\"a\", \"b\"])") from None
    if example is not None and type(value) is not type(example):
        raise SelbenchError(f"{where} must be {type(example).__name__}, got {text!r}")
    return value

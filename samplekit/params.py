"""Parameter declarations: one source for validation, the ``processors`` listing and the config schema.

A processor declares each parameter once as a ``Param`` (type, default, allowed range). Values
coming from YAML, the command line or Python all pass through ``Param.validate``, whose error
message names where the value came from, the value, and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from samplekit.errors import ParameterError

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

# The parameter types a processor may declare, and how they are written in the listing.
TYPES = ("int", "float", "bool", "str", "int_list", "str_list", "token_list", "token_bias")
_TYPE_NAMES = {
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "str": "string",
    "int_list": "list of integers",
    "str_list": "list of strings",
    "token_list": "list of token ids or strings",
    "token_bias": "mapping of token id or string to a number",
}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a processor.

    ``low``/``high`` bound numbers (``*_open`` makes that end exclusive); ``choices`` restricts
    strings; ``nullable`` admits ``None`` (meaning "not set").
    """

    name: str
    type: str
    default: Any = REQUIRED
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    nullable: bool = False

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"Param {self.name!r}: type {self.type!r} is not one of {TYPES}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def allowed(self) -> str:
        """What values are allowed, in words: ``number in (0, 1]``."""
        text = _TYPE_NAMES[self.type]
        if self.low is not None or self.high is not None:
            left = "(" if self.low_open or self.low is None else "["
            right = ")" if self.high_open or self.high is None else "]"
            lo = "-inf" if self.low is None else _fmt(self.low)
            hi = "inf" if self.high is None else _fmt(self.high)
            text += f" in {left}{lo}, {hi}{right}"
        if self.choices:
            text += " one of " + ", ".join(self.choices)
        if self.nullable:
            text += " or null"
        return text

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the declared type, or raise ParameterError naming ``where``."""
        if value is None and self.nullable:
            return None
        try:
            converted = _convert(self.type, value)
        except (TypeError, ValueError):
            raise ParameterError(f"{where}: {value!r} is not allowed; expected {self.allowed()}") from None
        if self.type in ("int", "float") and not self._in_range(converted):
            raise ParameterError(f"{where}: {value!r} is out of range; expected {self.allowed()}")
        if self.choices and converted not in self.choices:
            raise ParameterError(f"{where}: {value!r} is not allowed; expected {self.allowed()}")
        return converted

    def _in_range(self, x: float) -> bool:
        if isinstance(x, float) and math.isnan(x):
            return False
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        if self.high is not None and (x > self.high or (self.high_open and x == self.high)):
            return False
        return True

    def describe(self) -> dict:
        """A JSON-ready description for ``samplekit processors --json`` and the config schema."""
        return {
            "name": self.name,
            "type": self.type,
            "default": None if self.required else self.default,
            "required": self.required,
            "allowed": self.allowed(),
            "help": self.help,
        }


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _convert(kind: str, value: Any) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise TypeError
    if isinstance(value, bool):  # bool is an int in Python; never accept it as a number
        raise TypeError
    if kind == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError
    if kind == "float":
        if isinstance(value, (int, float)):
            return float(value)
        raise TypeError
    if kind == "str":
        if isinstance(value, str):
            return value
        raise TypeError
    if kind in ("int_list", "str_list", "token_list"):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = {"int_list": (int,), "str_list": (str,), "token_list": (int, str)}[kind]
        if any(isinstance(v, bool) or not isinstance(v, item) for v in value):
            raise TypeError
        if kind != "str_list" and any(isinstance(v, int) and v < 0 for v in value):
            raise ValueError
        return tuple(value)
    if kind == "token_bias":
        if not isinstance(value, dict):
            raise TypeError
        out = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)) or isinstance(v, bool):
                raise TypeError
            if not isinstance(v, (int, float)) or math.isnan(v):
                raise TypeError
            out[k] = float(v)
        return out
    raise TypeError


def validate_params(params: tuple[Param, ...], values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``values`` against ``params``: unknown and missing names, types and ranges.

    Returns a complete dict, defaults filled in. ``where`` prefixes every message
    (``configs/x.yaml: chain[1].top_k``).
    """
    declared = {p.name: p for p in params}
    unknown = [k for k in values if k not in declared]
    if unknown:
        allowed = ", ".join(declared) or "no parameters"
        raise ParameterError(f"{where}.{unknown[0]}: unknown parameter; allowed: {allowed}")
    out = {}
    for p in params:
        if p.name in values:
            out[p.name] = p.validate(values[p.name], f"{where}.{p.name}")
        elif p.required:
            raise ParameterError(f"{where}.{p.name}: missing required parameter ({p.allowed()})")
        else:
            out[p.name] = p.default
    return out


# The truncation filters' shared parameter (top_p, min_p, epsilon/eta cutoffs), declared once.
MIN_TOKENS_TO_KEEP = Param("min_tokens_to_keep", "int", 1, "keep at least this many of the most probable tokens",
                           low=1)

"""Parameter declarations: one source for validation, the ``processors`` listing and the config schema.

A processor declares each parameter once as a ``Param`` (type, default, allowed range). Values
coming from YAML, the command line or Python all pass through ``Param.validate``, whose error
message names where the value came from, the value (cut short), and what is allowed. Besides the
declared range, every type has limits of its own, the ones the tensors it feeds can hold: see
``Param``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from samplekit.errors import ParameterError
from samplekit.messages import not_utf8, short_repr

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

# The parameter types a processor may declare, and how they are written in the listing.
TYPES = ("int", "float", "bool", "str", "int_list", "str_list", "token_list", "token_bias", "json")
_TYPE_NAMES = {
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "str": "string",
    "int_list": "list of token ids",
    "str_list": "list of strings",
    "token_list": "list of token ids or strings",
    "token_bias": "mapping of token id or string to a number",
    "json": "JSON value (mapping, list, string, number, boolean or null)",
}
JSON_MAX_DEPTH, JSON_MAX_ITEMS = 64, 100_000  # a json value's nesting and its count of values


# Limits every declaration shares (the tensors a value feeds are float32 and int32/int64):
INT_LIMIT = 2**31 - 1  # an integer without a declared bound on that side is within +-INT_LIMIT
TOKEN_ID_LIMIT = 2**31  # token ids (int_list, token_list, token_bias keys) are in [0, 2**31)
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32
FLOAT32_RANGE = "a float32 holds 0 and magnitudes from 1.2e-38 to 3.4e38"
MIN_DIVISOR = 1e-6  # a ``divisor`` (the logits are divided by it) is 0 where allowed, or at least this


class _Refused(Exception):
    """Why ``_convert`` refuses a value (its message completes ``<value> is not allowed: ...``)."""


@dataclass(frozen=True)
class Param:
    """One declared parameter of a processor.

    ``low``/``high`` bound numbers (``*_open`` makes that end exclusive), and the values of a
    ``token_bias``; ``choices`` restricts strings; ``nullable`` admits ``None`` (meaning "not
    set"); ``nonempty`` refuses empty strings (in a ``str`` or a ``str_list``). ``per_row``: the
    value may differ between the rows of one run (the processor reads it with
    ``Processor.row_value``; see samplekit.processor), so requests that differ only in it share
    one chain run; a parameter that is not ``per_row`` must be equal for rows to share a run.

    Every type also has limits of its own: an integer without a declared bound on a side stays
    within ``INT_LIMIT`` (2**31 - 1) there; a token id is in [0, 2**31); a number must be finite
    and survive float32 (0, or a magnitude in [1.2e-38, 3.4e38]); a string must be encodable as
    UTF-8 (no lone surrogates).
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
    nonempty: bool = False
    per_row: bool = False
    divisor: bool = False  # the logits are divided by it: a nonzero value is at least MIN_DIVISOR

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"Param {self.name!r}: type {self.type!r} is not one of {TYPES}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def allowed(self) -> str:
        """What values are allowed, in words: ``number in (0, 1]``."""
        text = _TYPE_NAMES[self.type]
        if self.nonempty:
            text = "non-empty " + text if self.type == "str" else text + " (non-empty)"
        if self.low is not None or self.high is not None:
            left = "(" if self.low_open or self.low is None else "["
            right = ")" if self.high_open or self.high is None else "]"
            lo = "-inf" if self.low is None else _fmt(self.low)
            hi = "inf" if self.high is None else _fmt(self.high)
            text += (" with values" if self.type == "token_bias" else "") + f" in {left}{lo}, {hi}{right}"
        if self.choices:
            text += " one of " + ", ".join(self.choices)
        if self.divisor:
            text += f", 0 or at least {MIN_DIVISOR:g}" if self._in_range(0) else f", at least {MIN_DIVISOR:g}"
        if self.nullable:
            text += " or null"
        return text

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the declared type, or raise ParameterError naming ``where``."""
        if value is None and self.nullable:
            return None
        shown = short_repr(value)
        try:
            converted = _convert(self, value)
        except _Refused as why:
            raise ParameterError(f"{where}: {shown} is not allowed: {why}; expected {self.allowed()}") from None
        except (TypeError, ValueError, OverflowError):
            raise ParameterError(f"{where}: {shown} is not allowed; expected {self.allowed()}") from None
        if self.type in ("int", "float") and not self._in_range(converted):
            raise ParameterError(f"{where}: {shown} is out of range; expected {self.allowed()}"
                                 + self._limit_note(converted))
        if self.choices and converted not in self.choices:
            raise ParameterError(f"{where}: {shown} is not allowed; expected {self.allowed()}")
        if self.divisor and converted != 0 and abs(converted) < MIN_DIVISOR:
            raise ParameterError(f"{where}: {shown} is not allowed: the logits are divided by it, which overflows "
                                 f"float32 (NaN or inf mid-generation); expected {self.allowed()}")
        return converted

    def _in_range(self, x: float) -> bool:
        if isinstance(x, float) and math.isnan(x):
            return False
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        if self.high is not None and (x > self.high or (self.high_open and x == self.high)):
            return False
        if self.type == "int":
            return (self.low is not None or x >= -INT_LIMIT) and (self.high is not None or x <= INT_LIMIT)
        return True

    def _limit_note(self, x: float) -> str:
        """Why a value inside the declared range is still refused: the type's own limit."""
        if self.type == "int" and ((self.high is None and x > INT_LIMIT) or (self.low is None and x < -INT_LIMIT)):
            return f" (integers are within +-{INT_LIMIT} = 2**31 - 1 unless declared otherwise)"
        return ""

    def describe(self) -> dict:
        """A JSON-ready description for ``samplekit processors --json`` and the config schema."""
        return {
            "name": self.name,
            "type": self.type,
            "default": None if self.required else self.default,
            "required": self.required,
            "allowed": self.allowed(),
            "help": self.help,
            "per_row": self.per_row,
        }


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _convert(p: Param, value: Any) -> Any:
    """``value`` as type ``p.type``; TypeError for the wrong type, _Refused for a bad item."""
    kind = p.type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise TypeError
    if kind == "json":  # any JSON value, true and false included (a JSON Schema may be either)
        _check_json(value, [0], 0)
        return value
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
            return _float32(value)
        raise TypeError
    if kind == "str":
        if isinstance(value, str):
            return _text(value, p.nonempty)
        raise TypeError
    if kind in ("int_list", "str_list", "token_list"):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        item = {"int_list": (int,), "str_list": (str,), "token_list": (int, str)}[kind]
        if any(isinstance(v, bool) or not isinstance(v, item) for v in value):
            raise TypeError
        for i, v in enumerate(value):
            try:
                _token_id(v) if isinstance(v, int) else _text(v, p.nonempty)
            except _Refused as why:
                raise _Refused(f"item {i}: {why}") from None
        return tuple(value)
    if kind == "token_bias":
        if not isinstance(value, dict):
            raise TypeError
        out = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)) or isinstance(v, bool):
                raise TypeError
            if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
                raise TypeError
            try:
                _token_id(k) if isinstance(k, int) else _text(k, True)
                out[k] = _bias(p, v)
            except _Refused as why:
                raise _Refused(f"key {short_repr(k)}: {why}") from None
        return out
    raise TypeError


def _check_json(value: Any, count: list[int], depth: int) -> None:
    """A JSON value as YAML or json.loads give it: str keys, finite numbers, bounded size."""
    count[0] += 1
    if count[0] > JSON_MAX_ITEMS or depth > JSON_MAX_DEPTH:
        raise _Refused(f"it holds more than {JSON_MAX_ITEMS} values or nests deeper than {JSON_MAX_DEPTH}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _text(value, False)
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _Refused("JSON numbers are finite")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json(item, count, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(f"JSON keys are strings, not {short_repr(key)}")
            _check_json(item, count, depth + 1)
    else:
        raise TypeError


def _float32(value: int | float) -> float:
    """``value`` as a float that float32 holds: finite, 0 or at least the smallest normal."""
    try:
        x = float(value)
    except OverflowError:
        raise _Refused(f"it is too large for a number ({FLOAT32_RANGE})") from None
    if math.isnan(x):
        raise TypeError
    if math.isinf(x):
        raise _Refused("numbers must be finite")
    if abs(x) > FLOAT32_MAX:
        raise _Refused(f"it becomes inf in float32 ({FLOAT32_RANGE})")
    if x != 0 and abs(x) < FLOAT32_TINY:
        raise _Refused(f"it becomes 0 (or loses its precision) in float32 ({FLOAT32_RANGE})")
    return x


def _bias(p: Param, value: int | float) -> float:
    """A token_bias value: -inf (a ban), or a float32 number within the declared bounds."""
    if value == -math.inf:
        return -math.inf
    if value == math.inf:
        raise _Refused("a bias is a finite number or -inf (a ban)")
    x = _float32(value)
    probe = Param(p.name, "float", low=p.low, high=p.high, low_open=p.low_open, high_open=p.high_open)
    if not probe._in_range(x):
        raise _Refused(f"the bias {short_repr(value)} is out of range")
    return x


def _token_id(value: int) -> int:
    if not 0 <= value < TOKEN_ID_LIMIT:
        raise _Refused(f"token ids are in [0, 2**31 - 1], not {short_repr(value)}")
    return value


def _text(value: str, nonempty: bool) -> str:
    if nonempty and not value:
        raise _Refused("it is empty")
    problem = not_utf8(value)
    if problem:
        raise _Refused(f"it is not valid Unicode text ({problem}); it cannot be encoded as UTF-8")
    return value


def validate_params(params: tuple[Param, ...], values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``values`` against ``params``: unknown and missing names, types and ranges.

    Returns a complete dict, defaults filled in. ``where`` prefixes every message
    (``configs/x.yaml: chain[1].top_k``).
    """
    declared = {p.name: p for p in params}
    unknown = [k for k in values if k not in declared]
    if unknown:
        allowed = ", ".join(declared) or "no parameters"
        key = unknown[0]
        if not isinstance(key, str):
            raise ParameterError(f"{where}: parameter names are strings, not {short_repr(key)}; allowed: {allowed}")
        raise ParameterError(f"{where}.{short_repr(key)[1:-1] if not key.isidentifier() else key}: "
                             f"unknown parameter; allowed: {allowed}")
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

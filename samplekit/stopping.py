"""Stop conditions and incremental decoding for the decoding loop.

A row stops at the first of:

- ``"eos"``: it chose one of the end-of-text ids (the id is kept out of the tokens and the text);
- ``"stop"``: its decoded new text contains a stop string, matched across token boundaries;
  the text is cut where the stop string starts (the stop string is never printed);
- ``"length"``: it has ``max_new_tokens`` new tokens;
- ``"time"``: ``max_time`` seconds have passed since generation started (checked once per step,
  after the step's tokens are chosen; the step's tokens are kept).

``TextStream`` turns one row's tokens into printable text: it holds back an incomplete UTF-8
character and any tail of the text that could be the start of a stop string, so what it hands
out is final; ``flush`` hands out whatever is still held when the row ends.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterable, Sequence
from typing import Any

ENDOFTEXT = "<|endoftext|>"
FINISH_REASONS = ("length", "eos", "stop", "time")

_clock = time.monotonic  # the deadline's clock; tests replace it


def resolve_eos_ids(eos_token_ids: int | Iterable[int] | None, tokenizer: Any = None) -> tuple[int, ...]:
    """The end-of-text ids: ``eos_token_ids`` if given, else the tokenizer's ``<|endoftext|>``
    (a tiktoken Encoding), ``eos_token_ids`` (samplekit.hf's tokenizer) or ``eos_token_id`` (other
    tokenizers), else none."""
    if eos_token_ids is not None:
        if isinstance(eos_token_ids, int):
            return (int(eos_token_ids),)
        return tuple(int(i) for i in eos_token_ids)
    if tokenizer is None:
        return ()
    special = getattr(tokenizer, "_special_tokens", None)
    if isinstance(special, dict) and ENDOFTEXT in special:
        return (int(special[ENDOFTEXT]),)
    several = getattr(tokenizer, "eos_token_ids", None)  # samplekit.hf: the model's and the tokenizer's
    if isinstance(several, (tuple, list)) and several and all(isinstance(i, int) for i in several):
        return tuple(several)
    for attr in ("eot_token", "eos_token_id"):
        try:
            value = getattr(tokenizer, attr, None)
        except (KeyError, AttributeError):  # tiktoken's eot_token raises without <|endoftext|>
            value = None
        if isinstance(value, int):
            return (value,)
    return ()


class Deadline:
    """``max_time`` seconds from now (None: never)."""

    def __init__(self, max_time: float | None):
        self.at = None if max_time is None else _clock() + float(max_time)

    def passed(self) -> bool:
        return self.at is not None and _clock() >= self.at


class StopStrings:
    """A set of stop strings: find the earliest match, and how much of a text's tail to hold back."""

    def __init__(self, stops: str | Sequence[str] = ()):
        if isinstance(stops, str):
            stops = (stops,)
        stops = tuple(stops)
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ValueError(f"a stop string must be a non-empty str, found {s!r}")
        self.stops = stops
        self.longest = max((len(s) for s in stops), default=0)

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: str, start: int = 0) -> int:
        """Where the earliest stop string in ``text[start:]`` begins, or -1."""
        hits = [i for s in self.stops if (i := text.find(s, start)) >= 0]
        return min(hits) if hits else -1

    def holdback(self, text: str) -> int:
        """The length of the longest tail of ``text`` that is a proper prefix of a stop string:
        those characters may still turn out to begin a stop string, so they are not printed yet."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best


class _BytesDecoder:
    """tiktoken: each token's bytes, fed to an incremental UTF-8 decoder (invalid bytes become
    U+FFFD, as ``Encoding.decode`` does)."""

    def __init__(self, tokenizer):
        self._bytes = tokenizer.decode_single_token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""

    def push(self, token: int) -> str:
        self.text += self._utf8.decode(self._bytes(token))
        return self.text

    def flush(self) -> str:
        self.text += self._utf8.decode(b"", final=True)
        return self.text


class _RedecodeDecoder:
    """Any tokenizer with ``decode(list[int]) -> str``: decode all the new tokens again each step;
    trailing U+FFFD (an incomplete character, usually) is held until the row ends."""

    def __init__(self, tokenizer):
        self._decode = tokenizer.decode
        self._tokens: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self._tokens.append(token)
        self.text = self._decode(self._tokens).rstrip("\ufffd")
        return self.text

    def flush(self) -> str:
        self.text = self._decode(self._tokens) if self._tokens else ""
        return self.text


def make_decoder(tokenizer):
    if hasattr(tokenizer, "decode_single_token_bytes"):
        return _BytesDecoder(tokenizer)
    if hasattr(tokenizer, "decode"):
        return _RedecodeDecoder(tokenizer)
    raise TypeError(f"{type(tokenizer).__name__} is not a tokenizer: it has no decode()")


class TextStream:
    """One row's new text, decoded token by token, with stop strings.

    ``push(token)`` returns the text that became printable (possibly ""), ``flush()`` the rest
    when the row ends. After a stop string matched, ``stopped`` is True, ``text`` ends where the
    stop string began, and ``kept_tokens`` is how many of the row's tokens begin before it
    (those tokens are kept; a token straddling the start of the stop string is kept, so
    ``decode(tokens)`` starts with ``text``, and equals it when the stop string starts on a token
    boundary).
    """

    def __init__(self, tokenizer, stops: StopStrings):
        self._decoder = make_decoder(tokenizer)
        self._stops = stops
        self._starts: list[int] = []  # char offset where each token's text begins
        self.text = ""
        self.printed = 0
        self.stopped = False
        self.kept_tokens = 0

    def push(self, token: int) -> str:
        before = len(self._decoder.text)
        self._starts.append(before)
        text = self._decoder.push(token)
        if self._stops:
            at = self._stops.find(text, max(0, before - self._stops.longest + 1))
            if at >= 0:
                return self._stop_at(text, at)
            safe = len(text) - self._stops.holdback(text)
        else:
            safe = len(text)
        self.text = text
        return self._emit(max(safe, self.printed))

    def flush(self) -> str:
        """Everything still held back (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        text = self._decoder.flush()
        if self._stops and (at := self._stops.find(text, max(0, self.printed - self._stops.longest))) >= 0:
            return self._stop_at(text, at)
        self.text = text
        return self._emit(len(text))

    def _stop_at(self, text: str, at: int) -> str:
        self.stopped = True
        self.text = text[:at]
        self.kept_tokens = sum(1 for s in self._starts if s < at)
        return self._emit(at)

    def _emit(self, upto: int) -> str:
        out = self.text[self.printed:upto]
        self.printed = max(self.printed, upto)
        return out

"""llguidance's view of a generation's tokenizer, built once per tokenizer object.

``lltokenizer(tokenizer)`` returns an ``llguidance.LLTokenizer`` for:

- a tiktoken ``Encoding`` (samplekit's tokenizers: the demo model's, ``gpt2``, rank files), through
  ``llguidance.tiktoken``; an encoding without ``<|endoftext|>`` gets a virtual end-of-text id
  just past its vocabulary (the processors never allow it: they allow the run's own
  end-of-text ids, see ``samplekit_grammar.constraint``);
- a Hugging Face fast tokenizer (``transformers.PreTrainedTokenizerFast``), or an adapter holding
  one as ``.hf`` (``samplekit.hf.tokenizer.HFTokenizer``), through ``llguidance.hf``;
- anything else with ``decode_single_token_bytes``, ``encode`` and a size (``n_vocab``,
  ``vocab_size`` or ``len``), through llguidance's ``TokenizerWrapper``.

Building takes from milliseconds (4096 tokens) to a second (large vocabularies), so the result is
cached weakly, keyed by the tokenizer object (as ``banned_strings`` caches its tables): later
generations with the same tokenizer reuse it, and it goes when the tokenizer goes. A tokenizer
that cannot be weakly referenced is built anew each time.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import llguidance

from samplekit import ParameterError

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> LLTokenizer
_LOCK = threading.Lock()


def lltokenizer(tokenizer: Any) -> llguidance.LLTokenizer:
    """The (cached) llguidance tokenizer for ``tokenizer``."""
    try:
        found = _CACHE.get(tokenizer)
    except TypeError:  # not weakly referenceable (nor hashable): build every time
        return build(tokenizer)
    if found is None:
        with _LOCK:
            found = _CACHE.get(tokenizer)
            if found is None:
                found = _CACHE[tokenizer] = build(tokenizer)
    return found


def build(tokenizer: Any) -> llguidance.LLTokenizer:
    """A new llguidance tokenizer for ``tokenizer`` (see the module docstring for the kinds)."""
    import tiktoken

    if isinstance(tokenizer, tiktoken.Encoding):
        return _from_tiktoken(tokenizer)
    fast = _hf_fast(tokenizer)
    if fast is not None:
        from llguidance.hf import from_tokenizer

        return from_tokenizer(fast)
    if callable(getattr(tokenizer, "decode_single_token_bytes", None)) and callable(getattr(tokenizer, "encode", None)):
        return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTable(tokenizer)))
    raise ParameterError(f"cannot constrain output with tokenizer {type(tokenizer).__name__}: use a tiktoken "
                         "encoding, a Hugging Face fast tokenizer, or an object with decode_single_token_bytes "
                         "and encode")


def _from_tiktoken(enc) -> llguidance.LLTokenizer:
    from llguidance.tiktoken import lltokenizer_from_encoding

    eot = enc._special_tokens.get("<|endoftext|>")
    if eot is not None:
        return lltokenizer_from_encoding(enc, eos_token=eot)
    virtual = enc.n_vocab  # llguidance needs an end-of-text id: one past the vocabulary, never allowed
    return lltokenizer_from_encoding(enc, eos_token=virtual, n_vocab=virtual + 1)


def _hf_fast(tokenizer: Any):
    """The transformers fast tokenizer ``tokenizer`` is or wraps (``.hf``), else None."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    for candidate in (tokenizer, getattr(tokenizer, "hf", None)):
        if isinstance(candidate, PreTrainedTokenizerFast):
            return candidate
    return None


def _size(tokenizer: Any) -> int:
    for attr in ("n_vocab", "vocab_size"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return len(tokenizer)


class _ByteTable:
    """What llguidance's ``TokenizerWrapper`` reads: each id's bytes, the special ids, the
    end-of-text id and an encoder. It holds its tokenizer weakly, so the cache entry it belongs
    to does not keep its own key alive."""

    def __init__(self, tokenizer: Any):
        size = _size(tokenizer)
        special = set()
        for text in getattr(tokenizer, "special_tokens_set", ()) or ():
            try:
                special.add(int(tokenizer.encode_single_token(text)))
            except Exception:  # noqa: BLE001 - a special token the tokenizer cannot look up
                continue
        tokens = []
        for i in range(size):
            try:
                tokens.append(bytes(tokenizer.decode_single_token_bytes(i)))
            except (KeyError, ValueError, IndexError):
                tokens.append(b"")
        eos = getattr(tokenizer, "eot_token", None)
        if not isinstance(eos, int):
            eos = getattr(tokenizer, "eos_token_id", None)
        if not isinstance(eos, int) or not 0 <= eos < size:  # a virtual end-of-text id, never allowed
            eos = size
            tokens.append(b"")
            special.add(eos)
        self.tokens = tokens
        self.special_token_ids = sorted(special)
        self.eos_token_id = eos
        self.bos_token_id = None
        self._tokenizer = weakref.ref(tokenizer) if _weakable(tokenizer) else (lambda t=tokenizer: t)

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tokenizer().encode(text))


def _weakable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True

"""A Hugging Face tokenizer behind the interface samplekit uses (tiktoken's names).

    tok = HFTokenizer(AutoTokenizer.from_pretrained(folder))
    tok.encode("hello", allowed_special="all")   # ids, no BOS added (logit_bias strings)
    tok.encode_prompt("Once upon a time")        # what tokenizer(text) gives: BOS where it adds one
    tok.decode_single_token_bytes(id)            # the token's exact bytes (streaming, banned_strings)

A token's bytes come from its vocabulary string, decoded the way the tokenizer's decoder does:
byte-level BPE (GPT-2, Llama 3, Qwen2) through GPT-2's byte-to-character alphabet; SentencePiece
style (Llama 2, Mistral) with ``▁`` as a space and ``<0xNN>`` as the byte NN; added and special
tokens as their UTF-8 text. Any other tokenizer falls back to ``decode([id])`` (exact for whole
characters only). Everything is computed once per tokenizer and kept in tables.
"""

from __future__ import annotations

import functools
import json
from typing import Any

SPIECE_SPACE = "\u2581"  # ▁


@functools.lru_cache(maxsize=1)
def byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: printable bytes stand for themselves, the
    rest are shifted to the characters from U+0100 on (so every byte is a visible character)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def decoder_kind(hf_tokenizer) -> str:
    """``"byte_level"``, ``"sentencepiece"`` or ``"other"``, from the tokenizer's decoder (fast
    tokenizers) or the look of its vocabulary (others)."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = json.dumps(json.loads(backend.to_str()).get("decoder"))
        if '"ByteLevel"' in text:
            return "byte_level"
        if '"Metaspace"' in text or '"ByteFallback"' in text or SPIECE_SPACE in text:
            return "sentencepiece"
        return "other"
    vocab = hf_tokenizer.get_vocab()
    return "sentencepiece" if "<0x00>" in vocab or any(t.startswith(SPIECE_SPACE) for t in vocab) else "other"


def _byte_level(token: str) -> bytes | None:
    alphabet = byte_alphabet()
    try:
        return bytes(alphabet[c] for c in token)
    except KeyError:  # not a byte-level string
        return None


def _is_byte_token(token: str) -> bool:
    """SentencePiece's byte-fallback tokens: ``<0x00>`` to ``<0xFF>``."""
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">") and \
        all(c in "0123456789ABCDEFabcdef" for c in token[3:5])


def _sentencepiece(token: str) -> bytes:
    if _is_byte_token(token):
        return bytes([int(token[3:5], 16)])
    return token.replace(SPIECE_SPACE, " ").encode("utf-8")


class HFTokenizer:
    """Wraps a transformers tokenizer: ``encode``, ``decode``, ``decode_single_token_bytes``,
    ``encode_single_token``, ``n_vocab``, ``special_tokens_set``, ``eot_token``, and
    ``eos_token_ids`` (the model's generation config's, then the tokenizer's own)."""

    def __init__(self, hf_tokenizer, *, eos_token_ids=(), name: str | None = None):
        self.hf = hf_tokenizer
        self.name = name or getattr(hf_tokenizer, "name_or_path", "") or type(hf_tokenizer).__name__
        vocab = hf_tokenizer.get_vocab()  # str -> id, added tokens included
        self.n_vocab = max(vocab.values()) + 1
        self.kind = decoder_kind(hf_tokenizer)
        added = getattr(hf_tokenizer, "added_tokens_decoder", {}) or {}
        self._added = {i: t.content for i, t in added.items()}
        self._special = {t.content: i for i, t in added.items() if getattr(t, "special", False)}
        for text in getattr(hf_tokenizer, "all_special_tokens", ()):  # special but not added
            if text in vocab:
                self._special.setdefault(text, vocab[text])
        own = hf_tokenizer.eos_token_id
        ids = [*eos_token_ids, *([own] if isinstance(own, int) else [])]
        self.eos_token_ids = tuple(dict.fromkeys(int(i) for i in ids))
        self._vocab = vocab

    # -- the tiktoken-style surface -------------------------------------------------------------------
    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special)

    @property
    def eot_token(self) -> int | None:
        """The tokenizer's end-of-text id (else the model's first), None when there is none."""
        own = self.hf.eos_token_id
        return own if isinstance(own, int) else (self.eos_token_ids[0] if self.eos_token_ids else None)

    @property
    def max_token_value(self) -> int:
        return self.n_vocab - 1

    def is_special_token(self, token: int) -> bool:
        return token in self._special.values()

    def encode(self, text: str, *, allowed_special: Any = (), disallowed_special: Any = "all",
               add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``. Special tokens written in the text are parsed as such when
        ``allowed_special`` is ``"all"`` or non-empty, else encoded as plain text (this adapter
        never raises for them). No BOS/EOS is added unless ``add_special_tokens``."""
        parse = allowed_special == "all" or bool(allowed_special)
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens,
                                   split_special_tokens=not parse))

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special tokens as plain text."""
        return self.encode(text)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as ``tokenizer(text)`` encodes it (the BOS the tokenizer adds included, special
        tokens parsed); an empty prompt starts from the BOS (else the end-of-text) token."""
        ids = self.encode(text, allowed_special="all", add_special_tokens=True)
        if not ids:
            start = self.hf.bos_token_id if isinstance(self.hf.bos_token_id, int) else self.eot_token
            if start is None:
                from samplekit.errors import TokenizerError

                raise TokenizerError(f"the prompt is empty and tokenizer {self.name} has no BOS or "
                                     "end-of-text token to start from: pass a prompt")
            ids = [start]
        return ids

    def decode(self, tokens) -> str:
        """Text of the ids, as the tokenizer decodes them (special tokens kept)."""
        return self.hf.decode(list(tokens), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The exact bytes of one token (KeyError for an id the tokenizer lacks)."""
        value = self._bytes_table[token] if 0 <= token < self.n_vocab else None
        if value is None:
            raise KeyError(f"token id {token} is not in tokenizer {self.name}")
        return value

    def decode_bytes(self, tokens) -> bytes:
        return b"".join(self.decode_single_token_bytes(t) for t in tokens)

    def encode_single_token(self, text: str | bytes) -> int:
        """The id of a special token, or of the token whose bytes are exactly ``text``."""
        if isinstance(text, str) and text in self._special:
            return self._special[text]
        key = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if key in self._by_bytes:
            return self._by_bytes[key]
        raise KeyError(f"{text!r} is not a single token of tokenizer {self.name}")

    # -- tables, built on first use ----------------------------------------------------------------------
    @functools.cached_property
    def _bytes_table(self) -> list[bytes | None]:
        """Each id's bytes; None where the vocabulary has no such id."""
        table: list[bytes | None] = [None] * self.n_vocab
        for text, i in self._vocab.items():
            if i in self._added:
                table[i] = self._added[i].encode("utf-8")
            elif self.kind == "byte_level":
                table[i] = _byte_level(text)
            elif self.kind == "sentencepiece":
                table[i] = _sentencepiece(text)
        if self.kind not in ("byte_level", "sentencepiece") or None in table:
            for i, value in enumerate(table):
                if value is None and self.hf.convert_ids_to_tokens(i) is not None:
                    table[i] = self.decode([i]).encode("utf-8")
        return table

    @functools.cached_property
    def _by_bytes(self) -> dict[bytes, int]:
        """bytes -> id; where a byte-fallback token ``<0xNN>`` has the bytes of a regular token
        (SentencePiece's ``▁`` and ``<0x20>``), the regular one."""
        out: dict[bytes, int] = {}
        fallback = {i for t, i in self._vocab.items() if self.kind == "sentencepiece" and _is_byte_token(t)}
        for i, value in enumerate(self._bytes_table):
            if value is not None and i not in self._added and i not in fallback:
                out.setdefault(value, i)
        for i in sorted(fallback):
            out.setdefault(self._bytes_table[i], i)
        for i, text in self._added.items():
            out.setdefault(text.encode("utf-8"), i)
        return out

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, n_vocab={self.n_vocab}, {self.kind})"

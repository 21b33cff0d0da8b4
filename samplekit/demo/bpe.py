"""Byte-level BPE training for the demo tokenizer (saved and loaded by samplekit.model.tokenizer).

The trainer is the standard algorithm (as in GPT-2/tiktoken): pre-tokenise with GPT-2's regex,
start from the 256 single bytes (ranks 0..255 in byte order), and repeatedly merge the most
frequent adjacent pair (ties broken by the smaller pair of byte strings, so the result is
deterministic). Merges are ranked in the order learned, so tiktoken's rank-ordered merging
reproduces the trainer's segmentation. The rank file is tiktoken's standard format
(``base64(token_bytes) rank`` per line).
"""

from __future__ import annotations

import heapq
from collections import Counter

import regex  # tiktoken's own dependency: GPT-2's pattern needs \p{L} classes

# GPT-2's pre-tokenisation pattern as published (tiktoken's built-in gpt2 uses an equivalent,
# faster spelling); the demo checkpoint stores this one.
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
NAME = "shakespeare-bpe-4096"


def pretokenize(text: str) -> list[str]:
    return regex.findall(GPT2_PAT_STR, text)


def train_bpe(texts: list[str], vocab_size: int, n_special: int = 1) -> tuple[dict[bytes, int], dict[bytes, list[int]]]:
    """Learn ``vocab_size - n_special`` mergeable ranks from ``texts`` (special tokens excluded).

    Returns (mergeable_ranks, segmentation): ranks for tiktoken, and for each distinct pre-token
    (as UTF-8 bytes) the token ids the trainer ends with.
    """
    counts: Counter[bytes] = Counter()
    for t in texts:
        counts.update(p.encode("utf-8") for p in pretokenize(t))
    words = list(counts)
    freqs = [counts[w] for w in words]
    seqs = [list(w) for w in words]
    vocab: list[bytes] = [bytes([i]) for i in range(256)]

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for i, s in enumerate(seqs):
        f = freqs[i]
        for p in zip(s, s[1:]):
            pair_count[p] = pair_count.get(p, 0) + f
            where.setdefault(p, set()).add(i)
    heap = [(-c, vocab[a], vocab[b], (a, b)) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    n_merges = vocab_size - n_special - 256
    while len(vocab) < 256 + n_merges and heap:
        negc, _, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale heap entry
        a, b = pair
        new_id = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        changed: set[tuple[int, int]] = set()
        for i in sorted(where.pop(pair, ())):
            s, f = seqs[i], freqs[i]
            if len(s) < 2:
                continue
            old_pairs = list(zip(s, s[1:]))
            if pair not in old_pairs:
                continue
            merged, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    merged.append(new_id)
                    j += 2
                else:
                    merged.append(s[j])
                    j += 1
            for p in old_pairs:
                pair_count[p] -= f
                changed.add(p)
            for p in zip(merged, merged[1:]):
                pair_count[p] = pair_count.get(p, 0) + f
                where.setdefault(p, set()).add(i)
                changed.add(p)
            seqs[i] = merged
        pair_count.pop(pair, None)
        changed.discard(pair)
        for p in changed:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, vocab[p[0]], vocab[p[1]], p))
            else:
                pair_count.pop(p, None)
    if len(set(vocab)) != len(vocab):
        raise AssertionError("duplicate token learned")
    ranks = {tok: r for r, tok in enumerate(vocab)}
    return ranks, {w: seqs[i] for i, w in enumerate(words)}


def tokenizer_info(vocab_size: int = 4096, file: str = "shakespeare.tiktoken") -> dict:
    """The checkpoint's ``tokenizer`` entry."""
    eot = vocab_size - 1
    return {"name": NAME, "file": file, "pat_str": GPT2_PAT_STR,
            "special_tokens": {EOT: eot}, "eot_token": eot}

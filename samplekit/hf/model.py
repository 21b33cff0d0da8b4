"""A transformers causal LM in samplekit's KV-cache protocol (see samplekit/model/gpt.py).

    model = HFModel(AutoModelForCausalLM.from_pretrained(folder), vocab_size=tokenizer.n_vocab)
    cache = model.new_cache(2)                                    # transformers' own cache object
    logits = model(ids, cache=cache, position_ids=pos, attention_mask=mask, last_only=True)

The adapter holds the transformers model as a submodule (no copies of weights) and only renames
arguments: the cache keyword (``cache`` in transformers 5, ``past_key_values`` before) and
``last_only`` (``logits_to_keep=1``) are found once per model class from its ``forward``
signature. Logits are float32 (as ``generate`` makes them); the ids a padded vocabulary has
beyond the tokenizer's (``vocab_size``) are -inf, so never sampled, even without a tokenizer.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

# Where a config keeps the longest sequence the model was trained for, most specific first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


@functools.lru_cache(maxsize=64)
def forward_keywords(cls: type) -> dict[str, str | None]:
    """How ``cls.forward`` names the cache, the logits-to-keep and the position-ids arguments
    (None: it has no such argument)."""
    params = inspect.signature(cls.forward).parameters

    def pick(*names: str) -> str | None:
        return next((n for n in names if n in params), None)

    return {"cache": pick("cache", "past_key_values"), "keep": pick("logits_to_keep", "num_logits_to_keep"),
            "positions": pick("position_ids")}


def context_length_of(config) -> int | None:
    """The model's context length from its (text) config, or None when it states none."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class HFCache:
    """The engine's cache: a transformers cache (``DynamicCache``) and the positions it holds."""

    def __init__(self, inner, batch: int = 0):
        self.inner = inner
        self.length = 0
        self.batch = batch

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (LongTensor) in every layer's keys and values."""
        self.inner.batch_select_indices(rows)
        self.batch = len(rows)


class JoinableHFCache(HFCache):
    """An HFCache whose layers are all plain ``DynamicLayer`` s (or GrowingLayers) (keys and values ``[B, H, S, D]``,
    no sliding window): rows can join it and leading padding can be dropped, so the
    continuous-batching scheduler runs Hugging Face models on the cached path."""

    def join(self, other: "HFCache", rows: list[int] | None = None) -> tuple[int, int]:
        """Append ``other``'s rows (default all; repeats allowed) after this cache's, right-aligned:
        the shorter side gets zero positions in front (masked out). Returns the positions added
        in front of the rows already here and in front of the joining rows (KVCache.join)."""
        from samplekit.hf.growing_layer import GrowingLayer, stacked_rows

        rows = list(range(other.batch)) if rows is None else rows
        n = max(self.length, other.length)
        before, after = n - self.length, n - other.length
        for mine, theirs in zip(self.inner.layers, other.inner.layers):
            if not theirs.is_initialized:  # a layer sharing another's keys and values
                continue
            index = torch.tensor(rows, dtype=torch.long, device=theirs.keys.device)
            joining = [t.index_select(0, index) for t in (theirs.keys, theirs.values)]
            if not mine.is_initialized:
                mine.lazy_initialization(*joining)
            if isinstance(mine, GrowingLayer):  # in place when it has the room
                mine.join_rows(*joining, before, after, n)
                continue
            present = [mine.keys, mine.values] if self.batch else [None, None]
            mine.keys, mine.values = (stacked_rows(old, new, before, after, n) for old, new in zip(present, joining))
        self.batch += len(rows)
        self.length = n
        return before, after

    def compact(self, positions: int) -> None:
        """Drop the first ``positions`` positions of every row (padding in all of them)."""
        if positions <= 0:
            return
        for layer in self.inner.layers:
            if layer.is_initialized:
                layer.keys, layer.values = layer.keys[:, :, positions:], layer.values[:, :, positions:]
        self.length -= positions


def joinable(cache) -> bool:
    """Whether a transformers cache is a list of plain dynamic layers (what JoinableHFCache edits)."""
    from transformers.cache_utils import DynamicLayer

    from samplekit.hf.growing_layer import GrowingLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, GrowingLayer) for layer in layers)


def new_dynamic_cache(config):
    """An empty ``DynamicCache`` (built from the config where this transformers takes one: sliding
    window and hybrid models then get their own kinds of layers)."""
    from transformers import DynamicCache

    if "config" in inspect.signature(DynamicCache.__init__).parameters:
        return DynamicCache(config=config)
    return DynamicCache()


class HFModel(nn.Module):
    """Token ids ``[B, T]`` to logits ``[B, T, V]`` (``[B, 1, V]`` with ``last_only``) through a
    transformers causal LM; ``V`` is the model's output rows, of which the ids from
    ``vocab_size`` (the tokenizer's size) on are -inf."""

    def __init__(self, model: nn.Module, *, vocab_size: int | None = None, name: str | None = None,
                 source: str | None = None):
        super().__init__()
        self.model = model
        self.source = source  # the folder it came from, if any
        self.config = model.config
        head = model.get_output_embeddings()
        self.model_vocab_size = int(head.weight.shape[0] if head is not None
                                    else model.config.get_text_config().vocab_size)
        self.vocab_size = vocab_size
        self.context_length = context_length_of(model.config)
        self.name = name or type(model).__name__
        self._keys = forward_keywords(type(model))
        if self._keys["cache"] is None:  # no key/value cache to hand it: the engine's plain loop
            self.new_cache = None
        self.eval()

    @property
    def vocab_size(self) -> int:
        """The ids that can be sampled: ``[0, vocab_size)`` (the tokenizer's decodable ids)."""
        return self._vocab_size

    @vocab_size.setter
    def vocab_size(self, value: int | None) -> None:
        value = self.model_vocab_size if value is None else int(value)
        if not 0 < value <= self.model_vocab_size:
            raise ValueError(f"vocab_size {value} must be in [1, {self.model_vocab_size}] (the model's rows)")
        self._vocab_size = value
        self._padding = torch.arange(value, self.model_vocab_size) if value < self.model_vocab_size else None

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The end-of-text ids of the model's generation config (then its config), in order."""
        ids: list[int] = []
        for owner in (getattr(self.model, "generation_config", None), self.config):
            value = getattr(owner, "eos_token_id", None)
            for i in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(i, int) and 0 <= i < self.vocab_size and i not in ids:
                    ids.append(i)
        return tuple(ids)

    @functools.cached_property
    def cache_joins(self) -> bool:
        """Whether its caches are JoinableHFCaches (samplekit.protocol): read from the layer kinds
        of an empty cache, which holds no tensors."""
        return joinable(new_dynamic_cache(self.config))

    def new_cache(self, batch_size: int, rows: int | None = None) -> HFCache:
        """An empty ``DynamicCache``: transformers' own, growing as it fills, whatever the batch
        (``rows``, room for rows joining later, needs no reserving); its plain layers are
        GrowingLayers (samplekit.hf.growing_layer: room for a chunk of positions, not a copy of the
        cache at every step). A JoinableHFCache when every layer is a plain dynamic one (not a
        sliding window)."""
        from samplekit.hf.growing_layer import grow_layers

        inner = new_dynamic_cache(self.config)
        grow_layers(inner, rows or 0)
        return (JoinableHFCache if joinable(inner) else HFCache)(inner, batch_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> dict:
        """Architecture and sizes in GPTModel's config names (for ``bench`` and ``info``)."""
        text = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config

        def pick(*keys: str) -> int | None:
            return next((getattr(text, k) for k in keys if isinstance(getattr(text, k, None), int)), None)

        return {"architecture": type(self.model).__name__, "model_type": getattr(self.config, "model_type", None),
                "n_layers": pick("num_hidden_layers", "n_layer"), "n_heads": pick("num_attention_heads", "n_head"),
                "emb_dim": pick("hidden_size", "n_embd"), "vocab_size": self.model_vocab_size,
                "context_length": self.context_length}

    def forward(self, input_ids: torch.Tensor, *, cache: HFCache | None = None,
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits of the new positions; ``attention_mask`` ``[B, S]`` is False on padding (cached
        and new positions), ``position_ids`` ``[B, T]`` default to the cache's length onward."""
        kwargs: dict = {"use_cache": cache is not None}
        if cache is not None:
            kwargs[self._keys["cache"]] = cache.inner
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None and self._keys["positions"]:  # else the model derives them (ALiBi)
            kwargs["position_ids"] = position_ids
        if last_only and self._keys["keep"]:
            kwargs[self._keys["keep"]] = 1
        logits = self.model(input_ids, **kwargs).logits  # (B, T or 1, rows)
        if cache is not None:
            cache.length += input_ids.shape[1]
        if last_only and logits.shape[1] != 1:
            logits = logits[:, -1:]
        if logits.dtype != torch.float32:
            logits = logits.float()
        if self._padding is not None:  # a fresh tensor of ours: masked in place
            logits.index_fill_(-1, self._padding.to(logits.device), float("-inf"))
        return logits

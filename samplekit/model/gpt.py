"""A GPT-2-style decoder (the "LLMs from scratch" GPTModel) with an optional key/value cache.

Shapes: B batch, T new positions, S cached + new positions, V vocabulary, H heads, D head width.

The fast path is a small protocol any model can implement (see ``KVCache``):
``model.new_cache(batch_size)`` returns a cache, and ``model(input_ids, cache=cache,
position_ids=..., attention_mask=...)`` appends the new keys and values to it and returns
logits for the new positions only.

Batch invariance (``batch_invariant=True``): every row's logits are bit-identical whatever else
is in the batch (its size, the other rows, the left padding that ragged prompts need), in the
cached and the plain paths. A plain batched forward is not: on the CPU a matrix product of one
row and one of several rows take different kernels (and round differently), and attention's
reductions change with the padding in front of a row. In this mode every matrix product has a
row count for which each row's result does not depend on the count (``_padded_rows``: zero rows
added), and attention runs row by row on that row's own positions only, exactly as the row
alone. It costs little at batch 16 and up and more below, where the padding multiplies the work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from samplekit.model.precision import linear, single_row

# Matrix products whose row count is a multiple of 16 give each row the same bits whatever that
# count (measured on the CPU's MKL kernels: on AVX-512/AMX Xeons, 4, 8 and 12 rows each take a
# kernel of their own that rounds differently; on older AVX2 parts any multiple of 4 agreed). So
# every product runs on a multiple of 16 rows, zero rows added.
INVARIANT_BLOCK = 16


def _padded_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of ``x`` (all leading dims flattened), padded with zeros to a multiple of
    INVARIANT_BLOCK, and how many are real."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    if n % INVARIANT_BLOCK:
        rows = torch.cat([rows, rows.new_zeros(INVARIANT_BLOCK - n % INVARIANT_BLOCK, rows.shape[1])])
    return rows, n


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, invariant: bool) -> torch.Tensor:
    """``F.linear``; batch-invariant: on padded rows (``_padded_rows``), so the kernel, and each
    row's rounding, never depends on the row count. One half-precision row on the CPU: ``addmv``."""
    if not invariant:
        return linear(x, weight, bias)
    rows, n = _padded_rows(x)
    return F.linear(rows, weight, bias)[:n].view(*x.shape[:-1], weight.shape[0])


def _attend_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pads: list[int], past: int) -> torch.Tensor:
    """Attention row by row, each on its own positions only (``pads[b]`` left-padding positions
    dropped): the same computation, with the same shapes, as the row alone. q ``[B, H, T, D]``
    for the new positions ``past .. past + T``; k, v ``[B, H, S, D]``."""
    out = torch.zeros_like(q)
    T, S = q.shape[2], k.shape[2]
    for b, pad in enumerate(pads):
        first = max(pad - past, 0)  # the first new position that is not padding
        qb = q[b:b + 1, :, first:]
        kb, vb = k[b:b + 1, :, pad:], v[b:b + 1, :, pad:]
        if T == 1:
            out[b:b + 1] = F.scaled_dot_product_attention(qb, kb, vb)
        elif past == 0:
            out[b:b + 1, :, first:] = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
        else:  # new positions after cached ones: each sees the cache and the new ones up to itself
            allowed = torch.ones(T - first, S - pad, dtype=torch.bool, device=q.device).tril(S - T - pad + first)
            out[b:b + 1, :, first:] = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed)
    return out


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of GPTModel; the key names are those of the checkpoints' ``config``."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    layer_norm_eps: float = 1e-5  # GPT-2's; a Hugging Face config may set another

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """Build from a checkpoint's config dict; unknown keys are ignored, missing ones defaulted."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Pre-allocated keys and values for every layer: ``[rows, H, capacity, D]`` each, of which
    the first ``batch`` rows are in use.

    ``length`` is the number of positions filled (the same for every row: ragged rows are
    right-aligned, with padding in front that the attention mask hides). ``select_rows`` keeps a
    subset of the batch (finished rows leave the batch and cost nothing further); ``join`` adds
    the rows of another cache (rows joining a running batch: a continuous-batching scheduler);
    ``compact`` drops leading positions that every row holds as padding. Reserve room for joins
    with ``rows`` (``GPTModel.new_cache(batch, rows=...)``).
    """

    def __init__(self, n_layers: int, batch: int, heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device, rows: int | None = None):
        shape = (max(batch, rows or 0), heads, capacity, head_dim)
        self._keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self._values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.batch = batch
        self.capacity = capacity
        self.length = 0

    @property
    def keys(self) -> list[torch.Tensor]:
        return [t[:self.batch] for t in self._keys]

    @property
    def values(self) -> list[torch.Tensor]:
        return [t[:self.batch] for t in self._values]

    @property
    def rows(self) -> int:
        """How many rows the buffers hold (``batch`` of them in use)."""
        return self._keys[0].shape[0] if self._keys else self.batch

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v ``[B, H, T, D]`` after the cached positions; return all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.capacity}")
        keys, values = self._keys[layer][:self.batch], self._values[layer][:self.batch]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows in ``rows`` (a LongTensor of indices), in that order. The kept
        rows move to the front of the same buffers, filled positions only: nothing is allocated,
        the capacity still to fill is not copied, and a row that does not move is not copied
        either, when ``rows`` is ascending (the engine's case) or fills the gaps from the end (the
        scheduler's: only the rows that move are copied)."""
        n, kept = self.length, rows.tolist()
        moves = [(dst, src) for dst, src in enumerate(kept) if dst != src]
        ascending = all(a < b for a, b in zip(kept, kept[1:]))
        from_the_end = all(src >= len(kept) for _, src in moves)  # no source is a destination
        for t in (*self._keys, *self._values):
            if ascending or from_the_end:  # each source is read before anything overwrites it
                for dst, src in moves:
                    t[dst, :, :n] = t[src, :, :n]
            elif kept:
                t[:len(kept), :, :n] = t[:self.batch, :, :n].index_select(0, rows.to(t.device))
        self.batch = len(kept)

    def join(self, other: "KVCache", rows: list[int] | None = None) -> tuple[int, int]:
        """Append ``other``'s rows (``rows``: which of them, repeats allowed; default all) after
        this cache's rows, right-aligned: the shorter side gets padding positions in front
        (zeros, to be masked out). Returns how many positions went in front of the rows already
        here and in front of the joining rows."""
        rows = list(range(other.batch)) if rows is None else rows
        if self.batch + len(rows) > self.rows:
            raise ValueError(f"KV cache: {self.batch} + {len(rows)} rows exceed the {self.rows} reserved")
        n = max(self.length, other.length)
        if n > self.capacity:
            raise ValueError(f"KV cache overflow: {n} positions > capacity {self.capacity}")
        before, after = n - self.length, n - other.length
        index = torch.tensor(rows, dtype=torch.long, device=self._keys[0].device)
        for mine, theirs in zip((*self._keys, *self._values), (*other._keys, *other._values)):
            if before and self.batch:  # shift the rows here to the right
                mine[:self.batch, :, before:n] = mine[:self.batch, :, :self.length].clone()
                mine[:self.batch, :, :before] = 0
            joining = mine[self.batch:self.batch + len(rows)]
            joining[:, :, after:n] = theirs[:other.batch, :, :other.length].index_select(0, index)
            joining[:, :, :after] = 0
        self.batch += len(rows)
        self.length = n
        return before, after

    def compact(self, positions: int) -> None:
        """Drop the first ``positions`` positions of every row (padding in all of them)."""
        if positions <= 0:
            return
        n = self.length - positions
        for t in (*self._keys, *self._values):
            t[:self.batch, :, :n] = t[:self.batch, :, positions:self.length].clone()
        self.length = n


class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.emb_dim % cfg.n_heads:
            raise ValueError(f"emb_dim {cfg.emb_dim} is not divisible by n_heads {cfg.n_heads}")
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.W_query = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)
        self.drop_rate = cfg.drop_rate
        self._fused: torch.Tensor | None = None  # inference-only fused qkv weight, see fuse_qkv

    def fuse_qkv(self) -> None:
        """Concatenate the three projections into one matmul for inference (no effect on results)."""
        w = torch.cat([self.W_query.weight, self.W_key.weight, self.W_value.weight])
        b = None
        if self.W_query.bias is not None:
            b = torch.cat([self.W_query.bias, self.W_key.bias, self.W_value.bias])
        self._fused = (w.detach(), None if b is None else b.detach())

    def forward(self, x, layer: int, cache: KVCache | None, mask: torch.Tensor | None,
                pads: list[int] | None = None):
        """``pads`` (batch-invariant mode): each row's left-padding positions, instead of ``mask``."""
        B, T, C = x.shape
        invariant = pads is not None
        if self._fused is not None and not self.training:
            q, k, v = _linear(x, *self._fused, invariant).split(C, dim=-1)
        else:
            q, k, v = (_linear(x, w.weight, w.bias, invariant) for w in (self.W_query, self.W_key, self.W_value))
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, H, S, D)
        dropout = self.drop_rate if self.training else 0.0
        if invariant:
            out = _attend_rows(q, k, v, pads, past)
        elif mask is None:
            # No padding and no cached prefix: plain causal; a single new position sees everything.
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=T > 1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(B, T, C)
        return _linear(out, self.out_proj.weight, self.out_proj.bias, invariant)


class LayerNorm(nn.Module):
    """Layer norm with ``scale``/``shift`` parameter names, as in the guide's checkpoints."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)


class GELU(nn.Module):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim), GELU(), nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)
        )

    def forward(self, x, invariant: bool = False):
        up, act, down = self.layers
        return _linear(act(_linear(x, up.weight, up.bias, invariant)), down.weight, down.bias, invariant)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.att = MultiHeadAttention(cfg)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.norm2 = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x, layer: int, cache: KVCache | None, mask: torch.Tensor | None,
                pads: list[int] | None = None):
        x = x + self.drop_shortcut(self.att(self.norm1(x), layer, cache, mask, pads))
        return x + self.drop_shortcut(self.ff(self.norm2(x), pads is not None))


class GPTModel(nn.Module):
    """Token ids ``[B, T]`` to next-token logits ``[B, T, V]``.

    Parameter names follow the usage guide's GPTModel (tok_emb, pos_emb, trf_blocks, final_norm,
    out_head), so its checkpoints load unchanged.
    """

    def __init__(self, cfg: ModelConfig | dict):
        super().__init__()
        cfg = ModelConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self._head_t: torch.Tensor | None = None  # inference-only [emb, vocab] copy, see below

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def new_cache(self, batch_size: int, rows: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` rows (room for ``rows`` when rows will join),
        holding up to ``context_length`` positions."""
        p = self.out_head.weight
        cfg = self.config
        return KVCache(cfg.n_layers, batch_size, cfg.n_heads, cfg.context_length,
                       cfg.emb_dim // cfg.n_heads, p.dtype, p.device, rows=rows)

    def prepare_for_inference(self) -> "GPTModel":
        """eval mode, fused qkv projections, and the output head stored as ``[emb, vocab]``: the
        same logits, fewer kernel launches, and a faster head (on CPU a ``[1, emb] @ [emb, vocab]``
        product ran 1.7x faster than ``F.linear`` with the ``[vocab, emb]`` weight at GPT-2's
        vocabulary; it costs one more copy of the head's weights)."""
        self.eval()
        for block in self.trf_blocks:
            block.att.fuse_qkv()
        self._head_t = self.out_head.weight.detach().t().contiguous()
        return self

    def train(self, mode: bool = True) -> "GPTModel":
        """Switching to training drops the inference-only copies (they would go stale)."""
        if mode:
            self._head_t = None
            for block in self.trf_blocks:
                block.att._fused = None
        return super().train(mode)

    def forward(self, input_ids: torch.Tensor, *, cache: KVCache | None = None,
                position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, last_only: bool = False,
                batch_invariant: bool = False) -> torch.Tensor:
        """Logits ``[B, T, V]`` for the T new positions (``[B, 1, V]`` with ``last_only``: a
        prefill then skips the output projection of every prompt position but the last), in
        float32 whatever the weights' dtype (``samplekit.model.precision``), so that the chain
        samples in float32.

        position_ids ``[B, T]``: defaults to ``cache.length + arange(T)``.
        attention_mask ``[B, S]`` bool over all keys (cached and new): False marks padding. With a
        mask, attention is also causal over the new positions. ``batch_invariant``: each row's
        logits do not depend on the rest of the batch (module docstring); the mask must then be
        left padding (each row's positions after its padding are all real).
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if past + T > self.config.context_length:
                raise ValueError(
                    f"{past + T} positions exceed the model's context_length {self.config.context_length}; "
                    "crop the input (the context_window processor does this)"
                )
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        x = self.drop_emb(self.tok_emb(input_ids) + self.pos_emb(position_ids))  # (B, T, C)
        mask, pads = None, None
        if batch_invariant:
            S = past + T
            pads = [0] * B if attention_mask is None else (S - attention_mask[:, :S].sum(dim=1)).tolist()
        elif attention_mask is not None or (T > 1 and past > 0):
            S = past + T
            if attention_mask is None:
                attention_mask = torch.ones(B, S, dtype=torch.bool, device=input_ids.device)
            causal = torch.ones(T, S, dtype=torch.bool, device=input_ids.device).tril(diagonal=past)
            own = torch.zeros(T, S, dtype=torch.bool, device=input_ids.device)
            own[:, past:] = torch.eye(T, dtype=torch.bool, device=input_ids.device)
            # Each query also sees itself, so a padding position never has an all-masked row (NaN).
            mask = (attention_mask[:, None, None, :S] & causal) | own  # (B, 1, T, S)
        for layer, block in enumerate(self.trf_blocks):
            x = block(x, layer, cache, mask, pads)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:]
        x = self.final_norm(x)
        if batch_invariant:
            rows, n = _padded_rows(x)
            head = rows @ self._head_t if self._head_t is not None and not self.training else \
                F.linear(rows, self.out_head.weight)
            return head[:n].view(*x.shape[:-1], head.shape[-1]).float()
        if single_row(x, self.out_head.weight):
            return linear(x, self.out_head.weight).float()
        if self._head_t is not None and not self.training:
            return (x @ self._head_t).float()
        return self.out_head(x).float()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

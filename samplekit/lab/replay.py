"""Replay chains on a logits record: what each chain keeps of the human's next token.

Per position, a chain's distribution is ``softmax`` of its processed logits when its selector
samples (a random, stateless selector: multinomial, gumbel) or it has none (logits-only), or
all its mass on the token it picks when the selector is deterministic (greedy). Measured, as means over the positions:
``coverage`` (the human's token can be drawn), ``support`` (tokens that can be drawn),
``entropy`` (nats) and ``human_prob`` (the chain's probability of the human's token).

Conventions (a live run matches them): the position at record index i runs with seed
``seed + i``, at step ``target - prompt_length``, after the document's tokens before it.

Exactness. The record holds each row's top N logits and the mass of the rest (its
logsumexp), not the rest itself. The rows are rebuilt at full vocabulary size with the
unrecorded tail filled in ways consistent with what is known (every tail logit at most the
N-th value, the tail's total mass exact):

- ``spread``: the tail's mass spread evenly over every tail token;
- ``packed``: as many tail tokens as the mass allows at the N-th value, one with the rest of
  the mass, the others -inf (tokens not in the history first; also history first when the
  chain has a processor that is not vocabulary-symmetric).

A position replays exactly when the chain keeps no tail token and gives the same result on the
top N under every filling. The fillings are the extremes of how even the tail can be, so a
decision that depends on the tail only through its (tempered) mass or entropy, such as
top-p's, min-p's or epsilon's after a temperature, is the same for every tail between them.
Otherwise replay refuses, naming the chain and the position. With N equal to the vocabulary
there is no tail, and every chain with a supported selector replays.

A shortcut, exact by the processors' declared traits (those the chain's own candidate path
trusts): when the chain's first top-k keeps k < N tokens, the processors before it are
non-decreasing maps of each logit and its row's maximum (``commutes_with_top_k``) and those
after it are ``candidate_safe`` (or when such maps end in a selector that picks a largest
logit, greedy, with k = 1), then where the k-th value after the prefix is strictly above
the N-th, no tail token can survive, and the chain runs on the N recorded values alone (a
deterministic selector sees them in token-id order, so ties break as on full rows), with no
filling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from samplekit.chain import Chain
from samplekit.lab import apply
from samplekit.lab.chains import NamedChain
from samplekit.lab.errors import ReplayError
from samplekit.lab.record import Record

MAX_ROWS = 512  # rows rebuilt at full vocabulary size at a time
ROW_ELEMENTS = 1 << 25  # at most this many logits in one batch of rebuilt rows (128 MiB of float32)
FIELDS = ("coverage", "support", "entropy", "human_prob")


@dataclass
class ReplayRow:
    name: str
    coverage: float
    support: float
    entropy: float
    human_prob: float
    positions: int
    seconds: float


@dataclass
class Batch:
    """Rows of a record sharing their step and target index."""

    rows: torch.Tensor  # (B,) record indices
    step: int
    history: torch.Tensor  # (B, T)
    human: torch.Tensor  # (B,) the token that followed


def batches(record: Record, max_rows: int = MAX_ROWS) -> list[Batch]:
    """The record's positions in runs of one step and one target index (record order)."""
    steps, targets, human = record.steps.tolist(), record.target.tolist(), record.human
    out, start = [], 0
    for i in range(1, len(steps) + 1):
        if i == len(steps) or (steps[i], targets[i]) != (steps[start], targets[start]) or i - start == max_rows:
            rows = torch.arange(start, i)
            out.append(Batch(rows, steps[start], record.history(rows), human[rows]))
            start = i
    return out


def replay(record: Record, chains: Sequence[NamedChain], *, seed: int = 0, tokenizer=None,
           eos_token_ids: Sequence[int] = ()) -> list[ReplayRow]:
    """A ``model`` row (the recorded distribution itself), then one row per chain."""
    for named in chains:
        _check_chain(named)
    parts = batches(record, max(1, min(MAX_ROWS, ROW_ELEMENTS // record.vocab_size)))
    context = {"context_length": record.meta.get("context_length"), "tokenizer": tokenizer,
               "eos_token_ids": tuple(eos_token_ids)}
    rows = [model_row(record)]
    for named in chains:
        started = time.perf_counter()
        plan = compact_plan(named.chain, record.vocab_size, record.top_n)
        sums = torch.zeros(len(FIELDS), dtype=torch.float64)
        for part in parts:
            sums += replay_batch(record, named, part, seed=seed, context=context, plan=plan).sum(0)
        means = (sums / record.positions).tolist()
        rows.append(ReplayRow(named.name, *means, record.positions, time.perf_counter() - started))
    return rows


def model_row(record: Record) -> ReplayRow:
    """The model's own distribution: every token can be drawn."""
    prob = (record.target_logit.double() - record.lse).exp()
    return ReplayRow("model", 1.0, float(record.vocab_size), record.entropy.double().mean().item(),
                     prob.mean().item(), record.positions, 0.0)


def replay_batch(record: Record, named: NamedChain, part: Batch, *, seed: int, context: dict,
                 plan: tuple[Chain, int] | None = None) -> torch.Tensor:
    """Per-position measures ``[B, 4]`` (coverage, support, entropy, human_prob) of one chain."""
    rows = part.rows
    values, ids = record.top_values[rows], record.top_ids[rows].long()  # (B, N)
    human = part.human  # (B,)
    kw = dict(seeds=(seed + rows).tolist(), step=part.step,
              prompt_lengths=record.prompt_lengths[record.doc[rows]], **context)
    if plan is not None:
        prefix, k = plan
        after = apply.process(prefix, part.history, values, **kw)  # (B, N), still largest first
        if bool((after[:, k - 1] > after[:, -1]).all()):
            return _compact(named.chain, part, values, ids, kw)
    seen = None if _symmetric(named) else _seen(part.history, record.vocab_size)
    fills = rebuild(values, ids, record.lse[rows], record.vocab_size, seen)
    if _samples(named.chain):
        outs = [apply.process(named.chain, part.history, full, **kw) for full in fills]
        cols = [o.gather(-1, ids) for o in outs]  # (B, N) each
        escaped = torch.stack([o.isfinite().sum(-1) != c.isfinite().sum(-1) for o, c in zip(outs, cols)]).any(0)
        differs = torch.stack([(c != cols[0]).any(-1) for c in cols]).any(0)
        _refuse(record, named, rows, escaped, differs)
        return sampled_measures(cols[0], ids, human)
    picks = [apply.select(named.chain, part.history, full, **kw) for full in fills]  # (B,) each
    outside = ~(ids == picks[0][:, None]).any(-1)
    differs = torch.stack([p != picks[0] for p in picks]).any(0)
    _refuse(record, named, rows, outside, differs)
    return _picked_measures(picks[0], human)


def _compact(chain: Chain, part: Batch, values: torch.Tensor, ids: torch.Tensor, kw: dict) -> torch.Tensor:
    """The chain on the recorded values alone (see the module docstring)."""
    if _samples(chain):  # the processors read values, not positions: any column order
        return sampled_measures(apply.process(chain, part.history, values, **kw), ids, part.human)
    ids, order = ids.sort(-1)  # (B, N): token-id order, so ties at the maximum break as on full rows
    values = values.gather(-1, order)
    picked = ids.gather(-1, apply.select(chain, part.history, values, **kw)[:, None]).squeeze(-1)
    return _picked_measures(picked, part.human)


def _picked_measures(picked: torch.Tensor, human: torch.Tensor) -> torch.Tensor:
    hit = (picked == human).double()
    return torch.stack([hit, torch.ones_like(hit), torch.zeros_like(hit), hit], dim=-1)


def compact_plan(chain: Chain, vocab: int, top_n: int) -> tuple[Chain, int] | None:
    """(the chain of the processors before its first top-k, k) when the shortcut of the module
    docstring applies to ``chain``, else None. A chain of processors that commute with top-k
    ending in a deterministic selector that picks a largest logit (greedy) counts as k = 1."""
    logits, selector = chain.logits, chain.selector
    for at, p in enumerate(logits):
        if _declared(p, "keeps_top") is None:
            continue
        k = p.keeps_top(vocab)
        usable = (k is not None and k < top_n
                  and all(_declared(q, "commutes_with_top_k") for q in logits[:at])
                  and all(_declared(q, "candidate_safe") for q in logits[at + 1:]))
        return (_logits_chain(logits[:at], selector), k) if usable else None
    if not _samples(chain) and _declared(selector, "keeps_argmax", "select") and top_n > 1 \
            and all(_declared(q, "commutes_with_top_k") for q in logits):
        return _logits_chain(logits, selector), 1
    return None


def _samples(chain: Chain) -> bool:
    """The chain's distribution is the softmax of its processed logits: a sampling selector, or
    none (a logits-only chain)."""
    return chain.selector is None or chain.selector.random


def _logits_chain(processors: list, selector) -> Chain:
    """A chain of these logits processors (ending in ``selector`` when there is one; only its
    logits stage runs)."""
    if selector is None:
        return Chain(processors, checked=False, logits_only=True)
    return Chain(processors + [selector], checked=False)


def _declared(p, name: str, work: str = "process"):
    """``p``'s trait ``name``, trusted only when the class that defines its ``work`` method
    declares it (the rule of samplekit.chain: a subclass that overrides the method must declare
    the trait again)."""
    mro = type(p).__mro__
    owner = next((c for c in mro if name in c.__dict__), None)
    worker = next((c for c in mro if work in c.__dict__), None)
    return getattr(p, name) if owner is not None and owner is worker else None


def sampled_measures(logits: torch.Tensor, ids: torch.Tensor, human: torch.Tensor) -> torch.Tensor:
    """Measures ``[B, 4]`` of softmax(``logits [B, W]``) over the tokens ``ids [B, W]``, every other
    token having -inf (for full rows, ``ids`` is each row's ``arange(V)``)."""
    x = logits.double()
    finite = x.isfinite()
    logp = x.log_softmax(-1)  # (B, W)
    entropy = -(logp.exp() * logp).where(finite, 0.0).sum(-1)
    hit = ids == human[:, None]  # (B, W)
    at = hit.to(torch.int8).argmax(-1, keepdim=True)
    human_logp = logp.gather(-1, at).squeeze(-1).where(hit.any(-1), -math.inf)
    covered = human_logp.isfinite().double()
    return torch.stack([covered, finite.sum(-1).double(), entropy, human_logp.exp()], dim=-1)


def rebuild(values: torch.Tensor, ids: torch.Tensor, lse: torch.Tensor, vocab: int,
            seen: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Full rows ``[B, V]`` from the top N (``values`` largest first) and the row's logsumexp:
    one row when N is the vocabulary, else the fillings of the module docstring (``seen [B, V]``:
    the history's tokens, given when the chain is not vocabulary-symmetric)."""
    B, N = values.shape
    K = vocab - N
    if K == 0:  # ids is a permutation of the vocabulary: every column is written
        return [values.new_empty(B, vocab).scatter(-1, ids, values)]
    top = values.double() - lse[:, None]  # (B, N) log-probabilities
    # the tail's share of the mass, floored so a row that rounds to no tail keeps a finite tail
    share = (-torch.expm1(top.logsumexp(-1))).clamp(min=1e-30)  # (B,)
    last = top[:, -1]  # the N-th log-probability: every tail token's bound
    spread = (torch.minimum(share.log() - math.log(K), last) + lse).to(values.dtype)  # (B,)
    fills = [spread[:, None].expand(B, vocab).scatter(-1, ids, values)]
    count = (share / last.exp()).floor().clamp(max=K)  # (B,) tail tokens at the bound
    high = (last + lse).to(values.dtype)[:, None]  # (B, 1)
    rest = ((share - count * last.exp()).clamp(min=0).log() + lse).to(values.dtype)[:, None]
    count = count.long()[:, None]
    tail = torch.ones(B, vocab, dtype=torch.bool).scatter(-1, ids, False)  # (B, V)
    for first in [None] if seen is None else [~seen, seen]:  # by id; unseen first; seen first
        rank = _rank(tail, first)  # (B, V): each tail token's place in the filling order
        fill = torch.where(rank < count, high, torch.where(rank == count, rest, -math.inf))
        fills.append(fill.scatter(-1, ids, values))  # the top N overwrite whatever rank gave them
    return fills


def _rank(tail: torch.Tensor, first: torch.Tensor | None) -> torch.Tensor:
    """Each tail token's 0-based place: tokens where ``first`` holds come first, by id."""
    if first is None:
        return tail.cumsum(-1) - 1
    a, b = tail & first, tail & ~first
    return torch.where(a, a.cumsum(-1) - 1, a.sum(-1, keepdim=True) + b.cumsum(-1) - 1)


def _seen(history: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.zeros(history.shape[0], vocab, dtype=torch.bool).scatter(-1, history.clamp(0, vocab - 1), True)


def _symmetric(named: NamedChain) -> bool:
    return all(p.vocab_symmetric for p in named.chain.logits)


def _check_chain(named: NamedChain) -> None:
    chain, name = named.chain, named.name
    if chain.context:
        raise ReplayError(f"chain {name!r}: {chain.context[0].name} changes what the model sees, so the "
                          "recorded logits are not its logits; replay runs logits processors only")
    if chain.selector is not None and chain.selector.stateful:
        raise ReplayError(f"chain {name!r}: the selector {chain.selector.name} keeps a running state "
                          "over the generation; replay measures selectors that sample from the "
                          "processed logits (multinomial, gumbel) or pick deterministically (greedy)")


def _refuse(record: Record, named: NamedChain, rows: torch.Tensor, escaped: torch.Tensor,
            differs: torch.Tensor) -> None:
    bad = escaped | differs
    if not bad.any():
        return
    at = int(bad.nonzero()[0])
    i = int(rows[at])
    why = ("keeps tokens beyond the recorded top " if escaped[at] else
           "gives a result that depends on the logits beyond the recorded top ")
    raise ReplayError(
        f"chain {named.name!r} cannot be replayed exactly at position {i} (document {int(record.doc[i])}, "
        f"step {int(record.steps[i])}; {int(bad.sum())} of the {len(rows)} positions at this step): "
        f"it {why}{record.top_n}; record again with a larger --top (up to the vocabulary, "
        f"{record.vocab_size}, which replays any chain)")

"""What the conformance kit's checks share: the generated case, contexts, calls and comparisons."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from samplekit.processor import Processor, RowRandom, Stage, StepContext

_TOL = {torch.float32: 1e-5, torch.float64: 1e-9, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}
METHOD = {Stage.LOGITS: "process", Stage.SELECTOR: "select", Stage.CONTEXT: "crop"}


class ConformanceFailure(AssertionError):
    """A processor broke the contract; the message names the processor and the property."""


class Who(str):
    """How failures name the processor (``processor 'x' (module.Class)``); the parameters it
    was built with come last in each message, after the finding."""

    def __new__(cls, text: str, params: dict | None = None):
        made = super().__new__(cls, text)
        made.params = dict(params or {})
        return made


def fail(who: str, prop: str, detail: str) -> None:
    built = getattr(who, "params", None)
    tail = f"\n  (built with {built})" if built else ""
    raise ConformanceFailure(f"{who}: {prop}: {detail}{tail}")


class Case:
    """One generated example: ``ids [B, T]``, ``scores [B, V]``, a seed per row, and what the
    contexts carry (the context length; the tokenizer and end-of-text ids check_processor got)."""

    def __init__(self, ids: torch.Tensor, scores: torch.Tensor, seeds: list[int], context_length: int | None = None,
                 tokenizer=None, eos_token_ids: tuple[int, ...] = ()):
        self.ids = ids  # (B, T)
        self.scores = scores  # (B, V)
        self.seeds = seeds
        self.context_length = context_length
        self.tokenizer, self.eos_token_ids = tokenizer, tuple(eos_token_ids)

    @property
    def batch(self) -> int:
        return self.scores.shape[0]

    @property
    def vocab(self) -> int:
        return self.scores.shape[1]

    def row(self, i: int) -> "Case":
        return Case(self.ids[i:i + 1], self.scores[i:i + 1], [self.seeds[i]], self.context_length, self.tokenizer,
                    self.eos_token_ids)

    def with_(self, ids: torch.Tensor | None = None, scores: torch.Tensor | None = None) -> "Case":
        return Case(self.ids if ids is None else ids, self.scores if scores is None else scores, self.seeds,
                    self.context_length, self.tokenizer, self.eos_token_ids)


def context(case: Case, seeds: Sequence[int] | None = None) -> StepContext:
    seeds = case.seeds if seeds is None else seeds
    b = case.batch
    return StepContext(
        random=RowRandom.from_seeds(seeds), batch_size=b, step=0,
        prompt_lengths=torch.full((b,), case.ids.shape[1], dtype=torch.long),
        context_length=case.context_length, tokenizer=case.tokenizer, eos_token_ids=case.eos_token_ids,
    )


def call(p: Processor, ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext, who: str) -> torch.Tensor:
    """``p``'s stage method; any exception other than a kit finding fails the check ``runs``."""
    try:
        if p.stage is Stage.LOGITS:
            return p.process(ids, scores, ctx)
        if p.stage is Stage.SELECTOR:
            return p.select(ids, scores, ctx)
        return p.crop(ids, ctx)
    except AssertionError:
        raise
    except Exception as exc:
        fail(who, "runs", f"{METHOD[p.stage]}() raised {type(exc).__name__}: {exc}\n"
             f"  input_ids={ids.tolist()}\n  scores={scores.tolist()} ({scores.dtype})")


def once(p: Processor, case: Case, who: str, *, ids=None, scores=None, seeds=None) -> torch.Tensor:
    """One call with fresh state (``start``) and a fresh, per-row seeded context."""
    ids = case.ids if ids is None else ids
    scores = case.scores if scores is None else scores
    ctx = context(case, seeds)
    ctx.state = p.start(case.batch, ctx)
    return call(p, ids, scores, ctx, who)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to rounding: identical infinities, finite values close for their dtype."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    x, y = a.double(), b.double()
    inf = torch.isinf(x)
    if not torch.equal(inf, torch.isinf(y)) or not torch.equal(x[inf], y[inf]):
        return False
    tol = _TOL.get(a.dtype, 1e-5)
    return torch.allclose(x[~inf], y[~inf], rtol=tol, atol=tol)

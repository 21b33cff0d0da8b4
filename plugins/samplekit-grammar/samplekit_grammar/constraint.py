"""The constraint processor: a filter that masks every token the constraint cannot accept.

Each row of a generation carries its own llguidance ``LLMatcher`` (``RowState``), created by
``start`` for the rows given (a copy of one matcher compiled per tokenizer), advanced by
``accept`` with the token the row chose, indexed by ``keep_rows`` and concatenated by
``join_rows`` (the defaults: the state is a list with one object per row).

End-of-text. The generation's own end-of-text ids (``ctx.eos_token_ids``) are allowed exactly
when the row's constraint allows stopping (the matcher ``is_accepting``), and then they are the
only ids allowed once it cannot continue (``is_stopped``). The tokenizer's end-of-text token is
treated like any special token: allowed only if it is one of the run's end-of-text ids.

Ending rows. ``accept`` ends a row with ``ctx.finish(row, "constraint")`` as soon as its
constraint is complete and nothing can follow it (llguidance's "stopped": a closed JSON object,
a regular expression with no longer match): the row stops there instead of running on to
``max_new_tokens``. A constraint that is complete but could go on (``[a-z]+``) leaves the choice
to the model: end-of-text is allowed beside the tokens that continue it. A token the constraint
forbids (possible only when a caller bypasses the mask) puts the row's matcher in llguidance's
error state: the row then allows only end-of-text, and ``accept`` ends it with the reason
``"constraint_error"`` (its output does not satisfy the constraint). Nothing raises. The same
holds when llguidance hits one of its limits mid-generation (validation runs each constraint for
its first bytes, ``samplekit_grammar.sources.probe``, and compiling computes the first mask, so
an empty language or an early limit is refused before any row starts); the decoding loop reports
``"constraint_error"`` rather than ``"eos"`` for such a row.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import llguidance
import torch

from samplekit import ParameterError, Processor, StepContext
from samplekit_grammar import masks
from samplekit_grammar.sources import tidy
from samplekit_grammar.tokenizers import lltokenizer

NEG_INF = float("-inf")
COMPLETE, BROKEN = "constraint", "constraint_error"  # the finish reasons this processor gives


@dataclass(frozen=True)
class Compiled:
    """One grammar compiled for one tokenizer: what every row's state shares (read-only)."""

    template: llguidance.LLMatcher  # never advanced: each row starts from a copy
    vocab: int  # llguidance's vocabulary size (the tokenizer's)
    width: int  # int32 words of one row's bitmask
    eos: tuple[int, ...]  # llguidance's end-of-text ids (the tokenizer's)
    pacer: masks.Pacer  # where a batch's masks are computed (speed only)

    def row(self) -> "RowState":
        return RowState(self.template.deep_copy(), self)


class RowState:
    """One row's matcher, and the compiled grammar it came from."""

    __slots__ = ("matcher", "compiled")

    def __init__(self, matcher: llguidance.LLMatcher, compiled: Compiled):
        self.matcher, self.compiled = matcher, compiled

    def __repr__(self) -> str:
        m = self.matcher
        return f"RowState(accepting={m.is_accepting()}, stopped={m.is_stopped()}, error={m.is_error()})"


class Constraint(Processor):
    """Base of the structured-output processors: subclasses give ``compile_grammar()``.

    Contract: at each step, a row's logit stays as it is for every token the row's constraint can
    accept next and becomes -inf for every other (ids past the tokenizer's vocabulary included);
    end-of-text (``ctx.eos_token_ids``) is allowed exactly when the constraint allows stopping.
    While the constraint is incomplete, at least one token stays allowed (llguidance's
    guarantee for a satisfiable grammar). Needs ``ctx.tokenizer``.
    """

    is_filter = True
    keeps_argmax = False
    stateful = True
    vocab_symmetric = False
    needs_history = False

    def __init__(self, *, _where: str | None = None, **values: Any):
        super().__init__(_where=_where, **values)
        self.where = _where or self.name
        self.grammar = self.compile_grammar()  # llguidance's grammar text, validated
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> Compiled

    def compile_grammar(self) -> str:
        raise NotImplementedError

    def __getstate__(self) -> dict:  # pickle and deepcopy: the parameters and grammar, not the caches
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._compiled = weakref.WeakKeyDictionary()

    def tracks_generation(self) -> bool:
        return True  # the mask follows the tokens each row has accepted

    # -- state ------------------------------------------------------------------------------------
    def start(self, batch_size: int, ctx: StepContext) -> list[RowState]:
        """One matcher per row, from that row's own constraint (every parameter is per row: rows
        with different schemas, patterns or grammars share a run)."""
        made: dict[int, Compiled] = {}
        for p in self.row_processors(ctx):
            if id(p) not in made:
                made[id(p)] = p.compiled_for(ctx.tokenizer)
        return [made[id(p)].row() for p in self.row_processors(ctx)]

    def compiled_for(self, tokenizer: Any) -> Compiled:
        """The grammar compiled for ``tokenizer`` (once per tokenizer object, weakly cached)."""
        if tokenizer is None:
            raise ParameterError(f"{self.where}: a {self.name} constraint needs the generation's tokenizer "
                                 "(pass tokenizer= to samplekit.generate)")
        try:
            found = self._compiled.get(tokenizer)
        except TypeError:  # not weakly referenceable: compile every time
            return self._compile(tokenizer)
        if found is None:
            found = self._compiled[tokenizer] = self._compile(tokenizer)
        return found

    def _compile(self, tokenizer: Any) -> Compiled:
        lltok = lltokenizer(tokenizer)
        template = llguidance.LLMatcher(lltok, self.grammar, log_level=0)
        first = template.deep_copy()
        if not template.is_error():
            first.compute_bitmask()  # the first step's mask: an empty language or a limit shows here
        for m in (template, first):
            if m.is_error():
                message = tidy(m.get_error().split("\n<state>", 1)[0])  # without llguidance's state dump
                raise ParameterError(f"{self.where}: llguidance cannot use this {self.name} with the tokenizer: "
                                     f"{message}")
        vocab = lltok.vocab_size
        return Compiled(template, vocab, (vocab + 31) // 32, tuple(lltok.eos_tokens), masks.Pacer())

    # -- each step ----------------------------------------------------------------------------------
    def process(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        rows: list[RowState] = ctx.state
        if not rows:
            return scores
        compiled = rows[0].compiled
        bitmask = compiled.pacer.fill([r.matcher for r in rows], compiled.width)  # (B, W) int32, CPU
        run_eos = tuple(ctx.eos_token_ids)
        if set(run_eos) == set(compiled.eos):  # llguidance's end-of-text is the run's: its mask is exact
            allowed = masks.unpack(bitmask, scores.shape[-1], scores.device)  # (B, V) bool
        else:
            masks.clear_bits(bitmask, compiled.eos)
            allowed = masks.unpack(bitmask, scores.shape[-1], scores.device)  # (B, V) bool
            eos = [t for t in run_eos if 0 <= t < scores.shape[-1]]
            ending = [i for i, r in enumerate(rows) if r.matcher.is_accepting() or r.matcher.is_stopped()]
            if eos and ending:
                at = allowed.device
                allowed[torch.tensor(ending, device=at)[:, None], torch.tensor(eos, device=at)[None, :]] = True
        return torch.where(allowed, scores, NEG_INF)  # (B, V): a new tensor, same dtype

    def accept(self, tokens: torch.Tensor, ctx: StepContext) -> None:
        rows: list[RowState] = ctx.state
        if not rows:
            return
        run_eos = set(ctx.eos_token_ids)
        for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
            matcher = row.matcher  # consuming a token takes microseconds: no thread pool (see masks.Pacer)
            matcher.consume_token(self._for_matcher(matcher, token, run_eos, row.compiled))
            if matcher.is_error():
                ctx.finish([i], BROKEN)
            elif matcher.is_stopped():
                ctx.finish([i], COMPLETE)

    @staticmethod
    def _for_matcher(matcher: llguidance.LLMatcher, token: int, run_eos: set[int], compiled: Compiled) -> int:
        """The id to hand llguidance for ``token``: the run's end-of-text becomes llguidance's own
        (or an impossible id when the constraint cannot stop here); ids llguidance does not know,
        and its end-of-text when it is not the run's, become an impossible id (one past its
        vocabulary: llguidance refuses it and enters its error state)."""
        if token in run_eos:
            can_stop = matcher.is_accepting() or (matcher.is_stopped() and not matcher.is_error())
            return compiled.eos[0] if can_stop and compiled.eos else compiled.vocab
        if not 0 <= token < compiled.vocab or token in compiled.eos:
            return compiled.vocab
        return token

"""Step strategies: how a run computes the tokens of each step.

The dense path runs every logits processor on the whole vocabulary, then the selector. Most of
that work is often wasted (after a top-k only k logits are finite), so a plugin may offer a
faster strategy through the ``step_strategy`` hook (samplekit.hookspecs): it is asked once, when
a run starts, and the first strategy offered serves the whole run. samplekit's own strategies
(``samplekit.strategies``) register through that hook exactly like a plugin's, so
``SAMPLEKIT_BLOCK_PLUGINS`` turns any of them off.

A strategy must choose the tokens the dense path would. It relies on promises that processors
declare (``keeps_top``, ``keeps_top_rows``, ``commutes_with_top_k``, ``candidate_safe``,
``filter_candidates``, ``process_candidates``, ``select_candidates``); ``promised`` reads them,
and the conformance kit checks each one against the processor's dense behaviour. A run whose rows
carry their own values (``ChainRun.varies``) is served only by a strategy that declares
``per_row_values`` (it reads the values through the processors); any other computes its steps
densely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:  # pragma: no cover
    from samplekit.chain import ChainRun
    from samplekit.processor import Processor

__all__ = ["StepStrategy", "promised"]


class StepStrategy:
    """Computes one run's steps. ``select(run, input_ids, scores)`` returns the tokens ``[B]``,
    or None to run this step densely. It may call ``run.apply`` (processors in order, each with
    its own state) and ``run.selector_context()``; it must not call ``accept`` (the run does)."""

    name: ClassVar[str] = "dense"
    # Whether ``select`` serves rows that carry their own values (it reads per-row parameters
    # through the processors, ``Processor.row_value``). A run whose rows' values differ from the
    # chain's own computes its steps densely unless its strategy declares this.
    per_row_values: ClassVar[bool] = False

    def select(self, run: "ChainRun", input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


DENSE = StepStrategy()


def promised(p: "Processor", name: str, work: str = "process") -> Any:
    """``p``'s fast-path promise ``name`` (a trait or a method), trusted only when declared by
    the class that defines its ``work`` method: a subclass overriding ``process`` must declare
    the promise again. None when not promised."""
    cls = type(p)
    owner = _owner(cls, name)
    return getattr(p, name) if owner is not None and owner is _owner(cls, work) else None


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)

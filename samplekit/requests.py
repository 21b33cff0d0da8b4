"""What a batch job or a server hands the scheduler, and what comes back.

A ``Request`` is one prompt with its own chain, seed, limits and number of samples ``n``; the
scheduler answers each with a ``RequestResult`` holding one ``Sample`` per sample. Sample i of a
request is seeded ``sample_seed(seed, i)``: sample 0 uses the request's seed itself (so ``n=1``
draws what ``generate(seed=[seed])`` draws), the others seeds derived from it by a hash, so two
requests with neighbouring seeds never share a stream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

MAX_SEED = 2**63 - 1


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a request seeded ``seed``."""
    if index == 0:
        return seed
    digest = hashlib.sha256(f"samplekit:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


@dataclass
class Request:
    """One prompt to complete.

    ``prompt``: token ids. ``chain``: anything ``samplekit.engine.resolve_chain`` takes (a
    Chain, a config dict, a preset name or YAML path; None: the scheduler's default). ``seed``:
    None draws one from torch's global generator when the request is submitted (the result says
    which). ``stop``: stop strings (need the scheduler's tokenizer). ``stop_token_ids``: ids that
    end a sample once chosen (kept in its tokens and text; finish reason "stop"). ``n``: samples
    of this prompt, each with its own seed, sharing the prompt's prefill. ``max_time``: seconds, per sample.
    ``trace``: record what each processor did at each step, keeping this many candidates per stage
    (samplekit.trace): each token event then carries its ``StepTrace``.
    """

    prompt: list[int]
    id: Any = None
    chain: Any = None
    max_new_tokens: int = 200
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    stop_on_eos: bool = True
    stop_token_ids: tuple[int, ...] = ()
    max_time: float | None = None
    trace: int | None = None
    extras: dict = field(default_factory=dict)  # carried to the result untouched (a caller's bookkeeping)


@dataclass
class Sample:
    """One sample of a request: its new tokens (an end-of-text that ended it is not included),
    decoded text (None without a tokenizer), why it ended ("length", "eos", "stop", "time", a
    processor's reason such as "constraint", or "error" with ``error`` saying what its chain
    raised) and the seed it drew from."""

    index: int
    tokens: list[int]
    text: str | None
    finish_reason: str
    seed: int
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass
class RequestResult:
    """A finished request: its samples in index order, and the prompt's length in tokens."""

    request: Request
    samples: list[Sample]

    @property
    def id(self) -> Any:
        return self.request.id

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt)

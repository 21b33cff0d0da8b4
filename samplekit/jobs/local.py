"""Running jobs on this machine: the continuous-batching ``Scheduler``, ``max_batch`` rows.

Prompts are encoded as ``samplekit generate`` encodes them (``encode_prompt``), lazily, as the
scheduler draws requests. Each distinct chain is built once (the shared ``ChainCache``); requests
whose chains differ only in per-row values share one chain run in the batch. The Ray workers run
the same ``serve``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator

from samplekit.chain_cache import ChainCache
from samplekit.jobs import JobWarning
from samplekit.jobs.inputs import Job
from samplekit.jobs.models import ModelSpec
from samplekit.jobs.outputs import sample_records


def job_chains() -> ChainCache:
    """The shared chain cache (samplekit.chain_cache), building a job's resolved chain config."""
    from samplekit.config import chain_from_config

    return ChainCache(lambda spec: chain_from_config(copy.deepcopy(spec), source="<job>"))


def serve(model, tokenizer, jobs: Iterable[Job], *, batch_size: int,
          chains: ChainCache | None = None) -> Iterator[tuple[Job, list[dict]]]:
    """Run ``jobs`` through one Scheduler; yield each request's output lines as it finishes."""
    from samplekit.model.tokenizer import encode_prompt
    from samplekit.requests import Request
    from samplekit.scheduler import Scheduler

    chains = chains if chains is not None else job_chains()
    scheduler = Scheduler(model, tokenizer=tokenizer, max_batch=batch_size)
    if not scheduler.batch_invariant:
        warnings.warn(f"{type(model).__name__} has no batch-invariant mode: a request's tokens may depend on the "
                      "requests batched with it, so a resumed run, another --batch-size or --engine may give "
                      "slightly different samples", JobWarning, stacklevel=2)

    def requests() -> Iterator[Request]:
        for job in jobs:
            yield Request(prompt=encode_prompt(tokenizer, job.prompt), id=job.id, chain=chains.get(job.chain),
                          max_new_tokens=job.max_new_tokens, seed=job.seed, stop=job.stop, n=job.n,
                          stop_on_eos=job.stop_on_eos, max_time=job.max_time, extras={"job": job})

    for result in scheduler.run(requests()):
        job = result.request.extras["job"]
        yield job, sample_records(job, result)


def run_local(jobs: list[Job], *, model: ModelSpec, batch_size: int,
              warn: Callable[[str], None] | None = None) -> Iterator[tuple[Job, list[dict]]]:
    """Load the model here and serve ``jobs`` (the scheduler's own warnings, such as a prompt
    past the context window, go through Python's warnings, said once)."""
    if not jobs:
        return
    loaded, tokenizer = model.load()
    yield from serve(loaded, tokenizer, jobs, batch_size=batch_size)

"""``samplekit run``, end to end: validate the requests, open the output, run what is missing.

Order: the engine's import (``--engine ray`` without Ray fails first), the request file (every
line validated before anything runs), the output (refused if it was made from another input or
settings), then the model, then generation. Ctrl-C (SIGINT) or SIGTERM stops after the last
whole request written and says how to resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import warnings
from dataclasses import dataclass, field

from samplekit.errors import ConfigError
from samplekit.jobs.inputs import Defaults, JobFile, read_jobs
from samplekit.jobs.models import ModelSpec
from samplekit.jobs.outputs import ResultFile, error_record
from samplekit.jobs.progress import JobProgress

EXIT_INTERRUPTED = 130


@dataclass
class RunOptions:
    """Everything ``samplekit run`` was asked to do."""

    input: str
    output: str
    defaults: Defaults = field(default_factory=Defaults)
    model: ModelSpec = field(default_factory=ModelSpec)
    batch_size: int = 32
    engine: str = "local"
    address: str | None = None
    workers: int = 1
    skip_invalid: bool = False
    overwrite: bool = False
    quiet: bool = False


def fingerprint(options: RunOptions, jobs: JobFile) -> dict:
    """What determines the output: the input's content, the model, the settings and every
    request as resolved (a config file a request names may change while its name stays)."""
    d = options.defaults
    requests = [j.settings() for j in jobs.jobs] + [[b.line, b.error] for b in jobs.bad]
    digest = hashlib.sha256(json.dumps(requests, sort_keys=True, default=repr).encode()).hexdigest()
    return {"input_sha256": jobs.sha256, "model": options.model.fingerprint(), "config": d.config,
            "set": list(d.sets), "seed": d.seed, "n": d.n, "max_new_tokens": d.max_new_tokens,
            "batch_invariant": "auto", "requests_sha256": digest}


def run_job(options: RunOptions) -> int:
    """Run the job; the exit status (0, or 130 when interrupted)."""
    engine = _engine(options)
    jobs = read_jobs(options.input, options.defaults)
    if jobs.bad and not options.skip_invalid:
        raise ConfigError(jobs.first_error())
    expected = {j.line: j.n for j in jobs.jobs} | {b.line: 1 for b in jobs.bad}
    out = ResultFile(options.output, fingerprint(options, jobs), expected, input_path=options.input)
    with out.open(overwrite=options.overwrite), _sigterm_as_interrupt():
        progress = JobProgress(len(expected), len(out.done), quiet=options.quiet, output=options.output)
        pending = [j for j in jobs.jobs if j.line not in out.done]
        warn = _warner(progress)
        try:
            with progress, warnings.catch_warnings():
                warnings.showwarning = lambda message, *args, **kwargs: warn(str(message))  # above the bar
                for bad in jobs.bad:
                    if bad.line not in out.done:
                        record = error_record(bad)
                        out.write([record])
                        progress.finished([record])
                for job, records in engine(pending, model=options.model, batch_size=options.batch_size,
                                           warn=warn):
                    if job.line in out.done:  # a retried batch's duplicate: written once already
                        continue
                    out.write(records)
                    progress.finished(records)
        except KeyboardInterrupt:
            progress.say(f"interrupted: {len(out.done)} of {len(expected)} requests are in {options.output}; "
                         "run the same command again to continue")
            return EXIT_INTERRUPTED
        missing = len(expected) - len(out.done)
        if missing:
            from samplekit.jobs import JobError

            raise JobError(f"{missing} requests came back without results; {len(out.done)} are in "
                           f"{options.output}: run the same command again to run the rest")
        if not options.quiet:
            progress.say(progress.summary())
    return 0


def _engine(options: RunOptions):
    if options.engine == "ray":
        from samplekit.jobs.ray_engine import require_ray, run_ray

        require_ray()
        return lambda jobs, **kw: run_ray(jobs, workers=options.workers, address=options.address, **kw)
    if options.address is not None or options.workers != 1:
        raise ConfigError(f"{'--address' if options.address is not None else '--workers'} is for --engine ray")
    from samplekit.jobs.local import run_local

    return run_local


def _warner(progress: JobProgress):
    """Print each warning once (numbers aside: Ray workers each count their own)."""
    said: set[str] = set()

    def warn(message: str) -> None:
        key = re.sub(r"\d+", "#", message)
        if key not in said:
            said.add(key)
            progress.say(f"warning: {message}")
    return warn


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the run like Ctrl-C (main thread only)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

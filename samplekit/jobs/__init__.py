"""Batch jobs: ``samplekit run requests.jsonl -o results.jsonl``.

A request file (JSON Lines, or plain text with one prompt per line) is read and validated in
full (``inputs``), the output file is opened for a resumable append (``outputs``: a sidecar
``.meta`` file holds the fingerprint of the input and settings it was made with; whole requests
are appended with one write and an fsync each), and the requests still missing run on the local
continuous-batching scheduler (``local``) or on Ray Data actors (``ray_engine``), with a progress
bar and a summary (``progress``). ``runner.run_job`` ties them together.
"""

from __future__ import annotations

from samplekit.errors import SampleKitError


class JobError(SampleKitError):
    """A batch job cannot go on: the output cannot be written, a worker failed, ... (the message
    says what was written and how to continue)."""


class JobWarning(UserWarning):
    """Something about a job the user should know, said once (a model without batch invariance)."""


__all__ = ["JobError", "JobWarning"]

"""Token events and results -> OpenAI's JSON: whole responses and stream chunks.

``Answer`` follows one Job: ``events`` and ``result`` take what the engine delivers and return
the stream's choice payloads; ``body`` is the whole non-streamed response. Choice ``i * n + j``
is sample ``j`` of prompt ``i``.

Log-probabilities are the model's raw ones (before any processor: the distribution the trace
calls "model"), for the chosen token and the ``logprobs``/``top_logprobs`` most probable
candidates; the chain's final distribution is in ``samplekit_trace``. A probability that float32
rounds to 0 is reported as -9999.0 (JSON has no -inf). ``samplekit_trace`` (when the request's
``samplekit.trace`` asks for it) is one ``StepTrace.to_dict()`` per token, plus ``texts``: the
candidates' text by id.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from samplekit.serve.protocol import Job, Served

FINISH = {"length": "length", "time": "length", "eos": "stop", "stop": "stop"}  # any other reason: "stop"
NO_PROB = -9999.0


def logprob(p: float) -> float:
    return math.log(p) if p > 0 else NO_PROB


@dataclass
class _Choice:
    index: int
    entries: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    pending: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    traces: list[dict] = field(default_factory=list)
    offset: int = 0  # characters streamed so far (text_offset)
    streamed_finish: bool = False
    sample: Any = None


class Answer:
    """The response to one Job, built as the engine delivers events and results."""

    def __init__(self, job: Job, served: Served):
        self.job, self.served = job, served
        self.created = int(time.time())
        self.choices = [_Choice(i) for i in range(job.choices)]
        self.prompt_tokens = sum(len(r.prompt) for r in job.requests)
        self.done = 0  # requests finished
        for i, text in enumerate(job.echo_texts or ()):
            for j in range(job.n):
                self.choices[i * job.n + j].offset = len(text)

    def _choice(self, request, sample: int) -> _Choice:
        return self.choices[request.id[1] * self.job.n + sample]

    # -- what the engine delivers ------------------------------------------------------------------------
    def events(self, events) -> list[dict]:
        """Record the events; the stream's choice payloads for them."""
        out = []
        for e in events:
            c = self._choice(e.request, e.index)
            entry = None
            if e.trace is not None and self.job.logprobs is not None and e.finished != "eos":
                raw = e.trace.stages[0]
                entry = (e.token, logprob(e.trace.token_prob),
                         [(int(t), logprob(p)) for t, p in raw.top[: self.job.logprobs]])
                c.entries.append(entry)
                c.pending.append(entry)
            trace = self._trace(e.trace) if self.job.trace and e.trace is not None else None
            if trace is not None:
                c.traces.append(trace)
            if not self.job.stream:
                continue
            emit: list = []
            if e.text or e.finished:
                emit, c.pending = c.pending, []
                if e.finished == "stop":  # the tokens held back were the stop string's
                    emit = []
            if e.finished:
                c.streamed_finish = True
            if e.text or e.finished or emit or trace is not None:
                out.append(self._payload(c, e.text, FINISH.get(e.finished, "stop") if e.finished else None,
                                         emit, trace))
        return out

    def result(self, result) -> list[dict]:
        """Record a finished request's samples; payloads for samples whose end was not streamed."""
        self.done += 1
        out = []
        for s in result.samples:
            c = self._choice(result.request, s.index)
            c.sample = s
            if self.job.stream and not c.streamed_finish:
                c.streamed_finish = True
                out.append(self._payload(c, s.text or "", FINISH.get(s.finish_reason, "stop"), [], None))
        return out

    @property
    def finished(self) -> bool:
        return self.done == len(self.job.requests)

    # -- stream chunks -------------------------------------------------------------------------------------
    def chunk(self, payloads: list[dict]) -> dict:
        kind = "text_completion" if self.job.kind == "completion" else "chat.completion.chunk"
        out = {"id": self.job.id, "object": kind, "created": self.created, "model": self.served.model_id,
               "choices": payloads}
        if self.job.include_usage:
            out["usage"] = None
        return out

    def opening(self) -> list[dict]:
        """The stream's first payloads: the role (chat), or the echoed prompt (completions)."""
        if self.job.kind == "chat":
            return [{"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None} for c in self.choices]
        if self.job.echo_texts:
            return [{"index": c.index, "text": self.job.echo_texts[c.index // self.job.n], "logprobs": None,
                     "finish_reason": None} for c in self.choices]
        return []

    def usage_chunk(self) -> dict:
        chunk = self.chunk([])
        chunk["usage"] = self.usage()
        return chunk

    def _payload(self, c: _Choice, text: str, finish: str | None, entries: list, trace: dict | None) -> dict:
        logprobs = self._logprobs(c, entries) if self.job.logprobs is not None else None
        if self.job.kind == "chat":
            payload = {"index": c.index, "delta": {"content": text} if text or not finish else {},
                       "logprobs": logprobs, "finish_reason": finish}
        else:
            payload = {"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        c.offset += len(text)
        if trace is not None:
            payload["samplekit_trace"] = trace
        return payload

    # -- the whole response --------------------------------------------------------------------------------
    def body(self) -> dict:
        choices = []
        for c in self.choices:
            s = c.sample
            text = s.text or ""
            entries = c.entries[: len(s.tokens)]
            c.offset = len(self.job.echo_texts[c.index // self.job.n]) if self.job.echo_texts else 0
            logprobs = self._logprobs(c, entries) if self.job.logprobs is not None else None
            finish = FINISH.get(s.finish_reason, "stop")
            if self.job.kind == "chat":
                choice = {"index": c.index, "message": {"role": "assistant", "content": text},
                          "logprobs": logprobs, "finish_reason": finish}
            else:
                if self.job.echo_texts:
                    text = self.job.echo_texts[c.index // self.job.n] + text
                choice = {"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": finish}
            if self.job.trace:
                choice["samplekit_trace"] = c.traces
            choices.append(choice)
        kind = "text_completion" if self.job.kind == "completion" else "chat.completion"
        return {"id": self.job.id, "object": kind, "created": self.created, "model": self.served.model_id,
                "choices": choices, "usage": self.usage()}

    def usage(self) -> dict:
        completion = sum(len(c.sample.tokens) for c in self.choices if c.sample is not None)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    # -- pieces ---------------------------------------------------------------------------------------------
    def _logprobs(self, c: _Choice, entries: list) -> dict:
        text = self.served.token_text
        if self.job.kind == "chat":
            raw = self.served.token_bytes
            return {"content": [{"token": text(t), "logprob": lp, "bytes": list(raw(t)),
                                 "top_logprobs": [{"token": text(u), "logprob": ulp, "bytes": list(raw(u))}
                                                  for u, ulp in top]}
                                for t, lp, top in entries]}
        offsets, at = [], c.offset
        for t, _, _ in entries:
            offsets.append(at)
            at += len(text(t))
        return {"tokens": [text(t) for t, _, _ in entries], "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [{text(u): ulp for u, ulp in top} for _, _, top in entries],
                "text_offset": offsets}

    def _trace(self, trace) -> dict:
        d = trace.to_dict()
        ids = {trace.token} | {int(t) for s in trace.stages for t, _ in s.top}
        d["texts"] = {str(i): self.served.token_text(i) for i in sorted(ids)}
        return _finite(d)


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

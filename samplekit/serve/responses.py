"""Token events and results -> OpenAI's JSON: whole responses and stream chunks.

``Answer`` follows one Job: ``events`` and ``result`` take what the engine delivers and return
the stream's choice payloads; ``body`` is the whole non-streamed response. Choice ``i * n + j``
is sample ``j`` of prompt ``i``.

Log-probabilities are the model's raw ones (before any processor: the distribution the trace
calls "model"), for the chosen token and the ``logprobs``/``top_logprobs`` most probable
candidates, or with ``processed`` those after the chain (the distribution the selector drew
from). Completions' ``top_logprobs`` also hold the chosen token (vLLM's way, so ``logprobs: 0``
gives it alone). With echo and logprobs, the prompt's tokens lead (the first one's is null); vLLM's
``prompt_logprobs`` is a list per choice: null, then ``{id: {logprob, rank, decoded_token}}``.
A probability that float32 rounds to 0 is reported as -9999.0 (JSON has no -inf).
A tool call's output (``job.tool``) becomes an assistant message with ``tool_calls`` and finish
reason ``tool_calls`` when it parses. ``samplekit_trace`` (when the request's
``samplekit.trace`` asks for it) is one ``StepTrace.to_dict()`` per token, plus ``texts``: the
candidates' text by id. A sample that ended in failure (``failure``) raises ``APIError`` (500).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from samplekit.serve import structured
from samplekit.serve.errors import APIError
from samplekit.serve.protocol import Job, Served

FINISH = {"length": "length", "time": "length", "eos": "stop", "stop": "stop"}  # other successes: "stop"
NO_PROB = -9999.0


def failure(reason: str | None, error: str | None = None) -> APIError | None:
    """The error to send for a sample that ended in failure, else None. A failure is a chain that
    raised (``error`` says what) or a finish reason ending in "error" (a processor's, such as the
    grammar plugin's "constraint_error": the output does not satisfy the constraint). As vLLM does
    for its finish reason "error": an HTTP 500 error body, or in a stream an error event, then
    [DONE]; never a success's finish reason."""
    if error is None and not (reason or "").endswith("error"):
        return None
    detail = error if error is not None else f"a sample ended with finish reason {reason!r}" + (
        " (its output does not satisfy the constraint)" if reason == "constraint_error" else "")
    return APIError(500, f"generation failed: {detail}", code="generation_failed")


def logprob(p: float) -> float:
    return math.log(p) if p > 0 else NO_PROB


def finite(lp: float | None) -> float | None:
    return lp if lp is None or math.isfinite(lp) else NO_PROB


@dataclass
class _Choice:
    index: int
    entries: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    pending: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    traces: list[dict] = field(default_factory=list)
    offset: int = 0  # characters streamed so far (text_offset)
    streamed_finish: bool = False
    sample: Any = None
    tokens: list[int] = field(default_factory=list)  # every token chosen (a stop string's included)
    sent: str = ""  # text streamed so far


class Answer:
    """The response to one Job, built as the engine delivers events and results."""

    def __init__(self, job: Job, served: Served):
        self.job, self.served = job, served
        self.created = int(time.time())
        self.choices = [_Choice(i) for i in range(job.choices)]
        self.prompt_tokens = sum(len(p) for p in job.prompts)
        self.done = 0  # requests finished
        self.scored: list[list] | None = None  # each prompt's scoring.PromptToken list
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
            if e.finished is not None and (error := failure(e.finished)) is not None:
                raise error
            c = self._choice(e.request, e.index)
            if e.finished != "eos":
                c.tokens.append(e.token)
            entry = None
            if e.trace is not None and self.job.logprobs is not None and e.finished != "eos":
                stage = e.trace.stages[-1 if self.job.processed else 0]
                chosen = getattr(e.trace, "final_prob", None) if self.job.processed else e.trace.token_prob
                entry = (e.token, logprob(chosen) if chosen is not None else None,
                         [(int(t), logprob(p)) for t, p in stage.top[: self.job.logprobs]])
                c.entries.append(entry)
                c.pending.append(entry)
            trace = self._trace(e.trace) if self.job.trace and e.trace is not None else None
            if trace is not None:
                c.traces.append(trace)
            if not self.job.stream:
                continue
            emit: list = []
            if self.job.tool is not None:  # a tool call is sent whole when its sample ends (result)
                continue
            if e.text or e.finished:
                emit, c.pending = c.pending, []
                if e.finished == "stop":  # the tokens held back were the stop string's
                    emit = []
            text = e.text
            if e.finished == "stop" and self.job.include_stop:
                text += self._stop_string(c, c.sent + text)
            if e.finished:
                c.streamed_finish = True
            if text or e.finished or emit or trace is not None:
                out.append(self._payload(c, text, FINISH.get(e.finished, "stop") if e.finished else None,
                                         emit, trace))
        return out

    def result(self, result) -> list[dict]:
        """Record a finished request's samples; payloads for samples whose end was not streamed."""
        self.done += 1
        out = []
        for s in result.samples:
            if (error := failure(s.finish_reason, s.error)) is not None:
                raise error
            c = self._choice(result.request, s.index)
            c.sample = s
            if self.job.stream and self.job.tool is not None:
                c.streamed_finish = True
                message, finish = self._message(c)
                delta = {"tool_calls": [{"index": 0, **message["tool_calls"][0]}]} if "tool_calls" in message \
                    else {"content": message["content"]}
                out.append({"index": c.index, "delta": delta, "logprobs": None, "finish_reason": finish})
            elif self.job.stream and not c.streamed_finish:
                c.streamed_finish = True
                out.append(self._payload(c, s.text or "", FINISH.get(s.finish_reason, "stop"), [], None))
        return out

    def prompts_scored(self, scored: list[list]) -> None:
        """Each prompt's tokens with their log-probabilities (``scoring.prompt_logprobs``)."""
        self.scored = scored

    @property
    def finished(self) -> bool:
        return self.done == len(self.job.requests) and (self.job.scoring is None or self.scored is not None)

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
            out = []
            for c in self.choices:
                text = self.job.echo_texts[c.index // self.job.n]
                logprobs = None
                if self.job.echo_logprobs:
                    logprobs = self._logprobs(c, self._prompt_entries(c), offset=0)
                out.append({"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": None})
            return out
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
        c.sent += text
        if trace is not None:
            payload["samplekit_trace"] = trace
        return payload

    # -- the whole response --------------------------------------------------------------------------------
    def body(self) -> dict:
        choices = []
        for c in self.choices:
            s = c.sample
            text = self._text(c)
            entries = c.entries[: len(s.tokens)] if s is not None else []
            if self.job.echo_logprobs:
                entries = self._prompt_entries(c) + entries
                c.offset = 0
            else:
                c.offset = len(self.job.echo_texts[c.index // self.job.n]) if self.job.echo_texts else 0
            logprobs = self._logprobs(c, entries) if self.job.logprobs is not None else None
            finish = FINISH.get(s.finish_reason, "stop") if s is not None else "length"
            if self.job.kind == "chat":
                message, finish = self._message(c) if self.job.tool is not None else (
                    {"role": "assistant", "content": text}, finish)
                choice = {"index": c.index, "message": message, "logprobs": logprobs, "finish_reason": finish}
            else:
                if self.job.echo_texts:
                    text = self.job.echo_texts[c.index // self.job.n] + text
                choice = {"index": c.index, "text": text, "logprobs": logprobs, "finish_reason": finish}
                if self.job.prompt_logprobs is not None:
                    choice["prompt_logprobs"] = self._vllm_prompt_logprobs(c)
            if self.job.trace:
                choice["samplekit_trace"] = c.traces
            choices.append(choice)
        kind = "text_completion" if self.job.kind == "completion" else "chat.completion"
        return {"id": self.job.id, "object": kind, "created": self.created, "model": self.served.model_id,
                "choices": choices, "usage": self.usage()}

    def _text(self, c: _Choice) -> str:
        """The sample's text, with the matched stop string when include_stop_str_in_output."""
        s = c.sample
        if s is None:
            return ""
        text = s.text or ""
        if self.job.include_stop and s.finish_reason == "stop":
            text += self._stop_string(c, text)
        return text

    def _stop_string(self, c: _Choice, text: str) -> str:
        """The stop string that ended the sample after ``text`` (read from its tokens), or ""."""
        full = self.served.decode(c.tokens)
        found = [(full.find(s, len(text)), s) for s in self.job.stops if full.find(s, len(text)) >= 0]
        return min(found)[1] if found else ""

    def _message(self, c: _Choice) -> tuple[dict, str]:
        """The assistant message of a tool call (or the text, when the output does not parse)."""
        text = c.sample.text or "" if c.sample is not None else ""
        done = c.sample is not None and c.sample.finish_reason in ("constraint", "eos", "stop")
        call = structured.tool_call(self.job.tool, text, "call_" + uuid.uuid4().hex[:24]) if done else None
        if call is None:
            return {"role": "assistant", "content": text}, FINISH.get(c.sample.finish_reason, "stop") \
                if c.sample is not None else "length"
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"

    def _prompt_entries(self, c: _Choice) -> list[tuple[int, float | None, list[tuple[int, float]]]]:
        if self.scored is None:
            return []
        top = self.job.logprobs or 0
        return [(t.token, finite(t.logprob), [(u, finite(v)) for u, v in t.top[:top]])
                for t in self.scored[c.index // self.job.n]]

    def _vllm_prompt_logprobs(self, c: _Choice) -> list[dict | None]:
        """vLLM's prompt_logprobs: null, then the token and its top candidates by id."""
        text = self.served.token_text
        out: list[dict | None] = []
        for i, t in enumerate(self.scored[c.index // self.job.n] if self.scored is not None else []):
            if i == 0:
                out.append(None)
                continue
            entry = {str(t.token): {"logprob": finite(t.logprob), "rank": t.rank, "decoded_token": text(t.token)}}
            for rank, (u, v) in enumerate(t.top[: self.job.prompt_logprobs], start=1):
                entry.setdefault(str(u), {"logprob": finite(v), "rank": rank, "decoded_token": text(u)})
            out.append(entry)
        return out

    def usage(self) -> dict:
        completion = sum(len(c.sample.tokens) for c in self.choices if c.sample is not None)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    # -- pieces ---------------------------------------------------------------------------------------------
    def _logprobs(self, c: _Choice, entries: list, offset: int | None = None) -> dict:
        text = self.served.token_text
        if self.job.kind == "chat":
            raw = self.served.token_bytes
            return {"content": [{"token": text(t), "logprob": lp, "bytes": list(raw(t)),
                                 "top_logprobs": [{"token": text(u), "logprob": ulp, "bytes": list(raw(u))}
                                                  for u, ulp in top]}
                                for t, lp, top in entries]}
        offsets, at = [], c.offset if offset is None else offset
        for t, _, _ in entries:
            offsets.append(at)
            at += len(text(t))
        tops = []
        for t, lp, top in entries:  # the chosen token too (vLLM's): logprobs 0 gives it alone
            tops.append(None if lp is None else {**{text(u): ulp for u, ulp in top},
                                                 **({} if any(u == t for u, _ in top) else {text(t): lp})})
        return {"tokens": [text(t) for t, _, _ in entries], "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": tops, "text_offset": offsets}

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

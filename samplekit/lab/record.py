"""Record a model's logits over a text once, so chains can be measured on it without the model.

A record holds documents (token ids, each with a prompt length) and, for every target position
(a token from the prompt's end on, predicted from the tokens before it), the model's top ``N``
logits (float32 values, largest first, and their ids), the logsumexp of the whole row (float64),
the target's logit, and the entropy of the model's distribution. Positions are ordered by step
(tokens after the prompt), so a replay can run every document's step together.

File format: one ``torch.save`` of a dict of plain values and tensors, read with
``torch.load(weights_only=True)``::

    {"format": "samplekit.logits", "version": 1, "meta": {...},
     "tensors": {"tokens": [D, L] int32 (0-padded), "lengths": [D], "prompt_lengths": [D],
                 "doc": [P], "target": [P] (index in its document), "top_values": [P, N] float32,
                 "top_ids": [P, N] int16|int32, "lse": [P] float64, "target_logit": [P] float32,
                 "entropy": [P] float32}}

Reading a file of another format or version is refused with a clear error, and so is a damaged
one (every field is checked at load: ``samplekit.lab.record_checks``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samplekit.lab.errors import RecordError
from samplekit.lab.scoring import teacher_forced
from samplekit.safe_io import atomic_write

FORMAT = "samplekit.logits"
VERSION = 1
DEFAULT_TOP = 256
TENSORS = ("tokens", "lengths", "prompt_lengths", "doc", "target", "top_values", "top_ids", "lse",
           "target_logit", "entropy")


@dataclass
class Record:
    """A loaded (or freshly made) record; see the module docstring for the tensors (in memory,
    ``doc`` and ``target`` are int64, ``top_ids`` keeps its small integer type)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    prompt_lengths: torch.Tensor
    doc: torch.Tensor
    target: torch.Tensor
    top_values: torch.Tensor
    top_ids: torch.Tensor
    lse: torch.Tensor
    target_logit: torch.Tensor
    entropy: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def positions(self) -> int:
        return self.doc.shape[0]

    @property
    def top_n(self) -> int:
        return self.top_values.shape[1]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def steps(self) -> torch.Tensor:
        """Tokens after the prompt at each position ``[P]`` (the chain's step there)."""
        return self.target - self.prompt_lengths[self.doc]

    @property
    def human(self) -> torch.Tensor:
        """The token that followed at each position ``[P]``."""
        return self.tokens[self.doc, self.target].long()

    def history(self, rows: torch.Tensor) -> torch.Tensor:
        """The tokens before each position of ``rows``, which must share their target index:
        ``[len(rows), target]``."""
        t = int(self.target[rows[0]])
        return self.tokens[self.doc[rows], :t].long()


def record_logits(model, docs: Sequence[Sequence[int]], prompt_lengths: Sequence[int], *,
                  top_n: int = DEFAULT_TOP, batch_size: int = 16, meta: dict | None = None) -> Record:
    """Run ``model`` teacher-forced over ``docs`` and keep what a replay needs at every target
    position (see the module docstring). ``top_n`` above the vocabulary keeps whole rows."""
    if top_n < 1:
        raise RecordError(f"--top {top_n}: expected at least 1")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("doc", "target", "top_values", "top_ids",
                                                            "lse", "target_logit", "entropy")}
    vocab = None
    for doc_index, targets, logits in teacher_forced(model, docs, prompt_lengths, batch_size=batch_size):
        vocab = logits.shape[-1]
        gold = torch.tensor([docs[d][t] for d, t in zip(doc_index, targets)], device=logits.device)
        values, ids = logits.topk(min(top_n, vocab), dim=-1)  # (n, N), largest first
        wide = logits.double()
        lse = wide.logsumexp(-1)  # (n,)
        logp = wide - lse[:, None]
        parts["doc"].append(torch.tensor(doc_index))
        parts["target"].append(torch.tensor(targets))
        parts["top_values"].append(values.float().cpu())
        parts["top_ids"].append(ids.to(_id_dtype(vocab)).cpu())
        parts["lse"].append(lse.cpu())
        parts["target_logit"].append(logits.gather(-1, gold[:, None]).squeeze(-1).float().cpu())
        parts["entropy"].append((-(logp.exp() * logp).sum(-1)).float().cpu())
    if vocab is None:
        raise RecordError("nothing to record: every document is shorter than its prompt plus one token")
    cat = {k: torch.cat(v) for k, v in parts.items()}
    lengths = torch.tensor([len(d) for d in docs])
    tokens = torch.zeros(len(docs), int(lengths.max()), dtype=torch.int32)
    for i, d in enumerate(docs):
        tokens[i, :len(d)] = torch.as_tensor(list(d), dtype=torch.int32)
    prompts = torch.tensor(list(prompt_lengths))
    steps = cat["target"] - prompts[cat["doc"]]
    order = torch.arange(len(steps))
    for key in (cat["doc"], prompts[cat["doc"]], steps):  # stable sorts: by step, prompt length, document
        order = order[key[order].argsort(stable=True)]
    cat = {k: v[order] for k, v in cat.items()}
    return Record(tokens=tokens, lengths=lengths, prompt_lengths=prompts, **cat,
                  meta={**(meta or {}), "vocab_size": vocab, "top_n": min(top_n, vocab)})


def text_documents(ids: Sequence[int], context: int, prompt_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Cut a long text into documents of ``context + 1`` tokens (one forward each), each
    starting with the last ``prompt_tokens`` tokens of the previous one as its prompt, so every
    token from ``prompt_tokens`` on is a target exactly once."""
    if not 0 < prompt_tokens < context:
        raise RecordError(f"--prompt-tokens {prompt_tokens}: expected 1 to {context - 1} (the context)")
    ids = list(ids)
    docs, at, step = [], 0, context + 1 - prompt_tokens
    while at + prompt_tokens < len(ids):
        docs.append(ids[at:at + context + 1])
        at += step
    return docs, [prompt_tokens] * len(docs)


def save_record(record: Record, path: str | Path) -> Path:
    """Write ``record`` atomically (a failed save never leaves a half-written file)."""
    path = Path(path)
    tensors = {k: getattr(record, k).contiguous() for k in TENSORS}
    tensors["top_ids"] = tensors["top_ids"].to(_id_dtype(record.vocab_size))
    data = {"format": FORMAT, "version": VERSION, "meta": record.meta, "tensors": tensors}
    with atomic_write(path) as handle:
        torch.save(data, handle)
    return path


def load_record(path: str | Path) -> Record:
    """Read a record; anything but a version-1 samplekit logits record is refused, and so is a
    record with any field out of its type, dtype or range (``samplekit.lab.record_checks``).
    The tensors are mapped from the file, not read into memory, until they are checked."""
    from samplekit.lab.record_checks import check_parts, check_record, check_sizes

    path = Path(path)
    size = _file_size(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # not a torch zip file, one holding Python objects, or damaged
        raise RecordError(f"{path}: not a samplekit logits record ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordError(f"{path}: not a samplekit logits record (made by samplekit record)")
    version = data.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise RecordError(f"{path}: a logits record of format version {version!r}; this "
                          f"samplekit reads version {VERSION}: record it again with samplekit record")
    meta, tensors = check_parts(data, path)
    check_sizes(tensors, size, path)
    record = Record(**tensors, meta=dict(meta))
    check_record(record, path)
    record.doc, record.target = record.doc.long(), record.target.long()
    return record


def _file_size(path: Path) -> int:
    """The size of the regular file ``path`` (a FIFO or device is refused, not read)."""
    import stat

    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RecordError(f"{path}: no such logits record (make one with samplekit record)") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: cannot read the logits record ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise RecordError(f"{path}: not a regular file; a logits record is a file made by samplekit record")
    return info.st_size


def _id_dtype(vocab: int) -> torch.dtype:
    """Token ids in 2 bytes when they fit, else 4."""
    return torch.int16 if vocab <= torch.iinfo(torch.int16).max else torch.int32


def pair_documents(enc, prompts, continuations, length: int | None = None) -> tuple[list[list[int]], list[int]]:
    """Documents of a prompt and its human continuation (cut to ``length`` tokens when given)."""
    from samplekit.lab.corpus import encode_pair

    pairs = [encode_pair(enc, p, c) for p, c in zip(prompts, continuations)]
    pairs = [(p, c[:length] if length is not None else c) for p, c in pairs if p]
    return [p + c for p, c in pairs], [len(p) for p, _ in pairs]

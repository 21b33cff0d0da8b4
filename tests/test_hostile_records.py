"""Damaged logits records: `load_record` refuses every field out of its type, dtype or range with
one RecordError naming the field, before anything is allocated from it; `compare --logits` on
them is one `error:` line. A seeded fuzz of bit flips and field damage checks the invariant."""

from __future__ import annotations

import copy
import random
import resource
import signal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from samplekit import Chain
from samplekit.cli import app
from samplekit.errors import SampleKitError
from samplekit.lab import record as rec
from samplekit.lab.chains import NamedChain
from samplekit.lab.errors import RecordError
from samplekit.lab.replay import replay
from tests.cli_assertions import time_limit
from tests.helpers_models import TINY_VOCAB_SIZE, make_tiny_model

CHAINS = [NamedChain("greedy", Chain.from_names("greedy"), "greedy"),
          NamedChain("top_k", Chain.from_names(("top_k", {"k": 4}), "multinomial"), "top_k"),
          NamedChain("penalty", Chain.from_names(("repetition_penalty", {"penalty": 1.3}), "greedy"), "penalty")]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(the path of a small valid record, its loaded dict): 3 documents, top 8 of 269."""
    torch.manual_seed(0)
    model = make_tiny_model(context_length=32)
    g = random.Random(0)
    docs = [[g.randrange(TINY_VOCAB_SIZE) for _ in range(12)] for _ in range(3)]
    made = rec.record_logits(model, docs, [4, 5, 6], top_n=8,
                             meta={"context_length": 32, "tokenizer": None, "eos_token_ids": [268]})
    path = rec.save_record(made, tmp_path_factory.mktemp("record") / "good.pt")
    return path, torch.load(path, weights_only=True)


def saved(tmp_path, data, name="bad.pt"):
    path = tmp_path / name
    torch.save(data, path)
    return path


def tensor_set(name, index, value):
    def damage(data):
        data["tensors"][name][index] = value
    return damage


def tensor_is(name, value):
    def damage(data):
        data["tensors"][name] = value(data["tensors"][name]) if callable(value) else value
    return damage


def meta_is(key, value):
    def damage(data):
        data["meta"][key] = value
    return damage


def whole(key, value):
    def damage(data):
        data[key] = value
    return damage


DAMAGE = {  # the cases and their neighbours: damage -> what the error names
    "doc out of range": (tensor_set("doc", 0, 99), "doc holds 99"),
    "doc negative": (tensor_set("doc", 0, -1), "doc holds -1"),
    "target out of range": (tensor_set("target", 0, 1000), "target is outside"),
    "target negative": (tensor_set("target", 0, -5), "target is outside"),
    "top_ids out of range": (tensor_set("top_ids", (0, 0), 5000), "top_ids holds 5000"),
    "top_ids negative": (tensor_set("top_ids", (0, 1), -3), "top_ids holds -3"),
    "top_ids repeated": (tensor_is("top_ids", lambda t: torch.cat([t[:, :1], t[:, :-1]], 1)), "repeats a token id"),
    "tokens out of range": (tensor_set("tokens", (0, 0), 30000), "tokens holds 30000"),
    "vocab_size abc": (meta_is("vocab_size", "abc"), "meta.vocab_size is 'abc'"),
    "vocab_size 0": (meta_is("vocab_size", 0), "meta.vocab_size is 0"),
    "vocab_size 10**12": (meta_is("vocab_size", 10**12), "meta.vocab_size is 1000000000000"),
    "vocab_size below the ids": (meta_is("vocab_size", 9), "below 9"),
    "vocab_size True": (meta_is("vocab_size", True), "meta.vocab_size is True"),
    "top_n disagrees": (meta_is("top_n", 3), "meta.top_n is 3"),
    "context_length -1": (meta_is("context_length", -1), "meta.context_length"),
    "eos ids out of range": (meta_is("eos_token_ids", [10**6]), "meta.eos_token_ids"),
    "meta a tensor value": (meta_is("source", torch.zeros(2)), "meta.source"),
    "meta a list": (whole("meta", [1, 2]), "'meta' is list"),
    "tensors a list": (whole("tensors", [1, 2]), "'tensors' is list"),
    "tensors missing one": (lambda d: d["tensors"].pop("lse"), "no lse"),
    "a tensor not a tensor": (tensor_is("doc", [0, 1]), "no doc"),
    "complex values": (tensor_is("top_values", lambda t: t.to(torch.complex64)), "complex64"),
    "complex ids": (tensor_is("top_ids", lambda t: t.to(torch.complex64)), "expected a dense tensor of integers"),
    "float ids": (tensor_is("doc", lambda t: t.float()), "expected a dense tensor of integers"),
    "bool ids": (tensor_is("doc", lambda t: t.bool()), "expected a dense tensor of integers"),
    "sparse values": (tensor_is("lse", lambda t: t.to_sparse()), "expected a dense tensor"),
    "top-n 0": (lambda d: d["tensors"].update(top_values=d["tensors"]["top_values"][:, :0].contiguous(),
                                              top_ids=d["tensors"]["top_ids"][:, :0].contiguous()), "top 0"),
    "no positions": (lambda d: d["tensors"].update({k: d["tensors"][k][:0].contiguous() for k in (
        "doc", "target", "top_values", "top_ids", "lse", "target_logit", "entropy")}), "0 positions"),
    "shapes disagree": (tensor_is("lse", lambda t: t[:-1].contiguous()), "shapes disagree"),
    "wrong dimensions": (tensor_is("tokens", lambda t: t.flatten()), "tokens has shape"),
    "lengths 0": (tensor_set("lengths", 0, 0), "lengths holds 0"),
    "lengths past the width": (tensor_set("lengths", 0, 999), "lengths holds 999"),
    "prompt past its length": (tensor_set("prompt_lengths", 0, 12 + 1), "prompt_lengths"),
    "values NaN": (tensor_set("top_values", (0, 0), float("nan")), "top_values holds NaN"),
    "values unsorted": (tensor_is("top_values", lambda t: t.flip(-1).contiguous()), "largest first"),
    "lse infinite": (tensor_set("lse", 0, float("inf")), "lse holds"),
    "lse below the top": (tensor_set("lse", 0, -1e6), "negative tail mass"),
    "entropy NaN": (tensor_set("entropy", 0, float("nan")), "entropy"),
    "a size of 10**12 over one element": (tensor_is("lse", lambda t: torch.zeros(1, dtype=t.dtype).expand(10**12)),
                                          "lse has shape [1000000000000]"),
    "version True": (whole("version", True), "format version True"),
    "version 2": (whole("version", 2), "format version 2"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_damaged_field_is_refused_at_load_naming_it(good, tmp_path, case):
    damage, fragment = DAMAGE[case]
    data = copy.deepcopy(good[1])
    damage(data)
    with pytest.raises(RecordError) as info:
        rec.load_record(saved(tmp_path, data))
    assert fragment in str(info.value), str(info.value)
    assert str(info.value).startswith(str(tmp_path / "bad.pt")) and "\n" not in str(info.value)


def test_the_undamaged_record_loads_and_replays(good):
    record = rec.load_record(good[0])
    rows = replay(record, CHAINS, seed=0)
    assert [r.name for r in rows] == ["model", "greedy", "top_k", "penalty"]
    assert record.doc.dtype == record.target.dtype == torch.int64


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_not_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(RecordError, match="not a regular file"):
        rec.load_record(tmp_path / "fifo.pt")


def test_compare_logits_on_a_damaged_record_is_one_error_line(good, tmp_path):
    data = copy.deepcopy(good[1])
    DAMAGE["top_ids out of range"][0](data)
    result = CliRunner().invoke(app, ["compare", "greedy", "--logits", str(saved(tmp_path, data))])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "top_ids holds 5000" in errors[0], result.stderr
    assert "Traceback" not in result.output


# -- the seeded fuzz -----------------------------------------------------------------------------------
FIELDS = ["tokens", "lengths", "prompt_lengths", "doc", "target", "top_values", "top_ids", "lse", "target_logit",
          "entropy"]
VALUES = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0, -1, 1, 268, 269, 2**15 - 1, 2**31 - 1]))
HOSTILE_META = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                         st.text(max_size=4), st.lists(st.integers(-3, 300), max_size=3), st.just({"a": [1]}))
DTYPES = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64, torch.bool, torch.complex64]


def _damage(draw, data) -> None:
    """One random damage of the record's dict."""
    kind = draw(st.sampled_from(["value", "dtype", "shape", "meta"]))
    tensors = data["tensors"]
    if kind == "meta":
        key = draw(st.sampled_from(["vocab_size", "top_n", "context_length", "eos_token_ids", "tokenizer"]))
        data["meta"][key] = draw(HOSTILE_META)
        return
    name = draw(st.sampled_from(FIELDS))
    t = tensors[name]
    if kind == "value":
        flat = t.flatten().clone()
        at = draw(st.integers(0, flat.numel() - 1))
        value = draw(VALUES)
        try:
            flat[at] = value
        except (RuntimeError, OverflowError):
            return
        tensors[name] = flat.reshape(t.shape)
    elif kind == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        try:
            tensors[name] = t.to(dtype)
        except RuntimeError:
            return
    else:
        cut = draw(st.integers(0, max(0, t.shape[0] - 1)))
        tensors[name] = t[:cut].contiguous() if draw(st.booleans()) else torch.cat([t, t[:1]])


def _flip_bits(raw: bytes, rng: random.Random, flips: int) -> bytes:
    data = bytearray(raw)
    for _ in range(flips):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM to bound the time")
def test_fuzzed_records_load_and_replay_or_raise_one_record_error_in_bounded_time_and_memory(good, tmp_path):
    """Invariant, over seeded bit flips of a valid record file and random damage of its fields:
    load_record followed by a replay of three chains either succeeds or raises a SampleKitError
    (one line); never another exception; each example within 20 s; the whole run within 1 GiB of
    extra peak memory."""
    raw = good[0].read_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=120, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.data())
    def check(data):
        if data.draw(st.booleans(), label="bit flips"):
            seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
            content = _flip_bits(raw, random.Random(seed), data.draw(st.integers(1, 6), label="flips"))
            path = tmp_path / "fuzz.pt"
            path.write_bytes(content)
        else:
            damaged = copy.deepcopy(good[1])
            for _ in range(data.draw(st.integers(1, 3), label="damages")):
                _damage(data.draw, damaged)
            path = saved(tmp_path, damaged, "fuzz.pt")
        try:
            with time_limit(20, "loading and replaying a damaged record"):
                replay(rec.load_record(path), CHAINS, seed=0)
            outcomes["loaded"] += 1
        except SampleKitError as exc:
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1

    check()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown < 1 << 20, f"peak memory grew by {grown} KiB"
    assert outcomes["loaded"] and outcomes["refused"], outcomes

"""One decoding loop for every entry point: the same seeded request gives the same tokens through
``generate``, the Scheduler (cached and plain), ``samplekit run`` and the server, with a chain whose
context processor bounds what the model sees (the scheduler once dropped it silently)."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.demo.evaluate import load_demo
from samplekit.engine import generate
from samplekit.model.tokenizer import encode_prompt
from samplekit.requests import Request
from samplekit.scheduler import Scheduler, SchedulerWarning
from serve_helpers import post, serve_server  # noqa: F401 - the fixture

CHAIN = [{"context_window": {"context_length": 8}}, {"repetition_penalty": {"penalty": 1.2}},
         {"temperature": 0.9}, {"top_k": {"k": 40}}, "multinomial"]
PROMPT = "ROMEO: What say you, my lord, to this"
SEED, NEW = 11, 24


@pytest.fixture(scope="module")
def demo():
    model, enc, _ = load_demo()
    return model, enc, encode_prompt(enc, PROMPT, model.config.vocab_size)


@pytest.fixture(scope="module")
def expected(demo) -> list[int]:
    """What ``generate`` gives (batch-invariant, as the scheduler runs): the reference."""
    model, enc, ids = demo
    (out,) = generate(model, [ids], chain={"chain": CHAIN}, seed=[SEED], max_new_tokens=NEW, tokenizer=enc,
                      batch_invariant=True)
    (unbounded,) = generate(model, [ids], chain={"chain": CHAIN[1:]}, seed=[SEED], max_new_tokens=NEW,
                            tokenizer=enc, batch_invariant=True)
    assert out.tokens != unbounded.tokens  # the context window really changes what is generated
    return out.tokens


@pytest.mark.parametrize("use_cache", [None, False])
def test_the_scheduler_honours_the_context_window_among_other_requests(demo, expected, use_cache, one_torch_thread):
    """Cached: the request runs beside the batch (its window is shorter than prompt plus output);
    plain: it shares the batch with requests of other windows, each row re-fed its own window."""
    model, enc, ids = demo
    others = [Request(prompt=ids[:5 + i], id=f"other{i}", seed=i, max_new_tokens=6 + i, chain="balanced")
              for i in range(3)]
    mine = Request(prompt=ids, id="mine", seed=SEED, max_new_tokens=NEW, chain={"chain": CHAIN})
    scheduler = Scheduler(model, tokenizer=enc, max_batch=4, use_cache=use_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchedulerWarning)  # the cached path says it runs the request alone
        results = {r.id: r.samples[0].tokens for r in scheduler.run([others[0], mine, *others[1:]])}
    assert results["mine"] == expected
    for other in others:
        (alone,) = generate(model, [other.prompt], chain="balanced", seed=[other.seed],
                            max_new_tokens=other.max_new_tokens, tokenizer=enc, batch_invariant=True)
        assert results[other.id] == alone.tokens


def test_samplekit_run_gives_generates_tokens(demo, expected, tmp_path, one_torch_thread):
    config = tmp_path / "window.yaml"
    config.write_text(yaml.safe_dump({"chain": CHAIN}))
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"prompt": PROMPT, "seed": SEED, "max_new_tokens": NEW}) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["run", str(requests), "-o", str(out), "--config", str(config), "--quiet",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["tokens"] == expected


def test_the_server_gives_generates_tokens(demo, expected, serve_server):  # noqa: F811 - the fixture
    _, enc, ids = demo
    response = post(serve_server, "/v1/completions", {"model": "demo", "prompt": ids, "max_tokens": NEW,
                                                       "seed": SEED, "samplekit": {"chain": CHAIN}})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == enc.decode(expected)
